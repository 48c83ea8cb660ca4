"""Procedural synthetic face-detection data (no download), for fast CPU runs and tests.

Each image is a cluttered background (colour gradient, noise texture, random rectangles / circles /
lines / polygons) with *face-like distractors* (skin-toned ellipses without a facial layout, ellipses
with randomly placed dark spots, random blobs) and 1-12 *faces*: skin-toned ellipses carrying two eyes,
a nose and a mouth (plus optional eyebrows and hair), at face heights log-uniform from 8 px to half the
image, rotated (+-30 degrees), turned (yaw: horizontal squash with the features shifted sideways),
sometimes occluded by a random shape, blurred, and under random lighting.

Landmarks, as in RetinaFace's WIDER FACE annotations: left eye, right eye, nose, left mouth corner,
right mouth corner, where "left" means image-left in the upright face frame (the mirror augmentation
keeps this by swapping). Boxes are the tight axis-aligned boxes of the (rotated) face ellipse; every face
lies fully inside the image, so all landmarks lie inside their box.

Item ``i`` is generated from ``numpy.random.default_rng([seed, i])`` only, so it is identical whatever
the access order or DataLoader worker. Subsets mimic WIDER FACE's nested easy / medium / hard by face
size (:data:`SUBSET_MIN_SIDE`, fractions of the image side).

Caveat: these are cartoon faces; a detector trained on them does not transfer to real photos. They
exist to exercise the training / pruning / distillation pipeline end to end in minutes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from featherface.data.widerface import LABEL_WITH_LANDMARKS, TARGET_COLUMNS, to_tensor
from featherface.evaluation import ImageGroundTruth, size_subsets

DEFAULT_IMAGE_SIZE = 320
MIN_FACE_HEIGHT = 8.0
MAX_FACES = 12
MAX_ROTATION_DEGREES = 30.0
FACE_ASPECT = 0.78  # width / height of the face ellipse before yaw
SUBSET_MIN_SIDE = {"easy": 0.1, "medium": 0.05, "hard": 0.0}
"""Minimum ``min(w, h)`` of a face, as a fraction of the image side, for each subset (nested)."""
EVENT = "synthetic"

# face-frame coordinates: units of the face half-height, x to image-right, y down
_EYE = (0.36, -0.18)
_NOSE = (0.0, 0.12)
_MOUTH = (0.30, 0.48)
_MAX_OVERLAP_IOU = 0.05


def _skin_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    """A BGR skin tone from a range of light to dark tones."""
    tone = rng.uniform(0, 1)
    light, dark = np.array([170, 195, 235]), np.array([45, 70, 110])
    colour = dark + tone * (light - dark) + rng.normal(0, 8, 3)
    return tuple(float(c) for c in np.clip(colour, 0, 255))


def _random_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    return tuple(float(c) for c in rng.uniform(0, 255, 3))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    corners = rng.uniform(0, 255, (2, 2, 3)).astype(np.float32)
    image = cv2.resize(corners, (size, size), interpolation=cv2.INTER_LINEAR)
    noise = cv2.resize(rng.normal(0, 1, (size // 8 + 1, size // 8 + 1, 3)).astype(np.float32), (size, size))
    image += noise * rng.uniform(5, 30) + rng.normal(0, rng.uniform(1, 8), (size, size, 3)).astype(np.float32)
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(8, 40))):
        kind = int(rng.integers(4))
        colour = _random_colour(rng)
        x, y = (int(v) for v in rng.integers(0, size, 2))
        extent = int(rng.integers(4, max(5, size // 3)))
        if kind == 0:
            cv2.rectangle(image, (x, y), (x + extent, y + int(rng.integers(4, extent + 1))), colour, -1)
        elif kind == 1:
            cv2.circle(image, (x, y), extent // 2, colour, -1, cv2.LINE_AA)
        elif kind == 2:
            end = (x + int(rng.integers(-extent, extent)), y + int(rng.integers(-extent, extent)))
            cv2.line(image, (x, y), end, colour, int(rng.integers(1, 6)), cv2.LINE_AA)
        else:
            points = (np.array([x, y]) + rng.integers(-extent, extent, (int(rng.integers(3, 7)), 2))).astype(np.int32)
            cv2.fillPoly(image, [points], colour, cv2.LINE_AA)
    return image


def _ellipse(image: np.ndarray, centre: np.ndarray, axes: tuple[float, float], angle: float,
             colour: tuple[float, float, float]) -> None:
    shift = 4  # sub-pixel drawing: coordinates in 1/16 px
    c = tuple(int(round(v * (1 << shift))) for v in centre)
    a = tuple(max(1, int(round(v * (1 << shift)))) for v in axes)
    cv2.ellipse(image, c, a, angle, 0, 360, colour, -1, cv2.LINE_AA, shift)


def _distractor(image: np.ndarray, rng: np.random.Generator, size: int) -> None:
    """A skin-toned ellipse without a facial layout (plain, random spots, or a stripe)."""
    height = math.exp(rng.uniform(math.log(MIN_FACE_HEIGHT), math.log(size / 2)))
    centre = rng.uniform(0, size, 2)
    axes = (height / 2 * rng.uniform(0.5, 1.3), height / 2)
    angle = float(rng.uniform(-90, 90))
    _ellipse(image, centre, axes, angle, _skin_colour(rng))
    style = int(rng.integers(3))
    dark = tuple(float(c) for c in rng.uniform(0, 70, 3))
    if style == 1:  # spots in random places: not two eyes above a mouth
        for _ in range(int(rng.integers(1, 5))):
            offset = rng.uniform(-0.6, 0.6, 2) * np.array(axes)
            _ellipse(image, centre + offset, (height * 0.05, height * 0.05), 0.0, dark)
    elif style == 2:
        _ellipse(image, centre, (axes[0] * 0.9, height * 0.04), angle, dark)


def _rotate(points: np.ndarray, angle_degrees: float) -> np.ndarray:
    theta = math.radians(angle_degrees)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    return points @ rotation.T


def _face_geometry(rng: np.random.Generator, size: int) -> dict:
    height = math.exp(rng.uniform(math.log(MIN_FACE_HEIGHT), math.log(size / 2)))
    half_h = height / 2
    squash = rng.uniform(0.65, 1.0)  # yaw
    half_w = half_h * FACE_ASPECT * squash
    angle = float(rng.uniform(-MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES))
    theta = math.radians(angle)
    box_half = np.array([math.hypot(half_w * math.cos(theta), half_h * math.sin(theta)),
                         math.hypot(half_w * math.sin(theta), half_h * math.cos(theta))])
    centre = rng.uniform(box_half, size - box_half)
    return {"half_h": half_h, "half_w": half_w, "squash": squash, "angle": angle, "centre": centre,
            "box": np.concatenate((centre - box_half, centre + box_half)),
            "turn": float(rng.choice([-1.0, 1.0])) * (1.0 - squash)}


def _draw_face(image: np.ndarray, rng: np.random.Generator, face: dict) -> np.ndarray:
    """Draw one face; returns float[10] landmarks (image pixels)."""
    half_h, squash, angle, centre, turn = face["half_h"], face["squash"], face["angle"], face["centre"], face["turn"]
    skin = _skin_colour(rng)
    dark = tuple(float(c) for c in rng.uniform(0, 60, 3))
    if rng.uniform() < 0.5:  # hair: a dark cap behind the upper face
        hair_centre = centre + _rotate(np.array([[0.0, -0.25 * half_h]]), angle)[0]
        _ellipse(image, hair_centre, (face["half_w"] * 1.08, half_h * 0.85), angle, _random_colour(rng))
    _ellipse(image, centre, (face["half_w"], half_h), angle, skin)

    def to_image(x: float, y: float) -> np.ndarray:  # face frame (units of half_h) -> pixels
        shifted_x = (x * FACE_ASPECT * squash + turn * 0.5) * half_h
        return centre + _rotate(np.array([[shifted_x, y * half_h]]), angle)[0]

    left_eye, right_eye = to_image(-_EYE[0], _EYE[1]), to_image(_EYE[0], _EYE[1])
    nose = to_image(_NOSE[0] + turn * 0.3, _NOSE[1])
    mouth_left, mouth_right = to_image(-_MOUTH[0], _MOUTH[1]), to_image(_MOUTH[0], _MOUTH[1])
    eye_axes = (0.11 * half_h * squash, 0.07 * half_h)
    white = tuple(float(c) for c in rng.uniform(200, 255, 3))
    for eye in (left_eye, right_eye):
        _ellipse(image, eye, (eye_axes[0] * 1.5, eye_axes[1] * 1.3), angle, white)
        _ellipse(image, eye, eye_axes, angle, dark)
        if rng.uniform() < 0.6:  # eyebrow
            brow = eye + _rotate(np.array([[0.0, -0.16 * half_h]]), angle)[0]
            _ellipse(image, brow, (eye_axes[0] * 1.6, 0.025 * half_h + 0.3), angle, dark)
    nose_colour = tuple(0.75 * c for c in skin)
    _ellipse(image, nose, (0.07 * half_h * squash, 0.12 * half_h), angle, nose_colour)
    mouth_centre = (mouth_left + mouth_right) / 2
    lips = tuple(float(c) for c in (rng.uniform(40, 120), rng.uniform(40, 100), rng.uniform(120, 200)))
    _ellipse(image, mouth_centre, (float(np.linalg.norm(mouth_right - mouth_left)) / 2, 0.06 * half_h + 0.3),
             angle, lips)
    return np.concatenate((left_eye, right_eye, nose, mouth_left, mouth_right))


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    if len(boxes) == 0:
        return np.zeros(0)
    top_left = np.maximum(box[:2], boxes[:, :2])
    bottom_right = np.minimum(box[2:], boxes[:, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(boxes) - inter)


def render_scene(rng: np.random.Generator, image_size: int = DEFAULT_IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic image.

    Returns:
        ``(image uint8[S, S, 3] BGR, targets float32[G, 15])`` with rows ``x1 y1 x2 y2 (x y)*5 label`` in
        pixels, label 1 (every synthetic face has landmarks); G >= 1.
    """
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    image = _background(rng, image_size)
    num_distractors = int(rng.integers(1, 7))
    num_faces = int(rng.integers(1, MAX_FACES + 1))
    faces: list[dict] = []
    for _ in range(num_faces * 10):  # rejection sampling: faces barely overlap
        if len(faces) == num_faces:
            break
        face = _face_geometry(rng, image_size)
        if (_iou(face["box"], np.array([f["box"] for f in faces]).reshape(-1, 4)) <= _MAX_OVERLAP_IOU).all():
            faces.append(face)
    for _ in range(num_distractors):
        _distractor(image, rng, image_size)
    targets = np.zeros((len(faces), TARGET_COLUMNS), dtype=np.float32)
    for index, face in enumerate(faces):
        targets[index, :4] = face["box"]
        targets[index, 4:14] = _draw_face(image, rng, face)
        targets[index, 14] = LABEL_WITH_LANDMARKS
        if rng.uniform() < 0.25:  # occluder over part of the face
            x1, y1, x2, y2 = face["box"]
            w, h = x2 - x1, y2 - y1
            corner = np.array([x1 + rng.uniform(-0.3, 0.7) * w, y1 + rng.uniform(-0.3, 0.7) * h])
            extent = np.array([w, h]) * rng.uniform(0.25, 0.5, 2)
            cv2.rectangle(image, tuple(int(v) for v in corner), tuple(int(v) for v in corner + extent),
                          _random_colour(rng), -1)
        if rng.uniform() < 0.2:  # local blur
            x1, y1, x2, y2 = (int(v) for v in np.round(face["box"]))
            patch = image[y1:y2 + 1, x1:x2 + 1]
            if patch.size:
                image[y1:y2 + 1, x1:x2 + 1] = cv2.GaussianBlur(patch, (0, 0), rng.uniform(0.5, 2.0))
    if rng.uniform() < 0.3:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.2))
    gain = rng.uniform(0.6, 1.3)
    shading = np.linspace(rng.uniform(-40, 0), rng.uniform(0, 40), image_size, dtype=np.float32)
    lit = image.astype(np.float32) * gain + (shading[None, :, None] if rng.uniform() < 0.5 else shading[:, None, None])
    image = np.clip(lit + rng.normal(0, rng.uniform(0, 6), lit.shape), 0, 255).astype(np.uint8)
    return image, targets


