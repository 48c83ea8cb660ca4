import numpy as np
import pytest
import torch

from featherface.postprocess import Detections, nms, postprocess
from featherface.priors import prior_boxes


def _py_cpu_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Test oracle: the greedy loop with +1 areas, written out plainly."""
    order = list(np.argsort(-scores, kind="stable"))
    keep = []
    while order:
        best, order = order[0], order[1:]
        keep.append(int(best))
        survivors = []
        for other in order:
            w = max(0.0, min(boxes[best, 2], boxes[other, 2]) - max(boxes[best, 0], boxes[other, 0]) + 1)
            h = max(0.0, min(boxes[best, 3], boxes[other, 3]) - max(boxes[best, 1], boxes[other, 1]) + 1)
            area = lambda b: (b[2] - b[0] + 1) * (b[3] - b[1] + 1)  # noqa: E731
            if w * h / (area(boxes[best]) + area(boxes[other]) - w * h) <= threshold:
                survivors.append(other)
        order = survivors
    return keep


def test_nms_uses_plus_one_pixel_iou():
    boxes = torch.tensor([[0.0, 0.0, 9.0, 9.0], [4.0, 0.0, 13.0, 9.0]])
    # +1 convention: 60 / 140 = 0.43 > 0.4 -> suppressed (continuous IoU would be 45 / 117 = 0.38)
    assert nms(boxes, torch.tensor([0.9, 0.8]), 0.4).tolist() == [0]
    assert nms(boxes, torch.tensor([0.7, 0.8]), 0.45).tolist() == [1, 0]
    assert nms(torch.zeros(0, 4), torch.zeros(0)).numel() == 0


def test_nms_matches_greedy_oracle_in_order():
    rng = np.random.default_rng(0)
    corner = rng.uniform(0, 200, (300, 2))
    boxes = np.hstack((corner, corner + rng.uniform(5, 60, (300, 2)))).astype(np.float32)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    keep = nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.4).tolist()
    assert keep == _py_cpu_nms(boxes.astype(np.float64), scores, 0.4)


def _outputs(num_priors: int, hot: dict[int, float]):
    deltas = torch.zeros(num_priors, 4)
    logits = torch.zeros(num_priors, 2)
    logits[:, 0] = 10.0  # background everywhere ...
    for index, face_logit in hot.items():  # ... except these priors
        logits[index] = torch.tensor([0.0, face_logit])
    return deltas, logits, torch.zeros(num_priors, 10)


def test_postprocess_decodes_to_original_pixels():
    priors = prior_boxes((32, 64))  # 4x8 cells at stride 8 -> index 0 is row 0, column 0, 16 px anchor
    deltas, logits, landmarks = _outputs(len(priors), {0: 3.0, 17: 1.0})
    dets = postprocess(deltas, logits, landmarks, priors, (32, 64), resize=0.5)
    assert isinstance(dets, Detections) and len(dets) == 2
    # prior 0: centre (4, 4) px, 16 px wide -> (-4, -4, 12, 12) at input scale, doubled for resize 0.5
    assert torch.allclose(dets.boxes[0], torch.tensor([-8.0, -8.0, 24.0, 24.0]))
    assert torch.allclose(dets.landmarks[0], torch.full((10,), 8.0))
    assert dets.scores[0] == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())
    assert bool((dets.scores[:-1] >= dets.scores[1:]).all())


def test_postprocess_threshold_top_k_keep_k():
    priors = prior_boxes((32, 64))
    # three far-apart priors (row 0 columns 0, 4 and row 3 column 7), anchor 16 px
    deltas, logits, landmarks = _outputs(len(priors), {0: 2.0, 8: 1.0, 62: 0.0})
    assert len(postprocess(deltas, logits, landmarks, priors, (32, 64))) == 3
    assert len(postprocess(deltas, logits, landmarks, priors, (32, 64), conf_threshold=0.5)) == 2  # 0.5 is not > 0.5
    assert len(postprocess(deltas, logits, landmarks, priors, (32, 64), top_k=1)) == 1
    kept = postprocess(deltas, logits, landmarks, priors, (32, 64), keep_top_k=2)
    assert kept.scores.tolist() == pytest.approx(torch.sigmoid(torch.tensor([2.0, 1.0])).tolist())


def test_postprocess_shape_error_and_xywh_rounding():
    priors = prior_boxes((16, 16))
    with pytest.raises(ValueError, match="cls_logits"):
        postprocess(torch.zeros(len(priors), 4), torch.zeros(3, 2), torch.zeros(len(priors), 10), priors, (16, 16))
    dets = Detections(torch.tensor([[1.7, 2.2, 10.9, 20.5]]), torch.tensor([0.5]), torch.zeros(1, 10))
    assert dets.to_xywhs().tolist() == [[1.0, 2.0, 9.0, 18.0, 0.5]]  # w = int(x2) - int(x1), as the official script
