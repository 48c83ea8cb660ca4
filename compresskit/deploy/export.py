"""ONNX / TorchScript export of (pruned) models, checked against PyTorch.

:func:`export_onnx` writes a checked ``.onnx`` file atomically; :func:`check_onnx`
runs it with ONNX Runtime on the CPU and compares every output against the
PyTorch model, returning the largest absolute difference. :func:`export_model` is
what the CLI and the pipeline call: ONNX or a TorchScript trace, optionally with
dynamic batch and height/width axes (checked at the example shape, at
:func:`second_shape` and, where the model runs there, at :func:`uneven_shape`),
simplified by onnxslim where the simplified file passes the same checks (:mod:`.simplify`), or
converted from that checked ONNX file to OpenVINO IR and checked again in OpenVINO (:mod:`.openvino_ir`),
with the model's deployment metadata (:class:`Preprocessing`: channel order,
mean, scale, nominal input size; plus any ``onnx_metadata`` the model carries)
in the file, so that quantization, detection and the browser page read it
instead of asking for flags.

Exporter choice: torch 2.9+ defaults ``torch.onnx.export`` to the
``torch.export``-based ("dynamo") exporter, which needs the ``onnxscript``
package; it is not a dependency of compresskit (and is absent in our
environment). We therefore call the TorchScript-based exporter explicitly
(``dynamo=False``). It still works in torch 2.13, handles every model in our
test zoo (residuals, concat, grouped convs, channel shuffle, transposed convs,
gating) and takes ``dynamic_axes`` directly. Its deprecation warnings are
silenced where it is called (``_onnx_export``).

Caveats:
    * The TorchScript exporter is deprecated upstream; when it is removed this
      module must move to the dynamo exporter (and add ``onnxscript``).
    * Tracing records one path: data-dependent Python control flow is frozen at
      the example input. Shape arithmetic done in Python (e.g. padding computed
      from ``int(x.shape[-1])``) is frozen too; :func:`export_model` checks a
      second shape and an uneven third one (odd offsets, where frozen "same"
      padding shows) to catch it, but only at those shapes.
    * Models over 2 GiB (ONNX external data) are not supported by the atomic
      write, which moves a single file.

Layout: this module is the public face and holds :func:`export_model`; the parts live in private
modules and are re-exported here: ``_onnx_export`` (:func:`export_onnx`, :func:`check_onnx`),
``_torchscript`` (:func:`check_torchscript`), ``_metadata`` (:class:`Preprocessing`,
:func:`read_metadata`, :func:`write_metadata`, :func:`model_metadata`), ``_dynamic``
(:func:`second_shape`, the dynamic axes and second inputs), ``_parity`` (output naming and the
``max |export - torch|`` measure shared by both formats).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from compresskit.deploy._dynamic import dynamic_axes, second_inputs, second_shape, uneven_inputs, uneven_shape
from compresskit.deploy._metadata import (  # noqa: F401 - importable here as before
    PREPROCESSING_KEYS,
    TORCHSCRIPT_METADATA,
    Preprocessing,
    model_metadata,
    read_metadata,
    write_metadata,
)
from compresskit.deploy._onnx_export import check_onnx, export_onnx
from compresskit.deploy._parity import Inputs, as_tuple, torch_outputs
from compresskit.deploy._torchscript import check_torchscript, export_torchscript
from compresskit.deploy.simplify import SimplifyResult, simplify_onnx
from compresskit.utils.atomic import writable_path

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
    "uneven_shape",
    "write_metadata",
]

#: Formats of :func:`export_model`.
FORMATS = ("onnx", "torchscript", "openvino")


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and how it was checked.

    Attributes:
        path: The written file.
        format: ``"onnx"``, ``"torchscript"`` or ``"openvino"`` (``path`` is the ``.xml``; ``.bin`` beside).
        dynamic_axes: Input/output name -> ``{axis: name}`` of the axes left dynamic (``{}``: fixed).
        checks: ``(input shapes, max |export - torch|)`` for every checked input (for OpenVINO, of the IR).
        simplified: For ONNX and OpenVINO, what the simplifier did (``None``: not asked for).
    """

    path: Path
    format: str
    dynamic_axes: dict[str, dict[int, str]]
    checks: list[tuple[list[list[int]], float]]
    simplified: SimplifyResult | None = None


