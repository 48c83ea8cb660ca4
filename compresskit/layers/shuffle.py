"""Channel shuffle as a module that compresskit can trace and prune.

Channel shuffle (Zhang et al., "ShuffleNet: An Extremely Efficient Convolutional
Neural Network for Mobile Devices", CVPR 2018) interleaves the channels of ``g``
groups: ``(N, C, H, W) -> (N, g, C/g, H, W) -> transpose -> (N, C, H, W)``, so
output channel ``j`` reads input channel ``(j % g) * (C / g) + j // g``.

Written inline as ``view/transpose/reshape`` the permutation is invisible to
Torch-Pruning's autograd tracer, which then couples input channel ``i`` with
output channel ``i`` (wrong) and fails or silently changes the model when
pruning. Models that want their shuffled channels pruned should use
:class:`ChannelShuffle`; compresskit maps channel indices through its
permutation.

Caveats:
    After pruning, an arbitrary subset of channels may have been removed from
    each shuffle group, so the result is in general no longer a shuffle. The
    module then stores the exact permutation in the non-persistent buffer
    ``index`` and its forward becomes ``x.index_select(1, index)`` (an ONNX
    ``Gather``). The buffer is rebuilt by replaying the pruning history, so it
    is not part of the ``state_dict``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from compresskit.layers.tracing import is_tracing

__all__ = ["ChannelShuffle"]


class _PermuteChannels(torch.autograd.Function):
    """``x[:, index]`` as a single autograd node (used only while tracing)."""

    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(index)
        ctx.num_channels = x.shape[1]
        return x.index_select(1, index)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (index,) = ctx.saved_tensors
        shape = list(grad.shape)
        shape[1] = ctx.num_channels
        return grad.new_zeros(shape).index_add(1, index, grad), None


class ChannelShuffle(nn.Module):
    """Interleave the channels of ``groups`` groups (ShuffleNet), prunable by compresskit.

    Args:
        groups: Number of channel groups; the channel count must be divisible by it.

    Shape:
        ``(N, C, *)`` -> ``(N, C, *)``: output channel ``j`` is input channel
        ``(j % groups) * (C // groups) + j // groups``.

    Example:
        >>> shuffle = ChannelShuffle(2)
        >>> shuffle(torch.arange(4.0).view(1, 4, 1, 1)).flatten().tolist()
        [0.0, 2.0, 1.0, 3.0]
    """

    index: Tensor | None

    def __init__(self, groups: int) -> None:
        super().__init__()
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"ChannelShuffle groups must be a positive int, got {groups!r}")
        self.groups = groups
        # Set once the module has been pruned: output j reads input index[j].
        self.register_buffer("index", None, persistent=False)
        self.traced_channels: int | None = None

    def source_index(self, num_channels: int) -> Tensor:
        """Input channel read by each output channel, for ``num_channels`` inputs."""
        if self.index is not None:
            if self.index.numel() != num_channels:
                raise ValueError(
                    f"ChannelShuffle was pruned to {self.index.numel()} channels, got {num_channels}"
                )
            return self.index
        if num_channels % self.groups:
            raise ValueError(
                f"ChannelShuffle(groups={self.groups}) needs a channel count divisible by "
                f"{self.groups}, got {num_channels}"
            )
        out = torch.arange(num_channels)
        return (out % self.groups) * (num_channels // self.groups) + out // self.groups

    def remove_input_channels(self, size: int, indices: Sequence[int]) -> None:
        """Drop input channels ``indices`` out of ``size``; the outputs that read them go with them
        (surgery and replay). Afterwards the forward is the gather stored in ``index``.

        Raises:
            ValueError: ``size`` does not fit the shuffle (see :meth:`source_index`).
        """
        source = self.source_index(size).tolist()
        removed = set(indices)
        kept = [i for i in range(size) if i not in removed]
        rank = {old: new for new, old in enumerate(kept)}
        device = self.index.device if self.index is not None else None
        self.index = torch.tensor([rank[s] for s in source if s in rank], dtype=torch.long, device=device)
        self.traced_channels = len(kept)

    def forward(self, x: Tensor) -> Tensor:
        if is_tracing():
            self.traced_channels = x.shape[1]
            return _PermuteChannels.apply(x, self.source_index(x.shape[1]).to(x.device))
        if self.index is not None:
            return x.index_select(1, self.index)
        batch, channels = x.shape[0], x.shape[1]
        if channels % self.groups:
            raise ValueError(
                f"ChannelShuffle(groups={self.groups}) needs a channel count divisible by "
                f"{self.groups}, got {channels}"
            )
        # (N, C, *) -> (N, g, C/g, *) -> (N, C/g, g, *) -> (N, C, *)
        x = x.reshape(batch, self.groups, channels // self.groups, *x.shape[2:])
        return x.transpose(1, 2).reshape(batch, channels, *x.shape[3:])

    def extra_repr(self) -> str:
        pruned = "" if self.index is None else f", pruned_to={self.index.numel()}"
        return f"groups={self.groups}{pruned}"
