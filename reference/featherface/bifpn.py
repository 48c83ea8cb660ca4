"""BiFPN cell (Tan, Pang, Le, "EfficientDet", CVPR 2020), three levels P3-P5.

As in the official FeatherFace code (itself from Zylo117's EfficientDet port): fast normalised
fusion ``relu(w_i) / (sum_j relu(w_j) + 1e-4)``, then Swish, then a depthwise-separable conv
(depthwise 3x3 without bias, pointwise 1x1 with bias) + BatchNorm (momentum 0.01, eps 1e-3).
Top-down: nearest upsampling to the finer map's size. Bottom-up: 3x3 stride-2 max-pool with
TensorFlow "same" padding (zero-padded on the right/bottom first, as the official code does:
padding with zeros, not -inf, which matters for negative activations). The first cell maps the
backbone channels with 1x1 conv (+bias) + BN; like the original it uses a *second* set of 1x1
maps (``p4_down_channel_2``, ``p5_down_channel_2``) for the bottom-up inputs of P4 and P5.

Any input size works: the down-sampled map has ``ceil(size / 2)`` rows and columns, which is what
the stride-2 backbone produces.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

FUSION_EPSILON = 1e-4
BN_MOMENTUM = 0.01
BN_EPS = 1e-3


class SeparableConvBN(nn.Module):
    """Depthwise 3x3 (no bias) -> pointwise 1x1 (bias) -> BatchNorm, no activation."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.pointwise = nn.Conv2d(channels, channels, 1)
        self.bn = nn.BatchNorm2d(channels, momentum=BN_MOMENTUM, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pointwise(self.depthwise(x)))


class ConvBN(nn.Module):
    """1x1 conv (bias) + BatchNorm: maps backbone channels to the BiFPN width."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)
        self.bn = nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


def _downsample(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-2 max-pool with TF "same" zero padding: ``[N,C,H,W] -> [N,C,ceil(H/2),ceil(W/2)]``.

    TF pads an odd ``H`` with one zero row above and one below, an even ``H`` with one below only.
    Both are "one above, two below, then drop the first row when ``H`` is even" (the second row below
    is never read). The drop is a slice whose start comes from the tensor's size, not from Python
    integer arithmetic, so a traced ONNX export with dynamic height/width pools the right rows at
    every input size instead of the padding frozen at the example's size.
    """
    x = F.pad(x, [1, 2, 1, 2])
    top, left = x.shape[-2] % 2, x.shape[-1] % 2  # padded size H + 3 is odd exactly when H is even
    return F.max_pool2d(x[..., top:, left:], 3, 2)


def _upsample_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="nearest")


class BiFPNCell(nn.Module):
    """One bidirectional fusion cell over ``(p3, p4, p5)``.

    Args:
        channels: BiFPN width (64 in FeatherFace V1, 72 in Nano-B).
        in_channels: backbone channels ``(c3, c4, c5)`` for the first cell (adds the 1x1 maps);
            ``None`` for later cells, whose inputs already have ``channels``.

    Returns from ``forward``: ``(p3_out, p4_out, p5_out)`` with ``channels`` each, same sizes as
    the inputs.
    """

    def __init__(self, channels: int, in_channels: Sequence[int] | None = None) -> None:
        super().__init__()
        self.first = in_channels is not None
        if in_channels is not None:
            c3, c4, c5 = in_channels
            self.p3_down_channel = ConvBN(c3, channels)
            self.p4_down_channel = ConvBN(c4, channels)
            self.p5_down_channel = ConvBN(c5, channels)
            self.p4_down_channel_2 = ConvBN(c4, channels)
            self.p5_down_channel_2 = ConvBN(c5, channels)
        self.conv4_up = SeparableConvBN(channels)
        self.conv3_up = SeparableConvBN(channels)
        self.conv4_down = SeparableConvBN(channels)
        self.conv5_down = SeparableConvBN(channels)
        self.p4_w1 = nn.Parameter(torch.ones(2))
        self.p3_w1 = nn.Parameter(torch.ones(2))
        self.p4_w2 = nn.Parameter(torch.ones(3))
        self.p5_w2 = nn.Parameter(torch.ones(3))
        self.swish = nn.SiLU()

    @staticmethod
    def _fusion_weights(raw: torch.Tensor) -> torch.Tensor:
        positive = F.relu(raw)
        return positive / (positive.sum() + FUSION_EPSILON)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p3, p4, p5 = features
        if self.first:
            p3_in = self.p3_down_channel(p3)
            p4_in = self.p4_down_channel(p4)
            p5_in = self.p5_down_channel(p5)
        else:
            p3_in, p4_in, p5_in = p3, p4, p5

        w = self._fusion_weights(self.p4_w1)
        p4_up = self.conv4_up(self.swish(w[0] * p4_in + w[1] * _upsample_to(p5_in, p4_in)))
        w = self._fusion_weights(self.p3_w1)
        p3_out = self.conv3_up(self.swish(w[0] * p3_in + w[1] * _upsample_to(p4_up, p3_in)))

        if self.first:
            p4_in = self.p4_down_channel_2(p4)
            p5_in = self.p5_down_channel_2(p5)

        w = self._fusion_weights(self.p4_w2)
        p4_out = self.conv4_down(self.swish(w[0] * p4_in + w[1] * p4_up + w[2] * _downsample(p3_out)))
        w = self._fusion_weights(self.p5_w2)
        # the official code builds p5_w2 with 3 entries and uses the first two
        p5_out = self.conv5_down(self.swish(w[0] * p5_in + w[1] * _downsample(p4_out)))
        return p3_out, p4_out, p5_out


class BiFPN(nn.Sequential):
    """``num_cells`` stacked :class:`BiFPNCell` s; the first maps ``in_channels`` to ``channels``.

    Example:
        >>> fpn = BiFPN(64, (64, 128, 256), num_cells=3)
        >>> outs = fpn([torch.randn(1, 64, 16, 16), torch.randn(1, 128, 8, 8), torch.randn(1, 256, 4, 4)])
        >>> [o.shape[1] for o in outs]
        [64, 64, 64]
    """

    def __init__(self, channels: int, in_channels: Sequence[int], num_cells: int = 3) -> None:
        super().__init__(*[BiFPNCell(channels, in_channels if i == 0 else None) for i in range(num_cells)])
