"""RetinaFace with a MobileNetV1-0.25 backbone (Deng et al., "RetinaFace", CVPR 2020).

Re-implementation of biubug6/Pytorch_Retinaface's ``mobilenet0.25`` model (426,608 parameters):
backbone -> FPN (1x1 laterals, nearest top-down addition, 3x3 merges, all conv+BN+LeakyReLU(0.1),
64 channels) -> one SSH per level -> 1x1 heads with 2 anchors. Module names are the official
ones (``body``, ``fpn``, ``ssh1..3``, ``ClassHead`` ...), so the released weights load with a plain
strict ``load_state_dict``. Unlike the original, ``forward`` always returns raw class logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import LEAKY_SLOPE, STAGE_CHANNELS, MobileNetV1
from .heads import make_heads, run_heads
from .ssh import SSH

OUT_CHANNELS = 64


def _conv_bn_leaky(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, 1, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
    )


class FPN(nn.Module):
    """RetinaFace's top-down FPN over ``(c3, c4, c5)``; returns three ``out_channels`` maps."""

    def __init__(self, in_channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        self.output1 = _conv_bn_leaky(in_channels[0], out_channels, 1)
        self.output2 = _conv_bn_leaky(in_channels[1], out_channels, 1)
        self.output3 = _conv_bn_leaky(in_channels[2], out_channels, 1)
        self.merge1 = _conv_bn_leaky(out_channels, out_channels, 3)
        self.merge2 = _conv_bn_leaky(out_channels, out_channels, 3)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out1 = self.output1(features[0])
        out2 = self.output2(features[1])
        out3 = self.output3(features[2])
        out2 = self.merge2(out2 + F.interpolate(out3, size=out2.shape[-2:], mode="nearest"))
        out1 = self.merge1(out1 + F.interpolate(out2, size=out1.shape[-2:], mode="nearest"))
        return out1, out2, out3


class RetinaFaceMnet(nn.Module):
    """RetinaFace-mnet0.25.

    ``forward(images [N, 3, H, W])`` returns ``(bbox_deltas [N, P, 4], cls_logits [N, P, 2],
    landmark_deltas [N, P, 10])`` (see docs/DESIGN.md).

    Example:
        >>> model = RetinaFaceMnet()
        >>> [t.shape for t in model(torch.zeros(1, 3, 64, 64))]
        [torch.Size([1, 168, 4]), torch.Size([1, 168, 2]), torch.Size([1, 168, 10])]
    """

    def __init__(self) -> None:
        super().__init__()
        self.body = MobileNetV1()
        self.fpn = FPN(STAGE_CHANNELS, OUT_CHANNELS)
        self.ssh1 = SSH(OUT_CHANNELS, OUT_CHANNELS)
        self.ssh2 = SSH(OUT_CHANNELS, OUT_CHANNELS)
        self.ssh3 = SSH(OUT_CHANNELS, OUT_CHANNELS)
        self.ClassHead, self.BboxHead, self.LandmarkHead = make_heads(OUT_CHANNELS)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p3, p4, p5 = self.fpn(self.body(images))
        features = [self.ssh1(p3), self.ssh2(p4), self.ssh3(p5)]
        return run_heads(features, self.ClassHead, self.BboxHead, self.LandmarkHead)
