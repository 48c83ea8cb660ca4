import numpy as np
import torch

from featherface.data.augment import TrainTransform, mirror, random_crop


def _face(x1, y1, x2, y2, label=1.0):
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    points = [cx - w / 4, cy - h / 6, cx + w / 4, cy - h / 6, cx, cy, cx - w / 5, cy + h / 4, cx + w / 5, cy + h / 4]
    return [x1, y1, x2, y2, *points, label]


def test_mirror_swaps_left_right_landmarks():
    image = np.zeros((20, 100, 3), np.uint8)
    image[:, :10] = 255
    targets = np.array([_face(10, 2, 30, 18), [50, 5, 60, 15, *[-1.0] * 10, -1.0]], np.float32)
    flipped_image, flipped = mirror(image, targets)
    assert flipped_image[0, -1, 0] == 255 and flipped_image[0, 0, 0] == 0
    assert flipped[0, :4].tolist() == [70, 2, 90, 18]
    points, original = flipped[0, 4:14].reshape(5, 2), targets[0, 4:14].reshape(5, 2)
    assert points[0].tolist() == [100 - original[1, 0], original[1, 1]]  # new left eye = old right eye
    assert points[1].tolist() == [100 - original[0, 0], original[0, 1]]
    assert points[2].tolist() == [100 - original[2, 0], original[2, 1]]  # nose stays the nose
    assert points[3].tolist() == [100 - original[4, 0], original[4, 1]]  # mouth corners swap
    assert points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0]  # left stays image-left
    assert flipped[1, 4:14].tolist() == [-1.0] * 10  # faces without landmarks untouched


def test_crop_keeps_faces_by_centre_and_clips():
    rng = np.random.default_rng(0)
    image = np.zeros((200, 300, 3), np.uint8)
    targets = np.array([_face(20, 20, 60, 70), _face(150, 100, 190, 150), _face(250, 150, 290, 195)], np.float32)
    for _ in range(20):
        crop, kept, cropped = random_crop(image, targets, rng)
        assert cropped and crop.shape[0] == crop.shape[1] and len(kept) >= 1
        side = crop.shape[0]
        assert (kept[:, :2] >= 0).all() and (kept[:, 2:4] <= side).all()
        assert (kept[:, 2] > kept[:, 0]).all() and (kept[:, 3] > kept[:, 1]).all()


def test_train_transform_output_contract_and_determinism():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    targets = np.array([_face(20, 20, 80, 100), _face(200, 60, 260, 140), [150, 150, 170, 175, *[-1.0] * 10, -1.0]],
                       np.float32)
    runs = []
    for seed in (7, 7, 8):
        transform = TrainTransform(160, seed=seed)
        out = [transform(image, targets) for _ in range(10)]
        runs.append(out)
        for tensor, boxes in out:
            assert tensor.shape == (3, 160, 160) and tensor.dtype == torch.float32
            assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
            assert boxes[:, :4].min() >= 0 and boxes[:, :4].max() <= 1
            with_landmarks = boxes[boxes[:, 14] > 0]
            if len(with_landmarks) == 0:
                continue
            assert with_landmarks[:, 4:14].min() >= 0 and with_landmarks[:, 4:14].max() <= 1
            assert (with_landmarks[:, 4] <= with_landmarks[:, 6]).all()  # left eye left of right eye
    assert all(torch.equal(a[0], b[0]) for a, b in zip(runs[0], runs[1]))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(runs[0], runs[2]))


def test_crop_scale_scales_every_crop_side_and_keeps_face_pixel_size():
    image = np.zeros((400, 600, 3), np.uint8)
    targets = np.array([_face(180, 180, 200, 204)], np.float32)  # one 20 x 24 face: every crop side fits it
    for scale in (1.0, 0.5):
        rng = np.random.default_rng(3)
        sides = {random_crop(image, targets, rng, crop_scale=scale)[0].shape[0] for _ in range(200)}
        assert sides == {int(s * scale * 400) for s in (0.3, 0.45, 0.6, 0.8, 1.0)}
    # at image_size 320 with crop_scale 0.5 a face has the pixel sizes it has at 640 with crop_scale 1
    def face_widths(size, scale):
        return {round(20 * size / (s * scale * 400)) for s in (0.3, 0.45, 0.6, 0.8, 1.0)}

    assert face_widths(320, 0.5) == face_widths(640, 1.0) != face_widths(320, 1.0)
    for size, scale in ((640, 1.0), (320, 0.5), (320, 1.0)):
        transform = TrainTransform(size, seed=11, crop_scale=scale)
        widths = {round(float(boxes[0, 2] - boxes[0, 0]) * size) for _, boxes in
                  (transform(image, targets) for _ in range(40))}
        assert widths <= face_widths(size, scale) and len(widths) >= 3, (size, scale, widths)


def test_crop_scale_outside_0_1_is_refused():
    import pytest

    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="crop_scale"):
            TrainTransform(320, crop_scale=bad)
