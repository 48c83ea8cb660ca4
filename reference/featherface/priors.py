"""Prior (anchor) boxes of the RetinaFace family (RetinaFace, FeatherFace, Nano-B).

Implements the prior layout of Deng et al., "RetinaFace: Single-stage Dense Face Localisation in the
Wild" (CVPR 2020) as used by the public Pytorch_Retinaface / FeatherFace code: on each pyramid level
with stride ``s`` the feature map has ``ceil(H / s) x ceil(W / s)`` cells and every cell carries one
square prior per ``min_size`` of that level, centred on the cell centre.

Order (the model forward contract in docs/DESIGN.md): level, row, column, anchor — the same order
in which the heads' outputs are flattened. At 640x640 with the default settings there are
``2 * (80*80 + 40*40 + 20*20) = 16,800`` priors.

Caveat: priors are square in pixels, so in normalised coordinates their width and height differ
whenever ``H != W`` (``w = min_size / W``, ``h = min_size / H``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

DEFAULT_MIN_SIZES: tuple[tuple[int, ...], ...] = ((16, 32), (64, 128), (256, 512))
DEFAULT_STEPS: tuple[int, ...] = (8, 16, 32)


def feature_map_sizes(image_size: tuple[int, int], steps: Sequence[int] = DEFAULT_STEPS) -> list[tuple[int, int]]:
    """Feature-map size ``(rows, columns)`` of each level: ``(ceil(H / step), ceil(W / step))``."""
    height, width = image_size
    return [(math.ceil(height / step), math.ceil(width / step)) for step in steps]


def prior_boxes(
    image_size: tuple[int, int],
    min_sizes: Sequence[Sequence[int]] = DEFAULT_MIN_SIZES,
    steps: Sequence[int] = DEFAULT_STEPS,
    clip: bool = False,
) -> Tensor:
    """Priors for an input of ``image_size = (H, W)`` pixels.

    Args:
        image_size: network input height and width in pixels.
        min_sizes: per level, the side lengths (pixels) of the square priors of one cell.
        steps: per level, the stride in pixels.
        clip: clamp all coordinates to [0, 1] (off in RetinaFace / FeatherFace).

    Returns:
        FloatTensor[P, 4] of ``(cx, cy, w, h)`` normalised by the image width / height, in the order
        level, row, column, anchor.

    Example:
        >>> prior_boxes((640, 640)).shape
        torch.Size([16800, 4])
    """
    height, width = int(image_size[0]), int(image_size[1])
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size must be positive (H, W), got {tuple(image_size)}")
    if len(min_sizes) != len(steps):
        raise ValueError(f"min_sizes has {len(min_sizes)} levels but steps has {len(steps)}")
    levels = []
    for (rows, cols), step, sizes in zip(feature_map_sizes((height, width), steps), steps, min_sizes):
        num_anchors = len(sizes)
        cx = (torch.arange(cols, dtype=torch.float64) + 0.5) * step / width  # (cols,)
        cy = (torch.arange(rows, dtype=torch.float64) + 0.5) * step / height  # (rows,)
        sizes_t = torch.tensor(sizes, dtype=torch.float64)
        level = torch.empty(rows, cols, num_anchors, 4, dtype=torch.float64)
        level[..., 0] = cx.view(1, cols, 1)
        level[..., 1] = cy.view(rows, 1, 1)
        level[..., 2] = (sizes_t / width).view(1, 1, num_anchors)
        level[..., 3] = (sizes_t / height).view(1, 1, num_anchors)
        levels.append(level.reshape(rows * cols * num_anchors, 4))  # (rows, cols, A, 4) -> (rows*cols*A, 4)
    priors = torch.cat(levels).to(torch.float32)
    if clip:
        priors.clamp_(0.0, 1.0)
    return priors


def num_priors(image_size: tuple[int, int], min_sizes: Sequence[Sequence[int]] = DEFAULT_MIN_SIZES,
               steps: Sequence[int] = DEFAULT_STEPS) -> int:
    """Number of priors for ``image_size`` without building them."""
    return sum(r * c * len(s) for (r, c), s in zip(feature_map_sizes(image_size, steps), min_sizes))


class PriorCache:
    """``cache((H, W))``: :func:`prior_boxes` with the default layout, built once per input size.

    Input sizes repeat (a fixed training size; WIDER FACE images share a few shapes), so detection,
    losses and evaluation look priors up here instead of rebuilding them per image. Unbounded: one
    entry per distinct size seen.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[int, int], Tensor] = {}

    def __call__(self, image_size: tuple[int, int]) -> Tensor:
        key = (int(image_size[0]), int(image_size[1]))
        if key not in self._cache:
            self._cache[key] = prior_boxes(key)
        return self._cache[key]