def export_model(
    model: nn.Module,
    example_inputs: Inputs,
    path: str | os.PathLike[str],
    format: str = "onnx",
    dynamic: bool = False,
    metadata: Mapping[str, str] | None = None,
    atol: float = 1e-4,
    opset: int = 17,
    simplify: bool = True,
) -> ExportResult:
    """Export ``model`` to ONNX, OpenVINO IR or TorchScript and check the file against torch.

    With ``dynamic``, the batch axis of every input and output and the spatial axes (``2..``) of the
    first input are left free where the model allows: the file is checked at ``example_inputs``,
    at :func:`second_shape` of them (batch ``+1``, other height and width) and, if the model itself
    runs there, at :func:`uneven_shape` (odd height and width offsets). If the spatial
    axes do not survive those checks (e.g. a ``Linear`` after a flatten, or padding computed in
    Python from the example's size), the export falls back to a
    dynamic batch alone, checked at batch ``+1``. Without ``dynamic``, the file is fixed to the
    example shapes and checked there. TorchScript is a trace (``torch.jit.trace``), checked the same
    way after ``torch.jit.load``.

    ONNX is then simplified (:func:`~compresskit.deploy.simplify.simplify_onnx`; kept only if it passes those
    checks again); OpenVINO IR is converted from that ONNX file and checked in OpenVINO at the same shapes.

    The file carries ``metadata`` merged over :func:`model_metadata` (ONNX ``metadata_props``, OpenVINO
    runtime info, TorchScript ``compresskit_metadata.json``).

    Args:
        model: The model (exported in eval mode; its mode is restored).
        example_inputs: One tensor or a sequence of tensors.
        path: Destination file (its directory must exist); written atomically.
        format: ``"onnx"``, ``"openvino"`` (``path`` ends in ``.xml``) or ``"torchscript"``.
        dynamic: Leave batch and spatial axes free (see above).
        metadata: Extra string entries, e.g. ``Preprocessing(...).to_metadata()``.
        atol: Largest accepted ``|export - torch|`` per output.
        opset: ONNX opset.
        simplify: Simplify the ONNX file (also the one an IR comes from) with onnxslim.

    Returns:
        An :class:`ExportResult` with the axes left dynamic and every check's difference.

    Raises:
        ValueError: Unknown format, a failed check (naming output, shape, difference), no dynamic batch.

    Example:
        >>> result = export_model(model, torch.randn(1, 3, 64, 64), "m.onnx", dynamic=True)  # doctest: +SKIP
        >>> result.dynamic_axes["input"]  # doctest: +SKIP
        {0: 'batch', 2: 'input_2', 3: 'input_3'}
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; valid: {list(FORMATS)}")
    path = writable_path(path)
    merged = {**model_metadata(model), **{str(k): str(v) for k, v in (metadata or {}).items()}}
    if format == "openvino":
        return _export_openvino(_Export(model, as_tuple(example_inputs), path, "onnx", merged, atol, opset),
                                dynamic, simplify)
    job = _Export(model, as_tuple(example_inputs), path, format, merged, atol, opset)
    return _export_checked(job, dynamic, simplify and format == "onnx")


def _export_checked(job: _Export, dynamic: bool, simplify: bool) -> ExportResult:
    """Write and check ``job``'s file (dynamic or fixed), then simplify it if asked."""
    if dynamic:
        result = _export_dynamic(job)
    else:
        try:
            result = job.write_and_check(None)
        except _ShapeCheckFailed as error:
            raise ValueError(f"{job.format} export of {type(job.model).__name__} failed its check {error}") from None
    if simplify:
        result.simplified = simplify_onnx(job.path, job.check_all)
    return result


def _export_openvino(job: _Export, dynamic: bool, simplify: bool) -> ExportResult:
    """A checked (simplified) ONNX file in a scratch folder -> IR at ``job.path``, checked at the same inputs."""
    from compresskit.deploy.openvino_ir import check_openvino, convert_onnx, remove_ir

    path = job.path
    if path.suffix != ".xml":
        raise ValueError(f"an OpenVINO export is written to a .xml file (weights in .bin beside), got {path.name}")
    with tempfile.TemporaryDirectory(prefix="compresskit_openvino_") as scratch:
        job.path = Path(scratch) / f"{path.stem}.onnx"
        result = _export_checked(job, dynamic, simplify)
        convert_onnx(job.path, path, job.metadata)
    try:
        checks = [([list(t.shape) for t in inputs], check_openvino(path, job.model, inputs, job.atol))
                  for inputs in job.checked]
    except ValueError as error:
        remove_ir(path)
        raise ValueError(f"openvino export of {type(job.model).__name__} failed its check: {error}") from None
    return ExportResult(path=path, format="openvino", dynamic_axes=result.dynamic_axes, checks=checks,
                        simplified=result.simplified)


