"""Measurements a run reports (and benchmarks reuse): memory, latency, and one model's profile.

Caveats:
    Latency is the median of CPU forward passes in this process, indicative only on a shared
    machine; ``benchmarks/`` compares models interleaved in one call.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from compresskit.pruning.budget import count_macs, count_params
from compresskit.tasks.protocol import Task

__all__ = ["measure_latency", "peak_rss_mb", "profile"]


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


def profile(task: Task, model: nn.Module) -> dict[str, Any]:
    """Params, MACs, latency (and the thread count it used) and the task's metrics of ``model``."""
    inputs = task.example_inputs()
    return {
        "params": count_params(model),
        "macs": count_macs(model, inputs),
        "latency_ms": measure_latency(model, inputs),
        "latency_threads": torch.get_num_threads(),
        "metrics": task.evaluate(model),
    }
