"""Model specs: the strings the CLI and recipes accept for "a model I already have".

Grammar (``WEIGHTS`` optional, also given as ``--weights``)::

    torchvision:NAME[:WEIGHTS]       torchvision.models.get_model(NAME), e.g. torchvision:resnet18
    timm:NAME[:WEIGHTS]              timm.create_model(NAME)
    package.module:callable[:WEIGHTS]   any importable builder (called with --arg KEY=VALUE keywords)
    NAME[:WEIGHTS]                   a model a declared builder knows (the 'compresskit.builders' entry
                                     points, e.g. retinaface_mnet025:weights.pth as 'detect' accepts)
    NAME:released                    the same with its released weights, fetched into the torch hub
                                     cache and hash-checked (:mod:`compresskit.models.released`)

``WEIGHTS`` is recognised as the last ``:`` part when it ends in ``.pt``/``.pth``/``.bin``/``.ckpt``,
or names an existing file after a full ``module:callable`` (``--weights`` takes any name). A declared
builder (bare ``NAME``) with a ``weights`` argument (FeatherFace's) loads it itself; otherwise it is a
``state_dict`` read with ``torch.load(weights_only=True)`` (a ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper and a DDP ``module.`` prefix are unwrapped,
and the ``total_ops``/``total_params`` buffers the ``thop`` profiler leaves are dropped), then loaded
strictly: a mismatch is one ``ValueError`` line naming the file and the first differing keys.

:func:`resolve_spec` returns the builder as a ``module:callable`` string that
:func:`compresskit.models.persist.save_pruned` stores, so a checkpoint pruned from ``torchvision:resnet18``
loads again with ``--trust torchvision`` (the function that built it, not this module, is stored:
a checkpoint never names a builder that would import another one for it).

Caveats:
    * ``torchvision`` and ``timm`` are imported only when a spec names them; where they do not
      import (on this CPU machine the only torchvision wheel is a CUDA build that fails), the
      error says so in one line.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compresskit.models.released import RELEASED, resolve_weights
from compresskit.utils.imports import MissingAttributeError, ensure_cwd_importable, get_attribute, import_attribute

__all__ = ["ModelSpec", "WEIGHT_SUFFIXES", "build", "load_state_dict", "parse_spec", "resolve_spec"]

#: Suffixes that mark the last ``:`` part of a spec as a weights file even before it exists.
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
#: Buffers the ``thop`` profiler adds to every module; never part of a model.
PROFILER_KEYS = ("total_ops", "total_params")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec.

    Attributes:
        source: ``torchvision:NAME``, ``timm:NAME``, ``module:callable`` or a bare ``NAME``.
        weights: The weights file, if any.
        kwargs: Keyword arguments for the builder (``--arg KEY=VALUE``).
    """

    source: str
    weights: Path | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


def _is_weights(source: str, text: str) -> bool:
    """Whether ``text`` (the last ``:`` part) names weights: a weights suffix, or an existing file after
    a full ``module:callable`` (so ``pkg:build`` stays a builder even if a file ``build`` exists)."""
    if text.lower().endswith(WEIGHT_SUFFIXES) or text == RELEASED:
        return True
    return ":" in source and bool(text) and os.path.isfile(text)


def parse_spec(text: str, weights: str | os.PathLike[str] | None = None,
               kwargs: dict[str, Any] | None = None) -> ModelSpec:
    """Split ``text`` into source and weights (see the module docstring).

    Raises:
        ValueError: Empty parts, or weights given both in the spec and as ``weights``.

    Example:
        >>> parse_spec("torchvision:resnet18:r18.pth")
        ModelSpec(source='torchvision:resnet18', weights=PosixPath('r18.pth'), kwargs={})
    """
    source, sep, last = text.rpartition(":")
    if sep and source and _is_weights(source, last):
        if weights is not None:
            raise ValueError(f"model spec {text!r} names weights {last!r} and --weights {str(weights)!r}: give one")
        spec_weights: Path | None = Path(last)
    else:
        source, spec_weights = text, (Path(weights) if weights is not None else None)
    if not source or source.startswith(":") or source.endswith(":"):
        raise ValueError(f"model spec {text!r} is malformed; expected torchvision:NAME, timm:NAME, "
                         "package.module:callable or a model NAME, each optionally followed by :WEIGHTS")
    return ModelSpec(source, spec_weights, dict(kwargs or {}))


def _import(module_name: str, spec: str) -> Any:
    ensure_cwd_importable()  # a user's module next to where compresskit runs
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"model spec {spec!r}: cannot import {module_name} ({type(error).__name__}: "
                         f"{' '.join(str(error).split())[:200]}); install it, or use package.module:callable") from None
    except Exception as error:  # noqa: BLE001 - e.g. a torchvision wheel built for another torch
        raise ValueError(f"model spec {spec!r}: importing {module_name} failed ({type(error).__name__}: "
                         f"{' '.join(str(error).split())[:200]}); fix that installation, or use "
                         "package.module:callable") from None


def _qualified(function: Any) -> str:
    return f"{function.__module__}:{function.__qualname__}"


