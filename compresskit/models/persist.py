"""Save and load pruned models without pickling modules.

A checkpoint holds the builder reference (``"package.module:callable"``) and its keyword arguments,
the pruning history (per removal step, ``[module, axis, indices, size]`` lists of plain ints) and the
``state_dict``, in one of two formats, chosen by the file name when saving and by the content when loading:

* ``*.safetensors``: a `safetensors <https://huggingface.co/docs/safetensors>`_ file (a JSON header and
  raw tensors; reading it runs no code at all); the builder, its arguments and the history are JSON
  strings in its metadata (``format``, ``builder``, ``builder_kwargs``, ``history``);
* any other name (``final.pt``): a plain dict that ``torch.load(path, weights_only=True)`` accepts.

Loading rebuilds a fresh model, replays the removals with the same surgery code that pruned it, and
loads the weights strictly.

Trust: the builder named in a file is code, and the file may come from anyone. ``load_pruned``
imports and calls it only when the user trusts it, *before* importing anything:

* builders registered with :func:`trust_builder` (``TRUSTED_BUILDERS``), by the caller's own code;
* builders an installed package declares in the ``compresskit.builders`` entry-point group
  (``mypkg = "mypkg.models:build_model"`` in that package's ``pyproject.toml``);
* modules (or ``module:callable``) the caller names: ``load_pruned(path, trust=["my_pkg.models"])``,
  ``compresskit inspect final.pt --trust my_pkg.models`` -- like Hugging Face's ``trust_remote_code``.

Anything else raises :class:`UntrustedBuilderError` naming the builder and how to trust it. Nothing
registers itself when compresskit is imported. A trusted builder is imported with
:func:`compresskit.utils.imports.import_attribute`, the resolver recipes use too.

Caveats:
    * The builder must produce the same architecture as when the model was pruned
      (same module names); a mismatch raises ``ValueError`` naming the file.
    * ``builder_kwargs`` must be plain data (str, int, float, bool, None, lists,
      tuples and dicts of them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compresskit.groups.surgery import ChannelOp, remove_channels
from compresskit.pruning.soft_fpgm import HISTORY_ATTRIBUTE
from compresskit.utils.atomic import atomic_path, atomic_torch_save
from compresskit.utils.finite import non_finite_entries
from compresskit.utils.imports import import_attribute

__all__ = ["BUILDER_ENTRY_POINTS", "FORMAT", "RENAMED_BUILDER_ENTRY_POINTS", "SAFETENSORS_SUFFIX", "TRUSTED_BUILDERS",
           "UntrustedBuilderError", "current_builder", "declared_builders", "is_trusted", "load_pruned", "save_pruned",
           "trust_builder"]

FORMAT = "compresskit.pruned/1"
#: A :func:`save_pruned` destination with this suffix is written as safetensors (see the module docstring).
SAFETENSORS_SUFFIX = ".safetensors"
_KEYS = ("format", "builder", "builder_kwargs", "history", "state_dict")

#: Entry-point group where installed packages declare trusted builders (value: ``module:callable``).
BUILDER_ENTRY_POINTS = "compresskit.builders"

#: Entry-point group where installed packages declare a builder they moved: the entry's *name* is the old
#: ``module:callable`` a checkpoint may hold, its value the new one (read from metadata, nothing imported).
RENAMED_BUILDER_ENTRY_POINTS = "compresskit.renamed_builders"

#: Builders (``"module:callable"``) the running program trusts; add with :func:`trust_builder`.
TRUSTED_BUILDERS: set[str] = set()


class UntrustedBuilderError(ValueError):
    """A checkpoint names a builder the user has not trusted; nothing was imported."""


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} chars)"


def trust_builder(builder: str) -> None:
    """Trust ``builder`` (``"module:callable"``) for :func:`load_pruned` in this process.

    Example:
        >>> trust_builder("my_pkg.models:build_model")
    """
    _check_builder(builder)
    TRUSTED_BUILDERS.add(builder)


def declared_builders() -> set[str]:
    """Builders (``"module:callable"``) declared by installed packages in :data:`BUILDER_ENTRY_POINTS`.

    Read from the packages' metadata; nothing is imported.
    """
    return {entry.value.replace(" ", "") for entry in metadata.entry_points(group=BUILDER_ENTRY_POINTS)}


def current_builder(builder: str) -> str:
    """``builder`` as it is named now: the new ``module:callable`` when an installed package declares in
    :data:`RENAMED_BUILDER_ENTRY_POINTS` that it moved (a checkpoint saved before the move), else itself."""
    renamed = {entry.name.replace(" ", ""): entry.value.replace(" ", "")
               for entry in metadata.entry_points(group=RENAMED_BUILDER_ENTRY_POINTS)}
    return renamed.get(builder, builder)


def is_trusted(builder: str, trust: Iterable[str] = ()) -> bool:
    """Whether :func:`load_pruned` may import and call ``builder``.

    Args:
        builder: ``"module:callable"`` as stored in a checkpoint.
        trust: Module names (trusting every callable in them and their submodules) or exact
            ``"module:callable"`` strings.
    """
    trust = list(trust)
    return _trusted_by_module(builder, trust) or _trusted_exactly(builder, trust)


def _trusted_by_module(builder: str, trust: Sequence[str]) -> bool:
    """``builder`` lies in a module (or submodule of one) named in ``trust``."""
    module_name = builder.partition(":")[0]
    return any(":" not in item and (module_name == item or module_name.startswith(item + ".")) for item in trust)


def _trusted_exactly(builder: str, trust: Sequence[str]) -> bool:
    return builder in trust or builder in TRUSTED_BUILDERS or builder in declared_builders()


def _resolve_builder(path: Path, builder: str, exact: bool) -> Callable[..., Any]:
    """Import a trusted builder.

    Trusting a *module* trusts the callables defined in it, not every name it imports: a builder
    trusted only through its module must be a top-level function or class whose ``__module__`` is
    that module (so ``my_pkg.models:os.system`` or ``my_pkg.models:run`` after
    ``from subprocess import run`` are refused). Exactly trusted builders may be dotted attributes.
    """
    module_name, attribute = _check_builder(builder)
    if not exact and "." in attribute:
        raise UntrustedBuilderError(
            f"{path}: builder {_short(builder)} is a dotted attribute; trusting module {_short(module_name)} "
            f"covers only its own top-level callables; trust the exact builder string if you mean it")
    try:
        resolved = import_attribute(module_name, attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"{path}: cannot import builder {builder!r} ({error})") from error
    if not exact and getattr(resolved, "__module__", None) != module_name:
        raise UntrustedBuilderError(
            f"{path}: builder {_short(builder)} is not defined in module {_short(module_name)} (it comes from "
            f"{_short(getattr(resolved, '__module__', None))}); trusting a module covers only what it defines")
    if not callable(resolved):
        raise ValueError(f"{path}: builder {builder!r} is not callable")
    return resolved


def _check_plain(value: Any, where: str) -> None:
    if value is None or isinstance(value, (str, int, float, bool)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where} keys must be strings, got {key!r}")
            _check_plain(item, f"{where}.{key}")
        return
    raise TypeError(f"{where} must be plain data (str/int/float/bool/None/list/dict), got {type(value).__name__}")


def _check_builder(builder: Any) -> tuple[str, str]:
    if not isinstance(builder, str) or builder.count(":") != 1:
        raise ValueError(f"builder must be a 'package.module:callable' string, got {_short(builder)}")
    module_name, attribute = builder.split(":")
    if not module_name or not attribute:
        raise ValueError(f"builder must be a 'package.module:callable' string, got {_short(builder)}")
    return module_name, attribute


def _normalise_history(history: Any) -> list[list[list[Any]]]:
    if not isinstance(history, (list, tuple)):
        raise ValueError(f"history must be a list of steps, got {type(history).__name__}")
    steps = []
    for step in history:
        if not isinstance(step, (list, tuple)):
            raise ValueError(f"each history step must be a list of ops, got {step!r}")
        steps.append([ChannelOp.from_list(op).to_list() for op in step])
    return steps


def save_pruned(
    path: str | os.PathLike[str],
    model: nn.Module,
    builder: str,
    builder_kwargs: Mapping[str, Any] | None = None,
    history: Sequence[Sequence[Any]] | None = None,
) -> None:
    """Write ``model`` as builder reference + pruning history + state_dict, atomically.

    Args:
        path: Destination file (written via a temporary file and ``os.replace``); a ``.safetensors`` name
            writes safetensors, any other a ``torch.save`` file.
        model: The pruned model.
        builder: ``"package.module:callable"`` that builds the unpruned model.
        builder_kwargs: Keyword arguments for the builder (plain data).
        history: Removal steps; defaults to ``model.compresskit_history`` (kept by the pruner).

    Raises:
        ValueError: malformed builder or history.
        TypeError: ``builder_kwargs`` is not plain data.

    Example:
        >>> save_pruned("pruned.safetensors", model, "mypkg.models:build_model", {"width": 0.5})
        >>> model = load_pruned("pruned.safetensors", trust=["mypkg.models"])
    """
    _check_builder(builder)
    kwargs = dict(builder_kwargs or {})
    _check_plain(kwargs, "builder_kwargs")
    if history is None:
        history = getattr(model, HISTORY_ATTRIBUTE, [])
    payload = {
        "format": FORMAT,
        "builder": builder,
        "builder_kwargs": kwargs,
        "history": _normalise_history(history),
        "state_dict": model.state_dict(),
    }
    count, names = non_finite_entries(payload["state_dict"])
    if count:
        raise ValueError(f"{path}: refusing to save a model with non-finite weights "
                         f"({count} tensors hold NaN/inf, e.g. {', '.join(names)})")
    if str(path).endswith(SAFETENSORS_SUFFIX):
        _save_safetensors(payload, path)
    else:
        atomic_torch_save(payload, path)


def _save_safetensors(payload: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """``payload`` as a safetensors file: tensors as they are, the rest as JSON strings in the metadata."""
    from safetensors.torch import save_file

    metadata = {"format": FORMAT, "builder": payload["builder"],
                "builder_kwargs": json.dumps(payload["builder_kwargs"]), "history": json.dumps(payload["history"])}
    # clone: tied weights would be refused as shared memory
    tensors = {name: tensor.detach().cpu().clone().contiguous() for name, tensor in payload["state_dict"].items()}
    with atomic_path(path) as temporary:  # written straight to the file, not first as one bytes object
        save_file(tensors, temporary, metadata=metadata)


def _is_safetensors(path: Path) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then the JSON header's ``{``."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size


def _read_safetensors(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    """The payload of a safetensors checkpoint (what :func:`torch.load` gives for the other format)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device=str(map_location)) as handle:
        metadata = handle.metadata() or {}
        state_dict = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 - not a dict
    payload: dict[str, Any] = {"state_dict": state_dict, **metadata}
    for key in ("builder_kwargs", "history"):
        if key in payload:
            payload[key] = json.loads(payload[key])
    return payload


