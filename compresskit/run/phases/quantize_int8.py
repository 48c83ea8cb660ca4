"""Phase ``quantize``: INT8 static quantization of the final model -> ``model.fp32.onnx``, ``model.int8.onnx``.

Input: ``final.pt``. Outputs: the final model in ONNX with dynamic axes (checked at up to three shapes) and
its INT8 (QDQ) quantization. Calibration: the first ``quantize.calibration_samples`` inputs of the
task's training loader (batch 1). Summary: both models' task metrics and ONNX Runtime latency
(1 thread, median / p90 of interleaved rounds, :func:`compresskit.deploy.benchmark.benchmark_models`).
Skipped unless ``quantize.enabled``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from compresskit.config import QuantizeConfig
from compresskit.run.context import load_run_model
from compresskit.run.phases import export_files as export
from compresskit.run.workspace import Workspace
from compresskit.tasks.protocol import Task

__all__ = ["Config", "run"]


@dataclass(frozen=True)
class Config:
    """What the quantize phase reads.

    Attributes:
        quantize: The recipe's ``quantize`` section.
        export: The export settings (inputs, opset, tolerance) the FP32 model is exported with.
    """

    quantize: QuantizeConfig
    export: export.Config


def run(config: Config, workspace: Workspace, task: Task) -> dict[str, Any]:
    """Export and quantize ``final.pt``; returns paths, sizes, metrics, latency and the INT8 speed-up."""
    settings = config.quantize
    if not settings.enabled:
        return {"skipped": "quantize.enabled is false"}
    from compresskit.deploy.export import export_model
    from compresskit.deploy.quantize import quantize_onnx

    model = load_run_model(workspace, task, config.export.student, "final.pt").eval()
    exported = export_model(model, export.export_inputs(config.export, task), workspace.path("model.fp32.onnx"),
                            dynamic=True, atol=config.export.atol, opset=config.export.opset)
    samples = []
    for batch in task.train_loader(1):
        samples.append(tuple(t.detach().cpu().numpy() for t in task.inputs(batch)))
        if len(samples) >= settings.calibration_samples:
            break
    int8 = quantize_onnx(exported.path, workspace.path("model.int8.onnx"), samples, method=settings.method,
                         per_channel=settings.per_channel, exclude=settings.exclude)
    compared = _compare(settings, task, {"fp32": exported.path, "int8": int8})
    latency_settings = compared.pop("latency_settings")
    return {**compared, "calibration": f"{settings.method}, {len(samples)} samples",
            "weights": "per-channel" if settings.per_channel else "per-tensor",
            "dynamic_input_axes": sorted(exported.dynamic_axes.get("input", {})),
            "latency_settings": latency_settings}


def _compare(settings: QuantizeConfig, task: Task, paths: dict[str, Any]) -> dict[str, Any]:
    """Size, task metrics and ONNX Runtime latency of each model in ``paths``, and the INT8 speed-up."""
    from compresskit.deploy.benchmark import benchmark_models
    from compresskit.deploy.runtime import OrtModule

    latency = benchmark_models({f"onnx_{kind}": path for kind, path in paths.items()}, task.example_inputs(),
                               threads=1, warmup=2, rounds=settings.rounds)
    summary: dict[str, Any] = {
        kind: {"path": path.name, "bytes": os.path.getsize(path), "metrics": task.evaluate(OrtModule(path)),
               "latency_ms": latency.latencies[f"onnx_{kind}"].median_ms,
               "latency_p90_ms": latency.latencies[f"onnx_{kind}"].p90_ms}
        for kind, path in paths.items()}
    return {**summary, "speedup": 1.0 / latency.ratios("onnx_fp32")["onnx_int8"],
            "latency_settings": {"threads": latency.threads, "input_shape": list(latency.input_shape),
                                 "rounds": latency.rounds}}
