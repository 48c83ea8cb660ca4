"""Surgery: zero or physically remove channels of named modules.

Every change to a model goes through :class:`ChannelOp` records ``(module name, axis,
indices, size before)``; the same records are the pruning history that
:mod:`compresskit.persist` replays on a freshly built model, so the live model and
the replayed one go through the same code.

Standard layers use Torch-Pruning's layer functions (``prune_conv_out_channels`` &c.);
grouped-conv input channels, :class:`~compresskit.shuffle.ChannelShuffle` and
:class:`~compresskit.pool.ChannelPool` use our own, because Torch-Pruning's conv input
pruner keeps the wrong columns when ``1 < groups < in_channels`` and the other two are ours.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import torch
import torch_pruning as tp
from torch import Tensor, nn

from .pool import ChannelPool
from .shuffle import ChannelShuffle

OUT, IN, BOTH = "out", "in", "both"
AXES = (OUT, IN, BOTH)


class ChannelOp(NamedTuple):
    """Remove (or zero) ``indices`` along ``axis`` of the module named ``module``.

    ``size`` is the length of that axis before the op; it guards replay against a
    model that does not match the history.
    """

    module: str
    axis: str
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


def is_depthwise(conv: nn.Module) -> bool:
    """A conv whose every group has one input and one output channel."""
    return (
        isinstance(conv, nn.modules.conv._ConvNd)
        and not conv.transposed
        and conv.groups > 1
        and conv.groups == conv.in_channels == conv.out_channels
    )


def axis_size(module: nn.Module, axis: str) -> int | None:
    """Current length of ``axis`` of a supported module, ``None`` if unsupported."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.in_channels if axis == IN else module.out_channels
    if isinstance(module, nn.Linear):
        return module.in_features if axis == IN else module.out_features
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return module.num_features
    if isinstance(module, nn.PReLU):
        return module.num_parameters
    if isinstance(module, ChannelShuffle):
        if module.index is not None:
            return module.index.numel()
        return module.traced_channels
    if isinstance(module, ChannelPool):
        return module.num_channels if axis == IN else len(module.reductions)
    if is_attention(module):
        return module.num_heads
    return None


