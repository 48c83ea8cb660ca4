"""ONNX Runtime QDQ plumbing shared by :mod:`.quantize` and :mod:`.sensitivity`.

A calibration-data reader over a list of input tuples, ORT's ``quant_pre_process`` in a scratch working
directory, ``quantize_static`` in our one configuration (QDQ; UINT8 asymmetric activations; INT8
symmetric, per-channel weights), optionally reusing activation ranges from a calibration cache (so
many trial quantizations of one model calibrate once), and node-name globs.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CALIBRATION_METHODS", "calibration_method", "calibration_reader", "feed", "matching_nodes",
           "pre_process", "quantize_qdq", "working_directory"]


#: Calibration methods by name (``--method`` / ``quantize.method``).
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


def calibration_method(method: str) -> Any:
    """ORT's ``CalibrationMethod`` for a name of :data:`CALIBRATION_METHODS`.

    Raises:
        ValueError: Unknown name (the message lists the valid ones).
    """
    from onnxruntime.quantization import CalibrationMethod

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ValueError(f"unknown calibration method {method!r}; valid: {list(CALIBRATION_METHODS)}")
    return methods[method]


class _Reader:
    """``CalibrationDataReader`` over a sequence of input tuples (created lazily: ORT is a heavy import)."""

    def __init__(self, names: Sequence[str], samples: Iterable[Sequence[np.ndarray]]) -> None:
        self.names = list(names)
        self.samples: Iterator[Sequence[np.ndarray]] = iter(samples)

    def get_next(self) -> dict[str, np.ndarray] | None:
        sample = next(self.samples, None)
        return None if sample is None else feed(self.names, sample)


def feed(names: Sequence[str], sample: np.ndarray | Sequence[np.ndarray], what: str = "a calibration sample"
         ) -> dict[str, np.ndarray]:
    """Input name -> contiguous float32 array of one sample (an array for a single-input model, else a tuple).

    Raises:
        ValueError: The sample has another number of arrays than the model has inputs.
    """
    arrays = (sample,) if isinstance(sample, np.ndarray) else tuple(sample)
    if len(arrays) != len(names):
        raise ValueError(f"{what} has {len(arrays)} arrays for inputs {list(names)}")
    return {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in zip(names, arrays)}


def calibration_reader(names: Sequence[str], samples: Sequence[np.ndarray | Sequence[np.ndarray]]) -> _Reader:
    """A reader over ``samples`` that is also ORT's ``CalibrationDataReader`` (the base class ORT checks)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(_Reader, CalibrationDataReader):
        pass

    return Reader(names, samples)


def pre_process(model_path: Path, prepared: Path) -> Path:
    """ORT's ``quant_pre_process`` (shape inference + optimisation) of ``model_path`` into ``prepared``.

    Run it with a scratch working directory: when its symbolic shape inference fails it writes stray
    external-data files into the working directory; it is then retried without symbolic shapes.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(model_path), str(prepared))
    except Exception:  # noqa: BLE001 - symbolic shape inference cannot follow every graph
        quant_pre_process(str(model_path), str(prepared), skip_symbolic_shape=True)
    _at_least_opset(prepared, QDQ_MIN_OPSET)
    return prepared


#: Per-channel QDQ needs DequantizeLinear's ``axis`` attribute, which ONNX has from opset 13 on.
QDQ_MIN_OPSET = 13


def _at_least_opset(path: Path, opset: int) -> None:
    """Convert the ONNX file at ``path`` in place to ``opset`` when its default domain is older (a released
    opset-11 file such as YuNet's would otherwise come out of per-channel quantization invalid)."""
    import onnx
    from onnx import version_converter

    model = onnx.load(str(path))
    current = next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), opset)
    if current < opset:
        onnx.save(version_converter.convert_version(model, opset), str(path))


def quantize_qdq(prepared: Path, out_path: Path, reader: Any, settings: dict[str, Any],
                 cache: Path | None = None) -> None:
    """``quantize_static`` in QDQ format: UINT8 asymmetric activations, INT8 symmetric weights.

    With ``cache``, activation ranges are read from that file when it exists (``reader`` may then be
    ``None``) and written there when it does not.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    extra = {"calibration_cache_path": str(cache)} if cache is not None else {}
    quantize_static(
        str(prepared), str(out_path), reader,
        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        extra_options={"CalibTensorRangeSymmetric": False, "WeightSymmetric": True}, **settings, **extra,
    )


@contextlib.contextmanager
def working_directory(path: str | os.PathLike[str]) -> Iterator[None]:
    """Run the body with ``path`` as the working directory (restored after)."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def matching_nodes(path: Path, patterns: Sequence[str]) -> list[str]:
    """Names of the nodes of ``path`` matched by any glob; a glob matching nothing is an error."""
    import onnx

    names = [node.name for node in onnx.load(str(path), load_external_data=False).graph.node]
    matched: set[str] = set()
    for pattern in patterns:
        found = fnmatch.filter(names, pattern)
        if not found:
            raise ValueError(f"exclude pattern {pattern!r} matches no node (node names look like {names[:2]!r})")
        matched.update(found)
    return sorted(matched)