def resolve_spec(spec: ModelSpec) -> tuple[str, dict[str, Any]]:
    """``(builder "module:callable", builder_kwargs)`` that build ``spec`` (weights not loaded).

    Raises:
        ValueError: The package does not import, the name is unknown (the message lists close
            names), or the builder is not callable.
    """
    prefix, sep, name = spec.source.partition(":")
    if sep and prefix == "torchvision":
        models = _import("torchvision.models", spec.source)
        try:
            function = models.get_model_builder(name)
        except ValueError:
            import difflib

            close = difflib.get_close_matches(name, models.list_models(), n=3)
            raise ValueError(f"model spec {spec.source!r}: torchvision has no model {name!r}"
                             + (f"; did you mean {close}?" if close else "")) from None
        return _qualified(function), dict(spec.kwargs)
    if sep and prefix == "timm":
        timm = _import("timm", spec.source)
        if not timm.is_model(name):
            raise ValueError(f"model spec {spec.source!r}: timm has no model {name!r}; "
                             f"e.g. {timm.list_models(f'*{name[:4]}*')[:5]}")
        return _qualified(timm.create_model), {"model_name": name, **spec.kwargs}
    if sep:
        try:
            target = get_attribute(_import(prefix, spec.source), name)
        except MissingAttributeError:
            raise ValueError(f"model spec {spec.source!r}: module {prefix} has no attribute {name!r}; "
                             "name a function or class that returns the model") from None
        if not callable(target):
            raise ValueError(f"model spec {spec.source!r}: {name!r} in module {prefix} is not callable")
        return spec.source, dict(spec.kwargs)
    return _named_builder(spec)


def _named_builder(spec: ModelSpec) -> tuple[str, dict[str, Any]]:
    """A bare model name: the first declared ``compresskit.builders`` builder that accepts it."""
    from compresskit.models.persist import declared_builders  # imports torch

    ensure_cwd_importable()
    tried = []
    for builder in sorted(declared_builders()):
        module_name, _, attribute = builder.partition(":")
        try:
            function = import_attribute(module_name, attribute)
            function(name=spec.source, **spec.kwargs)
        except Exception:  # noqa: BLE001 - this builder does not know the name
            tried.append(builder)
            continue
        return builder, {"name": spec.source, **spec.kwargs}
    raise ValueError(f"model spec {spec.source!r}: no file of that name, and not torchvision:NAME, timm:NAME, "
                     f"package.module:callable or a model a declared builder knows (tried {tried or 'none'})")


def load_state_dict(model: Any, path: str | os.PathLike[str]) -> None:
    """Load the ``state_dict`` in ``path`` into ``model`` strictly (see the module docstring).

    Raises:
        ValueError: Not a state_dict, or keys/shapes differ (one line naming the first keys).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - pickle errors, truncated files, foreign objects
        raise ValueError(f"{path}: not a torch state_dict readable with weights_only=True "
                         f"({type(error).__name__}: {' '.join(str(error).split())[:160]})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state_dict (a dict of tensors), got {type(state).__name__}")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    dropped = [k for k in state if k.rpartition(".")[2] in PROFILER_KEYS and k not in model.state_dict()]
    state = {k: v for k, v in state.items() if k not in dropped}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = [f"{len(items)} {what} (first: {', '.join(items[:3])})"
                 for what, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                     ("shape mismatches", shapes)) if items]
        raise ValueError(f"{path} does not fit {type(model).__name__}: {'; '.join(parts)}; "
                         "give the weights this architecture was trained with")
    model.load_state_dict(state)


def build(spec: ModelSpec) -> tuple[Any, str, dict[str, Any]]:
    """Build ``spec``: ``(model, builder, builder_kwargs)`` with its weights loaded.

    Raises:
        ValueError: As :func:`resolve_spec` and :func:`load_state_dict`; a builder that refuses
            its arguments (``TypeError``/``ValueError``) is reported with the spec.
    """
    builder, kwargs = resolve_spec(spec)
    if spec.weights is not None and str(spec.weights) == RELEASED:
        spec = ModelSpec(spec.source, resolve_weights(spec.source, RELEASED), spec.kwargs)
    module_name, _, attribute = builder.partition(":")
    function = import_attribute(module_name, attribute)
    # A declared builder (bare NAME) with its own `weights` argument knows its checkpoints' key names (e.g.
    # FeatherFace's load_weights for official releases): it loads them; builder_kwargs never name the file.
    # Not torchvision's `weights=` (an enum of its downloads) nor a user's builder: those get a state_dict.
    own_weights = spec.weights is not None and ":" not in spec.source and _accepts(function, "weights")
    if own_weights and not spec.weights.is_file():
        raise ValueError(f"weights file not found: {spec.weights}")
    try:
        model = function(**kwargs, **({"weights": str(spec.weights)} if own_weights else {}))
    except (TypeError, ValueError) as error:
        raise ValueError(f"model spec {spec.source!r}: building the model failed: "
                         f"{' '.join(str(error).split())[:300]}") from None
    if spec.weights is not None and not own_weights:
        load_state_dict(model, spec.weights)
    return model, builder, kwargs


def _accepts(function: Any, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):  # builtins, some C extensions
        return False
