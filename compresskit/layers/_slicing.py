"""Tensor cuts behind the layer rules of :mod:`compresskit.layers`: drop entries along one
dimension of a parameter or buffer, zero entries in place, drop grouped-conv input columns.

Contract: every function returns new tensors (or fills in place, for :func:`zero_entries`) with
the dtype and device of its input; a new parameter keeps ``requires_grad``. Values are copied,
never recomputed, so a pruned layer holds exactly the numbers it held before.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["check_indices", "keep_buffer", "keep_grouped_inputs", "keep_parameter", "zero_entries"]


def check_indices(axis: str, indices: Sequence[int], size: int, current: int | None) -> None:
    """Raise ``ValueError`` unless ``axis`` has length ``size`` (it has ``current``) and ``indices`` lie in it."""
    if current != size:
        raise ValueError(f"expects {axis} size {size}, model has {current}")
    if not indices or max(indices) >= size or min(indices) < 0:
        raise ValueError(f"indices out of range: {list(indices)}")


def _kept(size: int, removed: Sequence[int], device: torch.device) -> Tensor:
    drop = set(removed)
    return torch.tensor([i for i in range(size) if i not in drop], dtype=torch.long, device=device)


def keep_parameter(parameter: Tensor, dim: int, removed: Sequence[int]) -> nn.Parameter:
    """``parameter`` without entries ``removed`` along ``dim``: same dtype, device, ``requires_grad``
    (and its ``.grad``, sliced the same way, if it has one)."""
    keep = _kept(parameter.shape[dim], removed, parameter.device)
    kept = nn.Parameter(parameter.detach().index_select(dim, keep), requires_grad=parameter.requires_grad)
    if parameter.grad is not None:
        kept.grad = parameter.grad.index_select(dim, keep)
    return kept


def keep_buffer(buffer: Tensor, removed: Sequence[int]) -> Tensor:
    """``buffer`` (e.g. BatchNorm running statistics) without entries ``removed`` along dim 0."""
    return buffer.index_select(0, _kept(buffer.shape[0], removed, buffer.device))


def zero_entries(tensor: Tensor | None, dim: int, indices: Sequence[int]) -> None:
    """Set entries ``indices`` along ``dim`` of ``tensor`` to 0 in place (``None``: nothing to do)."""
    if tensor is not None:
        with torch.no_grad():
            tensor.index_fill_(dim, torch.tensor(list(indices), dtype=torch.long, device=tensor.device), 0.0)


def keep_grouped_inputs(weight: Tensor, groups: int, removed: Sequence[int]) -> nn.Parameter:
    """A grouped conv's weight ``(out, in / groups, *kernel)`` without input channels ``removed``
    (numbered ``0 .. in - 1`` across groups); every group must lose the same number.

    Output ``o`` of group ``b`` reads inputs ``b * in / groups .. (b + 1) * in / groups - 1``.
    (Torch-Pruning's conv input pruner keeps the wrong columns when ``1 < groups < in``.)

    Raises:
        ValueError: the groups would keep different numbers of input channels.
    """
    out_channels, per_group = weight.shape[0], weight.shape[1]
    drop = set(removed)
    keep_columns = [[j for j in range(per_group) if b * per_group + j not in drop] for b in range(groups)]
    if len({len(columns) for columns in keep_columns}) != 1:
        raise ValueError(
            f"grouped conv input pruning must remove the same number of channels per group, "
            f"got kept counts {[len(c) for c in keep_columns]}"
        )
    out_per_group = out_channels // groups
    columns = torch.tensor(
        [keep_columns[o // out_per_group] for o in range(out_channels)], dtype=torch.long, device=weight.device,
    )  # (out, in'/g)
    columns = columns.view(*columns.shape, *([1] * (weight.dim() - 2))).expand(-1, -1, *weight.shape[2:])
    return nn.Parameter(torch.gather(weight.detach(), 1, columns), requires_grad=weight.requires_grad)
