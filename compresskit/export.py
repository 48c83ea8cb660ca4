"""ONNX / TorchScript export of (pruned) models, checked against PyTorch.

:func:`export_onnx` writes a checked ``.onnx`` file atomically; :func:`check_onnx`
runs it with ONNX Runtime on the CPU and compares every output against the
PyTorch model, returning the largest absolute difference. :func:`export_model` is
what the CLI and the pipeline call: ONNX or a TorchScript trace, optionally with
dynamic batch and height/width axes (checked at the example shape and at
:func:`second_shape`), with the model's deployment metadata
(:class:`Preprocessing`: channel order, mean, scale, nominal input size; plus any
``onnx_metadata`` the model carries) in the file, so that quantization, detection
and the browser page read it instead of asking for flags.

Exporter choice: torch 2.9+ defaults ``torch.onnx.export`` to the
``torch.export``-based ("dynamo") exporter, which needs the ``onnxscript``
package; it is not a dependency of compresskit (and is absent in our
environment). We therefore call the TorchScript-based exporter explicitly
(``dynamo=False``). It still works in torch 2.13, handles every model in our
test zoo (residuals, concat, grouped convs, channel shuffle, transposed convs,
gating) and takes ``dynamic_axes`` directly. Its deprecation warnings are
silenced here.

Caveats:
    * The TorchScript exporter is deprecated upstream; when it is removed this
      module must move to the dynamo exporter (and add ``onnxscript``).
    * Tracing records one path: data-dependent Python control flow is frozen at
      the example input. Shape arithmetic done in Python (e.g. padding computed
      from ``int(x.shape[-1])``) is frozen too; :func:`export_model` checks a
      second shape to catch it, but only at that shape.
    * Models over 2 GiB (ONNX external data) are not supported by the atomic
      write, which moves a single file.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from ._atomic import atomic_path

__all__ = [
    "ExportResult",
    "Preprocessing",
    "check_onnx",
    "check_torchscript",
    "export_model",
    "export_onnx",
    "model_metadata",
    "read_metadata",
    "second_shape",
    "write_metadata",
]

Inputs = Tensor | Sequence[Tensor]


def _as_tuple(example_inputs: Inputs) -> tuple[Tensor, ...]:
    if isinstance(example_inputs, Tensor):
        return (example_inputs,)
    inputs = tuple(example_inputs)
    if not inputs or not all(isinstance(t, Tensor) for t in inputs):
        raise ValueError(
            "example_inputs must be a Tensor or a non-empty sequence of Tensors, got "
            f"{[type(t).__name__ for t in inputs]!r}"
        )
    return inputs


def _output_name(key: Any) -> str:
    """A dict output's key as an ONNX output name: kept when it starts with a letter or ``_``
    (``"logits"``); otherwise prefixed, so ``{"0": y}`` exports as ``output_0`` (the exporter
    rejects names that are numbers, which it uses for its own values)."""
    name = str(key)
    return name if name[:1].isalpha() or name[:1] == "_" else f"output_{name}"


def _flatten_outputs(output: Any, prefix: str = "output") -> list[tuple[str, Tensor]]:
    """Flatten a tensor / tuple / list / dict output into ``(name, tensor)`` pairs.

    Order matches the tracer's flattening: sequences in order, dicts in insertion order.
    """
    if isinstance(output, Tensor):
        return [(prefix, output)]
    if isinstance(output, Mapping):
        return [
            pair
            for key, value in output.items()
            for pair in _flatten_outputs(value, _output_name(key) if prefix == "output" else f"{prefix}.{key}")
        ]
    if isinstance(output, (tuple, list)):
        return [
            pair
            for index, value in enumerate(output)
            for pair in _flatten_outputs(value, f"{prefix}_{index}")
        ]
    raise ValueError(
        f"model outputs must be Tensors, tuples/lists or dicts of them; got {type(output).__name__}"
    )


def _run_torch(model: nn.Module, inputs: tuple[Tensor, ...]) -> list[tuple[str, Tensor]]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return _flatten_outputs(model(*inputs))
    finally:
        model.train(was_training)


def export_onnx(
    model: nn.Module,
    example_inputs: Inputs,
    path: str | os.PathLike[str],
    input_names: Sequence[str] = ("input",),
    output_names: Sequence[str] | None = None,
    dynamic_axes: Mapping[str, Mapping[int, str] | Sequence[int]] | None = None,
    opset: int = 17,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Export ``model`` (in eval mode) to ONNX, write atomically, and check the graph.

    The model is traced with ``example_inputs`` by the TorchScript-based
    exporter, written to a temporary file next to ``path``, validated with
    ``onnx.checker.check_model``, and moved into place with ``os.replace`` so
    that ``path`` never holds a partial file. The model's train/eval mode is
    restored afterwards.

    Args:
        model: The model to export.
        example_inputs: One tensor, or a sequence of tensors passed positionally.
        path: Destination ``.onnx`` file; its directory must exist.
        input_names: One name per input.
        output_names: One name per flattened output. Defaults to ``"output"``
            for a single tensor, ``"output_0", "output_1", ...`` for a tuple or
            list, and the keys for a dict.
        dynamic_axes: As ``torch.onnx.export``, e.g. ``{"input": {0: "batch"}}``.
        opset: ONNX opset version.
        metadata: Written into the file's ``metadata_props`` (e.g. :meth:`Preprocessing.to_metadata`).

    Returns:
        The resolved path of the written file.

    Raises:
        ValueError: If the directory of ``path`` does not exist, the number of
            names does not match the inputs/outputs, or outputs are not tensors
            (or tuples/lists/dicts of tensors).

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> x = torch.randn(1, 3, 8, 8)
        >>> onnx_path = export_onnx(model, x, tmp_dir / "model.onnx")  # doctest: +SKIP
        >>> check_onnx(onnx_path, model, x) <= 1e-4  # doctest: +SKIP
        True
    """
    path = Path(path).expanduser().resolve()
    if not path.parent.is_dir():
        raise ValueError(f"cannot write {str(path)!r}: directory {str(path.parent)!r} does not exist")
    inputs = _as_tuple(example_inputs)
    input_names = list(input_names)
    if len(input_names) != len(inputs):
        raise ValueError(
            f"input_names has {len(input_names)} names {input_names!r} for {len(inputs)} inputs"
        )
    flat_outputs = _run_torch(model, inputs)
    if output_names is None:
        output_names = [name for name, _ in flat_outputs]
    output_names = list(output_names)
    if len(output_names) != len(flat_outputs):
        raise ValueError(
            f"output_names has {len(output_names)} names {output_names!r} "
            f"for {len(flat_outputs)} outputs"
        )

    was_training = model.training
    model.eval()
    try:
        with atomic_path(path) as temporary, warnings.catch_warnings():
            # The legacy exporter announces its own deprecation on every call.
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", message=".*feature will be removed.*")
            torch.onnx.export(
                model,
                inputs,
                temporary,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=None if dynamic_axes is None else dict(dynamic_axes),
                opset_version=opset,
                dynamo=False,
            )
            if metadata:
                write_metadata(temporary, metadata)
            onnx.checker.check_model(str(temporary))
    finally:
        model.train(was_training)
    return path


