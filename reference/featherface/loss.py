"""MultiBox loss of RetinaFace / FeatherFace with online hard-negative mining.

Liu et al., "SSD" (ECCV 2016) for the matching + hard-negative mining (negatives : positives = 7 : 1);
Deng et al., "RetinaFace" (CVPR 2020) for the landmark term. Per batch:

    loc   = sum smooth_L1(box deltas of positive priors)            / num_positive
    conf  = sum CE(positives + the hardest 7 * num_positive negatives) / num_positive
    landm = sum smooth_L1(landmark deltas of positives whose face has landmarks) / num_landmark_positive
    total = 2.0 * loc + conf + landm

Negatives are ranked per image by their background cross-entropy; an image contributes at most
``P - 1`` negatives, and an image without positives contributes none (as the official code).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featherface.box_coder import VARIANCES, encode_boxes, encode_landmarks
from featherface.matcher import MATCH_THRESHOLD, NO_MATCH, match_priors

TARGET_COLUMNS = 15
"""Target row layout: ``x1 y1 x2 y2`` (0:4), 5 landmarks ``x y`` (4:14), label (14)."""
LABEL_WITH_LANDMARKS = 1.0
LABEL_WITHOUT_LANDMARKS = -1.0
BACKGROUND = 0
FACE = 1


class MultiBoxLoss(nn.Module):
    """RetinaFace MultiBox loss.

    Data contract of :meth:`forward`:
        predictions: ``(bbox_deltas [N, P, 4], cls_logits [N, P, 2], landmark_deltas [N, P, 10])`` — the
            model forward contract of docs/DESIGN.md (raw logits).
        targets: list of N FloatTensor[G_i, 15], rows ``x1 y1 x2 y2 (x y)*5 label`` normalised to
            [0, 1] by the input width/height, x1 < x2; ``label`` 1 = face with landmarks, -1 = face
            without landmarks (landmark columns ignored). G_i may be 0.
        priors: FloatTensor[P, 4] ``(cx, cy, w, h)`` from :func:`~featherface.priors.prior_boxes`.

    Returns ``(total, {"loc": float, "conf": float, "landm": float})``.

    Example:
        >>> criterion = MultiBoxLoss()
        >>> total, parts = criterion(model(images), targets, priors)  # doctest: +SKIP
    """

    def __init__(
        self,
        overlap_threshold: float = MATCH_THRESHOLD,
        neg_pos_ratio: int = 7,
        loc_weight: float = 2.0,
        variances: tuple[float, float] = VARIANCES,
    ) -> None:
        super().__init__()
        if neg_pos_ratio < 0:
            raise ValueError(f"neg_pos_ratio must be >= 0, got {neg_pos_ratio}")
        self.overlap_threshold = overlap_threshold
        self.neg_pos_ratio = neg_pos_ratio
        self.loc_weight = loc_weight
        self.variances = variances

    def build_targets(self, targets: Sequence[Tensor], priors: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Match every image; returns ``labels [N, P]`` (0 bg, 1 face with landmarks, -1 face without),
        ``box_targets [N, P, 4]`` and ``landmark_targets [N, P, 10]`` (encoded; zero where unused)."""
        labels, box_targets, landmark_targets = [], [], []
        num_priors = priors.shape[0]
        for index, target in enumerate(targets):
            if target.dim() != 2 or target.shape[1] != TARGET_COLUMNS:
                raise ValueError(f"targets[{index}] must be [G, {TARGET_COLUMNS}], got {tuple(target.shape)}")
            gt_index = match_priors(target[:, :4], priors, self.overlap_threshold)  # (P,)
            positive = gt_index != NO_MATCH
            safe_index = gt_index.clamp(min=0)
            label = torch.zeros(num_priors, dtype=priors.dtype, device=priors.device)
            boxes = torch.zeros(num_priors, 4, dtype=priors.dtype, device=priors.device)
            landmarks = torch.zeros(num_priors, 10, dtype=priors.dtype, device=priors.device)
            if bool(positive.any()):
                matched = target[safe_index[positive]]  # (num_positive, 15)
                label[positive] = matched[:, 14]
                boxes[positive] = encode_boxes(matched[:, :4], priors[positive], self.variances)
                with_landmarks = matched[:, 14] > 0
                rows = positive.nonzero().squeeze(1)[with_landmarks]
                landmarks[rows] = encode_landmarks(matched[with_landmarks, 4:14], priors[rows], self.variances)
            labels.append(label)
            box_targets.append(boxes)
            landmark_targets.append(landmarks)
        return torch.stack(labels), torch.stack(box_targets), torch.stack(landmark_targets)

    def forward(
        self, predictions: tuple[Tensor, Tensor, Tensor], targets: Sequence[Tensor], priors: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        bbox_deltas, cls_logits, landmark_deltas = predictions
        batch, num_priors, num_classes = cls_logits.shape
        if len(targets) != batch:
            raise ValueError(f"got {len(targets)} targets for a batch of {batch} images")
        if priors.shape[0] != num_priors:
            raise ValueError(f"model returned {num_priors} priors but {priors.shape[0]} priors were given")
        priors = priors.to(bbox_deltas)
        with torch.no_grad():
            labels, box_targets, landmark_targets = self.build_targets([t.to(priors) for t in targets], priors)
        positive = labels != 0  # (N, P)
        landmark_positive = labels > 0  # (N, P)

        num_positive = positive.sum(dim=1, keepdim=True)  # (N, 1)
        normaliser = num_positive.sum().clamp(min=1).to(bbox_deltas.dtype)
        landmark_normaliser = landmark_positive.sum().clamp(min=1).to(bbox_deltas.dtype)

        loss_loc = F.smooth_l1_loss(bbox_deltas[positive], box_targets[positive], reduction="sum")
        loss_landm = F.smooth_l1_loss(landmark_deltas[landmark_positive], landmark_targets[landmark_positive],
                                      reduction="sum")

        class_targets = positive.long()  # (N, P): 0 background, 1 face
        with torch.no_grad():
            # background CE per prior ranks the negatives; positives are excluded from mining
            mining_loss = F.cross_entropy(cls_logits.reshape(-1, num_classes), class_targets.reshape(-1),
                                          reduction="none").view(batch, num_priors)  # (N*P,) -> (N, P)
            mining_loss[positive] = 0.0
            _, order = mining_loss.sort(dim=1, descending=True)
            _, rank = order.sort(dim=1)
            num_negative = (self.neg_pos_ratio * num_positive).clamp(max=num_priors - 1)  # (N, 1)
            negative = rank < num_negative
        selected = positive | negative
        loss_conf = F.cross_entropy(cls_logits[selected], class_targets[selected], reduction="sum")

        loss_loc = loss_loc / normaliser
        loss_conf = loss_conf / normaliser
        loss_landm = loss_landm / landmark_normaliser
        total = self.loc_weight * loss_loc + loss_conf + loss_landm
        return total, {"loc": loss_loc.item(), "conf": loss_conf.item(), "landm": loss_landm.item()}
