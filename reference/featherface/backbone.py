"""MobileNetV1 x0.25 backbone as used by RetinaFace-mnet0.25 and FeatherFace.

Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
Applications", 2017. Here: the width-0.25 variant of the biubug6/Pytorch_Retinaface code
(LeakyReLU(0.1) after every BatchNorm), cut after the last depthwise-separable block; the
ImageNet classifier (avg-pool + fc) is not built. ``forward`` returns the three stage outputs
with 64 / 128 / 256 channels at strides 8 / 16 / 32. Module names (``stage1.0.0`` ...) are those
of the official code so the ImageNet and detector checkpoints load without renaming.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

LEAKY_SLOPE = 0.1
STAGE_CHANNELS = (64, 128, 256)


def _conv_bn(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """3x3 conv + BN + LeakyReLU (the stem)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
    )


def _conv_dw(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 + BN + LeakyReLU, then pointwise 1x1 + BN + LeakyReLU.

    Indices 0 (depthwise) and 3 (pointwise) are the convs, 1 and 4 their BatchNorms.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels),
        nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
        nn.Conv2d(in_channels, out_channels, 1, 1, 0, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
    )


class MobileNetV1(nn.Module):
    """MobileNetV1 x0.25 feature extractor.

    Input ``[N, 3, H, W]``; output ``(c3 [N, 64, H/8, W/8], c4 [N, 128, H/16, W/16],
    c5 [N, 256, H/32, W/32])`` (each size rounded up: stride-2 convs with padding 1).
    213,072 parameters.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            _conv_bn(3, 8, 2),
            _conv_dw(8, 16, 1),
            _conv_dw(16, 32, 2),
            _conv_dw(32, 32, 1),
            _conv_dw(32, 64, 2),
            _conv_dw(64, 64, 1),
        )
        self.stage2 = nn.Sequential(
            _conv_dw(64, 128, 2),
            *[_conv_dw(128, 128, 1) for _ in range(5)],
        )
        self.stage3 = nn.Sequential(
            _conv_dw(128, 256, 2),
            _conv_dw(256, 256, 1),
        )

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c3 = self.stage1(images)
        c4 = self.stage2(c3)
        c5 = self.stage3(c4)
        return c3, c4, c5


def load_pretrained_backbone(backbone: MobileNetV1, path: str | Path) -> None:
    """Load the ImageNet ``mobilenetV1X0.25_pretrain.tar`` into ``backbone`` (strict).

    The file is a dict with ``state_dict`` whose keys carry a ``module.`` prefix (DataParallel)
    and include the ImageNet ``fc`` classifier, which is dropped.

    Args:
        backbone: the module to fill in place.
        path: the checkpoint file.

    Raises:
        ValueError: the file is not such a checkpoint, or keys/shapes do not match.
    """
    path = Path(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: expected a dict checkpoint, got {type(checkpoint).__name__}; "
                         "pass the mobilenetV1X0.25_pretrain.tar of biubug6/Pytorch_Retinaface")
    state = checkpoint.get("state_dict", checkpoint)
    cleaned = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith("fc."):
            continue
        cleaned[key] = value
    expected = backbone.state_dict()
    missing = sorted(set(expected) - set(cleaned))
    unexpected = sorted(set(cleaned) - set(expected))
    bad_shapes = [k for k in expected if k in cleaned and cleaned[k].shape != expected[k].shape]
    if missing or unexpected or bad_shapes:
        raise ValueError(
            f"{path}: not a MobileNetV1 x0.25 ImageNet checkpoint (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shapes {bad_shapes[:5]}); "
            "pass the mobilenetV1X0.25_pretrain.tar of biubug6/Pytorch_Retinaface")
    backbone.load_state_dict(cleaned, strict=True)
