"""Encoding of boxes and landmarks relative to priors (SSD / RetinaFace parameterisation).

Liu et al., "SSD: Single Shot MultiBox Detector" (ECCV 2016), with the RetinaFace landmark extension
(Deng et al., CVPR 2020). With variances ``(v0, v1) = (0.1, 0.2)`` and a prior ``(pcx, pcy, pw, ph)``:

    box deltas:      dx = (gcx - pcx) / (v0 * pw)       dw = log(gw / pw) / v1
    landmark deltas: lx = (x - pcx) / (v0 * pw)         ly = (y - pcy) / (v0 * ph)

Everything is in the same (normalised) coordinate frame as the priors.
"""

from __future__ import annotations

import torch
from torch import Tensor

VARIANCES: tuple[float, float] = (0.1, 0.2)
NUM_LANDMARKS = 5


def point_form(priors: Tensor) -> Tensor:
    """``(cx, cy, w, h)`` -> ``(x1, y1, x2, y2)``; FloatTensor[P, 4] -> FloatTensor[P, 4]."""
    return torch.cat((priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2), dim=1)


def center_form(boxes: Tensor) -> Tensor:
    """``(x1, y1, x2, y2)`` -> ``(cx, cy, w, h)``."""
    return torch.cat(((boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]), dim=1)


def encode_boxes(boxes: Tensor, priors: Tensor, variances: tuple[float, float] = VARIANCES) -> Tensor:
    """Regression targets for matched boxes.

    Args:
        boxes: FloatTensor[P, 4] ``(x1, y1, x2, y2)``, x1 < x2, y1 < y2, one matched box per prior.
        priors: FloatTensor[P, 4] ``(cx, cy, w, h)``.
        variances: ``(centre variance, size variance)``.

    Returns:
        FloatTensor[P, 4] deltas ``(dx, dy, dw, dh)``.
    """
    centre = ((boxes[:, :2] + boxes[:, 2:]) / 2 - priors[:, :2]) / (variances[0] * priors[:, 2:])
    size = torch.log((boxes[:, 2:] - boxes[:, :2]) / priors[:, 2:]) / variances[1]
    return torch.cat((centre, size), dim=1)


def decode_boxes(deltas: Tensor, priors: Tensor, variances: tuple[float, float] = VARIANCES) -> Tensor:
    """Inverse of :func:`encode_boxes`.

    Args:
        deltas: FloatTensor[..., P, 4] ``(dx, dy, dw, dh)`` (leading batch dimensions allowed).
        priors: FloatTensor[P, 4] ``(cx, cy, w, h)``.

    Returns:
        FloatTensor[..., P, 4] boxes ``(x1, y1, x2, y2)`` in the priors' frame.
    """
    centre = priors[:, :2] + deltas[..., :2] * variances[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(deltas[..., 2:] * variances[1])
    return torch.cat((centre - size / 2, centre + size / 2), dim=-1)


def encode_landmarks(landmarks: Tensor, priors: Tensor, variances: tuple[float, float] = VARIANCES) -> Tensor:
    """Regression targets for landmarks.

    Args:
        landmarks: FloatTensor[P, 10] ``(x0, y0, ..., x4, y4)``.
        priors: FloatTensor[P, 4] ``(cx, cy, w, h)``.

    Returns:
        FloatTensor[P, 10] deltas.
    """
    points = landmarks.reshape(-1, NUM_LANDMARKS, 2)  # (P, 10) -> (P, 5, 2)
    deltas = (points - priors[:, None, :2]) / (variances[0] * priors[:, None, 2:])
    return deltas.reshape(-1, 2 * NUM_LANDMARKS)  # (P, 5, 2) -> (P, 10)


def decode_landmarks(deltas: Tensor, priors: Tensor, variances: tuple[float, float] = VARIANCES) -> Tensor:
    """Inverse of :func:`encode_landmarks`; FloatTensor[..., P, 10] -> FloatTensor[..., P, 10]."""
    shape = deltas.shape
    points = deltas.reshape(*shape[:-1], NUM_LANDMARKS, 2)  # (..., P, 10) -> (..., P, 5, 2)
    decoded = priors[:, None, :2] + points * variances[0] * priors[:, None, 2:]
    return decoded.reshape(shape)  # (..., P, 5, 2) -> (..., P, 10)
