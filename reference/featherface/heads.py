"""RetinaFace detection heads (Deng et al., "RetinaFace", CVPR 2020; biubug6 layout).

One 1x1 conv per pyramid level and task. Each head flattens its map in the order
(row, column, anchor): ``(N, A*k, H, W) -> (N, H, W, A*k) -> (N, H*W*A, k)``, which is the
prior order of ``priors.py`` within a level; levels are concatenated from stride 8 to 32.
Module names (``ClassHead.0.conv1x1`` ...) are those of the official code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

NUM_ANCHORS = 2
NUM_LEVELS = 3
NUM_CLASSES = 2
BOX_DIM = 4
LANDMARK_DIM = 10


class _Head(nn.Module):
    """1x1 conv with ``num_anchors * values_per_anchor`` outputs, flattened per prior."""

    values_per_anchor: int = 0

    def __init__(self, in_channels: int, num_anchors: int = NUM_ANCHORS) -> None:
        super().__init__()
        self.conv1x1 = nn.Conv2d(in_channels, num_anchors * self.values_per_anchor, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(features)
        # (N, A*k, H, W) -> (N, H, W, A*k) -> (N, H*W*A, k)
        out = out.permute(0, 2, 3, 1)
        return out.reshape(out.shape[0], -1, self.values_per_anchor)


class ClassHead(_Head):
    """Face / background logits per prior: ``[N, H*W*A, 2]``."""

    values_per_anchor = NUM_CLASSES


class BboxHead(_Head):
    """Box deltas per prior: ``[N, H*W*A, 4]``."""

    values_per_anchor = BOX_DIM


class LandmarkHead(_Head):
    """Five-landmark deltas per prior: ``[N, H*W*A, 10]``."""

    values_per_anchor = LANDMARK_DIM


def make_heads(in_channels: int, num_levels: int = NUM_LEVELS,
               num_anchors: int = NUM_ANCHORS) -> tuple[nn.ModuleList, nn.ModuleList, nn.ModuleList]:
    """Build ``(ClassHead, BboxHead, LandmarkHead)`` lists, one head per level.

    Args:
        in_channels: channels of every level's feature map.
        num_levels: pyramid levels.
        num_anchors: anchors per location.
    """
    cls = nn.ModuleList(ClassHead(in_channels, num_anchors) for _ in range(num_levels))
    box = nn.ModuleList(BboxHead(in_channels, num_anchors) for _ in range(num_levels))
    ldm = nn.ModuleList(LandmarkHead(in_channels, num_anchors) for _ in range(num_levels))
    return cls, box, ldm


def run_heads(features: Sequence[torch.Tensor], class_heads: nn.ModuleList, bbox_heads: nn.ModuleList,
              landmark_heads: nn.ModuleList) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Apply the per-level heads and concatenate over levels.

    Returns:
        ``(bbox_deltas [N, P, 4], cls_logits [N, P, 2], landmark_deltas [N, P, 10])``.
    """
    bbox_deltas = torch.cat([head(f) for head, f in zip(bbox_heads, features)], dim=1)
    cls_logits = torch.cat([head(f) for head, f in zip(class_heads, features)], dim=1)
    landmark_deltas = torch.cat([head(f) for head, f in zip(landmark_heads, features)], dim=1)
    return bbox_deltas, cls_logits, landmark_deltas
