"""RetinaFace training augmentation (Deng et al., CVPR 2020; the ``preproc`` of Pytorch_Retinaface,
also used by FeatherFace):

1. random square crop: side = ``s * crop_scale * min(H, W)`` with ``s`` from (0.3, 0.45, 0.6, 0.8, 1.0)
   (``crop_scale`` 1 in RetinaFace; 0.5 at ``image_size`` 320 gives faces the pixel size they have in
   640 px training, on a smaller field of view); a crop is
   accepted when at least one face lies entirely inside it; faces whose centre is inside are kept and
   clipped to it (landmarks shifted and clamped); 250 tries, else the whole image (later padded square);
2. photometric distortion: brightness (+-32), contrast (x0.5-1.5), saturation (x0.5-1.5), hue (+-18),
   each with probability 1/2, contrast before or after the HSV changes;
3. pad to a square with the mean colour when no crop succeeded;
4. horizontal mirror with probability 1/2, swapping left/right eye and left/right mouth corner;
5. resize to ``image_size`` with a random interpolation, subtract the BGR mean (104, 117, 123), CHW.

Targets are ``float32[G, 15]`` rows ``x1 y1 x2 y2 (x y)*5 label`` in pixels on input and normalised to
[0, 1] on output; faces without landmarks (label -1) keep their landmark columns unused.
Randomness comes from a ``numpy.random.Generator`` (``seed`` for reproducibility).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

from featherface.data.widerface import BGR_MEAN, image_to_tensor

CROP_SCALES: tuple[float, ...] = (0.3, 0.45, 0.6, 0.8, 1.0)
CROP_TRIES = 250
MIRROR_ORDER = (1, 0, 2, 4, 3)  # left eye <-> right eye, nose, left mouth <-> right mouth
INTERPOLATIONS = (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA, cv2.INTER_NEAREST, cv2.INTER_LANCZOS4)


def random_crop(image: np.ndarray, targets: np.ndarray, rng: np.random.Generator,
                crop_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, bool]:
    """Step 1. Returns ``(image, targets, cropped)``; ``cropped`` is False when every try failed."""
    height, width = image.shape[:2]
    if len(targets) == 0:
        return image, targets, False
    boxes = targets[:, :4]
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    for _ in range(CROP_TRIES):
        side = max(1, int(rng.choice(CROP_SCALES) * crop_scale * min(height, width)))
        left = 0 if width == side else int(rng.integers(width - side))
        top = 0 if height == side else int(rng.integers(height - side))
        roi = np.array([left, top, left + side, top + side], dtype=np.float32)
        inside = (boxes[:, :2] >= roi[:2]).all(axis=1) & (boxes[:, 2:] <= roi[2:]).all(axis=1)
        if not inside.any():
            continue
        kept = ((roi[:2] < centres) & (centres < roi[2:])).all(axis=1)
        if not kept.any():
            continue
        cropped = targets[kept].copy()
        cropped[:, :2] = np.maximum(cropped[:, :2], roi[:2]) - roi[:2]
        cropped[:, 2:4] = np.minimum(cropped[:, 2:4], roi[2:]) - roi[:2]
        points = cropped[:, 4:14].reshape(-1, 5, 2)  # (G, 10) -> (G, 5, 2)
        cropped[:, 4:14] = np.clip(points - roi[:2], 0, side).reshape(-1, 10)  # (G, 5, 2) -> (G, 10)
        cropped[cropped[:, 14] < 0, 4:14] = -1.0  # keep "no landmarks" recognisable
        return image[top:top + side, left:left + side], cropped, True
    return image, targets, False


_LEVELS = np.arange(256)  # every uint8 value: a pixel-wise change is a 256-entry table


def scale_shift_table(alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """uint8[256]: ``clip(x * alpha + beta, 0, 255)`` computed in float32 and truncated, for every uint8 ``x``.

    ``cv2.LUT(image, table)`` gives exactly what the arithmetic on each pixel gives, several times faster."""
    return np.clip(_LEVELS.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def photometric_distort(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Step 2 on a uint8 BGR image (returns a new image; ``image`` is not changed).

    Brightness, contrast, saturation and hue are per-pixel, so each is a lookup table (:func:`scale_shift_table`);
    the saturation and hue tables act on their HSV channels in one three-channel lookup."""
    contrast_first = bool(rng.integers(2))
    if rng.integers(2):
        image = cv2.LUT(image, scale_shift_table(beta=float(rng.uniform(-32, 32))))
    if contrast_first and rng.integers(2):
        image = cv2.LUT(image, scale_shift_table(alpha=float(rng.uniform(0.5, 1.5))))
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)  # a new image: the caller's is never written
    tables = np.repeat(_LEVELS.astype(np.uint8)[:, None, None], 3, axis=2)  # (256, 1, 3): identity per channel
    if rng.integers(2):
        tables[:, 0, 1] = scale_shift_table(alpha=float(rng.uniform(0.5, 1.5)))
    if rng.integers(2):
        tables[:, 0, 0] = (_LEVELS.astype(np.int32) + int(rng.integers(-18, 19))) % 180
    hsv = cv2.LUT(hsv, tables)
    image = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if not contrast_first and rng.integers(2):
        image = cv2.LUT(image, scale_shift_table(alpha=float(rng.uniform(0.5, 1.5))))
    return image