def load_pruned(path: str | os.PathLike[str], map_location: str | torch.device = "cpu",
                trust: Iterable[str] = ()) -> nn.Module:
    """Rebuild a model saved by :func:`save_pruned`: build, replay removals, load weights.

    The builder is imported only if trusted (see the module docstring); the check comes before
    any import.

    Args:
        path: Checkpoint written by :func:`save_pruned` (safetensors or ``torch.save``, told by the content).
        map_location: Where tensors are loaded.
        trust: Extra trusted modules or ``"module:callable"`` builders (besides
            ``TRUSTED_BUILDERS`` and the ``compresskit.builders`` entry points).

    Returns:
        The pruned model (with ``compresskit_history`` set, so it can be saved again).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UntrustedBuilderError: the builder is not trusted (a ``ValueError``).
        ValueError: the file is not a compresskit checkpoint, the builder cannot be
            imported, or the history / state_dict do not fit the built model.

    Example:
        >>> model = load_pruned("runs/mymodel/final.pt", trust=["mypkg.models"])
    """
    trust = [trust] if isinstance(trust, str) else list(trust)
    path = Path(path)
    payload, history = _read_checkpoint(path, map_location)
    builder = _trusted_builder(path, current_builder(payload["builder"]), trust)
    return _rebuild(path, builder, payload, history)


