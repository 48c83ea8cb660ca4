"""Latency model of the target runtime: ONNX Runtime CPU milliseconds as a function of channel counts.

Two layers, after NetAdapt (Yang et al., ECCV 2018: measured latency drives every step) and HALP
(Shen et al., NeurIPS 2022: a latency lookup table calibrated once drives a constrained search):

* **Direct measurement** (:meth:`LatencyModel.measure`): the candidate is pruned, exported to ONNX
  at the measurement input size and timed with ONNX Runtime by :func:`compresskit.deploy.benchmark.measure`
  *interleaved with the unpruned reference model* in the same rounds. What is stored is the median of
  per-round ratios candidate / reference (load drift on a shared machine cancels); milliseconds are that
  ratio times the reference's median from the first measurement of the cache. Results are cached by
  *channel configuration* (the exact per-layer ``(in, out)`` channels from
  :meth:`compresskit.ParamPredictor.layer_channels`), so two rate vectors that give the same widths
  are measured once.
* **Prediction** (:meth:`LatencyModel.predict`, microseconds, what a search's feasibility check calls
  thousands of times): a linear cost model over exact per-layer features -- multiply-accumulates of
  dense convs / linears, of depthwise convs, and output elements of every conv (memory traffic), each
  summed over the layers, plus a constant -- whose non-negative weights (``scipy.optimize.nnls``) are
  fitted once to direct measurements of calibration rate vectors (:meth:`LatencyModel.calibrate`).
  Four weights, not one per layer or per resolution: with ~15 calibration points, finer tables
  over-fitted in leave-one-out tests on Nano-B (``benchmarks/RESULTS.md``). Non-negative
  weights over features that never grow when channels are removed make the prediction monotone in
  every layer's channel count.

The cache is one JSON file per key -- model name and architecture fingerprint, input shape, threads,
onnxruntime version -- under ``cache_dir``; a file whose stored key differs is never read
(:mod:`compresskit.deploy._latency_cache`). The features live in :mod:`compresskit.deploy._latency_features`.

Caveats:
    * The model is only as good as the features: operators without channel-proportional cost
      (resize, softmax over few channels, concat copies) are folded into the four weights.
      ``benchmarks/bench_latency.py`` reports the prediction error against direct measurement.
    * Milliseconds are wall-clock on the machine at hand; a cache is meaningless on another machine
      (the key does not name the CPU, so keep ``cache_dir`` inside the run directory).
    * Weights do not matter for latency: candidates are pruned by weight magnitude without the
      float64 verification (they are measured, never returned).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compresskit.deploy._latency_cache import (
    CACHE_FORMAT,
    LatencyKey,
    architecture_fingerprint,
    default_cache_dir,
    load_cache,
    save_cache,
)
from compresskit.deploy._latency_features import CostFeatures
from compresskit.deploy._latency_joint import LatencyBudgetError, check_joint
from compresskit.pruning.budget import ParamPredictor

__all__ = ["CACHE_FORMAT", "LatencyBudget", "LatencyKey", "LatencyModel", "LatencySettings", "architecture_fingerprint",
           "LatencyBudgetError", "default_cache_dir", "latency_budget"]


class LatencyModel:
    """ONNX Runtime latency of ``model`` pruned at given rates: direct (cached) and predicted.

    Args:
        model: The unpruned model the groups were found on (not modified).
        groups: Its channel groups (:func:`compresskit.find_groups`, possibly rounded).
        input_shape: Timed input shape, e.g. ``(1, 3, 640, 640)`` (may differ from the traced one).
        threads: ONNX Runtime intra-op threads.
        cache_dir: Folder of the cache files (``None``: no cache file, memory only).
        name: The model's name in the cache key.
        reference: The model every measurement is paired with (``None``: ``model`` unpruned). A
            reduced model (blocks bypassed) is timed against the full student, so its ratios and the
            full student's share one scale; the reference's fingerprint is part of the cache key.

    Attributes:
        rounds: Interleaved timed rounds per direct measurement (default 10).
        warmup: Untimed calls per model before them (default 2).

    Example:
        >>> latency = LatencyModel(model, groups, (1, 3, 640, 640), threads=1, cache_dir="runs/x/latency")
        >>> latency.calibrate(bounds, samples=12)  # direct measurements, cached
        >>> latency.predict({"backbone": 0.3, "neck": 0.5})  # microseconds, for the search
        >>> latency.measure({"backbone": 0.3, "neck": 0.5})  # export + ORT, cached by channel counts
    """

    def __init__(self, model: nn.Module, groups: Sequence[Any], input_shape: Sequence[int], threads: int = 1,
                 cache_dir: str | os.PathLike[str] | None = None, name: str = "model",
                 reference: nn.Module | None = None) -> None:
        import onnxruntime

        shape = tuple(int(v) for v in input_shape)
        if len(shape) < 2 or any(v < 1 for v in shape):
            raise ValueError(f"input_shape must be positive dimensions like (1, 3, 640, 640), got {input_shape!r}")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an int >= 1, got {threads!r}")
        self.model, self.groups, self.reference = model, groups, reference
        self.predictor = ParamPredictor(model, groups)
        against = "" if reference is None else f" vs {architecture_fingerprint(reference)}"
        self.key = LatencyKey(f"{name}@{architecture_fingerprint(model)}{against}", shape, threads,
                              f"onnxruntime {onnxruntime.__version__}")
        self.rounds, self.warmup = 10, 2
        self.cache_path = Path(cache_dir) / self.key.file_name() if cache_dir is not None else None
        #: Direct measurements by :meth:`config_key`, and the reference's median of the first one.
        self._entries, self.reference_ms = load_cache(self.cache_path, self.key)
        self.weights: np.ndarray | None = None
        self._unpruned_runner: Callable[[], object] | None = None
        self._folder = tempfile.TemporaryDirectory(prefix="compresskit-latency-")
        self._features = CostFeatures(model, self.predictor, shape)

    # ------------------------------------------------------------------ cache

    def config_key(self, rates: float | Mapping[str, float]) -> str:
        """Hash of the exact per-layer channel counts at ``rates`` (the cache key of a measurement)."""
        channels = self.predictor.layer_channels(rates)
        return hashlib.sha256(json.dumps(channels).encode()).hexdigest()[:20]

    @property
    def measurements(self) -> int:
        """Number of cached direct measurements."""
        return len(self._entries)

    # ------------------------------------------------------------------ direct measurement

    def _export(self, model: nn.Module, file_name: str) -> Path:
        from compresskit.deploy.export import export_onnx

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return export_onnx(model, torch.zeros(self.key.input_shape), Path(self._folder.name) / file_name)

    def _runner(self, path: Path) -> Callable[[], object]:
        from compresskit.deploy.benchmark import ort_runner

        array = np.random.default_rng(0).standard_normal(self.key.input_shape).astype(np.float32)
        return ort_runner(path, [array], self.key.threads)

    def pruned(self, rates: float | Mapping[str, float]) -> nn.Module:
        """A copy of the model pruned at ``rates`` (channels ranked by weight magnitude; for timing)."""
        from compresskit.pruning.soft_fpgm import prune

        candidate, candidate_groups = copy.deepcopy((self.model, self.groups))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prune(candidate, getattr(candidate_groups, "example_inputs", None), rates, groups=candidate_groups,
                  importance="magnitude", verify=False)
        return candidate

    def measure(self, rates: float | Mapping[str, float]) -> float:
        """Directly measured milliseconds of the model pruned at ``rates`` (cached by channel counts)."""
        key = self.config_key(rates)
        if key not in self._entries:
            from compresskit.deploy.benchmark import measure, paired_ratio

            if self._unpruned_runner is None:
                reference = self.model if self.reference is None else self.reference
                self._unpruned_runner = self._runner(self._export(reference, "unpruned.onnx"))
            candidate = self._runner(self._export(self.pruned(rates), "candidate.onnx"))
            times = measure({"unpruned": self._unpruned_runner, "candidate": candidate},
                            warmup=self.warmup, rounds=self.rounds)
            ratio = paired_ratio(times["candidate"].samples_ms, times["unpruned"].samples_ms)
            if self.reference_ms is None:
                self.reference_ms = times["unpruned"].median_ms
            rates_record = rates if isinstance(rates, Mapping) else {"*": rates}
            self._entries[key] = {"ratio": ratio, "candidate_ms": times["candidate"].median_ms,
                                  "reference_ms": times["unpruned"].median_ms,  # the cache file's field name
                                  "rates": {k: round(float(v), 6) for k, v in rates_record.items()}}
            save_cache(self.cache_path, self.key, self._entries, self.reference_ms)
        assert self.reference_ms is not None
        return float(self._entries[key]["ratio"]) * float(self.reference_ms)

    def reachable(self, bounds: Mapping[str, tuple[float, float]]) -> tuple[float, float]:
        """``(fastest, slowest)`` measured milliseconds inside ``bounds`` (all upper / all lower rates)."""
        return (self.measure({name: high for name, (low, high) in bounds.items()}),
                self.measure({name: low for name, (low, high) in bounds.items()}))

    def unpruned_ms(self) -> float:
        """Measured milliseconds of the unpruned model (all rates 0)."""
        return self.measure(0.0)

    # ------------------------------------------------------------------ prediction

    def features(self, rates: float | Mapping[str, float]) -> np.ndarray:
        """Cost features at ``rates``: dense MACs, depthwise MACs and conv output elements, each as a
        fraction of the unpruned model's, plus a constant 1 (:class:`~compresskit.deploy._latency_features.CostFeatures`)."""
        return self._features(rates)

    def calibrate(self, bounds: Mapping[str, tuple[float, float]], samples: int = 12, seed: int = 0) -> None:
        """Fit the prediction weights to direct measurements (cached) of calibration rate vectors.

        The vectors: the unpruned model, the two corners of ``bounds`` and ``samples`` scrambled-Sobol
        points inside them. Fitted in ratio-to-reference units by non-negative least squares. Empty
        ``bounds`` (a reduced model whose every layer group was bypassed): the unpruned model alone.
        """
        from scipy.optimize import nnls

        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"calibration samples must be an int >= 1, got {samples!r}")
        names = list(bounds)
        low = np.array([bounds[n][0] for n in names])
        high = np.array([bounds[n][1] for n in names])
        vectors: list[float | dict[str, float]] = [0.0]
        if names:
            points = torch.quasirandom.SobolEngine(len(names), scramble=True, seed=seed).draw(samples,
                                                                                              dtype=torch.float64)
            vectors += [dict(zip(names, high.tolist())), dict(zip(names, low.tolist()))]
            vectors += [dict(zip(names, (low + p.numpy() * (high - low)).tolist())) for p in points]
        measured = np.array([self.measure(rates) for rates in vectors])
        assert self.reference_ms is not None
        matrix = np.stack([self.features(r) for r in vectors])
        target = measured / self.reference_ms
        self.weights, _ = nnls(matrix, target)

    def predict(self, rates: float | Mapping[str, float]) -> float:
        """Predicted milliseconds at ``rates`` (after :meth:`calibrate`)."""
        if self.weights is None or self.reference_ms is None:
            raise ValueError("the latency model is not calibrated; call calibrate(bounds) first")
        return float(self.features(rates) @ self.weights) * float(self.reference_ms)

    __call__ = predict


