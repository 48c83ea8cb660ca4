"""Measurements a run reports (and benchmarks reuse): memory, latency, and one model's profile.

Caveats:
    Latency is the median of CPU forward passes in this process, the models of one call interleaved in the
    same rounds, so their *ratios* hold on a shared machine while absolute times move with its load.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from compresskit.pruning.budget import count_macs, count_params
from compresskit.tasks.protocol import Task

__all__ = ["interleaved_latency", "measure_latency", "onnxruntime_latency", "peak_rss_mb", "profile"]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``VmHWM``; ``ru_maxrss`` elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (2**20 if sys.platform == "darwin" else 1024), 1)


def measure_latency(model: nn.Module, example_inputs: tuple[torch.Tensor, ...], repeats: int = 20) -> float:
    """Median of ``repeats`` CPU forward passes after 3 warm-up calls, in milliseconds (batch of the
    example inputs, torch's current thread count), measured by :func:`compresskit.deploy.benchmark.measure`.

    Indicative only on a shared machine; ``benchmarks/`` compares models interleaved in one call.
    """
    from compresskit.deploy.benchmark import measure, torch_runner

    was_training = model.training
    try:
        return measure({"model": torch_runner(model, example_inputs)}, warmup=3, rounds=repeats)["model"].median_ms
    finally:
        model.train(was_training)


def interleaved_latency(models: Mapping[str, nn.Module], inputs: tuple[torch.Tensor, ...],
                        rounds: int = 20) -> dict[str, float]:
    """Median eager CPU latency (ms) of each model, all timed in the same rounds (rotated order), so load on a
    shared machine hits every model alike (:func:`compresskit.deploy.benchmark.measure`)."""
    from compresskit.deploy.benchmark import measure, torch_runner

    modes = {name: model.training for name, model in models.items()}
    try:
        stats = measure({name: torch_runner(model, inputs) for name, model in models.items()}, warmup=3, rounds=rounds)
        return {name: stats[name].median_ms for name in models}
    finally:
        for name, model in models.items():
            model.train(modes[name])


def onnxruntime_latency(models: Mapping[str, nn.Module], inputs: tuple[torch.Tensor, ...], threads: int = 1,
                        rounds: int = 20) -> dict[str, Any]:
    """Each model exported to ONNX and timed with ONNX Runtime (``threads`` intra-op threads), all in the same
    rounds: ``{"input_shapes", "threads", "rounds", "median_ms": {name: ms}, "ratio": {name: paired median ratio
    to the first model}}``; ``{"skipped": reason}`` when a model does not export or ONNX Runtime is missing."""
    import tempfile
    from pathlib import Path

    from compresskit.deploy.benchmark import measure, ort_runner, paired_ratio
    from compresskit.deploy.export import export_onnx

    arrays = [tensor.numpy() for tensor in inputs]
    try:
        with tempfile.TemporaryDirectory(prefix="compresskit-latency-") as folder:
            runners = {name: ort_runner(export_onnx(model.eval(), inputs, Path(folder) / f"{name}.onnx"), arrays,
                                        threads) for name, model in models.items()}
            stats = measure(runners, warmup=3, rounds=rounds)
    except Exception as error:  # noqa: BLE001 - a report line, never a failed run
        return {"skipped": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}
    first = next(iter(models))
    return {"input_shapes": [list(t.shape) for t in inputs], "threads": threads, "rounds": rounds,
            "median_ms": {name: round(stats[name].median_ms, 3) for name in models},
            "ratio": {name: round(paired_ratio(stats[name].samples_ms, stats[first].samples_ms), 4) for name in models}}


def profile(task: Task, models: Mapping[str, nn.Module], metrics: Callable[[nn.Module], dict[str, Any]]
            ) -> dict[str, dict[str, Any]]:
    """Params, MACs, interleaved latency (and the thread count it used) and ``metrics(model)`` of each model."""
    inputs = task.example_inputs()
    latencies = interleaved_latency(models, inputs)
    return {name: {"params": count_params(model), "macs": count_macs(model, inputs), "latency_ms": latencies[name],
                   "latency_threads": torch.get_num_threads(), "metrics": metrics(model)}
            for name, model in models.items()}
