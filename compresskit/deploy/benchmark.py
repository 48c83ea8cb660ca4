"""Latency measurement: the one function every compresskit timing goes through.

:func:`measure` times several callables *interleaved*: after ``warmup`` untimed calls each, every
round calls each callable once, in a rotated order (round ``r`` starts at callable ``r mod n``),
so slow drifts of machine load hit all of them alike. Reported per callable: median and 90th
percentile (numpy's linear interpolation) of its per-round milliseconds, and ratios to a baseline
as the median of per-round ratios (the two calls ran in the same round, so drift cancels).

:func:`benchmark_models` is what ``compresskit benchmark`` runs: torch eager for checkpoints, and
for ``.onnx`` files (FP32 or INT8) each asked runtime -- ONNX Runtime (``ort``) and / or OpenVINO's
CPU plugin (``openvino``, which also runs ``.xml`` IR files) -- all on the same input in the same
interleaved rounds, with the thread count, batch, input size and node counts recorded. ``benchmarks/bench_models.py`` and the run report use
:func:`measure` too.

Caveats:
    Figures are wall-clock on a possibly shared machine: compare ratios measured in one call, not
    numbers from different runs. torch's thread count is process-wide (``torch.set_num_threads``);
    it is set for the measurement and restored afterwards.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["RUNTIMES", "Latency", "LatencyReport", "benchmark_models", "measure", "openvino_runner", "ort_runner",
           "paired_ratio", "summarise", "torch_runner"]

#: Runtimes :func:`benchmark_models` can time a file in.
RUNTIMES = ("ort", "openvino")


@dataclass(frozen=True)
class Latency:
    """Per-round milliseconds of one callable and their summary.

    Attributes:
        median_ms: Median over rounds.
        p90_ms: 90th percentile over rounds.
        samples_ms: Every round's time, in round order.
    """

    median_ms: float
    p90_ms: float
    samples_ms: tuple[float, ...]


@dataclass
class LatencyReport:
    """What :func:`measure` measured, with the settings that matter for reading it.

    Attributes:
        latencies: Name -> :class:`Latency`, in the order given.
        threads: Intra-op threads (torch and ONNX Runtime).
        batch: Batch size of the input.
        input_shape: Shape of the (first) input.
        warmup: Untimed calls per callable before the rounds.
        rounds: Timed rounds.
        notes: Free-form facts about the run (e.g. which model is quantized).
    """

    latencies: dict[str, Latency]
    threads: int
    batch: int
    input_shape: tuple[int, ...]
    warmup: int
    rounds: int
    notes: dict[str, str] = field(default_factory=dict)

    def ratios(self, baseline: str) -> dict[str, float]:
        """Name -> median of per-round ``time / time[baseline]`` (``> 1``: slower than the baseline).

        Raises:
            ValueError: ``baseline`` was not measured.
        """
        if baseline not in self.latencies:
            raise ValueError(f"unknown reference {baseline!r}; measured: {list(self.latencies)}")
        base = self.latencies[baseline].samples_ms
        return {name: paired_ratio(lat.samples_ms, base) for name, lat in self.latencies.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (samples included)."""
        return {"threads": self.threads, "batch": self.batch, "input_shape": list(self.input_shape),
                "warmup": self.warmup, "rounds": self.rounds, "notes": dict(self.notes),
                "latency_ms": {name: {"median": round(lat.median_ms, 4), "p90": round(lat.p90_ms, 4),
                                      "samples": [round(t, 4) for t in lat.samples_ms]}
                               for name, lat in self.latencies.items()}}

    def table(self, baseline: str | None = None) -> str:
        """A plain-text table: median, p90 and the paired ratio to ``baseline`` (default: the first
        name), one row per name."""
        baseline = baseline or next(iter(self.latencies))
        ratios = self.ratios(baseline)
        width = max(len(name) for name in self.latencies)
        lines = [f"threads {self.threads}, batch {self.batch}, input {'x'.join(map(str, self.input_shape))}, "
                 f"{self.warmup} warm-up calls, {self.rounds} interleaved rounds",
                 f"{'model':<{width}}  median ms   p90 ms   vs {baseline}"]
        for name, lat in self.latencies.items():
            lines.append(f"{name:<{width}}  {lat.median_ms:9.2f}  {lat.p90_ms:7.2f}   {ratios[name]:.2f}x")
        return "\n".join(lines)


def summarise(samples_ms: Sequence[float]) -> Latency:
    """Median and p90 of per-round times."""
    if not samples_ms:
        raise ValueError("no samples to summarise")
    median, p90 = np.percentile(np.asarray(samples_ms, dtype=np.float64), [50, 90])
    return Latency(float(median), float(p90), tuple(float(t) for t in samples_ms))


def paired_ratio(samples_ms: Sequence[float], reference_ms: Sequence[float]) -> float:
    """Median over rounds of ``samples[r] / reference[r]``."""
    if len(samples_ms) != len(reference_ms) or not samples_ms:
        raise ValueError(f"paired ratio needs equal, non-empty round counts, got {len(samples_ms)} "
                         f"and {len(reference_ms)}")
    return float(np.median(np.asarray(samples_ms, dtype=np.float64) / np.asarray(reference_ms, dtype=np.float64)))