class SyntheticFaces(Dataset):
    """Synthetic face dataset; ``dataset[i] = transform(image_bgr, targets_px)``.

    Data contract: image uint8[S, S, 3] BGR; targets float32[G, 15] ``x1 y1 x2 y2 (x y)*5 label`` pixels.
    The default transform (:func:`~featherface.data.widerface.to_tensor`) gives a
    mean-subtracted FloatTensor[3, S, S] and targets normalised to [0, 1] — the same contract as
    :class:`~featherface.data.widerface.WiderFaceDataset`.

    Args:
        num_images: dataset length.
        image_size: side ``S`` in pixels (320 for the fast embedded run).
        seed: dataset seed; item ``i`` depends only on ``(seed, i)``.
        transform: e.g. ``TrainTransform(S)`` for training.

    Example:
        >>> train = SyntheticFaces(2000, seed=0, transform=TrainTransform(320))  # doctest: +SKIP
        >>> val = SyntheticFaces(200, seed=1)  # doctest: +SKIP
        >>> gt = val.ground_truth()  # for featherface.evaluation.evaluate  # doctest: +SKIP
    """

    def __init__(self, num_images: int, image_size: int = DEFAULT_IMAGE_SIZE, seed: int = 0,
                 transform: Callable[[np.ndarray, np.ndarray], tuple[Tensor, Tensor]] | None = None) -> None:
        if num_images <= 0:
            raise ValueError(f"num_images must be positive, got {num_images}")
        self.num_images = num_images
        self.image_size = image_size
        self.seed = seed
        self.transform = transform or to_tensor

    def __len__(self) -> int:
        return self.num_images

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw ``(image_bgr, targets_px)`` of item ``index``."""
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        return render_scene(np.random.default_rng([self.seed, index]), self.image_size)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.transform(*self.sample(index))

    def key(self, index: int) -> str:
        """Evaluation key of item ``index`` (``"synthetic/<index>"``)."""
        return f"{EVENT}/{index}"

    def ground_truth(self) -> dict[str, ImageGroundTruth]:
        """Evaluation ground truth with easy / medium / hard subsets by face size."""
        min_sides = {name: fraction * self.image_size for name, fraction in SUBSET_MIN_SIDE.items()}
        ground_truth = {}
        for index in range(self.num_images):
            targets = self.sample(index)[1]
            xywh = np.concatenate((targets[:, :2], targets[:, 2:4] - targets[:, :2]), axis=1).astype(np.float64)
            ground_truth[self.key(index)] = ImageGroundTruth(xywh, size_subsets(xywh, min_sides))
        return ground_truth