class _ShapeCheckFailed(Exception):
    """Internal: an exported file did not match torch at one checked shape."""


class _Export:
    """One :func:`export_model` call: what to write where, and the model's output names."""

    def __init__(self, model: nn.Module, inputs: tuple[Tensor, ...], path: Path, format: str,
                 metadata: dict[str, str], atol: float, opset: int) -> None:
        self.model, self.inputs, self.path, self.format = model, inputs, path, format
        self.metadata, self.atol, self.opset = metadata, atol, opset
        named_outputs = torch_outputs(model, inputs)  # one forward pass for the output names and shapes
        self.outputs = [tensor for _, tensor in named_outputs]
        self.input_names = ["input"] if len(inputs) == 1 else [f"input_{i}" for i in range(len(inputs))]
        self.output_names = [name for name, _ in named_outputs]
        self.checked: list[tuple[Tensor, ...]] = []  # the inputs of the last passed write_and_check

    def write_and_check(self, spatial: bool | None) -> ExportResult:
        """Write the file (fixed if ``spatial`` is None, else dynamic batch, plus height/width if
        ``spatial``) and check it at the example inputs (and at the second inputs when dynamic, and at
        the uneven inputs when ``spatial`` and the model itself runs there).

        Raises:
            _ShapeCheckFailed: A check failed; the message names the input shapes.
        """
        axes = ({} if spatial is None else
                dynamic_axes(self.inputs, self.input_names, self.output_names, self.outputs, spatial))
        self._write(axes)
        checked = [self.inputs] + ([] if spatial is None else [second_inputs(self.inputs, spatial)])
        checks = [self._check(candidate) for candidate in checked]
        if spatial:
            uneven = uneven_inputs(self.inputs)
            try:
                checks.append(self._check(uneven))
                checked.append(uneven)
            except _ShapeCheckFailed:
                if self._torch_runs(uneven):  # the file fails where the model works: a frozen shape
                    raise
        self.checked = checked
        return ExportResult(path=self.path, format=self.format, dynamic_axes=axes, checks=checks)

    def _write(self, axes: dict[str, dict[int, str]]) -> None:
        if self.format == "onnx":
            export_onnx(self.model, self.inputs, self.path, input_names=self.input_names,
                        output_names=self.output_names, dynamic_axes=axes or None, opset=self.opset,
                        metadata=self.metadata)
        else:
            export_torchscript(self.model, self.inputs, self.path, self.metadata)

    def _torch_runs(self, inputs: tuple[Tensor, ...]) -> bool:
        """Whether the model itself accepts ``inputs`` (a model built for sizes divisible by its
        stride may not; its file is then not held to them). Asked only after a failed check."""
        try:
            torch_outputs(self.model, inputs)
        except Exception:  # noqa: BLE001 - any failure of the model's own forward at that shape
            return False
        return True

    def check_all(self, path: Path) -> None:
        """Check the file at ``path`` (e.g. a simplified copy) at every input the export was checked at.

        Raises:
            _ShapeCheckFailed: A check failed.
        """
        for inputs in self.checked:
            self._check(inputs, path)

    def _check(self, inputs: tuple[Tensor, ...], path: Path | None = None) -> tuple[list[list[int]], float]:
        check = check_onnx if self.format == "onnx" else check_torchscript
        shapes = [list(t.shape) for t in inputs]
        try:
            return shapes, check(path or self.path, self.model, inputs, atol=self.atol)
        except Exception as error:  # noqa: BLE001 - ORT / TorchScript runtime errors name no type we share
            raise _ShapeCheckFailed(f"at input shapes {shapes}: {str(error).splitlines()[0]}") from None


def _export_dynamic(job: _Export) -> ExportResult:
    """Dynamic batch and height/width if the check passes, else a dynamic batch alone (with a warning)."""
    name = type(job.model).__name__
    spatial_error = None
    if job.inputs[0].ndim > 2:
        try:
            return job.write_and_check(True)
        except _ShapeCheckFailed as error:
            spatial_error = str(error)
    try:
        result = job.write_and_check(False)
    except _ShapeCheckFailed as error:
        raise ValueError(f"{name} cannot be exported with a dynamic batch: the {job.format} file "
                         f"failed its check {error}; export without --dynamic") from None
    if spatial_error is not None:
        warnings.warn(f"{name}: height/width stay fixed in the {job.format} export (the dynamic "
                      f"version failed its check {spatial_error}); only the batch axis is dynamic",
                      stacklevel=3)  # the caller of export_model
    return result
