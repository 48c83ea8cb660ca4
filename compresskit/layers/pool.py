"""Channel-axis max / mean (CBAM's spatial attention input) as a module compresskit can prune.

CBAM's spatial gate (Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018)
convolves the channel-wise max and mean maps of its input. Written inline
(``x.amax(dim=1)``, ``x.mean(dim=1)``) these reductions make every channel of the input
unprunable: removing a soft-zeroed channel changes the mean (the sum is divided by
``C - 1`` instead of ``C``) and the max (a zero no longer takes part), so the soft-zeroed
and the physically pruned model would differ. :class:`ChannelPool` keeps both exact:

* mean = ``sum / divisor``, where ``divisor`` stays the *original* channel count after
  removal. The removed channels were exactly zero in the soft-zeroed model, so the sum is
  unchanged and so is the mean.
* max = ``max(max over the remaining channels, floor)`` with ``floor = 0`` once any channel
  was removed: the soft-zeroed model's max ran over those zeros too.

Both are exact under the same condition as every other consumer of a pruned channel: the
removed channels are exactly zero where they reach the pool (the numerical check of
:func:`compresskit.find_groups` verifies it on the example inputs).

Caveats:
    * After pruning the module no longer computes the plain channel mean/max of its (smaller)
      input: it computes what the unpruned model computed with the removed channels at zero.
      That is what fine-tuning starts from; the constants stay fixed afterwards.
    * The pruning state (``divisor``, ``floor``) lives in plain attributes, not in the
      ``state_dict`` (checkpoints of unpruned models keep their keys);
      :func:`compresskit.load_pruned` rebuilds it by replaying the pruning history.
    * One module instance per call site: a graph tracer maps each call to its module, and
      the state describes one input.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from compresskit.layers.tracing import is_tracing

__all__ = ["ChannelPool", "REDUCTIONS"]

#: Reductions over the channel axis that :class:`ChannelPool` can keep exact under pruning.
REDUCTIONS = ("max", "mean")


class _PoolChannels(torch.autograd.Function):
    """:meth:`ChannelPool.pool` as a single autograd node (used only while tracing)."""

    @staticmethod
    def forward(ctx, x: Tensor, pool: ChannelPool) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.pool = pool
        return pool.pool(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad_x,) = torch.autograd.grad(ctx.pool.pool(x), x, grad)
        return grad_x, None


class ChannelPool(nn.Module):
    """Max and/or mean over the channel axis, kept exact when compresskit removes input channels.

    Args:
        reductions: The maps to compute, in output order; each ``"max"`` or ``"mean"``
            (CBAM: ``("max", "mean")``).

    Shape:
        ``(N, C, *) -> (N, len(reductions), *)``.

    Attributes:
        divisor: ``None`` while unpruned (plain mean); afterwards the original channel count.
        floor: ``None`` while unpruned (plain max); afterwards ``0.0``.
        num_channels: Input channels as last traced or pruned (``None`` before either).

    Example:
        >>> pool = ChannelPool(("max", "mean"))
        >>> pool(torch.tensor([[[[1.0]], [[-3.0]]]])).flatten().tolist()
        [1.0, -1.0]
    """

    def __init__(self, reductions: Sequence[str] = REDUCTIONS) -> None:
        super().__init__()
        if isinstance(reductions, str) or not reductions or any(r not in REDUCTIONS for r in reductions):
            raise ValueError(
                f"ChannelPool reductions must be a non-empty sequence of {list(REDUCTIONS)}, got {reductions!r}"
            )
        self.reductions = tuple(reductions)
        self.divisor: int | None = None
        self.floor: float | None = None
        self.num_channels: int | None = None

    @property
    def pruned(self) -> bool:
        """Whether input channels have been removed."""
        return self.divisor is not None

    def pool(self, x: Tensor) -> Tensor:
        """The pooled maps ``(N, len(reductions), *)`` with the current pruning state."""
        maps = []
        for reduction in self.reductions:
            if reduction == "max":
                peak = x.amax(dim=1, keepdim=True)
                maps.append(peak if self.floor is None else peak.clamp_min(self.floor))
            elif self.divisor is None:
                maps.append(x.mean(dim=1, keepdim=True))
            else:
                maps.append(x.sum(dim=1, keepdim=True) / self.divisor)
        return maps[0] if len(maps) == 1 else torch.cat(maps, dim=1)

    def remove_input_channels(self, size: int, indices: Sequence[int]) -> None:
        """Record the removal of input channels ``indices`` out of ``size`` (surgery and replay).

        Raises:
            ValueError: ``size`` is not the current input width, or an index is out of range.
        """
        if self.num_channels is not None and self.num_channels != size:
            raise ValueError(f"ChannelPool has {self.num_channels} input channels, pruning op expects {size}")
        removed = set(indices)
        if any(not 0 <= i < size for i in removed) or len(removed) >= size:
            raise ValueError(f"ChannelPool input indices out of range or removing all {size}: {sorted(removed)}")
        if self.divisor is None:
            self.divisor = size
        self.floor = 0.0
        self.num_channels = size - len(removed)

    def forward(self, x: Tensor) -> Tensor:
        if is_tracing():
            self.num_channels = x.shape[1]
            return _PoolChannels.apply(x, self)
        return self.pool(x)

    def extra_repr(self) -> str:
        pruned = "" if self.divisor is None else f", divisor={self.divisor}, floor={self.floor}"
        return f"reductions={self.reductions}{pruned}"
