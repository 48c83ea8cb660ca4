import numpy as np
import pytest
import torch

from featherface.data.synthetic import SUBSET_MIN_SIDE, SyntheticFaces
from featherface.evaluation import evaluate


def test_deterministic_and_order_independent():
    first, second = SyntheticFaces(6, seed=3), SyntheticFaces(6, seed=3)
    forward = [first.sample(i) for i in range(6)]
    backward = [second.sample(i) for i in reversed(range(6))][::-1]
    for (image_a, targets_a), (image_b, targets_b) in zip(forward, backward):
        assert np.array_equal(image_a, image_b) and np.array_equal(targets_a, targets_b)
    other = SyntheticFaces(6, seed=4).sample(0)
    assert not np.array_equal(other[0], forward[0][0])


def test_boxes_and_landmarks_valid():
    dataset = SyntheticFaces(20, image_size=160, seed=0)
    sizes = []
    for index in range(len(dataset)):
        image, targets = dataset.sample(index)
        assert image.shape == (160, 160, 3) and image.dtype == np.uint8
        assert len(targets) >= 1 and (targets[:, 14] == 1).all()
        boxes = targets[:, :4]
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 160).all()
        points = targets[:, 4:14].reshape(-1, 5, 2)
        assert (points >= boxes[:, None, :2] - 1e-3).all() and (points <= boxes[:, None, 2:] + 1e-3).all()
        sizes.extend(np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]))
    assert min(sizes) < 10 and max(sizes) > 40  # many scales
    tensor, normalised = dataset[0]
    assert tensor.shape == (3, 160, 160) and tensor.dtype == torch.float32
    assert normalised.max() <= 1.0 and normalised.dtype == torch.float32


def test_splits_nested_by_size_and_gt_scores_one():
    dataset = SyntheticFaces(10, image_size=320, seed=1)
    ground_truth = dataset.ground_truth()
    assert len(ground_truth) == 10
    for truth in ground_truth.values():
        easy, medium, hard = (set(truth.keep[s].tolist()) for s in ("easy", "medium", "hard"))
        assert easy <= medium <= hard == set(range(len(truth.boxes)))
        sides = truth.boxes[:, 2:].min(axis=1)
        assert (sides[list(easy)] >= SUBSET_MIN_SIDE["easy"] * 320).all()
    predictions = {key: np.hstack((t.boxes, np.ones((len(t.boxes), 1)))) for key, t in ground_truth.items()}
    assert evaluate(predictions, ground_truth) == {"easy": 1.0, "medium": 1.0, "hard": 1.0}


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_images"):
        SyntheticFaces(0)
    with pytest.raises(IndexError):
        SyntheticFaces(2).sample(5)
