"""Surgery: zero or physically remove channels of named modules.

Every change to a model goes through :class:`ChannelOp` records ``(module name, axis,
indices, size before)``; the same records are the pruning history that
:mod:`compresskit.models.persist` replays on a freshly built model, so the live model and
the replayed one go through the same code. What an op does to a module is its layer
rule's business (:mod:`compresskit.layers`); this module looks modules up by name,
merges ops, and checks that removal is exact (soft-zeroed outputs == pruned outputs).

The axis constants and layer predicates (``OUT``, ``IN``, ``BOTH``, ``axis_size``,
``is_attention``, ``is_depthwise``) live in :mod:`compresskit.layers` and are re-exported here.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from compresskit.layers.rules import AXES, BOTH, IN, OUT, Axis, axis_size, is_attention, is_depthwise, rule_for

__all__ = [
    "AXES",
    "BOTH",
    "EXACT_TOLERANCE",
    "IN",
    "OUT",
    "ChannelOp",
    "axis_size",
    "clone_module",
    "flatten_outputs",
    "inexact_reason",
    "is_attention",
    "is_depthwise",
    "max_relative_difference",
    "merge_ops",
    "remove_channels",
    "removal_difference",
    "run_model",
    "zero_channels",
]


class ChannelOp(NamedTuple):
    """Remove (or zero) ``indices`` along ``axis`` of the module named ``module``.

    ``size`` is the length of that axis before the op; it guards replay against a
    model that does not match the history.
    """

    module: str
    axis: Axis
    indices: tuple[int, ...]
    size: int

    def to_list(self) -> list[Any]:
        """Plain-list form stored in checkpoints."""
        return [self.module, self.axis, list(self.indices), self.size]

    @classmethod
    def from_list(cls, value: Sequence[Any]) -> ChannelOp:
        """Inverse of :meth:`to_list`; raises ``ValueError`` on malformed input."""
        if not isinstance(value, (list, tuple)) or len(value) != 4:
            raise ValueError(f"pruning op must be [module, axis, indices, size], got {value!r}")
        module, axis, indices, size = value
        if not isinstance(module, str) or axis not in AXES or not isinstance(size, int):
            raise ValueError(f"malformed pruning op {value!r}")
        if not isinstance(indices, (list, tuple)) or not all(isinstance(i, int) for i in indices):
            raise ValueError(f"pruning op indices must be ints, got {indices!r}")
        return cls(module, axis, tuple(indices), size)


def merge_ops(ops: Iterable[ChannelOp]) -> list[ChannelOp]:
    """Union the indices of ops on the same module axis (all in pre-step coordinates)."""
    merged: dict[tuple[str, str], ChannelOp] = {}
    for op in ops:
        key = (op.module, op.axis)
        if key in merged:
            previous = merged[key]
            if previous.size != op.size:
                raise ValueError(f"inconsistent sizes for {op.module} {op.axis}: {previous.size} vs {op.size}")
            op = op._replace(indices=tuple(sorted(set(previous.indices) | set(op.indices))))
        merged[key] = op._replace(indices=tuple(sorted(set(op.indices))))
    return [op for op in merged.values() if op.indices]


def _modules(model: nn.Module) -> dict[str, nn.Module]:
    return dict(model.named_modules())


def _lookup(modules: dict[str, nn.Module], op: ChannelOp) -> nn.Module:
    if op.module not in modules:
        raise ValueError(f"pruning op names module {op.module!r}, which the model does not have")
    return modules[op.module]


@torch.no_grad()
def zero_channels(model: nn.Module, ops: Iterable[ChannelOp]) -> None:
    """Soft-prune: zero the output filters (weight rows, bias, BN gamma/beta) named by ``ops``.

    Only ``out``/``both`` ops change anything; input-side ops need no zeroing because the
    channel they read is already exactly zero. Modules without a layer rule are left as they are.
    """
    modules = _modules(model)
    for op in ops:
        if op.axis == IN or not op.indices:
            continue
        module = _lookup(modules, op)
        rule = rule_for(module)
        if rule is not None:
            rule.zero(module, op.axis, op.indices)


def remove_channels(model: nn.Module, ops: Iterable[ChannelOp]) -> None:
    """Physically remove channels; ``ops`` of one step must all use pre-step coordinates.

    Raises:
        ValueError: an op names a module the model lacks or one without a layer rule, or its
            size or indices do not fit the module.
    """
    modules = _modules(model)
    for op in merge_ops(ops):
        module = _lookup(modules, op)
        rule = rule_for(module)
        if rule is None:
            raise ValueError(f"cannot remove channels of {op.module!r} ({type(module).__name__})")
        try:
            rule.remove(module, op.axis, op.indices, op.size)
        except ValueError as error:
            raise ValueError(f"pruning op on {op.module!r} ({type(module).__name__}): {error}") from None


def run_model(model: nn.Module, example_inputs: Any) -> Any:
    """Call ``model`` on ``example_inputs``: a tensor, or a tuple/list of positional args."""
    if isinstance(example_inputs, tuple):
        return model(*example_inputs)
    return model(example_inputs)


def flatten_outputs(output: Any) -> list[Tensor]:
    """Tensors of a nested output (tensor / tuple / list / dict) in a fixed order."""
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, dict):
        return [t for key in sorted(output, key=str) for t in flatten_outputs(output[key])]
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in flatten_outputs(item)]
    return []


def max_relative_difference(reference: Any, other: Any) -> float:
    """``max |a - b| / max(1e-12, max |a|)`` over all output tensors; ``inf`` on shape mismatch."""
    first, second = flatten_outputs(reference), flatten_outputs(other)
    if len(first) != len(second):
        return float("inf")
    worst = 0.0
    for a, b in zip(first, second):
        if a.shape != b.shape:
            return float("inf")
        if a.numel() == 0:
            continue
        scale = max(float(a.detach().abs().max()), 1e-12)
        diff = float((a.detach().double() - b.detach().double()).abs().max())
        if diff != diff:  # NaN
            return float("inf")
        worst = max(worst, diff / scale)
    return worst


#: Largest relative soft-zeroed vs removed difference accepted, by the dtype the check ran in.
#: Exact removal leaves summation-order noise (~1e-15 in float64); a wrong channel mapping keeps
#: its size whatever the dtype, so float64 separates the two by many orders of magnitude.
EXACT_TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-5}


def clone_module(module: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """A copy of ``module`` that surgery may change freely, optionally cast to ``dtype``.

    Much cheaper than ``copy.deepcopy`` (the probe of :func:`compresskit.find_groups` clones
    the model several times): every module object is shallow-copied with its own parameter,
    buffer and child dicts and its own tensors; other attributes are shared, which is safe
    because surgery only rebinds them (``conv.out_channels = ...``), never mutates them in place.
    Falls back to ``copy.deepcopy`` for modules that cannot be shallow-copied.
    """
    memo: dict[int, Any] = {}  # shared (tied) parameters and modules stay shared in the copy

    def tensor(old: Tensor, parameter: bool) -> Tensor:
        if id(old) not in memo:
            new = _cast(old, dtype)
            memo[id(old)] = nn.Parameter(new, requires_grad=old.requires_grad) if parameter else new
        return memo[id(old)]

    def clone(old: nn.Module) -> nn.Module:
        if id(old) in memo:
            return memo[id(old)]
        new = memo[id(old)] = copy.copy(old)
        new._parameters = {k: None if p is None else tensor(p, True) for k, p in old._parameters.items()}
        new._buffers = {k: None if b is None else tensor(b, False) for k, b in old._buffers.items()}
        new._modules = {k: None if m is None else clone(m) for k, m in old._modules.items()}
        return new

    try:
        return clone(module)
    except Exception:  # noqa: BLE001 - exotic modules: the slow, general path
        replica = copy.deepcopy(module)
        return replica if dtype is None else replica.to(dtype)


def _cast(tensor: Tensor, dtype: torch.dtype | None) -> Tensor:
    tensor = tensor.detach()
    if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
        return tensor.to(dtype)
    return tensor.clone()


def removal_difference(
    model: nn.Module, example_inputs: Any, ops: Sequence[ChannelOp], dtype: torch.dtype | None = torch.float64
) -> float:
    """Soft-zero ``ops`` on an eval-mode copy of ``model``, then remove them; compare the outputs.

    Args:
        dtype: Run the copy (and the floating inputs) in this dtype; ``None`` keeps the model's.

    Returns:
        :func:`max_relative_difference` of the soft-zeroed and the physically pruned
        outputs (``model`` itself is not touched). Surgery errors propagate.
    """
    replica = clone_module(model, dtype).eval()
    if dtype is not None:
        example_inputs = _cast_inputs(example_inputs, dtype)
    with torch.no_grad():
        zero_channels(replica, ops)
        soft = run_model(replica, example_inputs)
        remove_channels(replica, ops)
        hard = run_model(replica, example_inputs)
    return max_relative_difference(soft, hard)


def inexact_reason(model: nn.Module, example_inputs: Any, ops: Sequence[ChannelOp]) -> str | None:
    """Why removing ``ops`` is not exact on ``example_inputs``; ``None`` when it is.

    The check runs in float64 (relative tolerance ``EXACT_TOLERANCE[float64]``); only a model
    that cannot run in float64 at all (a custom op without a float64 kernel) is checked in its
    own dtype, at that dtype's tolerance.
    """
    native = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    dtype = torch.float64
    try:
        difference = removal_difference(model, example_inputs, ops, dtype)
    except Exception as error:  # noqa: BLE001 - any failure means "not exact"
        if native == torch.float64:
            return f"removal breaks the model: {type(error).__name__}: {error}"
        dtype = native
        try:
            difference = removal_difference(model, example_inputs, ops, None)
        except Exception as error:  # noqa: BLE001
            return f"removal breaks the model: {type(error).__name__}: {error}"
    if difference > EXACT_TOLERANCE.get(dtype, 1e-2):
        dtype_name = str(dtype).replace("torch.", "")
        return f"soft-zeroed and removed outputs differ (relative {difference:.2e} in {dtype_name})"
    return None


def _cast_inputs(example_inputs: Any, dtype: torch.dtype) -> Any:
    """Floating tensors of ``example_inputs`` cast to ``dtype``."""
    if isinstance(example_inputs, Tensor):
        return example_inputs.to(dtype) if example_inputs.is_floating_point() else example_inputs
    if isinstance(example_inputs, (list, tuple)):
        return type(example_inputs)(_cast_inputs(x, dtype) for x in example_inputs)
    if isinstance(example_inputs, dict):
        return {k: _cast_inputs(v, dtype) for k, v in example_inputs.items()}
    return example_inputs
