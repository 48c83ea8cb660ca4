"""CBAM: Convolutional Block Attention Module (Woo et al., ECCV 2018).

Channel gate: a shared two-layer MLP over the spatially average- and max-pooled features,
summed, sigmoid, multiplied onto the input. Spatial gate: channel-wise max and mean maps
(in that order, as in the official FeatherFace code), 7x7 conv + BatchNorm, sigmoid,
multiplied onto the channel-gated features. FeatherFace V1 wraps each use as
``ReLU(CBAM(x) + x)``; that residual lives in the model, not here.

The channel max/mean is :class:`compresskit.ChannelPool`, so compresskit can prune the gated
channels exactly; it has no parameters or persistent buffers, so the state dict (and the official
checkpoints) are unchanged.

The MLP is ``nn.Linear`` (as the official code) so V1 checkpoints load unchanged; the Nano-B
variant in ``nano_modules.EfficientCBAM`` uses 1x1 convs instead.
"""

from __future__ import annotations

import torch
from torch import nn

from compresskit.layers.pool import ChannelPool

SPATIAL_KERNEL = 7


class ChannelGate(nn.Module):
    """``x * sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))``; MLP = fc1 -> ReLU -> fc2.

    Args:
        channels: input channels ``C``.
        reduction: hidden width is ``C // reduction``.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, channels)

    def _mlp(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(pooled)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, C, H, W) -> (N, C)
        avg = x.mean(dim=(2, 3))
        peak = x.amax(dim=(2, 3))
        scale = torch.sigmoid(self._mlp(avg) + self._mlp(peak))
        # (N, C) -> (N, C, 1, 1)
        return x * scale[:, :, None, None]


class SpatialGate(nn.Module):
    """``x * sigmoid(BN(conv7x7([max_c(x), mean_c(x)])))``.

    Args:
        kernel_size: spatial conv size (7 in CBAM).
        bn_momentum: BatchNorm momentum (0.01 in the official FeatherFace code).
    """

    def __init__(self, kernel_size: int = SPATIAL_KERNEL, bn_momentum: float = 0.01) -> None:
        super().__init__()
        self.pool = ChannelPool(("max", "mean"))
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=bn_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(x)  # (N, C, H, W) -> (N, 2, H, W): channel max, channel mean
        return x * torch.sigmoid(self.bn(self.conv(pooled)))


class CBAM(nn.Module):
    """Channel gate followed by spatial gate (no residual).

    Args:
        channels: input channels.
        reduction: channel-MLP reduction ratio (16 in FeatherFace V1).

    Example:
        >>> cbam = CBAM(64, reduction=16)
        >>> cbam(torch.randn(1, 64, 20, 20)).shape
        torch.Size([1, 64, 20, 20])
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.channel_gate = ChannelGate(channels, reduction)
        self.spatial_gate = SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial_gate(self.channel_gate(x))