def _read_checkpoint(path: Path, map_location: str | torch.device) -> tuple[dict[str, Any], list[list[list[Any]]]]:
    """The checkpoint's payload, its format, keys, builder string and history checked (nothing imported)."""
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    try:
        if _is_safetensors(path):
            payload = _read_safetensors(path, map_location)
        else:
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is a bad checkpoint
        raise ValueError(f"{path}: not a readable compresskit checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a compresskit pruned-model checkpoint (format {FORMAT!r} expected)")
    missing = [key for key in _KEYS if key not in payload]
    if missing:
        raise ValueError(f"{path}: checkpoint is missing {missing}")
    try:
        _check_builder(payload["builder"])  # validated here; imported by _resolve_builder
        history = _normalise_history(payload["history"])
        if not isinstance(payload["builder_kwargs"], dict):
            raise ValueError(f"builder_kwargs must be a dict, got {payload['builder_kwargs']!r}")
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    return payload, history


def _trusted_builder(path: Path, builder: str, trust: Sequence[str]) -> Callable[..., Any]:
    """The builder, imported only after the trust check passes (see the module docstring)."""
    exact = _trusted_exactly(builder, trust)  # reads the entry points once
    if not exact and not _trusted_by_module(builder, trust):
        module_name = builder.partition(":")[0]
        raise UntrustedBuilderError(
            f"{path}: builder {_short(builder)} is not trusted, so it was not imported; if you "
            f"trust module {_short(module_name)}, pass --trust {module_name[:120]} (CLI) or load_pruned(..., trust="
            f"[{_short(module_name)}]), or declare it in the {BUILDER_ENTRY_POINTS!r} entry points")
    return _resolve_builder(path, builder, exact=exact)


def _rebuild(path: Path, builder: Callable[..., Any], payload: dict[str, Any],
             history: list[list[list[Any]]]) -> nn.Module:
    """Build the unpruned model, replay the removals, load the weights strictly."""
    model = builder(**payload["builder_kwargs"])
    if not isinstance(model, nn.Module):
        raise ValueError(f"{path}: builder {payload['builder']!r} returned {type(model).__name__}, not an nn.Module")
    try:
        for step in history:
            remove_channels(model, [ChannelOp.from_list(op) for op in step])
        model.load_state_dict(payload["state_dict"], strict=True)
    except (ValueError, RuntimeError, KeyError) as error:
        raise ValueError(f"{path}: checkpoint does not fit the built model: {error}") from error
    setattr(model, HISTORY_ATTRIBUTE, history)
    return model
