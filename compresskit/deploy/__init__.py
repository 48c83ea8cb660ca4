"""Deployment: export, INT8 quantization, runtimes and latency.

* :mod:`.export` -- :func:`export_model` (ONNX / OpenVINO IR / TorchScript, dynamic axes, metadata, parity checks);
* :mod:`.simplify` -- onnxslim simplification, kept only if the simplified file passes the parity checks;
* :mod:`.openvino_ir` -- ONNX -> OpenVINO IR, its parity check, OpenVINO CPU sessions;
* :mod:`.quantize` -- static INT8 quantization with ONNX Runtime on calibration images;
* :mod:`.sensitivity` -- which nodes to keep in FP32, measured (``quantize --auto-exclude``);
* :mod:`.runtime` -- ONNX Runtime sessions; :mod:`.benchmark` -- interleaved latency measurement (ORT, OpenVINO);
* :mod:`.latency` -- a latency model of a pruned model's channel counts, fit on direct measurements.
"""

from compresskit.utils.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "ExportResult": "export", "Preprocessing": "export", "check_onnx": "export", "check_torchscript": "export",
    "export_model": "export", "export_onnx": "export", "model_metadata": "export", "read_metadata": "export",
    "second_shape": "export", "uneven_shape": "export", "write_metadata": "export",
    "CALIBRATION_METHODS": "quantize", "IMAGE_SUFFIXES": "quantize", "calibration_images": "quantize",
    "preprocess_image": "quantize", "quantize_onnx": "quantize",
    "Latency": "benchmark", "LatencyReport": "benchmark", "benchmark_models": "benchmark", "measure": "benchmark",
    "ort_runner": "benchmark", "paired_ratio": "benchmark", "summarise": "benchmark", "torch_runner": "benchmark",
    "RUNTIMES": "benchmark", "openvino_runner": "benchmark",
    "SimplifyResult": "simplify", "SimplifyWarning": "simplify", "count_nodes": "simplify", "simplify_onnx": "simplify",
    "check_openvino": "openvino_ir", "convert_onnx": "openvino_ir", "openvino_model": "openvino_ir",
    "read_openvino_metadata": "openvino_ir",
    "AutoExcludeResult": "sensitivity", "NodeSensitivity": "sensitivity", "auto_exclude": "sensitivity",
    "output_error": "sensitivity",
    "OrtModule": "runtime", "is_quantized": "runtime", "ort_session": "runtime",
    "CACHE_FORMAT": "latency", "LatencyBudget": "latency", "LatencyKey": "latency", "LatencyModel": "latency",
    "LatencySettings": "latency", "architecture_fingerprint": "latency", "default_cache_dir": "latency",
    "latency_budget": "latency",
})