@dataclass(frozen=True)
class LatencySettings:
    """How a run measures latency (the recipe's ``search.latency``): what all its latency models share.

    Attributes: the student's model name (in every cache key), the timed input shape, ONNX Runtime
    threads, interleaved rounds per measurement, the cache folder, and the calibration's sample count
    and seed (:meth:`LatencyModel.calibrate`).
    """

    name: str
    input_shape: tuple[int, ...]
    threads: int
    rounds: int
    cache_dir: Path
    samples: int
    seed: int

    @classmethod
    def from_recipe(cls, recipe: Any, example_inputs: Sequence[torch.Tensor]) -> LatencySettings:
        """``search.latency`` (input size: its own, else ``export.input_size``, else the example input's)."""
        settings, first = recipe.search.latency, example_inputs[0]
        size = settings.input_size or recipe.export.input_size or tuple(first.shape[-2:])
        cache = Path(settings.cache_dir) if settings.cache_dir is not None else default_cache_dir()
        return cls(recipe.student.model, (1, *first.shape[1:-2], *size), settings.threads, settings.rounds, cache,
                   settings.calibration, recipe.seed)

    def open(self, model: nn.Module, groups: Sequence[Any]) -> LatencyModel:
        """The (uncalibrated) latency model of the student ``model``, timed against itself unpruned."""
        latency = LatencyModel(model, groups, self.input_shape, self.threads, self.cache_dir, self.name)
        latency.rounds = self.rounds
        return latency

    def open_reduced(self, model: nn.Module, groups: Sequence[Any], blocks: Sequence[str],
                     base: LatencyModel) -> LatencyModel:
        """The latency model of ``model``, the student with ``blocks`` bypassed, on ``base``'s scale.

        Timed against ``base``'s unpruned student and converted to milliseconds with ``base``'s
        :attr:`~LatencyModel.reference_ms`, so every subset's milliseconds are comparable with one
        limit. The blocks are named in the cache key (besides the reduced architecture's fingerprint).
        """
        if not blocks:
            return base
        latency = LatencyModel(model, groups, self.input_shape, self.threads, self.cache_dir,
                               f"{self.name}-bypass-{'+'.join(blocks)}", reference=base.model)
        latency.rounds = self.rounds
        if base.reference_ms is None:
            base.unpruned_ms()  # sets base.reference_ms
        latency.reference_ms = base.reference_ms
        return latency

    def where(self) -> str:
        """``"ONNX Runtime, 1 thread(s), input 1x3x640x640"``, for messages."""
        return f"ONNX Runtime, {self.threads} thread(s), input {'x'.join(map(str, self.input_shape))}"


