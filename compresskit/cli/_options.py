"""Option parsing and model loading shared by the model commands (``prune``, ``export``, ``inspect``,
``quantize``, ``benchmark``).

Contract: the ``parse_*`` functions turn option text into values or raise ``click.BadParameter`` naming
the option and the text; :func:`load_model` / :func:`build_spec` turn a checkpoint path or a model spec
into a model or raise :class:`~compresskit.cli._error_boundary.UserError` in one line. Nothing here imports
torch at import time.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from compresskit.cli._error_boundary import UserError

__all__ = ["TRUST_HELP", "build_spec", "load_model", "parse_floats", "parse_kwargs", "parse_shape", "unpruned_model"]

TRUST_HELP = ("Import the checkpoint's builder from this module (it runs code). Repeatable. Builders "
              "declared in the 'compresskit.builders' entry points are trusted already.")


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,32,32"`` (or ``"1x3x32x32"``) -> ``(1, 3, 32, 32)``; every dimension >= 1."""
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise click.BadParameter(f"expected integers like 1,3,32,32, got {text!r}") from None
    if not shape or any(v < 1 for v in shape):
        raise click.BadParameter(f"dimensions must be >= 1, got {text!r}")
    return shape


def parse_kwargs(pairs: Sequence[str]) -> dict[str, Any]:
    """``["depth=18", "name=resnet"]`` -> ``{"depth": 18, "name": "resnet"}`` (values parsed as YAML)."""
    import yaml

    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--arg")
        result[key] = yaml.safe_load(value)
    return result


def parse_floats(text: str | None, count: int, option: str) -> tuple[float, ...] | None:
    """``count`` comma-separated numbers of ``option`` (``None`` when not given)."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()  # not numbers: the same error as the wrong count
    if len(values) != count:
        raise click.BadParameter(f"expected {count} comma-separated numbers, got {text!r}", param_hint=option)
    return values


def _unreadable_checkpoint(spec: str, error: Exception) -> UserError:
    first_line = (str(error).splitlines() or [""])[0]
    missing = error.__cause__ if isinstance(error.__cause__, ModuleNotFoundError) else None
    hint = (f"; the builder's module {missing.name!r} is not importable from here: add the folder that "
            f"holds it to PYTHONPATH (PYTHONPATH=/path/to/that/folder compresskit ...) or run from that "
            f"folder" if missing is not None and missing.name else "")
    return UserError(f"{spec}: not a readable compresskit checkpoint ({type(error).__name__}: {first_line}){hint}")


def load_model(spec: str, model_args: dict[str, Any] | None = None, trust: Sequence[str] = ()) -> tuple[Any, str]:
    """``(model, kind)`` from a compresskit checkpoint path or a model spec.

    Args:
        spec: A checkpoint written by ``compresskit prune`` (its builder must be trusted, see
            ``--trust``), or a model spec (``torchvision:NAME``, ``timm:NAME``, ``module:callable``, a
            declared ``NAME``; each ``[:WEIGHTS]``, see :mod:`compresskit.models.spec`).
        model_args: Builder keyword arguments for a model spec.
        trust: Modules (or ``module:callable`` builders) trusted to rebuild a checkpoint.

    Returns:
        The model and ``"checkpoint"`` or ``"builder"``.
    """
    path = Path(spec)
    if not (path.exists() and path.is_file()):
        return build_spec(spec, model_args)[0], "builder"
    from compresskit.config import ensure_cwd_importable
    from compresskit.models.persist import UntrustedBuilderError, load_pruned

    ensure_cwd_importable()  # the checkpoint's builder may be the user's module
    try:
        return load_pruned(path, trust=trust), "checkpoint"
    except UntrustedBuilderError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError, EOFError, pickle.UnpicklingError) as error:
        raise _unreadable_checkpoint(spec, error) from None


def build_spec(spec: str, model_args: dict[str, Any] | None = None,
               weights: Path | None = None) -> tuple[Any, str, dict[str, Any]]:
    """``(model, builder, builder_kwargs)`` from a model spec (see :mod:`compresskit.models.spec`)."""
    from compresskit.models.spec import WEIGHT_SUFFIXES, build, parse_spec

    if ":" not in spec and spec.lower().endswith((*WEIGHT_SUFFIXES, ".onnx")):
        raise UserError(f"file not found: {spec}")
    return build(parse_spec(spec, weights, model_args))


def unpruned_model(path: Path) -> Any:
    """The fresh, unpruned model the (already trusted and loaded) checkpoint at ``path``'s builder makes."""
    import torch

    from compresskit.config import resolve_object

    payload = torch.load(path, map_location="cpu", weights_only=True)
    builder = resolve_object(payload["builder"], "builder", str(path))
    return builder(**payload["builder_kwargs"])
