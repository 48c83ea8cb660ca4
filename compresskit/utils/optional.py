"""Optional dependencies: which extra installs a missing package, said in one line.

``pip install compresskit`` gives the pruner alone (torch, Torch-Pruning, numpy, click, PyYAML, tqdm).
The rest are extras (``pyproject.toml``)::

    search     botorch, gpytorch (and scipy)  Bayesian rate search (``search.method: bo``)
    onnx       onnx, onnxruntime, onnxslim    export (simplified), INT8 quantization, ORT latency
    openvino   openvino (+ the onnx extra)    OpenVINO IR export and latency
    report     matplotlib                     report.md plots
    vision     pillow                         image folders (``compresskit.tasks.image_folder``)
    detection  opencv-python-headless, scipy  the FeatherFace reference detector, calibration images
    all        every one of the above         what ``scripts/setup.sh`` installs

:func:`missing_extra` turns a ``ModuleNotFoundError`` for one of these into the message; the CLI's
error boundary prints it and exits 2. :func:`require` imports a module or raises that message.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "MissingDependencyError", "missing_extra", "require"]

#: Top-level import name -> (extra, what needs it).
EXTRAS: dict[str, tuple[str, str]] = {
    "botorch": ("search", "the Bayesian rate search (search.method: bo)"),
    "gpytorch": ("search", "the Bayesian rate search (search.method: bo)"),
    "onnx": ("onnx", "ONNX export and quantization"),
    "onnxruntime": ("onnx", "ONNX Runtime checks, quantization and latency"),
    "onnxscript": ("onnx", "ONNX export"),
    "onnxslim": ("onnx", "simplifying exported ONNX files"),
    "openvino": ("openvino", "OpenVINO IR export and the OpenVINO runtime"),
    "matplotlib": ("report", "the report's plots"),
    "PIL": ("vision", "reading image folders"),
    "cv2": ("detection", "the reference detector and calibration images"),
    "scipy": ("detection", "the reference detector's evaluation"),
}


class MissingDependencyError(ImportError):
    """An optional package is not installed; the message names the extra that installs it."""


def missing_extra(error: BaseException) -> str | None:
    """The one-line message for ``error`` when it is a missing optional package, else None.

    Example:
        >>> missing_extra(ModuleNotFoundError("No module named 'botorch'", name="botorch"))
        "botorch is not installed; it is needed for the Bayesian rate search (search.method: bo): pip install 'compresskit[search]'"
    """
    if isinstance(error, MissingDependencyError):
        return str(error)
    name = getattr(error, "name", None) if isinstance(error, ModuleNotFoundError) else None
    top = (name or "").partition(".")[0]
    if top not in EXTRAS:
        return None
    extra, purpose = EXTRAS[top]
    package = {"PIL": "pillow (PIL)", "cv2": "opencv-python-headless (cv2)"}.get(top, top)
    return f"{package} is not installed; it is needed for {purpose}: pip install 'compresskit[{extra}]'"


def require(module: str) -> ModuleType:
    """Import ``module``; if its package is an optional one that is missing, raise the one-line message.

    Raises:
        MissingDependencyError: The package is not installed (names the extra).
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        message = missing_extra(error)
        if message is None:
            raise
        raise MissingDependencyError(message, name=error.name) from None
