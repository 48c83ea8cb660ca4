"""FeatherFace Nano-B, unpruned (design of the project's seed documents; see docs/models.md).

No Nano-B was ever trained or released (shared/REFERENCE.md section 2); this is our build of
the seed design, meant to be pruned by compresskit to 120K-180K real parameters:

    MobileNetV1-0.25 -> (c3, c4, c5)
    P3: ScaleDecoupling -> EfficientCBAM;  P4, P5: EfficientCBAM      (reduction 8, residual)
    -> efficient BiFPN: 3 cells, 72 channels, depthwise-separable convs
    -> SemanticEnhancement (MSE-FPN style) on every level
    -> P3: ASSN (scale-sequence attention over P3/P4/P5); P4, P5: EfficientCBAM
    -> grouped SSH (groups=2, balanced channel shuffles between chained grouped convs,
       branches 40 + 16 + 16) per level
    -> 1x1 heads, 2 anchors per location.

Every conv that carries most of the parameters has prunable input *and* output channels, so the
size scales roughly with ``(1 - r_in)(1 - r_out)``; see ``models.NANO_B_LAYER_GROUPS``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from compresskit.models.bypass import bypass_blocks

from .backbone import STAGE_CHANNELS, MobileNetV1
from .bifpn import BiFPN
from .heads import make_heads, run_heads
from .nano_modules import ASSN, EfficientCBAM, ScaleDecoupling, SemanticEnhancement
from .ssh import SSH

NANO_CHANNELS = 72
BIFPN_CELLS = 3
SSH_GROUPS = 2


def ssh_context_channels(channels: int, groups: int = SSH_GROUPS) -> int:
    """Width of the SSH 5x5 / 7x7 branches: the largest multiple of ``groups**2`` <= ``channels / 4``.

    A multiple of ``groups**2`` keeps each channel shuffle balanced, so the branches stay prunable
    with grouped convs (72 channels -> 16, i.e. branches 40 + 16 + 16).
    """
    unit = groups * groups
    return max(unit, (channels // 4) // unit * unit)


class FeatherFaceNanoB(nn.Module):
    """FeatherFace Nano-B before pruning.

    ``forward(images [N, 3, H, W])`` returns ``(bbox_deltas [N, P, 4], cls_logits [N, P, 2],
    landmark_deltas [N, P, 10])`` (raw logits, train and eval alike).

    Args:
        channels: BiFPN / SSH width (72 in the seed design; must be divisible by 8).
        bypass: Optional blocks to switch off (names from :attr:`bypassable`), replaced by
            ``compresskit.models.bypass.Bypass`` (identity, or P3 itself for ASSN). Saved pruned models
            record it, so they rebuild the same reduced architecture.

    Example:
        >>> model = FeatherFaceNanoB()
        >>> [t.shape[1:] for t in model(torch.zeros(1, 3, 64, 64))]
        [torch.Size([168, 4]), torch.Size([168, 2]), torch.Size([168, 10])]
    """

    #: Blocks that may be switched off (``compresskit.models.bypass``): name -> stand-in. Each is an
    #: attention / enhancement module whose output has its input's shape.
    bypassable = {"scale_decoupling": "identity",
                  **{f"backbone_cbam.{i}": "identity" for i in range(len(STAGE_CHANNELS))},
                  **{f"semantic.{i}": "identity" for i in range(3)},
                  "assn": "first", "fpn_cbam.p4": "identity", "fpn_cbam.p5": "identity"}

    def __init__(self, channels: int = NANO_CHANNELS, bypass: Sequence[str] = ()) -> None:
        super().__init__()
        if channels % (4 * SSH_GROUPS) != 0:
            raise ValueError(f"channels must be divisible by {4 * SSH_GROUPS}, got {channels}")
        self.body = MobileNetV1()
        self.scale_decoupling = ScaleDecoupling(STAGE_CHANNELS[0])
        self.backbone_cbam = nn.ModuleList(EfficientCBAM(c) for c in STAGE_CHANNELS)
        self.bifpn = BiFPN(channels, STAGE_CHANNELS, BIFPN_CELLS)
        self.semantic = nn.ModuleList(SemanticEnhancement(channels) for _ in range(3))
        self.assn = ASSN(channels)
        self.fpn_cbam = nn.ModuleDict({"p4": EfficientCBAM(channels), "p5": EfficientCBAM(channels)})
        context = ssh_context_channels(channels)
        self.ssh1 = SSH(channels, channels, groups=SSH_GROUPS, context_channels=context)
        self.ssh2 = SSH(channels, channels, groups=SSH_GROUPS, context_channels=context)
        self.ssh3 = SSH(channels, channels, groups=SSH_GROUPS, context_channels=context)
        self.ClassHead, self.BboxHead, self.LandmarkHead = make_heads(channels)
        if bypass:
            bypass_blocks(self, list(bypass))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c3, c4, c5 = self.body(images)
        c3 = self.scale_decoupling(c3)
        stages = [cbam(c) for cbam, c in zip(self.backbone_cbam, (c3, c4, c5))]
        pyramid = [enhance(p) for enhance, p in zip(self.semantic, self.bifpn(stages))]
        p3 = self.assn(pyramid)
        p4 = self.fpn_cbam["p4"](pyramid[1])
        p5 = self.fpn_cbam["p5"](pyramid[2])
        features = [self.ssh1(p3), self.ssh2(p4), self.ssh3(p5)]
        return run_heads(features, self.ClassHead, self.BboxHead, self.LandmarkHead)
