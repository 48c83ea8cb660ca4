"""Simplification of an exported ONNX file (onnxslim), kept only if it still matches torch.

The TorchScript-based exporter leaves shape arithmetic (``Shape -> Gather -> Unsqueeze -> Concat``
chains before a ``Reshape``), identity ops and unfused constant subgraphs in the graph.
:func:`simplify_onnx` runs ``onnxslim.slim`` (constant folding, dead-node removal, pattern fusions;
node names and ``metadata_props`` are kept) on a copy, re-runs the caller's parity check on the
simplified copy and only then moves it over the original. If simplification raises, or the check
fails, the unsimplified file stays in place and a :class:`SimplifyWarning` says why: a simplifier
never makes an export worse.

Caveats:
    * The parity check is the caller's: the simplified file is as trusted as the shapes it was
      checked at (:func:`compresskit.deploy.export.export_model` re-runs every shape it checked).
    * Fewer nodes is not always less time; ``compresskit benchmark`` prints both.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SimplifyResult", "SimplifyWarning", "count_nodes", "simplify_onnx"]


class SimplifyWarning(UserWarning):
    """The simplified ONNX file was not kept (the simplifier raised, or the file failed its check)."""


@dataclass(frozen=True)
class SimplifyResult:
    """What :func:`simplify_onnx` did.

    Attributes:
        nodes_before: Top-level graph nodes of the exported file.
        nodes_after: Nodes of the file now at the path (``== nodes_before`` when not kept).
        kept: Whether the simplified file replaced the original.
        reason: Why it was not kept (``""`` when kept).
    """

    nodes_before: int
    nodes_after: int
    kept: bool
    reason: str = ""


def count_nodes(path: str | os.PathLike[str]) -> int:
    """Number of top-level nodes of an ONNX graph (the figure ``compresskit benchmark`` prints)."""
    import onnx

    return len(onnx.load(str(path), load_external_data=False).graph.node)


def slim(model: "onnx.ModelProto") -> "onnx.ModelProto":  # noqa: F821
    """``onnxslim.slim`` of a model proto (the one call site of the simplifier; tests replace it)."""
    import onnxslim

    return onnxslim.slim(model)


def simplify_onnx(path: str | os.PathLike[str], check: Callable[[Path], object]) -> SimplifyResult:
    """Simplify the ONNX file at ``path`` in place if the simplified file passes ``check``.

    Args:
        path: A checked ``.onnx`` file.
        check: Called with the simplified candidate's path; raises if it does not match the model
            (e.g. :func:`compresskit.deploy.export.check_onnx` at every shape the export checked).

    Returns:
        A :class:`SimplifyResult` with the node counts.

    Warns:
        SimplifyWarning: The simplified file was not kept; the message names the cause.

    Example:
        >>> simplify_onnx("m.onnx", lambda p: check_onnx(p, model, x))  # doctest: +SKIP
        SimplifyResult(nodes_before=57, nodes_after=31, kept=True, reason='')
    """
    import onnx

    from compresskit.utils.optional import MissingDependencyError, require

    path = Path(path)
    original = onnx.load(str(path))
    before = len(original.graph.node)
    try:
        require("onnxslim")
    except MissingDependencyError as error:  # simplification is an improvement, never a requirement
        warnings.warn(f"{path.name}: not simplified; {error}", SimplifyWarning, stacklevel=2)
        return SimplifyResult(before, before, kept=False, reason=str(error))
    candidate = path.with_name(f".{path.stem}.simplified{path.suffix}")
    try:
        simplified = slim(original)
        del simplified.metadata_props[:]
        simplified.metadata_props.extend(original.metadata_props)
        onnx.save(simplified, str(candidate))
        onnx.checker.check_model(str(candidate))
        check(candidate)
    except Exception as error:  # noqa: BLE001 - any failure keeps the checked original
        candidate.unlink(missing_ok=True)
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": ")
        warnings.warn(f"{path.name}: kept the unsimplified ONNX file; the simplified one failed ({reason})",
                      SimplifyWarning, stacklevel=2)
        return SimplifyResult(before, before, kept=False, reason=reason)
    os.replace(candidate, path)
    return SimplifyResult(before, len(simplified.graph.node), kept=True)
