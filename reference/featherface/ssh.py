"""SSH context module (Najibi et al., "SSH: Single Stage Headless Face Detector", ICCV 2017).

RetinaFace form (biubug6): three branches of stacked 3x3 convs with receptive fields 3x3, 5x5
and 7x7, outputs ``C/2 + C/4 + C/4`` concatenated, then ReLU. The 5x5 and 7x7 branches share
their first conv. Inner convs use LeakyReLU(0.1) (out channels <= 64 in the original rule;
Nano-B's 72 keeps 0.1 too), branch ends have BN only.

Variants:
* ``deformable=True`` (FeatherFace V1): every 3x3 conv is a modulated deformable conv
  (:class:`~featherface.dcn.DeformableConv2d`), as in the official code.
* ``groups=2`` (Nano-B): every 3x3 conv is grouped; a channel shuffle after each shared inner
  conv (``conv5X5_1`` and ``conv7X7_2``) lets the next grouped conv see both groups. The context
  branches are ``context_channels`` wide, a multiple of ``groups**2`` so that each shuffle sends
  the same number of channels from every group of one conv to every group of the next (a
  balanced shuffle, as in ShuffleNet). Only then can a pruner remove channels of those branches
  while keeping every grouped conv's groups equal (Nano-B: 72 = 40 + 16 + 16).

Module names (``conv3X3.0``, ``conv5X5_1.0`` ... ``conv7x7_3``, typo-case included) are the
official ones, so RetinaFace and V1 checkpoints load without renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compresskit.layers.shuffle import ChannelShuffle

from .dcn import DeformableConv2d

LEAKY_SLOPE = 0.1


def _branch_conv(in_channels: int, out_channels: int, deformable: bool, groups: int,
                 activation: bool) -> nn.Sequential:
    """3x3 conv (plain, grouped or deformable) + BN (+ LeakyReLU)."""
    if deformable:
        conv: nn.Module = DeformableConv2d(in_channels, out_channels, 3, 1, 1, bias=False)
    else:
        conv = nn.Conv2d(in_channels, out_channels, 3, 1, 1, groups=groups, bias=False)
    layers = [conv, nn.BatchNorm2d(out_channels)]
    if activation:
        layers.append(nn.LeakyReLU(LEAKY_SLOPE, inplace=True))
    return nn.Sequential(*layers)


class SSH(nn.Module):
    """SSH context module ``[N, C_in, H, W] -> [N, C_out, H, W]``.

    Args:
        in_channels: input channels.
        out_channels: output channels ``= (out_channels - 2 * context) + context + context``.
        deformable: use DCNv2 for every 3x3 conv (FeatherFace V1).
        groups: conv groups (Nano-B: 2); mutually exclusive with ``deformable``.
        context_channels: width of the 5x5 and 7x7 branches (default ``out_channels // 4``, the
            RetinaFace split); with ``groups > 1`` a multiple of ``groups**2`` (balanced shuffles).

    Example:
        >>> ssh = SSH(64, 64, deformable=True)
        >>> ssh(torch.randn(1, 64, 10, 10)).shape
        torch.Size([1, 64, 10, 10])
    """

    def __init__(self, in_channels: int, out_channels: int, deformable: bool = False, groups: int = 1,
                 context_channels: int | None = None) -> None:
        super().__init__()
        if deformable and groups != 1:
            raise ValueError(f"deformable SSH does not support groups={groups}")
        if context_channels is None:
            if out_channels % 4 != 0:
                raise ValueError(f"SSH needs out_channels divisible by 4, got {out_channels}")
            context_channels = out_channels // 4
        context_unit = groups * groups if groups > 1 else 1
        main = out_channels - 2 * context_channels
        if (in_channels % groups or main <= 0 or main % groups or context_channels <= 0
                or context_channels % context_unit):
            raise ValueError(
                f"SSH needs in_channels and the 3x3 branch (out - 2*context) divisible by groups and "
                f"context_channels by groups**2 (balanced shuffles); got in={in_channels}, "
                f"out={out_channels}, context={context_channels}, groups={groups}")
        context = context_channels
        self.conv3X3 = _branch_conv(in_channels, main, deformable, groups, activation=False)
        self.conv5X5_1 = _branch_conv(in_channels, context, deformable, groups, activation=True)
        self.conv5X5_2 = _branch_conv(context, context, deformable, groups, activation=False)
        self.conv7X7_2 = _branch_conv(context, context, deformable, groups, activation=True)
        self.conv7x7_3 = _branch_conv(context, context, deformable, groups, activation=False)
        # two instances (not one reused) so a graph tracer maps each call to its own module
        self.shuffle5 = ChannelShuffle(groups) if groups > 1 else nn.Identity()
        self.shuffle7 = ChannelShuffle(groups) if groups > 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3 = self.conv3X3(x)
        shared5 = self.shuffle5(self.conv5X5_1(x))
        branch5 = self.conv5X5_2(shared5)
        shared7 = self.shuffle7(self.conv7X7_2(shared5))
        branch7 = self.conv7x7_3(shared7)
        # (N, (C - 2*context) + context + context, H, W)
        return F.relu(torch.cat([branch3, branch5, branch7], dim=1))