@dataclass
class LatencyBudget:
    """The student's :class:`LatencyModel` and the limit a search must meet.

    Attributes:
        model: The latency model of the student (calibrated unless ``search.bypass``: then each
            subset's model is calibrated by the search on first use).
        limit_ms: The budget in milliseconds (``max_latency_ms``, or the ratio times ``unpruned_ms``).
        unpruned_ms: Measured latency of the unpruned student (nothing bypassed).
        reachable_ms: ``(fastest, slowest)`` measured inside the rate bounds (with ``search.bypass``,
            fastest with every candidate block bypassed).
        description: The budget as the recipe wrote it, for messages.
        settings: How the run measures latency (opens the other subsets' models).
    """

    model: LatencyModel
    limit_ms: float
    unpruned_ms: float
    reachable_ms: tuple[float, float]
    description: str
    settings: LatencySettings | None = None

    def to_dict(self) -> dict[str, Any]:
        key = self.model.key
        return {"limit_ms": round(self.limit_ms, 4), "unpruned_ms": round(self.unpruned_ms, 4),
                "reachable_ms": [round(v, 4) for v in self.reachable_ms], "budget": self.description,
                "input_shape": list(key.input_shape), "threads": key.threads, "runtime": key.runtime,
                "measurements": self.model.measurements}


