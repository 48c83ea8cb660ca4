"""The recipe's ``search`` section: :class:`SearchConfig` with its budget, trial and latency settings.

Part of the recipe schema (:mod:`compresskit.config.schema`, which re-exports these classes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from compresskit.config.constraints import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, within

__all__ = ["BudgetConfig", "LatencyConfig", "SearchConfig", "TrialConfig"]


@dataclass(frozen=True)
class BudgetConfig:
    """Feasible pruned students: parameter counts in ``[min_params, max_params]`` and, optionally,
    ONNX Runtime latency (``compresskit.deploy.latency``, settings in ``search.latency``).

    Attributes:
        max_latency_ms: Largest predicted latency in milliseconds (on this machine).
        max_latency_ratio: Largest predicted latency as a fraction of the unpruned student's.
            With both, the smaller limit holds.
    """

    min_params: int = field(default=0, metadata=NON_NEGATIVE)
    max_params: int = field(default=2**62, metadata=AT_LEAST_ONE)
    max_latency_ms: float | None = field(default=None, metadata=POSITIVE)
    max_latency_ratio: float | None = field(default=None, metadata=within(0.0, 1.0, low_inclusive=False))


@dataclass(frozen=True)
class LatencyConfig:
    """How a latency budget is measured and predicted (``compresskit.deploy.latency.LatencyModel``).

    Attributes:
        input_size: ``[height, width]`` of the timed input (``null``: ``export.input_size``, else the
            task's example input).
        threads: ONNX Runtime intra-op threads.
        calibration: Sobol rate vectors measured directly to fit the predictor (plus the unpruned
            model and the two corners of the bounds).
        rounds: Interleaved timing rounds per direct measurement.
        cache_dir: Cache folder (``null``: ``$XDG_CACHE_HOME/compresskit/latency``); files are keyed
            by model, input size, threads and ONNX Runtime version.
    """

    input_size: tuple[int, int] | None = field(default=None, metadata=AT_LEAST_ONE)
    threads: int = field(default=1, metadata=AT_LEAST_ONE)
    calibration: int = field(default=12, metadata=AT_LEAST_ONE)
    rounds: int = field(default=10, metadata=AT_LEAST_ONE)
    cache_dir: str | None = None


@dataclass(frozen=True)
class TrialConfig:
    """How one candidate rate vector is scored during the search.

    The candidate is pruned one-shot from the distilled student, trained
    ``epochs`` on a ``subset`` fraction of the training data, and scored by the
    task loss on the validation loader (lower is better).

    With ``holdout`` (a fraction in (0, 1)), a part of the *training* set chosen by
    ``recipe.seed`` is held out instead: trials train on the rest and are scored by
    the task loss on the held-out part (``task.heldout_loader``), so the validation
    images that the reported metrics use are never seen by the search.
    """

    epochs: int = field(default=1, metadata=within(0))
    subset: float = field(default=0.2, metadata=within(0.0, 1.0, low_inclusive=False))
    lr: float = field(default=1e-3, metadata=POSITIVE)
    batch_size: int = field(default=32, metadata=AT_LEAST_ONE)
    max_val_batches: int | None = field(default=None, metadata=AT_LEAST_ONE)
    holdout: float | None = field(default=None, metadata=within(0.0, 1.0, low_inclusive=False,
                                                                high_inclusive=False))


@dataclass(frozen=True)
class SearchConfig:
    """Per-layer-group pruning-rate search under a parameter budget.

    Attributes:
        enabled: ``false`` uses ``prune.rates`` as given.
        method: ``bo`` (BoTorch LogEI), ``random``, or ``global``: no trials, the rates are allocated from
            data (``compresskit.search.global_allocation``: each channel's output error priced on
            ``prune.reconstruct``'s calibration batches, which it needs; the budget is met exactly).
        start: ``global``: the global allocation is the first point the ``bo`` search evaluates (then the
            Sobol points); ``null``: none. Needs ``prune.reconstruct`` too.
        iterations: Candidates evaluated after the initial points.
        initial_points: Sobol/random initial points (``null``: the search's default).
        budget: Feasible parameter counts (and latency).
        trial: How a candidate is scored.
        latency: How latency is measured, with a latency budget.
        bypass: Blocks of the student's ``bypassable`` the search may switch off (one more dimension
            each, ``bypass:<block>``); empty: none, rates only.
    """

    enabled: bool = True
    method: Literal["bo", "random", "global"] = "bo"
    start: Literal["global"] | None = None
    iterations: int = field(default=25, metadata=within(0))
    initial_points: int | None = field(default=None, metadata=AT_LEAST_ONE)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    trial: TrialConfig = field(default_factory=TrialConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    bypass: tuple[str, ...] = ()
