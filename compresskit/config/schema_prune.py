"""The recipe's ``prune`` section: :class:`PruneConfig` with its layer groups, schedule and refit.

Part of the recipe schema (:mod:`compresskit.config.schema`, which re-exports these classes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from compresskit.config.constraints import AT_LEAST_ONE, POSITIVE, RATE, within
from compresskit.config.schema_train import TrainConfig

__all__ = ["LayerGroupConfig", "PruneConfig", "ReconstructConfig", "ScheduleConfig"]


@dataclass(frozen=True)
class LayerGroupConfig:
    """A named set of layers that share one pruning rate (see ``LayerGroupSpec``).

    Attributes:
        patterns: ``fnmatch`` globs over ``model.named_modules()`` names.
        types: Module class names, e.g. ``[Conv2d]``.
        bounds: ``[low, high]`` range searched for this group's rate, in ``[0, 1)``.
    """

    patterns: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    bounds: tuple[float, float] = field(default=(0.0, 0.9), metadata=RATE)


@dataclass(frozen=True)
class ScheduleConfig(TrainConfig):
    """The soft-pruning phase: training while filters are re-zeroed on a schedule.

    The rate of each layer group ramps from ``initial`` to its searched (or
    given) rate between epochs ``start`` and ``end`` (``null``: ``epochs``),
    following ``kind`` (``polynomial`` with ``power`` 3 is AGP).

    Attributes:
        kind: A key of ``compresskit.pruning.schedules.SCHEDULES`` with a ramp.
        power: Exponent of the polynomial ramp.
        initial: Starting rate of the ramp.
        start: First epoch of the ramp.
        end: Epoch the final rate is reached (``null``: the last epoch).
        step_every: Re-rank and re-zero every this many epochs.
    """

    kind: Literal["polynomial", "linear", "constant"] = "polynomial"
    power: float = field(default=3.0, metadata=POSITIVE)
    initial: float = field(default=0.0, metadata=RATE)
    start: int = field(default=0, metadata=within(0))
    end: int | None = field(default=None, metadata=AT_LEAST_ONE)
    step_every: int = field(default=1, metadata=AT_LEAST_ONE)


@dataclass(frozen=True)
class ReconstructConfig:
    """One-shot pruning's least-squares refit of each dense layer to the unpruned student's output.

    Attributes:
        batches: Calibration batches from the task's training loader (inputs only; labels are not used).
        batch_size: Images per calibration batch.
        positions: Output positions sampled per batch and convolution.
        ridge: Damping towards the pruned weights, relative to the mean of ``diag(X^T X)``.
        task_args: What differs for the calibration images: one mapping or a list of them, each the
            recipe's ``task_args`` updated by it and built into a task; the batches are drawn from their
            training loaders in turn (``[{image_size: 320}, {image_size: 640}]``: half of the batches are 320 px
            crops, half 640 px; ``{image_size: 640}``: all of them 640 px while training uses the recipe's
            size). Empty: the run's own loader.
    """

    batches: int = field(default=8, metadata=AT_LEAST_ONE)
    batch_size: int = field(default=8, metadata=AT_LEAST_ONE)
    positions: int = field(default=2048, metadata=AT_LEAST_ONE)
    ridge: float = field(default=1e-2, metadata=POSITIVE)
    task_args: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class PruneConfig:
    """Which channels may be pruned, how they are ranked, and the soft phase.

    Attributes:
        importance: A key of ``IMPORTANCES``, or ``output_error`` (``compresskit.pruning.OutputError``: chosen
            from ``reconstruct``'s batches, which it needs; the search's trials then rank with FPGM).
        groups: Layer groups by name; ``null`` takes the task's ``layer_groups()``.
        protect: Module globs whose output channels are never pruned (added to
            the task's own).
        rates: Fixed rate per layer group, used when ``search.enabled`` is false.
        schedule: The soft-pruning training phase.
        channel_multiple: Kept channels are rounded up to a multiple of this (e.g. 4, 8, 16:
            hardware-friendly widths; ``compresskit.groups.round_channels``); 1: no rounding.
        reconstruct: Refit the kept weights by least squares before removal (one-shot pruning only:
            ``schedule.epochs: 0``); ``null``: off.
        split_groups: Give every coupled channel set of each layer group its own rate (layer groups named
            ``<layer group>/<set>``, with the layer group's bounds): dozens of rates, for ``search.method:
            global``, which prices each set from data (a trial-based search over so many is refused).
    """

    importance: Literal["fpgm", "magnitude", "output_error"] = "fpgm"
    groups: dict[str, LayerGroupConfig] | None = None
    protect: tuple[str, ...] = ()
    rates: dict[str, float] | None = field(default=None, metadata=RATE)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    channel_multiple: int = field(default=1, metadata=AT_LEAST_ONE)
    reconstruct: ReconstructConfig | None = None
    split_groups: bool = False
