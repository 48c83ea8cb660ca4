"""FeatherFace V1 (Kim, Jung, Kim, "FeatherFace: Robust and Lightweight Face Detection via Optimal
Feature Integration", Electronics 14(3):517, 2025; code dohun-mat/FeatherFace).

Faithful to the official code (592,371 real parameters; the paper's "0.49M" is thop's count,
which skips the deformable-conv weights):

    MobileNetV1-0.25 -> ReLU(CBAM(c_i) + c_i) on each stage output (reduction 16)
    -> BiFPN, 3 cells, 64 ch -> ReLU(CBAM(p_i) + p_i) on each level
    -> SSH with DCNv2 3x3 convs per level
    -> per level: channel shuffle -> 1x1 64->32 + BN -> depthwise 3x3 + BN -> 1x1 32->64 + BN + ReLU
       (no activation between the first two convs, no residual: exactly the official block)
    -> 1x1 heads, 2 anchors per location.

Module names are ours where the official ones are awkward (``backbone_cbam.i`` for the official
``bacbkbone_i_cbam``, ``bifpn_cbam.i`` for ``bif_cbam_i``, named layers in the shuffle block);
:func:`convert_official_state_dict` maps an official checkpoint onto them (every key used, every
shape equal). The official shuffle views channels as ``[C/2, 2]`` before transposing; that is
``compresskit.layers.shuffle.ChannelShuffle(groups=C // 2)`` in the ShuffleNet convention (checked: with
``groups=2`` instead, the third-party weights find 1 instead of 49 faces above 0.5 on a WIDER val image).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from compresskit.layers.shuffle import ChannelShuffle

from .backbone import STAGE_CHANNELS, MobileNetV1
from .bifpn import BiFPN
from .cbam import CBAM
from .heads import make_heads, run_heads
from .ssh import SSH

OUT_CHANNELS = 64
BIFPN_CELLS = 3
CBAM_REDUCTION = 16
OFFICIAL_SHUFFLE_GROUPS = 2

# official key -> our key, applied in order (regex, replacement)
_OFFICIAL_KEY_RULES: tuple[tuple[str, str], ...] = (
    (r"^bacbkbone_(\d)_cbam\.", r"backbone_cbam.\1."),
    (r"^bif_cbam_(\d)\.", r"bifpn_cbam.\1."),
    (r"\.ChannelGate\.mlp\.1\.", r".channel_gate.fc1."),
    (r"\.ChannelGate\.mlp\.3\.", r".channel_gate.fc2."),
    (r"\.SpatialGate\.spatial\.", r".spatial_gate."),
    (r"\.depthwise_conv\.conv\.", r".depthwise."),
    (r"\.pointwise_conv\.conv\.", r".pointwise."),
    (r"_down_channel(_2)?\.0\.conv\.", r"_down_channel\1.conv."),
    (r"_down_channel(_2)?\.1\.", r"_down_channel\1.bn."),
    (r"^ssh(\d)_cs\.1\.", r"ssh\1_shuffle.reduce."),
    (r"^ssh(\d)_cs\.2\.", r"ssh\1_shuffle.reduce_bn."),
    (r"^ssh(\d)_cs\.3\.", r"ssh\1_shuffle.depthwise."),
    (r"^ssh(\d)_cs\.4\.", r"ssh\1_shuffle.depthwise_bn."),
    (r"^ssh(\d)_cs\.5\.", r"ssh\1_shuffle.expand."),
    (r"^ssh(\d)_cs\.6\.", r"ssh\1_shuffle.expand_bn."),
)
_PROFILER_SUFFIXES = ("total_ops", "total_params")


def convert_official_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an official FeatherFace V1 state dict to this module's names.

    Drops the ``total_ops`` / ``total_params`` entries the ``thop`` profiler leaves behind and a
    DataParallel ``module.`` prefix. Keys already in our naming pass through unchanged.
    """
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.rsplit(".", 1)[-1] in _PROFILER_SUFFIXES:
            continue
        for pattern, replacement in _OFFICIAL_KEY_RULES:
            key = re.sub(pattern, replacement, key)
        converted[key] = value
    return converted


class ShuffleBlock(nn.Module):
    """Official post-SSH block: shuffle -> 1x1 C->C/2 + BN -> dw 3x3 + BN -> 1x1 C/2->C + BN + ReLU."""

    def __init__(self, channels: int, shuffle_groups: int = OFFICIAL_SHUFFLE_GROUPS) -> None:
        super().__init__()
        hidden = channels // 2
        # official view (N, C/g, g, H, W) == ShuffleNet view with C/g groups
        self.shuffle = ChannelShuffle(channels // shuffle_groups)
        self.reduce = nn.Conv2d(channels, hidden, 1, bias=False)
        self.reduce_bn = nn.BatchNorm2d(hidden)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False)
        self.depthwise_bn = nn.BatchNorm2d(hidden)
        self.expand = nn.Conv2d(hidden, channels, 1, bias=False)
        self.expand_bn = nn.BatchNorm2d(channels)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce_bn(self.reduce(self.shuffle(x)))
        x = self.depthwise_bn(self.depthwise(x))
        return self.act(self.expand_bn(self.expand(x)))


class FeatherFaceV1(nn.Module):
    """FeatherFace V1 detector (592,371 parameters).

    ``forward(images [N, 3, H, W])`` returns ``(bbox_deltas [N, P, 4], cls_logits [N, P, 2],
    landmark_deltas [N, P, 10])`` (raw logits, train and eval alike).

    Example:
        >>> model = FeatherFaceV1()
        >>> [t.shape[1:] for t in model(torch.zeros(1, 3, 64, 64))]
        [torch.Size([168, 4]), torch.Size([168, 2]), torch.Size([168, 10])]
    """

    def __init__(self) -> None:
        super().__init__()
        self.body = MobileNetV1()
        self.backbone_cbam = nn.ModuleList(CBAM(c, CBAM_REDUCTION) for c in STAGE_CHANNELS)
        self.bifpn = BiFPN(OUT_CHANNELS, STAGE_CHANNELS, BIFPN_CELLS)
        self.bifpn_cbam = nn.ModuleList(CBAM(OUT_CHANNELS, CBAM_REDUCTION) for _ in range(3))
        self.ssh1 = SSH(OUT_CHANNELS, OUT_CHANNELS, deformable=True)
        self.ssh2 = SSH(OUT_CHANNELS, OUT_CHANNELS, deformable=True)
        self.ssh3 = SSH(OUT_CHANNELS, OUT_CHANNELS, deformable=True)
        self.ssh1_shuffle = ShuffleBlock(OUT_CHANNELS)
        self.ssh2_shuffle = ShuffleBlock(OUT_CHANNELS)
        self.ssh3_shuffle = ShuffleBlock(OUT_CHANNELS)
        self.ClassHead, self.BboxHead, self.LandmarkHead = make_heads(OUT_CHANNELS)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        stages = self.body(images)
        stages = [torch.relu(cbam(c) + c) for cbam, c in zip(self.backbone_cbam, stages)]
        pyramid = self.bifpn(stages)
        pyramid = [torch.relu(cbam(p) + p) for cbam, p in zip(self.bifpn_cbam, pyramid)]
        features = [
            self.ssh1_shuffle(self.ssh1(pyramid[0])),
            self.ssh2_shuffle(self.ssh2(pyramid[1])),
            self.ssh3_shuffle(self.ssh3(pyramid[2])),
        ]
        return run_heads(features, self.ClassHead, self.BboxHead, self.LandmarkHead)