def is_attention(module: nn.Module) -> bool:
    """A custom attention module whose heads compresskit can remove: an int ``num_heads``
    attribute (timm / ViT style), not ``nn.MultiheadAttention`` (its projection width is tied to
    the query width). Its "channels" are heads; removal only lowers ``num_heads``."""
    return (
        not isinstance(module, nn.MultiheadAttention)
        and isinstance(getattr(module, "num_heads", None), int)
        and not isinstance(module.num_heads, bool)
    )


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
    channel they read is already exactly zero.
    """
    modules = _modules(model)
    for op in ops:
        if op.axis == IN or not op.indices:
            continue
        module = _lookup(modules, op)
        index = torch.tensor(op.indices, dtype=torch.long)
        if isinstance(module, nn.modules.conv._ConvNd):
            weight_axis = 1 if module.transposed else 0
            module.weight.index_fill_(weight_axis, index.to(module.weight.device), 0.0)
            if module.bias is not None:
                module.bias.index_fill_(0, index.to(module.bias.device), 0.0)
        elif isinstance(module, nn.Linear):
            module.weight.index_fill_(0, index.to(module.weight.device), 0.0)
            if module.bias is not None:
                module.bias.index_fill_(0, index.to(module.bias.device), 0.0)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            if module.affine:
                module.weight.index_fill_(0, index.to(module.weight.device), 0.0)
                module.bias.index_fill_(0, index.to(module.bias.device), 0.0)
        # PReLU(0) == 0, a shuffle moves zeros, a ChannelPool only reads: nothing to zero.


def _prune_grouped_conv_in_channels(conv: nn.modules.conv._ConvNd, indices: Sequence[int]) -> None:
    """Remove input channels of a grouped conv, the same number from every group."""
    groups, per_group = conv.groups, conv.in_channels // conv.groups
    removed = set(indices)
    keep_columns = [[j for j in range(per_group) if b * per_group + j not in removed] for b in range(groups)]
    kept = {len(columns) for columns in keep_columns}
    if len(kept) != 1:
        raise ValueError(
            f"grouped conv input pruning must remove the same number of channels per group, "
            f"got kept counts {[len(c) for c in keep_columns]}"
        )
    weight = conv.weight  # (out, in/g, *k)
    out_per_group = conv.out_channels // groups
    columns = torch.tensor(
        [keep_columns[o // out_per_group] for o in range(conv.out_channels)], dtype=torch.long,
        device=weight.device,
    )  # (out, in'/g)
    columns = columns.view(*columns.shape, *([1] * (weight.dim() - 2))).expand(-1, -1, *weight.shape[2:])
    conv.weight = nn.Parameter(torch.gather(weight.detach(), 1, columns), requires_grad=weight.requires_grad)
    conv.in_channels -= len(removed)


def _prune_shuffle_in_channels(shuffle: ChannelShuffle, size: int, indices: Sequence[int]) -> None:
    """Drop input channels of a shuffle; the outputs that read them disappear with them."""
    source = shuffle.source_index(size).tolist()
    removed = set(indices)
    kept = [i for i in range(size) if i not in removed]
    rank = {old: new for new, old in enumerate(kept)}
    device = shuffle.index.device if shuffle.index is not None else None
    shuffle.index = torch.tensor([rank[s] for s in source if s in rank], dtype=torch.long, device=device)
    shuffle.traced_channels = len(kept)


def remove_channels(model: nn.Module, ops: Iterable[ChannelOp]) -> None:
    """Physically remove channels; ``ops`` of one step must all use pre-step coordinates.

    Raises:
        ValueError: an op names a module the model lacks, or sizes do not match.
    """
    modules = _modules(model)
    for op in merge_ops(ops):
        module = _lookup(modules, op)
        if isinstance(module, ChannelShuffle):
            if op.axis == IN:  # the output side is implied by the permutation
                _prune_shuffle_in_channels(module, op.size, op.indices)
            continue
        if is_attention(module) and op.axis == OUT:
            if module.num_heads != op.size or len(op.indices) >= op.size:
                raise ValueError(f"pruning op expects {op.module!r} with {op.size} heads, model has {module.num_heads}")
            module.num_heads = op.size - len(op.indices)  # its q/k/v/proj rows go with their own ops
            continue
        if isinstance(module, ChannelPool):
            if op.axis != IN:
                raise ValueError(f"cannot remove output maps of ChannelPool {op.module!r}")
            # keeps the original mean divisor and floors the max at 0 (exact, see pool.py)
            module.remove_input_channels(op.size, op.indices)
            continue
        current = axis_size(module, op.axis)
        if current != op.size:
            raise ValueError(
                f"pruning op expects {op.module!r} ({type(module).__name__}) {op.axis} size "
                f"{op.size}, model has {current}"
            )
        if max(op.indices) >= op.size or min(op.indices) < 0:
            raise ValueError(f"pruning op indices out of range for {op.module!r}: {op.indices}")
        indices = list(op.indices)
        if isinstance(module, nn.modules.conv._ConvNd):
            if op.axis == BOTH:
                tp.prune_depthwise_conv_out_channels(module, indices)
            elif op.axis == OUT:
                tp.prune_conv_out_channels(module, indices)
            elif module.groups > 1 and not module.transposed:
                _prune_grouped_conv_in_channels(module, indices)
            else:
                tp.prune_conv_in_channels(module, indices)
        elif isinstance(module, nn.Linear):
            fn = tp.prune_linear_in_channels if op.axis == IN else tp.prune_linear_out_channels
            fn(module, indices)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            tp.prune_batchnorm_out_channels(module, indices)
        elif isinstance(module, nn.PReLU):
            if module.num_parameters > 1:
                tp.prune_prelu_out_channels(module, indices)
        else:
            raise ValueError(f"cannot remove channels of {op.module!r} ({type(module).__name__})")


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
        example_inputs = cast_inputs(example_inputs, dtype)
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
        return f"soft-zeroed and removed outputs differ (relative {difference:.2e} in {str(dtype).replace('torch.', '')})"
    return None


def cast_inputs(example_inputs: Any, dtype: torch.dtype) -> Any:
    """Floating tensors of ``example_inputs`` cast to ``dtype``."""
    if isinstance(example_inputs, Tensor):
        return example_inputs.to(dtype) if example_inputs.is_floating_point() else example_inputs
    if isinstance(example_inputs, (list, tuple)):
        return type(example_inputs)(cast_inputs(x, dtype) for x in example_inputs)
    if isinstance(example_inputs, dict):
        return {k: cast_inputs(v, dtype) for k, v in example_inputs.items()}
    return example_inputs