def latency_budget(recipe: Any, model: nn.Module, groups: Sequence[Any], bounds: Mapping[str, tuple[float, float]],
                   example_inputs: Sequence[torch.Tensor],
                   fastest: tuple[nn.Module, Any, Sequence[str], Mapping[str, tuple[float, float]]] | None = None,
                   ) -> LatencyBudget | None:
    """The recipe's latency budget for ``model`` (``None`` without one), checked reachable.

    Reads ``search.budget.max_latency_ms`` / ``max_latency_ratio`` and ``search.latency``; measures the
    unpruned student and the two corners of ``bounds``, fits the predictor, and checks that some rates
    in ``bounds`` meet both the latency and the parameter budget (4,096 uniform samples, then a greedy walk
    towards the fastest rates inside the parameter band: :mod:`compresskit.deploy._latency_joint`). Direct
    measurements are cached (:func:`default_cache_dir` unless ``search.latency.cache_dir``), so the
    pre-flight check and the search measure once. ``max_latency_ratio`` is relative to the unpruned
    student with nothing bypassed, also with ``search.bypass``.

    Args:
        fastest: With ``search.bypass``: ``(reduced model, its groups, blocks, its bounds)`` of the
            student with every candidate block bypassed. Its fastest corner is measured too (one more
            export and timing, cached) and the reachable range runs from the faster of the two corners;
            nothing is calibrated here and the joint parameter/latency check is skipped -- the search
            calibrates each subset it visits (:class:`compresskit.run.bypass_choice.BypassLatency`).

    Raises:
        LatencyBudgetError: the budget cannot be met; the message names the budget and the reachable range.
    """
    budget = recipe.search.budget
    if budget.max_latency_ms is None and budget.max_latency_ratio is None:
        return None
    settings = LatencySettings.from_recipe(recipe, example_inputs)
    latency = settings.open(model, groups)
    unpruned = latency.unpruned_ms()
    fastest_ms, slowest_ms = latency.reachable(bounds)
    where = "layer-group bounds"
    if fastest is not None:
        reduced_model, reduced_groups, blocks, reduced_bounds = fastest
        reduced = settings.open_reduced(reduced_model, reduced_groups, blocks, latency)
        fastest_ms = min(fastest_ms, reduced.reachable(reduced_bounds)[0])
        where = f"layer-group bounds, with up to {list(blocks)} bypassed,"
    limit, description = _limit(budget, unpruned)
    if fastest_ms > limit:
        raise LatencyBudgetError(f"{recipe.source}: search.budget {description} cannot be met: rates within the "
                          f"{where} measure {fastest_ms:.2f} to {slowest_ms:.2f} ms ({settings.where()})")
    if fastest is None:
        latency.calibrate(bounds, samples=settings.samples, seed=settings.seed)
        check_joint(recipe, latency, bounds, limit, description, (fastest_ms, slowest_ms), settings.where())
    return LatencyBudget(latency, limit, unpruned, (fastest_ms, slowest_ms), description, settings)


def _limit(budget: Any, unpruned: float) -> tuple[float, str]:
    """``(limit in ms, the budget as written)`` of ``search.budget``'s latency keys."""
    limits, parts = [], []
    if budget.max_latency_ms is not None:
        limits.append(float(budget.max_latency_ms))
        parts.append(f"max_latency_ms {budget.max_latency_ms:g}")
    if budget.max_latency_ratio is not None:
        limits.append(float(budget.max_latency_ratio) * unpruned)
        parts.append(f"max_latency_ratio {budget.max_latency_ratio:g} (= {budget.max_latency_ratio * unpruned:.2f} ms "
                     f"of the unpruned {unpruned:.2f} ms)")
    return min(limits), " and ".join(parts)