def check_onnx(
    path: str | os.PathLike[str],
    model: nn.Module,
    example_inputs: Inputs,
    atol: float = 1e-4,
) -> float:
    """Run the ONNX file with ONNX Runtime and compare every output with ``model``.

    For each output ``k`` (matched by position after flattening tuples, lists
    and dicts as :func:`export_onnx` does) the difference is
    ``d_k = max |onnx_k - torch_k|``; the result is ``max_k d_k``.

    Args:
        path: An ``.onnx`` file, e.g. from :func:`export_onnx`.
        model: The PyTorch model it should match; run in eval mode under
            ``torch.no_grad`` (its mode is restored).
        example_inputs: One tensor or a sequence of tensors, fed to the ONNX
            inputs in order.
        atol: Largest accepted absolute difference (``>= 0``).

    Returns:
        The largest absolute difference over all outputs.

    Raises:
        ValueError: If ``path`` does not exist, ``atol`` is negative, the number
            of inputs or outputs differs, an output's shape differs, or an
            output differs by more than ``atol`` (the message names the output
            and the difference).
    """
    import onnxruntime as ort  # heavy import, only needed here

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"ONNX file {str(path)!r} does not exist")
    if not (isinstance(atol, (int, float)) and atol >= 0):
        raise ValueError(f"atol must be a number >= 0, got {atol!r}")
    inputs = _as_tuple(example_inputs)

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    session_inputs = session.get_inputs()
    if len(session_inputs) != len(inputs):
        raise ValueError(
            f"{str(path)!r} has {len(session_inputs)} inputs "
            f"{[i.name for i in session_inputs]!r}, got {len(inputs)} example inputs"
        )
    feed = {meta.name: t.detach().cpu().numpy() for meta, t in zip(session_inputs, inputs)}
    onnx_outputs = session.run(None, feed)
    output_names = [meta.name for meta in session.get_outputs()]
    torch_outputs = _run_torch(model, inputs)
    if len(onnx_outputs) != len(torch_outputs):
        raise ValueError(
            f"{str(path)!r} has {len(onnx_outputs)} outputs {output_names!r}, "
            f"the model returns {len(torch_outputs)}"
        )

    worst = 0.0
    for name, actual, (_, expected_tensor) in zip(output_names, onnx_outputs, torch_outputs):
        worst = max(worst, _max_difference(name, actual, expected_tensor.detach().cpu().numpy(), atol))
    return worst


