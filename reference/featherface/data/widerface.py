"""WIDER FACE (Yang et al., CVPR 2016) readers for the two common annotation layouts, and the
detection collate function.

* Official layout: ``WIDER_train/images/<event>/<image>.jpg`` and
  ``wider_face_split/wider_face_train_bbx_gt.txt`` — per image: path line, face count, then one line per
  face ``x1 y1 w h blur expression illumination invalid occlusion pose``; an image without faces has
  count 0 followed by one all-zero line. No landmarks.
* RetinaFace layout (Deng et al., CVPR 2020): ``label.txt`` with ``# <relative path>`` lines, then per
  face ``x y w h`` optionally followed by 5 landmarks as ``x y flag`` triplets and a score
  (4, 19 or 20 numbers); landmark coordinates of ``-1`` mean "no landmarks".

Both produce :class:`ImageRecord`s; :class:`WiderFaceDataset` loads them. Boxes become
``x1 y1 x2 y2 = x, y, x + w, y + h`` (the official RetinaFace conversion). Faces with a NaN or infinite
coordinate, a zero or negative width or height (present in the official ground truth) and, in the
official layout, faces flagged invalid are dropped when parsing (``drop_invalid``), counted in
``dropped_faces`` and, by reason, in ``ParseResult.dropped``. Non-finite landmarks are dropped (the face
is kept as a face without landmarks) and counted as ``"non-finite landmarks"``.

Images are read with :func:`read_image`, which refuses empty, truncated (a JPEG without its end-of-image
marker after the last scan, a PNG without ``IEND``) and undecodable files with one line naming the file;
OpenCV alone decodes a truncated JPEG into a half-grey picture without an error.
:func:`image_problem` makes the same check from the bytes alone (no decoding), cheap enough to check a
whole training set before training starts.

Errors name the file and line. With ``on_error="skip"`` a malformed image block is skipped and
recorded in ``skipped`` (one ``"file:line: reason"`` per block); an unreadable image is replaced by the
next readable one and recorded in the dataset's ``skipped`` (per process when loading in workers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from compresskit.utils.images import DEFAULT_MAX_SIZE, ImageTooLargeError, check_image_size, decode_reduction

NUM_LANDMARK_VALUES = 10
TARGET_COLUMNS = 15
LABEL_WITH_LANDMARKS = 1.0
LABEL_WITHOUT_LANDMARKS = -1.0
MISSING_LANDMARK = -1.0
BGR_MEAN: tuple[float, float, float] = (104.0, 117.0, 123.0)
_INVALID_COLUMN = 7
_ON_ERROR = ("raise", "skip")
_RETINAFACE_FIELD_COUNTS = (4, 19, 20)

Transform = Callable[[np.ndarray, np.ndarray], tuple[Tensor, Tensor]]


class AnnotationError(ValueError):
    """A malformed annotation; the message starts with ``file:line:``."""


@dataclass
class ImageRecord:
    """Annotations of one image.

    Attributes:
        path: image file.
        targets: float32[G, 15] rows ``x1 y1 x2 y2 (x y)*5 label`` in pixels, x1 < x2, y1 < y2;
            label 1 = face with landmarks, -1 = face without (landmark columns then hold -1).
        source: ``"annotation_file:line"`` of the image's header line (for error messages).
    """

    path: Path
    targets: np.ndarray
    source: str


@dataclass
class ParseResult:
    """Records plus what parsing dropped.

    Attributes:
        records: One per image.
        skipped: ``"file:line: reason"`` of each malformed block skipped (``on_error="skip"``).
        dropped_faces: Faces dropped in total.
        dropped: Dropped faces (and landmarks) by reason, e.g. ``{"non-finite box": 2}``.
    """

    records: list[ImageRecord]
    skipped: list[str] = field(default_factory=list)
    dropped_faces: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def count(self, reason: str, number: int) -> None:
        if number:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(number)


def _check_on_error(on_error: str) -> None:
    if on_error not in _ON_ERROR:
        raise ValueError(f"on_error must be one of {_ON_ERROR}, got {on_error!r}")


def _faces_to_targets(boxes_xywh: np.ndarray, landmarks: np.ndarray | None,
                      result: ParseResult | None = None) -> tuple[np.ndarray, np.ndarray]:
    """float[G, 4] x y w h (+ float[G, 10] landmarks or None) -> (float32[G, 15] targets, bool[G] usable).

    Unusable: a non-finite coordinate, or a width or height <= 0. Reasons are counted in ``result``."""
    count = boxes_xywh.shape[0]
    targets = np.full((count, TARGET_COLUMNS), MISSING_LANDMARK, dtype=np.float32)
    targets[:, :2] = boxes_xywh[:, :2]
    targets[:, 2:4] = boxes_xywh[:, :2] + boxes_xywh[:, 2:4]
    targets[:, 14] = LABEL_WITHOUT_LANDMARKS
    finite = np.isfinite(boxes_xywh).all(axis=1) & np.isfinite(targets[:, :4]).all(axis=1)
    if landmarks is not None:
        finite_points = np.isfinite(landmarks).all(axis=1)
        has = finite_points & (landmarks[:, 0] >= 0)
        targets[has, 4:14] = landmarks[has]
        targets[has, 14] = LABEL_WITH_LANDMARKS
        if result is not None:
            result.count("non-finite landmarks", int((finite & ~finite_points).sum()))
    with np.errstate(invalid="ignore"):
        positive = (boxes_xywh[:, 2] > 0) & (boxes_xywh[:, 3] > 0)
    if result is not None:
        result.count("non-finite box", int((~finite).sum()))
        result.count("width or height <= 0", int((finite & ~positive).sum()))
    return targets, finite & positive


def parse_retinaface_labels(label_path: str | Path, images_root: str | Path | None = None,
                            on_error: str = "raise") -> ParseResult:
    """Parse a RetinaFace ``label.txt``.

    Args:
        label_path: the label file.
        images_root: folder the ``# path`` lines are relative to (default: ``<label dir>/images``).
        on_error: ``"raise"`` (an :class:`AnnotationError` naming file and line) or ``"skip"``.

    Example:
        >>> parsed = parse_retinaface_labels("widerface/train/label.txt")  # doctest: +SKIP
        >>> dataset = WiderFaceDataset(parsed.records, transform=TrainTransform(640))  # doctest: +SKIP
    """
    _check_on_error(on_error)
    label_path = Path(label_path)
    images_root = Path(images_root) if images_root is not None else label_path.parent / "images"
    result = ParseResult([])
    blocks: list[tuple[int, str, list[tuple[int, str]]]] = []
    for line_number, raw in enumerate(label_path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            blocks.append((line_number, line[1:].strip(), []))
        elif not blocks:
            message = f"{label_path}:{line_number}: face line before any '# path' line: {line!r}"
            if on_error == "raise":
                raise AnnotationError(message)
            result.skipped.append(message)
        else:
            blocks[-1][2].append((line_number, line))
    for header_line, relative, face_lines in blocks:
        try:
            if not relative:
                raise AnnotationError(f"{label_path}:{header_line}: empty image path")
            boxes, landmarks = [], []
            for line_number, line in face_lines:
                try:
                    values = [float(v) for v in line.split()]
                except ValueError:
                    raise AnnotationError(f"{label_path}:{line_number}: non-numeric value in {line!r}") from None
                if len(values) not in _RETINAFACE_FIELD_COUNTS:
                    raise AnnotationError(f"{label_path}:{line_number}: expected 4, 19 or 20 numbers "
                                          f"(x y w h [5 x (x y flag)] [score]), got {len(values)}")
                boxes.append(values[:4])
                points = np.full(NUM_LANDMARK_VALUES, MISSING_LANDMARK)
                if len(values) > 4:
                    triplets = np.asarray(values[4:19]).reshape(5, 3)  # (15,) -> (5, [x, y, flag])
                    points = triplets[:, :2].reshape(NUM_LANDMARK_VALUES)  # (5, 2) -> (10,)
                landmarks.append(points)
        except AnnotationError as error:
            if on_error == "raise":
                raise
            result.skipped.append(str(error))
            continue
        targets, usable = _faces_to_targets(np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
                                            np.asarray(landmarks, dtype=np.float64).reshape(-1, 10), result)
        result.dropped_faces += int((~usable).sum())
        result.records.append(ImageRecord(images_root / relative, targets[usable], f"{label_path}:{header_line}"))
    return result


def parse_wider_split(gt_path: str | Path, images_root: str | Path, drop_invalid: bool = True,
                      on_error: str = "raise") -> ParseResult:
    """Parse an official ``wider_face_{train,val}_bbx_gt.txt``.

    Args:
        gt_path: the ground-truth text file.
        images_root: the ``WIDER_{train,val}/images`` folder.
        drop_invalid: drop faces whose ``invalid`` flag is set.
        on_error: ``"raise"`` or ``"skip"``; a malformed block is skipped up to the next image path.
    """
    _check_on_error(on_error)
    gt_path, images_root = Path(gt_path), Path(images_root)
    lines = gt_path.read_text().splitlines()
    result = ParseResult([])
    index = 0

    def fail(line_number: int, reason: str) -> None:
        raise AnnotationError(f"{gt_path}:{line_number}: {reason}")

    while index < len(lines):
        header = index
        relative = lines[index].strip()
        index += 1
        if not relative:
            continue
        try:
            if not relative.lower().endswith((".jpg", ".jpeg", ".png")):
                fail(header + 1, f"expected an image path, got {relative!r}")
            if index >= len(lines):
                fail(header + 2, "missing face count")
            try:
                count = int(lines[index].strip())
            except ValueError:
                fail(index + 1, f"expected a face count, got {lines[index].strip()!r}")
            if count < 0:
                fail(index + 1, f"negative face count {count}")
            index += 1
            rows = []
            for offset in range(max(count, 1)):  # count 0 is followed by one all-zero line
                line_number = index + 1
                if index >= len(lines):
                    fail(line_number, f"expected {max(count, 1)} face lines, file ended")
                fields = lines[index].split()
                index += 1
                try:
                    values = [float(v) for v in fields]
                except ValueError:
                    fail(line_number, f"non-numeric value in {lines[index - 1].strip()!r}")
                if len(values) != 10:
                    fail(line_number, f"expected 10 numbers (x y w h blur expression illumination invalid "
                                      f"occlusion pose), got {len(values)}")
                rows.append(values)
        except AnnotationError as error:
            if on_error == "raise":
                raise
            result.skipped.append(str(error))
            while index < len(lines) and not lines[index].strip().lower().endswith((".jpg", ".jpeg", ".png")):
                index += 1  # resynchronise at the next image path
            continue
        faces = np.asarray(rows[:count], dtype=np.float64).reshape(-1, 10)
        targets, usable = _faces_to_targets(faces[:, :4], None, result)
        if drop_invalid:
            invalid = faces[:, _INVALID_COLUMN] != 0
            result.count("flagged invalid", int((usable & invalid).sum()))
            usable &= ~invalid
        result.dropped_faces += int((~usable).sum())
        result.records.append(ImageRecord(images_root / relative, targets[usable], f"{gt_path}:{header + 1}"))
    return result


_JPEG_START, _JPEG_END, _JPEG_SCAN = b"\xff\xd8", b"\xff\xd9", b"\xff\xda"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def image_problem(path: str | Path) -> str | None:
    """Why the image file at ``path`` cannot be used, judged from its bytes (no decoding); ``None`` if fine.

    Refused: a missing or empty file, a JPEG whose last scan has no end-of-image marker after it (truncated),
    a PNG without its ``IEND`` chunk. Other formats are left to the decoder (:func:`read_image`).
    """
    return _read_checked(path)[1]


def _read_checked(path: str | Path) -> tuple[bytes, str | None]:
    """``(content, problem)`` of the image file at ``path``: one read serves the check and the decoding."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        return b"", f"cannot read ({error.strerror or error})"
    if not data:
        return data, "empty file (0 bytes)"
    if data.startswith(_JPEG_START):
        # 0xFF in entropy-coded data is stuffed (FF 00), so FF D9 after the last scan start is the real end
        scan = data.rfind(_JPEG_SCAN)
        if scan < 0 or data.rfind(_JPEG_END) < scan:
            return data, f"truncated JPEG ({len(data):,} bytes, no end-of-image marker after the last scan)"
    elif data.startswith(_PNG_SIGNATURE):
        if b"IEND" not in data[-64:]:
            return data, f"truncated PNG ({len(data):,} bytes, no IEND chunk)"
    return data, None


