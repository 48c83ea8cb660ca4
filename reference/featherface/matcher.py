"""Prior-to-face matching of RetinaFace (Deng et al., CVPR 2020), after SSD (Liu et al., ECCV 2016).

Rules (those of the public Pytorch_Retinaface ``match``):

1. IoU between every face and every prior (priors in point form, no ``+1``: normalised coordinates).
2. A face whose best prior has IoU < ``min_best_iou`` (0.2) is dropped: too small or badly shaped to be
   learnt from any prior. If no face survives, every prior is background.
3. Every prior takes the face with which it has the highest IoU.
4. Each surviving face forces its best prior to itself (IoU treated as 2); when two faces share a best
   prior the later face wins, as in the official loop.
5. Priors whose (possibly forced) IoU is below ``threshold`` (0.35) are background.

Caveat, deliberate difference: the official loop in step 4 also runs over the faces dropped in step 2,
which can (rarely) reassign a prior that is positive for another face to a dropped face. Here dropped faces
take part in nothing, which is what the official comment ("ignore hard gt") intends.
"""

from __future__ import annotations

import torch
from torch import Tensor

from featherface.box_coder import point_form

NO_MATCH = -1
MATCH_THRESHOLD = 0.35
MIN_BEST_IOU = 0.2
_FORCED_IOU = 2.0


def box_iou(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """Pairwise IoU of ``(x1, y1, x2, y2)`` boxes (continuous coordinates, no ``+1``).

    Args:
        boxes_a: FloatTensor[A, 4].
        boxes_b: FloatTensor[B, 4].

    Returns:
        FloatTensor[A, B]. Degenerate boxes (zero area) have IoU 0 with everything.
    """
    top_left = torch.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])  # (A, B, 2)
    bottom_right = torch.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])  # (A, B, 2)
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)  # (A, B)
    area_a = (boxes_a[:, 2:] - boxes_a[:, :2]).clamp(min=0).prod(dim=1)
    area_b = (boxes_b[:, 2:] - boxes_b[:, :2]).clamp(min=0).prod(dim=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(inter.dtype).tiny), torch.zeros_like(inter))


def match_priors(
    gt_boxes: Tensor,
    priors: Tensor,
    threshold: float = MATCH_THRESHOLD,
    min_best_iou: float = MIN_BEST_IOU,
) -> Tensor:
    """Assign each prior a face index or :data:`NO_MATCH`.

    Args:
        gt_boxes: FloatTensor[G, 4] ``(x1, y1, x2, y2)`` in the priors' (normalised) frame. G may be 0.
        priors: FloatTensor[P, 4] ``(cx, cy, w, h)``.
        threshold: IoU at or above which a prior is positive.
        min_best_iou: faces whose best prior IoU is below this are ignored.

    Returns:
        LongTensor[P]: index into ``gt_boxes`` for positive priors, ``NO_MATCH`` (-1) for background.

    Example:
        >>> from featherface.priors import prior_boxes
        >>> gt_index = match_priors(torch.tensor([[0.1, 0.1, 0.2, 0.2]]), prior_boxes((64, 64)))
        >>> int((gt_index >= 0).sum()) > 0
        True
    """
    num_priors = priors.shape[0]
    background = torch.full((num_priors,), NO_MATCH, dtype=torch.long, device=priors.device)
    if gt_boxes.numel() == 0:
        return background
    if gt_boxes.dim() != 2 or gt_boxes.shape[1] != 4:
        raise ValueError(f"gt_boxes must be [G, 4], got shape {tuple(gt_boxes.shape)}")
    iou = box_iou(gt_boxes, point_form(priors))  # (G, P)
    best_prior_iou, best_prior_index = iou.max(dim=1)  # (G,)
    valid = best_prior_iou >= min_best_iou
    if not bool(valid.any()):
        return background
    iou = torch.where(valid[:, None], iou, torch.zeros_like(iou))  # dropped faces match nothing
    best_gt_iou, best_gt_index = iou.max(dim=0)  # (P,)
    face_ids = torch.arange(gt_boxes.shape[0], device=priors.device)
    forced = torch.full((num_priors,), NO_MATCH, dtype=torch.long, device=priors.device)
    # later face wins a shared best prior ("amax" over face ids), as the official sequential loop
    forced.scatter_reduce_(0, best_prior_index[valid], face_ids[valid], reduce="amax")
    is_forced = forced != NO_MATCH
    best_gt_index = torch.where(is_forced, forced, best_gt_index)
    best_gt_iou = torch.where(is_forced, torch.full_like(best_gt_iou, _FORCED_IOU), best_gt_iou)
    return torch.where(best_gt_iou >= threshold, best_gt_index, background)
