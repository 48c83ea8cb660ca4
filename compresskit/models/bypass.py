"""Structural removal: switch off whole optional blocks that a model declares bypassable.

Channel pruning thins layers; where latency sits in whole blocks (attention gates, context modules
on the finest level -- ``benchmarks/profile_onnx.py`` puts Nano-B's P3 modules at ~29% of ORT time)
it is not enough. A model declares which blocks may go and what stands in for them, as a plain
attribute::

    class MyNet(nn.Module):
        bypassable = {"cbam": "identity", "fuse": "first"}

``"identity"`` means ``block(x) -> x`` (a residual block without its branch, a gate that passes
everything); ``"first"`` means ``block([a, b, ...]) -> a`` (a fusion that keeps its own level).
:func:`bypass_blocks` replaces each named block by a parameter-free :class:`Bypass` in place, so the
reduced model *is* the model with those blocks bypassed: the same forward, minus the blocks. Channel
groups, :class:`compresskit.ParamPredictor` and :class:`compresskit.deploy.latency.LatencyModel` are then
built on the reduced model, so they stay exact for it (bypassing first, pruning second).

A model builder may take the names as an argument (e.g. ``nano_b`` with ``bypass=[...]``), so a
saved pruned model (:func:`compresskit.models.persist.save_pruned`, which records the builder's arguments)
rebuilds the same reduced architecture.

Caveats:
    * Bypassing changes the function: the reduced model needs training (or fine-tuning) afterwards,
      like a pruned one.
    * A block may be bypassed only where its declared stand-in has the block's output shape;
      :func:`bypass_blocks` checks it on ``example_inputs`` when given and raises otherwise.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from compresskit.utils.forward import forward_with_hooks

__all__ = ["BYPASS_MODES", "Bypass", "bypass_blocks", "drop_bypassed", "fit_patterns", "fit_specs", "optional_blocks"]

#: What stands in for a bypassed block, by mode.
BYPASS_MODES = ("identity", "first")


class Bypass(nn.Module):
    """Parameter-free stand-in for a switched-off block.

    Args:
        mode: ``"identity"`` (returns its input) or ``"first"`` (returns the first of its inputs,
            for a block called with a list/tuple or several tensors).
        block: The name of the block it replaces (shown in ``repr``).
        removed: Full names of the block's submodules (see :func:`fit_specs`).
    """

    def __init__(self, mode: str = "identity", block: str = "", removed: Sequence[str] = ()) -> None:
        super().__init__()
        if mode not in BYPASS_MODES:
            raise ValueError(f"unknown bypass mode {mode!r}; valid: {list(BYPASS_MODES)}")
        self.mode, self.block = mode, block
        #: Full names of the modules the block held (what layer-group patterns may have named).
        self.removed = tuple(removed)

    def forward(self, *inputs: Any) -> Any:
        if self.mode == "identity" or len(inputs) > 1:
            return inputs[0]
        first = inputs[0]
        return first[0] if isinstance(first, (list, tuple)) else first

    def extra_repr(self) -> str:
        return f"{self.mode!r}, block={self.block!r}"


def optional_blocks(model: nn.Module) -> dict[str, str]:
    """The blocks ``model`` declares bypassable (``model.bypassable``), validated: name -> mode.

    Raises:
        ValueError: the declaration is not a mapping, names a missing module, or uses an unknown mode.
    """
    declared = getattr(model, "bypassable", None) or {}
    if not isinstance(declared, Mapping):
        raise ValueError(f"{type(model).__name__}.bypassable must be a mapping block name -> mode, got {declared!r}")
    modules = dict(model.named_modules())
    for name, mode in declared.items():
        if mode not in BYPASS_MODES:
            raise ValueError(f"{type(model).__name__}.bypassable[{name!r}]: unknown mode {mode!r}; "
                             f"valid: {list(BYPASS_MODES)}")
        if name not in modules:
            raise ValueError(f"{type(model).__name__}.bypassable names {name!r}, which is not a submodule")
    return dict(declared)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    parent._modules[child] = module  # works for ModuleList / ModuleDict keys too


def bypass_blocks(model: nn.Module, names: Iterable[str], example_inputs: Sequence[torch.Tensor] | None = None
                  ) -> nn.Module:
    """Replace each named block of ``model`` (declared in ``model.bypassable``) by its :class:`Bypass`; in place.

    Args:
        model: The model; it keeps its other modules and weights.
        names: Blocks to switch off (a subset of ``optional_blocks(model)``; already bypassed ones
            are left as they are).
        example_inputs: When given, one forward records every block's output shape first and a
            stand-in whose output would differ in shape is refused.

    Returns:
        ``model``.

    Raises:
        ValueError: an undeclared block, or (with ``example_inputs``) a stand-in of the wrong shape.

    Example:
        >>> model = bypass_blocks(build_model("nano_b"), ["assn", "scale_decoupling"])  # doctest: +SKIP
    """
    if isinstance(names, str):
        raise TypeError(f"names must be a list of block names, got the string {names!r}")
    names = list(dict.fromkeys(names))
    declared = optional_blocks(model)
    unknown = [n for n in names if n not in declared]
    if unknown:
        raise ValueError(f"block(s) {unknown} are not declared bypassable by {type(model).__name__}; "
                         f"declared: {sorted(declared)}")
    pending = [n for n in names if not isinstance(model.get_submodule(n), Bypass)]
    if example_inputs is not None and pending:
        _check_shapes(model, pending, declared, example_inputs)
    for name in pending:
        removed = [f"{name}.{child}" if child else name for child, _ in model.get_submodule(name).named_modules()]
        _set_submodule(model, name, Bypass(declared[name], name, removed))
    return model


def drop_bypassed(model: nn.Module, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the entries of ``model``'s bypassed blocks.

    A checkpoint of the full model (e.g. a trained Nano-B) then loads strictly into the same model
    built with blocks bypassed: the blocks are gone by the recipe's choice, so their weights have no
    place; every other entry must still match. Nothing is dropped for a model without
    :class:`Bypass` modules.
    """
    prefixes = tuple(f"{name}." for name, module in model.named_modules() if isinstance(module, Bypass))
    return {key: value for key, value in state.items() if not (prefixes and key.startswith(prefixes))}