# --- preprocessing metadata ------------------------------------------------------------------

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


# --- dynamic shapes, TorchScript, checked exports ----------------------------------------------

TORCHSCRIPT_METADATA = "compresskit_metadata.json"
FORMATS = ("onnx", "torchscript")


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and how it was checked.

    Attributes:
        path: The written file.
        format: ``"onnx"`` or ``"torchscript"``.
        dynamic_axes: Input/output name -> ``{axis: name}`` of the axes left dynamic (``{}``: fixed).
        checks: ``(input shapes, max |export - torch|)`` for every checked input.
    """

    path: Path
    format: str
    dynamic_axes: dict[str, dict[int, str]]
    checks: list[tuple[list[list[int]], float]]


def second_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """A second input shape for checking dynamic axes: batch ``+1``, height and width grown unequally.

    Each spatial size ``d`` grows by multiples of ``g``, the largest power of two dividing ``d``
    (at most 32), so strided models keep their divisibility: height ``+2g``, width ``+g``.
    ``(1, 3, 640, 640) -> (2, 3, 704, 672)``; ``(1, 3, 64, 64) -> (2, 3, 128, 96)``.
    """
    shape = list(shape)
    if not shape:
        return ()
    shape[0] += 1
    for position, factor in ((2, 2), (3, 1)):
        if len(shape) > position:
            size = shape[position]
            step = min(32, size & -size) if size > 0 else 1
            shape[position] = size + factor * step
    return tuple(shape)


def _dynamic_axes(inputs: Sequence[Tensor], input_names: Sequence[str], output_names: Sequence[str],
                  outputs: Sequence[Tensor], spatial: bool) -> dict[str, dict[int, str]]:
    """Batch (axis 0) of every input and output; also axes ``2..`` of the first input if ``spatial``.

    Output axes past the batch are marked dynamic too when ``spatial`` (their sizes follow the input's,
    e.g. a detector's number of priors)."""
    axes: dict[str, dict[int, str]] = {}
    for index, (name, tensor) in enumerate(zip(input_names, inputs)):
        if tensor.ndim == 0:
            continue
        axes[name] = {0: "batch"}
        if spatial and index == 0:
            axes[name].update({axis: f"{name}_{axis}" for axis in range(2, tensor.ndim)})
    for name, tensor in zip(output_names, outputs):
        if tensor.ndim == 0:
            continue
        axes[name] = {0: "batch"}
        if spatial:
            axes[name].update({axis: f"{name}_{axis}" for axis in range(1, tensor.ndim)})
    return axes


def _second_inputs(inputs: Sequence[Tensor], spatial: bool, seed: int = 1) -> tuple[Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    result = []
    for index, tensor in enumerate(inputs):
        if tensor.ndim == 0:
            result.append(tensor)
            continue
        shape = list(tensor.shape)
        shape[0] += 1
        if spatial and index == 0:
            shape = list(second_shape(tensor.shape))
        scale = tensor.float().std().item() if tensor.numel() > 1 else 1.0
        result.append(torch.randn(shape, generator=generator, dtype=tensor.dtype) * (scale or 1.0)
                      if tensor.is_floating_point() else tensor.new_zeros(shape))
    return tuple(result)


def check_torchscript(path: str | os.PathLike[str], model: nn.Module, example_inputs: Inputs,
                      atol: float = 1e-4) -> float:
    """Load a TorchScript file and compare every output with ``model`` (as :func:`check_onnx`).

    Returns:
        The largest absolute difference over all outputs.

    Raises:
        ValueError: As :func:`check_onnx`.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"TorchScript file {str(path)!r} does not exist")
    inputs = _as_tuple(example_inputs)
    loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        actual = _flatten_outputs(loaded(*inputs))
    expected = _run_torch(model, inputs)
    if len(actual) != len(expected):
        raise ValueError(f"{str(path)!r} has {len(actual)} outputs, the model returns {len(expected)}")
    worst = 0.0
    for (name, got), (_, want) in zip(actual, expected):
        worst = max(worst, _max_difference(name, got.numpy(), want.detach().cpu().numpy(), atol))
    return worst


def _max_difference(name: str, actual: np.ndarray, expected: np.ndarray, atol: float) -> float:
    """``max |actual - expected|`` (NaN at the same place on both sides counts as equal)."""
    if actual.shape != expected.shape:
        raise ValueError(
            f"output {name!r}: exported shape {tuple(actual.shape)} != torch shape {tuple(expected.shape)}")
    if expected.size == 0:
        return 0.0
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    both_nan = np.isnan(actual) & np.isnan(expected)
    diff = np.where(both_nan, 0.0, np.nan_to_num(diff, nan=math.inf))
    max_diff = float(diff.max())
    if max_diff > atol:
        raise ValueError(f"output {name!r}: max abs diff {max_diff:.3g} > atol {atol:g}")
    return max_diff


def _export_torchscript(model: nn.Module, inputs: tuple[Tensor, ...], path: Path,
                        metadata: Mapping[str, str]) -> Path:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            traced = torch.jit.trace(model, inputs, check_trace=False, strict=False)
        with atomic_path(path) as temporary:
            torch.jit.save(traced, str(temporary), _extra_files={TORCHSCRIPT_METADATA: json.dumps(dict(metadata))})
    finally:
        model.train(was_training)
    return path


def export_model(
    model: nn.Module,
    example_inputs: Inputs,
    path: str | os.PathLike[str],
    format: str = "onnx",
    dynamic: bool = False,
    metadata: Mapping[str, str] | None = None,
    atol: float = 1e-4,
    opset: int = 17,
) -> ExportResult:
    """Export ``model`` to ONNX or TorchScript and check the file against torch.

    With ``dynamic``, the batch axis of every input and output and the spatial axes (``2..``) of the
    first input are left free where the model allows: the file is checked at ``example_inputs``
    and at :func:`second_shape` of them (batch ``+1``, other height and width). If the spatial
    axes do not survive that check (e.g. a ``Linear`` after a flatten), the export falls back to a
    dynamic batch alone, checked at batch ``+1``. Without ``dynamic``, the file is fixed to the
    example shapes and checked there. TorchScript is a trace (``torch.jit.trace``), checked the same
    way after ``torch.jit.load``.

    The file carries ``metadata`` merged over :func:`model_metadata` (ONNX ``metadata_props``;
    for TorchScript an extra file ``compresskit_metadata.json``, read with :func:`read_metadata`).

    Args:
        model: The model (exported in eval mode; its mode is restored).
        example_inputs: One tensor or a sequence of tensors.
        path: Destination file (its directory must exist); written atomically.
        format: ``"onnx"`` or ``"torchscript"``.
        dynamic: Leave batch and spatial axes free (see above).
        metadata: Extra string entries, e.g. ``Preprocessing(...).to_metadata()``.
        atol: Largest accepted ``|export - torch|`` per output.
        opset: ONNX opset.

    Returns:
        An :class:`ExportResult` with the axes left dynamic and every check's difference.

    Raises:
        ValueError: Unknown format, a failed check (the message names the output, the shape and the
            difference), or a model that cannot take even a dynamic batch.

    Example:
        >>> result = export_model(model, torch.randn(1, 3, 64, 64), "m.onnx", dynamic=True)  # doctest: +SKIP
        >>> result.dynamic_axes["input"]  # doctest: +SKIP
        {0: 'batch', 2: 'input_2', 3: 'input_3'}
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; valid: {list(FORMATS)}")
    path = Path(path).expanduser().resolve()
    if not path.parent.is_dir():
        raise ValueError(f"cannot write {str(path)!r}: directory {str(path.parent)!r} does not exist")
    inputs = _as_tuple(example_inputs)
    merged = {**model_metadata(model), **{str(k): str(v) for k, v in (metadata or {}).items()}}
    named_outputs = _run_torch(model, inputs)  # one forward pass for the output names and shapes
    outputs = [tensor for _, tensor in named_outputs]
    input_names = ["input"] if len(inputs) == 1 else [f"input_{i}" for i in range(len(inputs))]
    output_names = [name for name, _ in named_outputs]

    def write_and_check(spatial: bool | None) -> ExportResult:
        axes = {} if spatial is None else _dynamic_axes(inputs, input_names, output_names, outputs, spatial)
        if format == "onnx":
            export_onnx(model, inputs, path, input_names=input_names, output_names=output_names,
                        dynamic_axes=axes or None, opset=opset, metadata=merged)
            check = check_onnx
        else:
            _export_torchscript(model, inputs, path, merged)
            check = check_torchscript
        checked = [inputs] + ([] if spatial is None else [_second_inputs(inputs, spatial)])
        checks = []
        for candidate in checked:
            shapes = [list(t.shape) for t in candidate]
            try:
                checks.append((shapes, check(path, model, candidate, atol=atol)))
            except Exception as error:  # noqa: BLE001 - ORT / TorchScript runtime errors name no type we share
                raise _ShapeCheckFailed(f"at input shapes {shapes}: {str(error).splitlines()[0]}") from None
        return ExportResult(path=path, format=format, dynamic_axes=axes, checks=checks)

    if not dynamic:
        try:
            return write_and_check(None)
        except _ShapeCheckFailed as error:
            raise ValueError(f"{format} export of {type(model).__name__} failed its check {error}") from None
    spatial_error = None
    if inputs[0].ndim > 2:
        try:
            return write_and_check(True)
        except _ShapeCheckFailed as error:
            spatial_error = str(error)
    try:
        result = write_and_check(False)
    except _ShapeCheckFailed as error:
        raise ValueError(f"{type(model).__name__} cannot be exported with a dynamic batch: the {format} file "
                         f"failed its check {error}; export without --dynamic") from None
    if spatial_error is not None:
        warnings.warn(f"{type(model).__name__}: height/width stay fixed in the {format} export (the dynamic "
                      f"version failed its check {spatial_error}); only the batch axis is dynamic",
                      stacklevel=2)
    return result


class _ShapeCheckFailed(Exception):
    """Internal: an exported file did not match torch at one checked shape."""
