"""INT8 post-training static quantization of ONNX models with ONNX Runtime.

:func:`quantize_onnx` wraps ``onnxruntime.quantization.quantize_static`` in the configuration OpenCV
Zoo uses for its INT8 models and ONNX Runtime recommends for CPUs (ORT docs, "Quantize ONNX models"):
QDQ format (``QuantizeLinear``/``DequantizeLinear`` pairs that ORT fuses into integer kernels),
per-channel symmetric INT8 weights, UINT8 activations with ranges from calibration data (min/max,
entropy (KL) or percentile). The FP32 file is first run through ORT's ``quant_pre_process`` (shape
inference + graph optimisation), as the ORT docs advise.

Calibration inputs come from images (:func:`calibration_images`, preprocessed with the file's own
:class:`~compresskit.deploy.export.Preprocessing`) or from a task's loader (the recipe phase).

Caveats:
    * INT8 changes the outputs: accuracy must be measured (the recipe phase and
      ``benchmarks/RESULTS.md`` report AP before and after), never assumed.
    * The speed-up depends on the CPU's integer instructions (AVX2 / AVX-512 VNNI); on CPUs without
      them INT8 can be slower than FP32.
    * Calibration images are resized to the file's nominal input size (aspect ratio not kept); the
      ranges it finds are those of that size.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from compresskit.deploy._qdq import (
    CALIBRATION_METHODS,
    calibration_method,
    calibration_reader,
    matching_nodes,
    pre_process,
    quantize_qdq,
    working_directory,
)
from compresskit.deploy.export import Preprocessing, read_metadata, write_metadata
from compresskit.utils.atomic import atomic_path, writable_path
from compresskit.utils.images import decode_reduction

__all__ = ["CALIBRATION_METHODS", "IMAGE_SUFFIXES", "calibration_images", "preprocess_image", "quantize_onnx"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def preprocess_image(image_bgr: np.ndarray, preprocessing: Preprocessing,
                     size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8[H, W, 3] BGR image -> float32[1, 3, h, w] model input (resized to ``size`` = ``(h, w)`` if given)."""
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 BGR image, got shape {image_bgr.shape}")
    image = image_bgr
    if size is not None and tuple(image.shape[:2]) != tuple(size):
        image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    if preprocessing.channel_order == "RGB":
        image = image[:, :, ::-1]
    array = (np.float32(image) - np.float32(preprocessing.mean)) * np.float32(preprocessing.scale)
    return np.ascontiguousarray(array.transpose(2, 0, 1)[None])  # (H, W, 3) -> (1, 3, H, W)


def calibration_images(folder: str | os.PathLike[str], preprocessing: Preprocessing, count: int = 32,
                       size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """The first ``count`` images under ``folder`` (sorted, recursive) as model inputs.

    Args:
        folder: A folder of ``.jpg``/``.png``/``.bmp`` images.
        preprocessing: Channel order, mean and scale (e.g. from the ONNX file's metadata).
        count: How many images (``>= 1``).
        size: ``(height, width)``; default ``preprocessing.input_size`` (else each image's own size).

    Raises:
        ValueError: No images, ``count < 1``, or an unreadable image (named), or one over
            :data:`~compresskit.utils.images.DEFAULT_MAX_SIZE` px that cannot be decoded reduced.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    folder = Path(folder)
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:count]
    if not paths:
        raise ValueError(f"{folder}: no calibration images ({', '.join(IMAGE_SUFFIXES)}) found")
    size = size or preprocessing.input_size
    arrays = []
    for path in paths:
        _, _, factor = decode_reduction(path)  # from the header: a huge JPEG decodes reduced, others are refused
        flag = cv2.IMREAD_COLOR if factor == 1 else getattr(cv2, f"IMREAD_REDUCED_COLOR_{factor}")
        image = cv2.imread(str(path), flag)
        if image is None:
            raise ValueError(f"{path}: cannot read image (corrupt or not an image); remove or replace it")
        arrays.append(preprocess_image(image, preprocessing, size))
    return arrays


def quantize_onnx(
    model_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    calibration: Iterable[np.ndarray | Sequence[np.ndarray]],
    method: str = "minmax",
    per_channel: bool = True,
    exclude: Sequence[str] = (),
) -> Path:
    """Quantize an FP32 ONNX file to INT8 (QDQ) with static ranges from ``calibration``.

    Weights: INT8, symmetric, per output channel (``per_channel``). Activations: UINT8 with ranges
    from running ``calibration`` through the model. The INT8 file keeps the FP32 file's
    ``metadata_props`` (preprocessing included) plus ``quantization.*`` entries. Written atomically.

    Args:
        model_path: The FP32 ``.onnx`` file (dynamic axes are kept).
        out_path: The INT8 ``.onnx`` file to write (its folder must exist).
        calibration: Model inputs: arrays (single-input models) or tuples of arrays, e.g. from
            :func:`calibration_images`.
        method: One of :data:`CALIBRATION_METHODS`.
        per_channel: Per-output-channel weight scales (else per tensor).
        exclude: ``fnmatch`` globs over ONNX node names (the TorchScript exporter names nodes after
            module paths, e.g. ``"/body/stage1/*"``) whose nodes stay in FP32 (sensitive layers).

    Returns:
        The written path.

    Raises:
        ValueError: Unknown method, missing input file or folder, no calibration sample, or an
            ``exclude`` glob that matches no node.

    Example:
        >>> meta = Preprocessing.from_metadata(read_metadata("model.onnx"))  # doctest: +SKIP
        >>> quantize_onnx("model.onnx", "model.int8.onnx", calibration_images("images/", meta))  # doctest: +SKIP
    """
    import onnx

    calibrate_method = calibration_method(method)
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ValueError(f"ONNX file {str(model_path)!r} does not exist")
    out_path = writable_path(out_path)
    metadata = read_metadata(model_path)
    samples = list(calibration)
    if not samples:
        raise ValueError("no calibration samples: give at least one input")
    input_names = [i.name for i in onnx.load(str(model_path), load_external_data=False).graph.input]
    model_path = model_path.resolve()  # the pre-processing below runs in a scratch working directory
    with tempfile.TemporaryDirectory(prefix="compresskit_quantize_") as scratch, working_directory(scratch):
        prepared = pre_process(model_path, Path(scratch) / "prepared.onnx")
        settings = {"calibrate_method": calibrate_method, "per_channel": per_channel,
                    "nodes_to_exclude": matching_nodes(prepared, exclude)}
        with atomic_path(out_path) as temporary:
            quantize_qdq(prepared, temporary, calibration_reader(input_names, samples), settings)
            write_metadata(temporary, {**metadata, **_quantization_metadata(method, len(samples), per_channel,
                                                                             exclude)})
            onnx.checker.check_model(str(temporary))
    return out_path


def _quantization_metadata(method: str, samples: int, per_channel: bool, exclude: Sequence[str]) -> dict[str, str]:
    """The ``quantization.*`` entries written into the INT8 file."""
    return {"quantization.format": "QDQ",
            "quantization.weights": "int8 per-channel" if per_channel else "int8",
            "quantization.activations": "uint8",
            "quantization.calibration": f"{method}, {samples} samples",
            "quantization.fp32_nodes": ",".join(exclude)}
