import math

import pytest
import torch

from featherface.priors import PriorCache, num_priors, prior_boxes


def test_hand_computed_2x2_grid():
    priors = prior_boxes((16, 16), min_sizes=((4, 8),), steps=(8,))
    expected = torch.tensor([
        [0.25, 0.25, 0.25, 0.25], [0.25, 0.25, 0.5, 0.5],  # row 0, column 0, anchors 4 and 8 px
        [0.75, 0.25, 0.25, 0.25], [0.75, 0.25, 0.5, 0.5],  # row 0, column 1
        [0.25, 0.75, 0.25, 0.25], [0.25, 0.75, 0.5, 0.5],  # row 1, column 0
        [0.75, 0.75, 0.25, 0.25], [0.75, 0.75, 0.5, 0.5],  # row 1, column 1
    ])
    assert torch.equal(priors, expected)


def test_non_square_input_uses_ceil_and_per_axis_normalisation():
    priors = prior_boxes((8, 20), min_sizes=((8,),), steps=(8,))  # 1 row, ceil(20/8) = 3 columns
    expected = torch.tensor([[4 / 20, 0.5, 8 / 20, 1.0], [12 / 20, 0.5, 8 / 20, 1.0], [20 / 20, 0.5, 8 / 20, 1.0]])
    assert torch.allclose(priors, expected)
    clipped = prior_boxes((8, 20), min_sizes=((16,),), steps=(8,), clip=True)
    assert clipped.max() <= 1.0


def test_level_order_then_rows_columns_anchors():
    priors = prior_boxes((64, 64), min_sizes=((2,), (3,)), steps=(32, 64))
    assert priors.shape == (4 + 1, 4)
    assert torch.allclose(priors[:4, 2], torch.full((4,), 2 / 64))
    assert torch.allclose(priors[4], torch.tensor([0.5, 0.5, 3 / 64, 3 / 64]))


def test_count_16800_at_640():
    priors = prior_boxes((640, 640))
    assert priors.shape == (16800, 4)
    assert num_priors((640, 640)) == 16800
    assert priors.dtype == torch.float32


@pytest.mark.parametrize("size", [(1024, 683), (321, 479), (7, 9)])
def test_any_size_via_ceil(size):
    height, width = size
    expected = sum(2 * math.ceil(height / s) * math.ceil(width / s) for s in (8, 16, 32))
    assert prior_boxes(size).shape[0] == expected == num_priors(size)


def test_bad_size_raises():
    with pytest.raises(ValueError, match="image_size"):
        prior_boxes((0, 10))


def test_prior_cache_builds_each_size_once():
    cache = PriorCache()
    first = cache((64, 96))
    assert torch.equal(first, prior_boxes((64, 96)))
    assert cache((64, 96)) is first  # not rebuilt
    assert cache((96, 64)).shape[0] == num_priors((96, 64)) and not torch.equal(cache((96, 64)), first)
