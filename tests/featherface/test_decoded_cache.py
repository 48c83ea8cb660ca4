"""The training data path: the decoded-image cache, the table-based photometric distortion (bitwise equal to the
per-pixel arithmetic it replaced), and DataLoader workers giving the same batches as none."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from featherface.data.augment import mirror, photometric_distort, scale_shift_table
from featherface.data.decoded_cache import DecodedCache, freeze_in_workers
from featherface.task import FeatherFaceTask


def _scale_shift(channel: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> None:
    channel[:] = np.clip(channel.astype(np.float32) * alpha + beta, 0, 255)


def _photometric_by_arithmetic(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The per-pixel formulation (RetinaFace ``_distort``), same random draws in the same order."""
    image = image.copy()
    contrast_first = bool(rng.integers(2))
    if rng.integers(2):
        _scale_shift(image, beta=float(rng.uniform(-32, 32)))
    if contrast_first and rng.integers(2):
        _scale_shift(image, alpha=float(rng.uniform(0.5, 1.5)))
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    if rng.integers(2):
        _scale_shift(hsv[:, :, 1], alpha=float(rng.uniform(0.5, 1.5)))
    if rng.integers(2):
        hsv[:, :, 0] = (hsv[:, :, 0].astype(np.int32) + int(rng.integers(-18, 19))) % 180
    image = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if not contrast_first and rng.integers(2):
        _scale_shift(image, alpha=float(rng.uniform(0.5, 1.5)))
    return image


def test_photometric_tables_equal_the_per_pixel_arithmetic_and_leave_the_input_alone():
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    image.flags.writeable = False  # as a cached image is
    for seed in range(40):
        expected = _photometric_by_arithmetic(image, np.random.default_rng(seed))
        assert np.array_equal(photometric_distort(image, np.random.default_rng(seed)), expected), seed
    crop = image[3:30, 5:40]  # a crop is a non-contiguous view
    assert np.array_equal(photometric_distort(crop, np.random.default_rng(7)),
                          _photometric_by_arithmetic(crop, np.random.default_rng(7)))
    assert scale_shift_table(beta=-32.0)[:34].tolist() == [0] * 33 + [1]
    assert scale_shift_table(alpha=1.5)[[0, 1, 170, 171, 255]].tolist() == [0, 1, 255, 255, 255]


def test_mirror_of_a_read_only_view_is_the_numpy_flip():
    image = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    image.flags.writeable = False
    flipped, _ = mirror(image[1:, 1:], np.zeros((0, 15), np.float32))
    assert np.array_equal(flipped, image[1:, 1:][:, ::-1]) and flipped.flags.c_contiguous


def test_cache_keeps_the_first_items_that_fit_decodes_each_once_and_makes_them_read_only():
    loads = []

    def load(index):
        loads.append(index)
        return np.full((10, 10, 3), index, np.uint8), np.zeros((1, 15), np.float32)  # 300 + 60 bytes

    cache = DecodedCache(800)
    first = cache(0, load)
    assert cache(0, load) is first and loads == [0]
    assert not first[0].flags.writeable and not first[1].flags.writeable
    cache(1, load)
    third = cache(2, load)  # 1,080 bytes would exceed 800: returned, not kept
    assert third[0].flags.writeable and len(cache) == 2 and cache.used_bytes == 720
    cache(2, load)
    assert loads == [0, 1, 2, 2]

    filled = DecodedCache(800)
    loads.clear()
    filled.fill(range(10), load)  # stops at the first item that does not fit
    assert loads == [0, 1, 2] and len(filled) == 2
    with pytest.raises(ValueError, match="limit_bytes must be >= 0, got -1"):
        DecodedCache(-1)


def test_freeze_in_workers_outside_a_worker_changes_nothing():
    freeze_in_workers(0)  # no worker info: a no-op
    assert DecodedCache(5).limit_bytes == 5


def _epochs(task: FeatherFaceTask, epochs: int = 2) -> tuple[list[torch.Tensor], float]:
    torch.manual_seed(11)
    loader = task.train_loader(3)
    images = [batch[0] for _ in range(epochs) for batch in loader]
    return images, torch.rand(1).item()  # the global RNG stream after the epochs: what a resume relies on


def test_workers_and_cache_give_the_same_batches_and_rng_stream_as_neither():
    arguments = {"image_size": 64, "train_size": 6, "val_size": 2}
    plain, plain_next = _epochs(FeatherFaceTask("synthetic", cache_mb=0, **arguments))
    cached_task = FeatherFaceTask("synthetic", **arguments)
    cached, cached_next = _epochs(cached_task)
    assert len(cached_task._train.cache) == 6  # decoded once, reused in the second epoch
    workers, workers_next = _epochs(FeatherFaceTask("synthetic", workers=2, **arguments))
    assert len(plain) == 4 and plain_next == cached_next == workers_next
    assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(plain, cached, workers))


@pytest.mark.parametrize(("name", "value"), [("cache_mb", -1), ("workers", True), ("workers", 1.5)])
def test_cache_and_worker_arguments_are_checked(name, value):
    with pytest.raises(ValueError, match=f"{name} must be an integer >= 0, got {value!r}"):
        FeatherFaceTask("synthetic", image_size=64, train_size=2, val_size=1, **{name: value})
