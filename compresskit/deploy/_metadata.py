"""Deployment metadata carried inside exported files, so that their users need no flags.

:class:`Preprocessing` says how an 8-bit image becomes the model input (channel order, mean, scale,
nominal input size); it round-trips through string entries (:meth:`Preprocessing.to_metadata`,
:meth:`Preprocessing.from_metadata`). ONNX files keep such entries in ``metadata_props``
(:func:`write_metadata`); TorchScript archives in an extra file named :data:`TORCHSCRIPT_METADATA`.
:func:`read_metadata` reads either; :func:`model_metadata` is what a model says about itself (its
``onnx_metadata`` attribute), which every export writes. Quantization, detection and the browser
page read these entries instead of asking for flags.

Contract: keys and values are strings (:class:`Preprocessing` values are JSON-encoded); a file that
cannot be read is a one-line ``ValueError``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from torch import nn

__all__ = ["PREPROCESSING_KEYS", "TORCHSCRIPT_METADATA", "Preprocessing", "model_metadata", "read_metadata",
           "write_metadata"]

#: Name of the extra file holding the metadata inside a TorchScript archive.
TORCHSCRIPT_METADATA = "compresskit_metadata.json"

#: ``metadata_props`` keys of :class:`Preprocessing` (read by ``quantize``, ``detect`` and ``web/``).
PREPROCESSING_KEYS = ("preprocessing.channel_order", "preprocessing.mean", "preprocessing.scale",
                      "preprocessing.input_size")


@dataclass(frozen=True)
class Preprocessing:
    """How an 8-bit image becomes the model input: ``input = (pixel - mean) * scale``, CHW.

    Attributes:
        channel_order: ``"BGR"`` (as ``cv2.imread``) or ``"RGB"``.
        mean: Per-channel mean, in ``channel_order``.
        scale: Multiplier applied after the mean (``1/255`` for ``[0, 1]`` inputs, ``1`` for the
            RetinaFace family).
        input_size: Nominal ``(height, width)``, or ``None`` when any size will do.

    Example:
        >>> bgr = Preprocessing("BGR", (104.0, 117.0, 123.0), 1.0, (640, 640))
        >>> Preprocessing.from_metadata(bgr.to_metadata()) == bgr
        True
    """

    channel_order: str = "RGB"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0
    input_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.channel_order not in ("BGR", "RGB"):
            raise ValueError(f"channel_order must be 'BGR' or 'RGB', got {self.channel_order!r}")
        if len(self.mean) != 3:
            raise ValueError(f"mean must have 3 values (one per channel), got {list(self.mean)!r}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be a finite number > 0, got {self.scale!r}")
        if self.input_size is not None and (len(self.input_size) != 2 or min(self.input_size) < 1):
            raise ValueError(f"input_size must be (height, width) >= 1, got {self.input_size!r}")

    def to_metadata(self) -> dict[str, str]:
        """The ``metadata_props`` entries (JSON-encoded values)."""
        values = (self.channel_order, list(self.mean), self.scale,
                  None if self.input_size is None else list(self.input_size))
        return {key: json.dumps(value) for key, value in zip(PREPROCESSING_KEYS, values)}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> Preprocessing | None:
        """Read it back from ``metadata_props``; ``None`` when the file carries none.

        Raises:
            ValueError: Some but not all keys are present, or a value is malformed.
        """
        present = [key for key in PREPROCESSING_KEYS if key in metadata]
        if not present:
            return None
        if len(present) != len(PREPROCESSING_KEYS):
            missing = sorted(set(PREPROCESSING_KEYS) - set(present))
            raise ValueError(f"incomplete preprocessing metadata: missing {missing}")
        try:
            order, mean, scale, size = (json.loads(metadata[key]) for key in PREPROCESSING_KEYS)
            return cls(str(order), tuple(float(v) for v in mean), float(scale),  # type: ignore[arg-type]
                       None if size is None else (int(size[0]), int(size[1])))
        except (TypeError, ValueError, IndexError) as error:
            raise ValueError(f"malformed preprocessing metadata {dict(metadata)!r}: {error}") from None


def write_metadata(path: str | os.PathLike[str], metadata: Mapping[str, str]) -> None:
    """Set ``metadata_props`` entries of an ONNX file in place (other entries are kept)."""
    model = onnx.load(str(path))
    props = {entry.key: entry.value for entry in model.metadata_props}
    props.update({str(k): str(v) for k, v in metadata.items()})
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(path))


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """``metadata_props`` of an ONNX file, or the metadata stored with a TorchScript file.

    Raises:
        ValueError: The file does not exist or is neither ONNX nor TorchScript.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model file {str(path)!r} does not exist")
    if path.suffix == ".onnx":
        from google.protobuf.message import DecodeError  # protobuf comes with onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except DecodeError as error:
            raise ValueError(f"{str(path)!r} is not a readable ONNX file ({error}); "
                             "export one with `compresskit export`") from None
        return {entry.key: entry.value for entry in model.metadata_props}
    extra = {TORCHSCRIPT_METADATA: ""}
    try:
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except RuntimeError as error:
        raise ValueError(f"{str(path)!r} is neither an .onnx file nor a TorchScript archive "
                         f"({str(error).splitlines()[0]})") from None
    return json.loads(extra[TORCHSCRIPT_METADATA] or "{}")


def model_metadata(model: nn.Module) -> dict[str, str]:
    """What a model says about itself for deployment: its ``onnx_metadata`` attribute (``{}`` if none).

    A model builder may set ``model.onnx_metadata = {...}`` (string keys and values, e.g.
    ``Preprocessing(...).to_metadata()``); :func:`export_model` writes it into every export.
    """
    metadata = getattr(model, "onnx_metadata", None) or {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"{type(model).__name__}.onnx_metadata must be a dict of str, got "
                        f"{type(metadata).__name__}")
    return {str(k): str(v) for k, v in metadata.items()}