def pad_to_square(image: np.ndarray, mean: tuple[float, float, float] = BGR_MEAN) -> np.ndarray:
    """Step 3: pad right/bottom to a square filled with the mean colour."""
    height, width = image.shape[:2]
    side = max(height, width)
    square = np.empty((side, side, 3), dtype=image.dtype)
    square[:] = np.asarray(mean, dtype=image.dtype)
    square[:height, :width] = image
    return square


def mirror(image: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal flip; boxes ``x1' = W - x2``, ``x2' = W - x1``; landmarks ``x' = W - x`` with left/right
    eyes and mouth corners swapped so that "left eye" stays the image-left eye (RetinaFace convention)."""
    width = image.shape[1]
    flipped = targets.copy()
    flipped[:, 0] = width - targets[:, 2]
    flipped[:, 2] = width - targets[:, 0]
    points = targets[:, 4:14].reshape(-1, 5, 2)[:, MIRROR_ORDER].copy()  # (G, 10) -> (G, 5, 2), swapped
    points[:, :, 0] = width - points[:, :, 0]
    has_landmarks = targets[:, 14] > 0
    flipped[has_landmarks, 4:14] = points[has_landmarks].reshape(-1, 10)  # (G, 5, 2) -> (G, 10)
    return cv2.flip(image, 1), flipped  # 1: around the vertical axis; a new contiguous image


class TrainTransform:
    """The RetinaFace training transform; ``transform(image_bgr, targets) -> (image, targets)``.

    Data contract: ``image_bgr`` uint8[H, W, 3]; ``targets`` float32[G, 15] pixels (x1 < x2, y1 < y2)
    -> ``(FloatTensor[3, S, S] mean-subtracted, FloatTensor[G', 15] normalised to [0, 1])`` with
    ``S = image_size``.

    Args:
        image_size: output side (640 for WIDER FACE training, 320 for the fast embedded run).
        crop_scale: factor on every crop side, in (0, 1]. ``image_size / 640`` keeps the face sizes (in
            pixels) of 640 px training at a smaller ``image_size``; 1 (RetinaFace) shrinks them with it.
        seed: seed of the generator (None: fresh OS entropy, different in every worker).
        mean: BGR mean subtracted.

    Example:
        >>> transform = TrainTransform(320, seed=0)
        >>> image, targets = transform(image_bgr, targets_px)  # doctest: +SKIP
    """

    def __init__(self, image_size: int = 640, seed: int | None = None, mean: tuple[float, float, float] = BGR_MEAN,
                 crop_scale: float = 1.0) -> None:
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        if not 0 < crop_scale <= 1:
            raise ValueError(f"crop_scale must be in (0, 1], got {crop_scale}")
        self.image_size = image_size
        self.crop_scale = crop_scale
        self.mean = mean
        self.rng = np.random.default_rng(seed)

    def __call__(self, image_bgr: np.ndarray, targets: np.ndarray) -> tuple[Tensor, Tensor]:
        targets = np.asarray(targets, dtype=np.float32).reshape(-1, 15)
        image, targets, cropped = random_crop(image_bgr, targets, self.rng, self.crop_scale)
        image = photometric_distort(image, self.rng)
        if not cropped:
            image = pad_to_square(image, self.mean)
        if self.rng.integers(2):
            image, targets = mirror(image, targets)
        height, width = image.shape[:2]
        interpolation = INTERPOLATIONS[int(self.rng.integers(len(INTERPOLATIONS)))]
        image = cv2.resize(image, (self.image_size, self.image_size), interpolation=interpolation)
        targets = targets.copy()
        targets[:, 0:4:2] /= width
        targets[:, 1:4:2] /= height
        has_landmarks = targets[:, 14] > 0
        targets[has_landmarks, 4:14:2] /= width
        targets[has_landmarks, 5:14:2] /= height
        return image_to_tensor(image, self.mean), torch.from_numpy(targets)
