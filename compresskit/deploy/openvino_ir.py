"""OpenVINO: IR files converted from a checked ONNX file, their parity check, and CPU sessions.

:func:`convert_onnx` turns an ONNX file into OpenVINO IR (``.xml`` graph + ``.bin`` weights beside it)
with ``openvino.convert_model`` + ``openvino.save_model``; both files land whole (written in a scratch
folder beside, then moved, weights first). The ONNX file's ``metadata_props`` travel in the IR's
runtime info under ``compresskit`` (:func:`read_openvino_metadata`). :func:`check_openvino` runs an IR
(or an ONNX file: OpenVINO reads both) with the CPU plugin in FP32 and compares every output with
torch, as :func:`compresskit.deploy.export.check_onnx` does for ONNX Runtime. :func:`openvino_model`
compiles a file for the CPU with an explicit thread count: the one place compresskit sets OpenVINO's
threading options. INT8: OpenVINO runs ONNX Runtime's QDQ files directly (its low-precision
transformations turn the ``QuantizeLinear``/``DequantizeLinear`` pairs into integer kernels).

Caveats:
    * ``openvino.save_model`` compresses FP32 weights to FP16 by default; we pass
      ``compress_to_fp16=False`` so an FP32 IR holds the exported weights bit for bit.
    * Parity runs with ``INFERENCE_PRECISION_HINT=f32``: on CPUs with bf16 units OpenVINO would
      otherwise pick bf16 and differ from torch by more than the ONNX tolerance.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from compresskit.deploy._parity import Inputs, as_tuple, max_difference, torch_outputs
from compresskit.utils.optional import require

__all__ = ["check_openvino", "convert_onnx", "is_openvino_quantized", "openvino_model", "read_openvino_metadata"]

#: Runtime-info section holding the ONNX file's metadata in an IR.
RT_INFO_SECTION = "compresskit"
#: OpenVINO operations that mark a quantized graph.
QUANTIZED_OPS = frozenset({"FakeQuantize", "FakeConvert"})


def convert_onnx(onnx_path: str | os.PathLike[str], xml_path: str | os.PathLike[str],
                 metadata: Mapping[str, str] | None = None) -> Path:
    """Convert an ONNX file to OpenVINO IR at ``xml_path`` (weights in ``xml_path`` with ``.bin``).

    Args:
        onnx_path: A checked ``.onnx`` file (FP32 or QDQ INT8; dynamic axes stay dynamic).
        xml_path: The ``.xml`` file to write; its folder must exist.
        metadata: Entries stored in the IR's runtime info (default: none).

    Returns:
        The written ``.xml`` path.

    Raises:
        ValueError: ``xml_path`` does not end in ``.xml`` or OpenVINO cannot convert the file.
    """
    ov = require("openvino")
    xml_path = Path(xml_path)
    if xml_path.suffix != ".xml":
        raise ValueError(f"an OpenVINO IR path ends in .xml, got {str(xml_path)!r}")
    try:
        converted = ov.convert_model(str(onnx_path))
    except Exception as error:  # noqa: BLE001 - OpenVINO raises its own untyped errors
        raise ValueError(f"{onnx_path}: OpenVINO cannot convert it ({str(error).splitlines()[0]})") from None
    for key, value in (metadata or {}).items():
        converted.set_rt_info(str(value), [RT_INFO_SECTION, str(key)])
    with tempfile.TemporaryDirectory(prefix=f".{xml_path.stem}.", dir=xml_path.parent) as scratch:
        staged = Path(scratch) / xml_path.name
        ov.save_model(converted, str(staged), compress_to_fp16=False)
        os.replace(staged.with_suffix(".bin"), xml_path.with_suffix(".bin"))
        os.replace(staged, xml_path)
    return xml_path


def read_openvino_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``compresskit`` runtime-info entries of an IR (``{}`` when it has none)."""
    ov = require("openvino")
    model = ov.Core().read_model(str(path))
    if not model.has_rt_info([RT_INFO_SECTION]):
        return {}
    section = model.get_rt_info()[RT_INFO_SECTION]
    return {str(key): value.astype(str) for key, value in section.items()}


def is_openvino_quantized(path: str | os.PathLike[str]) -> bool:
    """Whether an IR (or ONNX file, read by OpenVINO) holds quantization operations."""
    ov = require("openvino")
    model = ov.Core().read_model(str(path))
    return any(op.get_type_name() in QUANTIZED_OPS for op in model.get_ops())


def openvino_model(path: str | os.PathLike[str], threads: int = 1, precision: str | None = None) -> Any:
    """A CPU ``CompiledModel`` of an IR or ONNX file: ``threads`` inference threads, one stream.

    Args:
        path: ``.xml`` IR or ``.onnx`` file.
        threads: ``INFERENCE_NUM_THREADS``.
        precision: ``INFERENCE_PRECISION_HINT`` (``"f32"`` for parity; ``None``: OpenVINO's choice).

    Raises:
        ValueError: ``path`` does not exist, ``threads < 1``, or OpenVINO cannot compile it.
    """
    ov = require("openvino")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model file {str(path)!r} does not exist")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = precision
    try:
        return ov.Core().compile_model(str(path), "CPU", config)
    except Exception as error:  # noqa: BLE001 - OpenVINO raises its own untyped errors
        raise ValueError(f"{path}: OpenVINO cannot compile it ({str(error).splitlines()[0]})") from None


def check_openvino(path: str | os.PathLike[str], model: Any, example_inputs: Inputs, atol: float = 1e-4) -> float:
    """Run an IR (or ONNX file) with OpenVINO's CPU plugin in FP32 and compare every output with ``model``.

    Outputs are matched by position, as :func:`compresskit.deploy.export.check_onnx` matches them.

    Returns:
        ``max |openvino - torch|`` over all outputs.

    Raises:
        ValueError: Missing file, a different number of inputs or outputs, a different shape, or a
            difference above ``atol`` (the message names the output).
    """
    inputs = as_tuple(example_inputs)
    compiled = openvino_model(path, threads=1, precision="f32")
    if len(compiled.inputs) != len(inputs):
        raise ValueError(f"{str(path)!r} has {len(compiled.inputs)} inputs, got {len(inputs)} example inputs")
    results = compiled([t.detach().cpu().numpy() for t in inputs])
    actual = [np.asarray(results[output]) for output in compiled.outputs]
    expected = torch_outputs(model, inputs)
    if len(actual) != len(expected):
        raise ValueError(f"{str(path)!r} has {len(actual)} outputs, the model returns {len(expected)}")
    return max((max_difference(name, array, tensor.detach().cpu().numpy(), atol)
                for array, (name, tensor) in zip(actual, expected)), default=0.0)


def remove_ir(xml_path: str | os.PathLike[str]) -> None:
    """Delete an IR's ``.xml`` and ``.bin`` (missing ones are ignored)."""
    xml_path = Path(xml_path)
    for file in (xml_path, xml_path.with_suffix(".bin")):
        file.unlink(missing_ok=True)