def fit_specs(specs: Sequence[Any], model: nn.Module) -> list[Any]:
    """Layer-group specs for a model with bypassed blocks: drop the patterns that named only removed modules.

    A pattern that matches no module of ``model`` but matched a submodule of a bypassed block is
    dropped (any other pattern is kept, so a typo still fails in :func:`compresskit.find_groups`);
    a spec left without patterns or types is dropped. Without bypassed blocks, ``specs`` unchanged.
    """
    fitted = []
    for spec in specs:
        patterns = tuple(fit_patterns(spec.patterns, model))
        if patterns or spec.types:
            fitted.append(dataclasses.replace(spec, patterns=patterns))
    return fitted


def fit_patterns(patterns: Sequence[str], model: nn.Module) -> list[str]:
    """Module globs (e.g. protect patterns) minus those that named only modules of bypassed blocks."""
    removed = [name for module in model.modules() if isinstance(module, Bypass) for name in module.removed]
    if not removed:
        return list(patterns)
    present = [name for name, _ in model.named_modules()]
    return [p for p in patterns if any(fnmatch.fnmatchcase(n, p) for n in present)
            or not any(fnmatch.fnmatchcase(n, p) for n in removed)]


def _check_shapes(model: nn.Module, names: list[str], declared: Mapping[str, str],
                  example_inputs: Sequence[torch.Tensor]) -> None:
    seen: dict[str, tuple[Any, Any]] = {}
    hooks = []
    for name in names:
        stand_in = Bypass(declared[name], name)

        def hook(_module: nn.Module, args: Any, output: Any, name: str = name, stand_in: Bypass = stand_in) -> None:
            replaced = stand_in(*args)
            seen[name] = (getattr(output, "shape", None), getattr(replaced, "shape", None))

        hooks.append((model.get_submodule(name), hook))
    forward_with_hooks(model, example_inputs, hooks)
    for name in names:
        if name not in seen:
            raise ValueError(f"block {name!r} is not called in the forward pass; bypassing it changes nothing")
        block_shape, bypass_shape = seen[name]
        if block_shape is None or block_shape != bypass_shape:
            raise ValueError(f"block {name!r} cannot be bypassed ({declared[name]!r}): it returns shape "
                             f"{tuple(block_shape) if block_shape is not None else None}, the bypass "
                             f"{tuple(bypass_shape) if bypass_shape is not None else None}")
