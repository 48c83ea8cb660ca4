import math

import pytest
import torch
from torch import nn

from featherface.data.synthetic import SyntheticFaces
from featherface.data.widerface import detection_collate
from featherface.loss import MultiBoxLoss
from featherface.priors import prior_boxes

SIZE = 128


def _target(x1, y1, x2, y2, label=1.0):
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return torch.tensor([[x1, y1, x2, y2, cx - 0.02, cy, cx + 0.02, cy, cx, cy, cx - 0.01, cy + 0.02,
                          cx + 0.01, cy + 0.02, label]])


def _zeros(num_priors, batch=1):
    return torch.zeros(batch, num_priors, 4), torch.zeros(batch, num_priors, 2), torch.zeros(batch, num_priors, 10)


def test_hard_negative_ratio_seven_to_one():
    priors = prior_boxes((SIZE, SIZE))
    criterion = MultiBoxLoss()
    targets = [_target(0.2, 0.2, 0.45, 0.5)]
    labels, _, _ = criterion.build_targets(targets, priors)
    num_positive = int((labels != 0).sum())
    assert num_positive >= 1
    deltas, logits, landmarks = _zeros(len(priors))
    _, parts = criterion((deltas, logits, landmarks), targets, priors)
    # all logits equal: every selected prior costs log 2; 1 positive + 7 negatives per positive
    assert parts["conf"] == pytest.approx(8 * math.log(2), rel=1e-5)
    # plant 7 * num_positive "hard" negatives: only they are mined
    negatives = (labels[0] == 0).nonzero().squeeze(1)
    hard = negatives[torch.randperm(len(negatives), generator=torch.Generator().manual_seed(0))[:7 * num_positive]]
    logits[0, hard, 1] = 5.0
    _, parts = criterion((deltas, logits, landmarks), targets, priors)
    expected = (num_positive * math.log(2) + 7 * num_positive * (5 + math.log1p(math.exp(-5)))) / num_positive
    assert parts["conf"] == pytest.approx(expected, rel=1e-5)


def test_negatives_capped_and_empty_images():
    priors = prior_boxes((16, 16), min_sizes=((8,),), steps=(8,))  # 4 priors
    criterion = MultiBoxLoss()
    targets = [_target(0.0, 0.0, 0.5, 0.5), torch.zeros(0, 15)]
    total, parts = criterion(_zeros(4, batch=2), targets, priors)
    # image 0: 1 positive, negatives capped at P - 1 = 3; image 1: no positives -> no negatives
    assert parts["conf"] == pytest.approx(4 * math.log(2), rel=1e-5)
    assert parts["loc"] >= 0 and torch.isfinite(total)


def test_landmark_loss_only_for_faces_with_landmarks():
    priors = prior_boxes((SIZE, SIZE))
    criterion = MultiBoxLoss()
    deltas, logits, landmarks = _zeros(len(priors))
    landmarks += 3.0
    _, with_landmarks = criterion((deltas, logits, landmarks), [_target(0.2, 0.2, 0.45, 0.5)], priors)
    _, without = criterion((deltas, logits, landmarks), [_target(0.2, 0.2, 0.45, 0.5, label=-1.0)], priors)
    assert with_landmarks["landm"] > 0 and without["landm"] == 0.0
    assert without["loc"] == pytest.approx(with_landmarks["loc"]) and without["conf"] == pytest.approx(with_landmarks["conf"])
    total, parts = criterion((deltas, logits, landmarks), [_target(0.2, 0.2, 0.45, 0.5)], priors)
    assert float(total) == pytest.approx(2 * parts["loc"] + parts["conf"] + parts["landm"], rel=1e-5)


def test_bad_shapes_raise():
    priors = prior_boxes((SIZE, SIZE))
    with pytest.raises(ValueError, match="targets"):
        MultiBoxLoss()(_zeros(len(priors)), [torch.zeros(1, 5)], priors)
    with pytest.raises(ValueError, match="priors"):
        MultiBoxLoss()(_zeros(10), [torch.zeros(0, 15)], priors)


class TinyDetector(nn.Module):
    """A few convs with the RetinaFace output contract (strides 8 / 16 / 32, 2 anchors)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        block = lambda i, o: nn.Sequential(nn.Conv2d(i, o, 3, 2, 1), nn.BatchNorm2d(o), nn.ReLU())  # noqa: E731
        self.stem = nn.Sequential(block(3, width), block(width, width), block(width, width))
        self.down = nn.ModuleList([block(width, width), block(width, width)])
        self.heads = nn.ModuleList([nn.Conv2d(width, 2 * 16, 1) for _ in range(3)])

    def forward(self, images):
        features = [self.stem(images)]
        for down in self.down:
            features.append(down(features[-1]))
        outputs = []
        for feature, head in zip(features, self.heads):
            out = head(feature).permute(0, 2, 3, 1)  # (N, 32, H, W) -> (N, H, W, 32)
            outputs.append(out.reshape(out.shape[0], -1, 16))  # -> (N, H*W*2, 16)
        out = torch.cat(outputs, dim=1)
        return out[..., :4], out[..., 4:6], out[..., 6:]


def test_loss_decreases_when_overfitting_eight_synthetic_images():
    torch.manual_seed(0)
    images, targets = detection_collate([SyntheticFaces(8, image_size=SIZE, seed=0)[i] for i in range(8)])
    priors = prior_boxes((SIZE, SIZE))
    model = TinyDetector()
    criterion = MultiBoxLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for _ in range(40):
        total, _ = criterion(model(images / 128.0), targets, priors)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
    assert all(math.isfinite(v) for v in history)
    assert sum(history[-5:]) / 5 < 0.5 * sum(history[:5]) / 5