def measure(runners: Mapping[str, Callable[[], object]], warmup: int = 3, rounds: int = 15,
            on_round: Callable[[int], None] | None = None) -> dict[str, Latency]:
    """Time each callable once per round, interleaved with rotated order; see the module docstring.

    Args:
        runners: Name -> a callable doing one inference (its result is discarded).
        warmup: Untimed calls per callable first (``>= 0``).
        rounds: Timed rounds (``>= 1``).
        on_round: Called with the round index after each round (progress).

    Returns:
        Name -> :class:`Latency`, in the order of ``runners``.

    Example:
        >>> stats = measure({"a": lambda: sum(range(1000)), "b": lambda: sum(range(2000))}, rounds=5)
        >>> sorted(stats)
        ['a', 'b']
    """
    if not runners:
        raise ValueError("measure needs at least one callable")
    if warmup < 0 or rounds < 1:
        raise ValueError(f"warmup must be >= 0 and rounds >= 1, got warmup={warmup}, rounds={rounds}")
    names = list(runners)
    for name in names:
        for _ in range(warmup):
            runners[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            runners[name]()
            samples[name].append((time.perf_counter() - start) * 1e3)
        if on_round is not None:
            on_round(index)
    return {name: summarise(samples[name]) for name in names}


def torch_runner(model: nn.Module, inputs: Sequence[torch.Tensor]) -> Callable[[], object]:
    """One eager forward under ``torch.inference_mode`` (the model is put in eval mode)."""
    model.eval()

    def run() -> object:
        with torch.inference_mode():
            return model(*inputs)

    return run


def ort_runner(path: str | os.PathLike[str], inputs: Sequence[np.ndarray], threads: int) -> Callable[[], object]:
    """One ONNX Runtime run of ``path`` (session from :func:`compresskit.deploy.runtime.ort_session`)."""
    from compresskit.deploy.runtime import ort_session

    session = ort_session(path, threads)
    names = [i.name for i in session.get_inputs()]
    if len(names) != len(inputs):
        raise ValueError(f"{Path(path).name} takes {len(names)} inputs {names}, got {len(inputs)}")
    feed = {name: np.ascontiguousarray(array) for name, array in zip(names, inputs)}
    return lambda: session.run(None, feed)


def openvino_runner(path: str | os.PathLike[str], inputs: Sequence[np.ndarray], threads: int) -> Callable[[], object]:
    """One OpenVINO CPU inference of an ``.xml`` IR or ``.onnx`` file
    (:func:`compresskit.deploy.openvino_ir.openvino_model`: ``threads`` threads, one stream)."""
    from compresskit.deploy.openvino_ir import openvino_model

    compiled = openvino_model(path, threads)
    if len(compiled.inputs) != len(inputs):
        raise ValueError(f"{Path(path).name} takes {len(compiled.inputs)} inputs, got {len(inputs)}")
    request = compiled.create_infer_request()
    feed = [np.ascontiguousarray(array) for array in inputs]
    return lambda: request.infer(feed, share_inputs=True)


def benchmark_models(models: Mapping[str, nn.Module | str | os.PathLike[str]], inputs: Sequence[torch.Tensor],
                     threads: int = 1, warmup: int = 3, rounds: int = 15,
                     runtimes: Sequence[str] = ("ort",)) -> LatencyReport:
    """Latency of torch models (eager) and exported files in each runtime, interleaved, on the same inputs.

    Args:
        models: Name -> an ``nn.Module`` (timed eagerly), an ``.onnx`` file (timed in every runtime of
            ``runtimes``) or an OpenVINO ``.xml`` IR (timed in OpenVINO).
        inputs: The inputs, e.g. ``(torch.randn(1, 3, 640, 640),)``.
        threads: ``torch.set_num_threads`` for the measurement (restored after), ORT intra-op threads and
            OpenVINO's ``INFERENCE_NUM_THREADS``.
        warmup: Untimed calls per model.
        rounds: Timed rounds.
        runtimes: Names from :data:`RUNTIMES`. With more than one, each file's rows are named
            ``"NAME [runtime]"``.

    Returns:
        A :class:`LatencyReport`; ``notes`` give each row's runtime, precision and node count.

    Raises:
        ValueError: ``threads < 1``, an unknown runtime, or a file a runtime cannot load.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    unknown = [runtime for runtime in runtimes if runtime not in RUNTIMES]
    if unknown or not runtimes:
        raise ValueError(f"unknown runtime {(unknown or [''])[0]!r}; valid: {list(RUNTIMES)}")
    arrays = [t.detach().cpu().numpy() for t in inputs]
    runners: dict[str, Callable[[], object]] = {}
    notes: dict[str, str] = {}
    for name, model in models.items():
        if isinstance(model, nn.Module):
            runners[name] = torch_runner(model, inputs)
            notes[name] = "torch eager"
            continue
        file_runtimes = ("openvino",) if Path(model).suffix == ".xml" else tuple(runtimes)
        for runtime in file_runtimes:
            row = name if len(runtimes) == 1 else f"{name} [{runtime}]"
            runners[row] = (ort_runner if runtime == "ort" else openvino_runner)(model, arrays, threads)
            notes[row] = _file_note(model, runtime)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        latencies = measure(runners, warmup, rounds)
    finally:
        torch.set_num_threads(previous)
    shape = tuple(inputs[0].shape)
    return LatencyReport(latencies, threads=threads, batch=shape[0] if shape else 1, input_shape=shape,
                         warmup=warmup, rounds=rounds, notes=notes)


def _file_note(path: str | os.PathLike[str], runtime: str) -> str:
    """``"onnxruntime INT8, 123 nodes"``: the runtime, the file's precision and (ONNX) its node count."""
    if Path(path).suffix == ".xml":
        from compresskit.deploy.openvino_ir import is_openvino_quantized

        return f"openvino {'INT8' if is_openvino_quantized(path) else 'FP32'} IR"
    from compresskit.deploy.runtime import is_quantized
    from compresskit.deploy.simplify import count_nodes

    precision = "INT8" if is_quantized(path) else "FP32"
    return f"{'onnxruntime' if runtime == 'ort' else 'openvino'} {precision}, {count_nodes(path)} nodes"