def read_image(path: str | Path, source: str | None = None, max_size: int = DEFAULT_MAX_SIZE,
               option: str = "max_size") -> np.ndarray:
    """The image at ``path`` as BGR uint8[H, W, 3]; ``ValueError`` naming the file (and ``source``) otherwise.

    Unlike ``cv2.imread``, an empty or truncated file is an error, not a half-grey picture or ``None``,
    and so is an image whose header says its longest side is over ``max_size`` (checked before decoding,
    :mod:`compresskit.utils.images`; ``option`` names how to raise the limit).
    """
    where = f" (annotated at {source})" if source else ""
    data, problem = _read_checked(path)
    image = None
    if problem is None:
        try:  # the header only: no header is "not decodable", an image over the limit is refused
            check_image_size(path, max_size, option, data=data)
        except ImageTooLargeError:
            raise
        except ValueError:
            pass
        else:
            image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            problem = "not decodable (corrupt or not an image)"
        else:
            return image
    raise ValueError(f"{path}: cannot read image: {problem}{where}; remove or replace it")


_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}


def read_image_downscaled(path: str | Path, max_size: int = DEFAULT_MAX_SIZE,
                          option: str = "--max-size") -> tuple[np.ndarray, float]:
    """``(image, scale)``: the image at ``path`` with its longest side at most ``max_size``, and the scale applied.

    A larger JPEG is decoded at 1/2, 1/4 or 1/8 by libjpeg (never at full size), then resized down with
    ``INTER_AREA``; other formats are decoded whole up to twice ``max_size``, refused beyond
    (:func:`compresskit.utils.images.decode_reduction`). Divide coordinates found in ``image`` by ``scale``
    to get the file's pixels.
    """
    data, problem = _read_checked(path)
    if problem is not None:
        raise ValueError(f"{path}: cannot read image: {problem}; remove or replace it")
    image = None
    try:  # the header only: no header is "not decodable", an image too large even reduced is refused
        width, _, factor = decode_reduction(path, max_size, option, data=data)
    except ImageTooLargeError:
        raise
    except ValueError:
        pass
    else:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _REDUCED[factor])
    if image is None:
        raise ValueError(f"{path}: cannot read image: not decodable (corrupt or not an image); remove or replace it")
    longest = max(image.shape[:2])
    if longest > max_size:
        shrink = max_size / longest
        size = (max(1, round(image.shape[1] * shrink)), max(1, round(image.shape[0] * shrink)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image, image.shape[1] / width


def check_records(records: Sequence[ImageRecord]) -> list[str]:
    """``"image: reason (annotated at file:line)"`` for every record whose image :func:`image_problem` refuses."""
    problems = []
    for record in records:
        problem = image_problem(record.path)
        if problem is not None:
            problems.append(f"{record.path}: {problem} (annotated at {record.source})")
    return problems


def image_to_tensor(image_bgr: np.ndarray, mean: tuple[float, float, float] = BGR_MEAN) -> Tensor:
    """The network input of the RetinaFace family: BGR[H, W, 3] (any dtype) -> FloatTensor[3, H, W] minus ``mean``."""
    image = image_bgr.astype(np.float32) - np.asarray(mean, dtype=np.float32)
    return torch.from_numpy(image.transpose(2, 0, 1).copy())  # (H, W, 3) -> (3, H, W)


def to_tensor(image_bgr: np.ndarray, targets: np.ndarray) -> tuple[Tensor, Tensor]:
    """The evaluation transform: mean-subtracted CHW float image, targets normalised by width/height."""
    height, width = image_bgr.shape[:2]
    image = image_to_tensor(image_bgr)
    normalised = targets.astype(np.float32).copy()
    scale = np.array([width, height] * 7, dtype=np.float32)
    with_landmarks = normalised[:, 14] > 0
    normalised[:, :4] /= scale[:4]
    normalised[with_landmarks, 4:14] /= scale[4:14]
    return image, torch.from_numpy(normalised)


class WiderFaceDataset(Dataset):
    """Images + face targets.

    ``dataset[i]`` returns ``(image FloatTensor[3, H, W], targets FloatTensor[G, 15])`` as produced by
    ``transform(image_bgr uint8[H, W, 3], targets float32[G, 15] pixels)``; the default
    :func:`to_tensor` keeps the original size and normalises coordinates to [0, 1].

    Args:
        records: from :func:`parse_retinaface_labels` / :func:`parse_wider_split` (or a ``ParseResult``).
        transform: e.g. :class:`~featherface.data.augment.TrainTransform`.
        on_error: ``"raise"`` on an unreadable image (message names the image and its annotation line),
            or ``"skip"`` to use the next readable image and record it in ``skipped``.
    """

    def __init__(self, records: Sequence[ImageRecord] | ParseResult, transform: Transform | None = None,
                 on_error: str = "raise") -> None:
        _check_on_error(on_error)
        self.records = list(records.records if isinstance(records, ParseResult) else records)
        self.transform = transform or to_tensor
        self.on_error = on_error
        self.skipped: list[str] = list(records.skipped) if isinstance(records, ParseResult) else []

    def __len__(self) -> int:
        return len(self.records)

    def load_image(self, index: int) -> np.ndarray:
        record = self.records[index]
        return read_image(record.path, record.source)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        for attempt in range(len(self.records)):
            current = (index + attempt) % len(self.records)
            try:
                image = self.load_image(current)
            except ValueError as error:
                if self.on_error == "raise":
                    raise
                self.skipped.append(str(error))
                continue
            return self.transform(image, self.records[current].targets.copy())
        raise ValueError(f"no readable image among {len(self.records)} records")


def detection_collate(batch: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, list[Tensor]]:
    """Stack images (all the same size) and keep targets as a list (face counts differ).

    Returns:
        ``(images FloatTensor[N, 3, H, W], [FloatTensor[G_i, 15]] * N)``.
    """
    images, targets = zip(*batch)
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) != 1:
        raise ValueError(f"detection_collate needs equally sized images, got shapes {sorted(shapes)}")
    return torch.stack(images), list(targets)
