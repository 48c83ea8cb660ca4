"""WIDER FACE evaluation (Yang et al., "WIDER FACE: A Face Detection Benchmark", CVPR 2016).

A vectorised numpy re-implementation of the ``widerface_evaluate`` protocol shared by RetinaFace,
FeatherFace and B-FPGM (docs: shared REFERENCE.md §5), numerically identical to it:

* ground truth from ``wider_face_val.mat`` (boxes ``x y w h``) and ``wider_{easy,medium,hard}_val.mat``
  (1-based indices of the faces that count in each subset);
* scores min-max normalised over the whole prediction set (with the official initial bounds
  ``min <= 1``, ``max >= 0``);
* per image, each prediction (in the order given — prediction files are written by descending score)
  looks at the ground-truth face with the highest IoU (``+1`` pixel convention). If that IoU is >= 0.5:
  a face outside the subset's keep list makes the prediction ignored (not a proposal) and the face is
  marked ignored; a kept face not yet recalled becomes recalled. Anything else (no overlap, or the best
  face already recalled — a duplicate) is a false positive. Caveat: this is the official rule, which
  looks only at the single best face; it does *not* fall back to the next-best unmatched face;
* for 1000 thresholds ``t = 1 - (i+1)/1000``: proposals and recalled faces up to the last prediction with
  normalised score ``>= t`` are summed over images; precision = recalled / proposals,
  recall = recalled / kept faces;
* AP = VOC all-point interpolated area under the precision/recall curve;
* only images that have predictions (an entry, possibly empty) are scored; an image with an empty
  entry still counts its faces as misses, as in the official code.

Prediction folders use the official layout: ``<dir>/<event>/<image>.txt`` holding the image name, the
count, then ``x y w h score`` lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.io import loadmat

SUBSETS: tuple[str, ...] = ("easy", "medium", "hard")
IOU_THRESHOLD = 0.5
NUM_THRESHOLDS = 1000
_NOT_A_PROPOSAL = -1


@dataclass(frozen=True)
class ImageGroundTruth:
    """Ground truth of one image.

    Attributes:
        boxes: float64[G, 4] ``x y w h`` pixels (the official convention; G may be 0).
        keep: subset name -> int64[k] 0-based indices of the faces that count in that subset.
    """

    boxes: np.ndarray
    keep: Mapping[str, np.ndarray] = field(default_factory=dict)


def image_key(event: str, image_name: str) -> str:
    """The key used for both predictions and ground truth: ``"<event>/<image stem>"``."""
    stem = image_name.rsplit("/", 1)[-1]
    if stem.endswith(".jpg"):
        stem = stem[: -len(".jpg")]
    return f"{event}/{stem}"


# --------------------------------------------------------------------------------------- ground truth


def load_mat_ground_truth(gt_dir: str | Path) -> dict[str, ImageGroundTruth]:
    """Read the official ``wider_face_val.mat`` + ``wider_{easy,medium,hard}_val.mat``.

    Args:
        gt_dir: folder holding the four ``.mat`` files.

    Returns:
        ``{"<event>/<image stem>": ImageGroundTruth}`` in the official event/image order.
    """
    gt_dir = Path(gt_dir)
    paths = {"face": gt_dir / "wider_face_val.mat"} | {s: gt_dir / f"wider_{s}_val.mat" for s in SUBSETS}
    for path in paths.values():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: WIDER FACE ground-truth file not found")
    face_mat = loadmat(str(paths["face"]))
    subset_lists = {s: loadmat(str(paths[s]))["gt_list"] for s in SUBSETS}
    ground_truth: dict[str, ImageGroundTruth] = {}
    for event_index in range(face_mat["event_list"].shape[0]):
        event = str(face_mat["event_list"][event_index][0][0])
        files = face_mat["file_list"][event_index][0]
        boxes = face_mat["face_bbx_list"][event_index][0]
        for image_index in range(len(files)):
            keep = {s: subset_lists[s][event_index][0][image_index][0].astype(np.int64).reshape(-1) - 1
                    for s in SUBSETS}
            image_boxes = boxes[image_index][0].astype(np.float64).reshape(-1, 4)
            ground_truth[image_key(event, str(files[image_index][0][0]))] = ImageGroundTruth(image_boxes, keep)
    return ground_truth


def size_subsets(boxes_xywh: np.ndarray, min_sizes: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Subsets by face size, for datasets without WIDER's difficulty labels (e.g. the synthetic set).

    A face belongs to a subset when ``min(w, h) >= min_sizes[subset]``; with decreasing minimum sizes the
    subsets are nested like WIDER FACE's (easy within medium within hard).

    Args:
        boxes_xywh: float[G, 4] ``x y w h``.
        min_sizes: subset name -> minimum face side in pixels, e.g. ``{"easy": 48, "medium": 24, "hard": 0}``.
    """
    boxes_xywh = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
    side = np.minimum(boxes_xywh[:, 2], boxes_xywh[:, 3])
    return {name: np.flatnonzero(side >= size).astype(np.int64) for name, size in min_sizes.items()}


# --------------------------------------------------------------------------------------- predictions


def write_prediction_file(path: str | Path, image_name: str, detections_xywhs: np.ndarray) -> None:
    """Write one official prediction file: image name, count, ``x y w h score`` lines (as given).

    Args:
        path: output ``.txt`` path (parents are created).
        image_name: the name written on the first line (e.g. ``"0_Parade_Parade_0_102.jpg"``).
        detections_xywhs: float[K, 5] ``x y w h score``, by descending score; x y w h are written as
            integers (see :meth:`Detections.to_xywhs` for the official rounding).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = np.asarray(detections_xywhs, dtype=np.float64).reshape(-1, 5)
    lines = [image_name, str(rows.shape[0])]
    lines += [f"{int(x)} {int(y)} {int(w)} {int(h)} {s:.10f} " for x, y, w, h, s in rows]
    path.write_text("\n".join(lines) + "\n")


def read_prediction_file(path: str | Path) -> tuple[str, np.ndarray]:
    """Read one prediction file; returns ``(image name, float64[K, 5])``.

    Raises:
        ValueError: naming the file and line when a line is malformed or the count is wrong.
    """
    path = Path(path)
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise ValueError(f"{path}:{len(lines) + 1}: expected an image name line and a count line")
    name = lines[0].strip()
    try:
        count = int(lines[1].strip())
    except ValueError:
        raise ValueError(f"{path}:2: expected the number of detections, got {lines[1]!r}") from None
    rows = []
    for line_number, line in enumerate(lines[2:], start=3):
        if not line.strip():
            continue
        fields = line.split()
        try:
            if len(fields) < 5:
                raise ValueError
            rows.append([float(v) for v in fields[:5]])
        except ValueError:
            raise ValueError(f"{path}:{line_number}: expected 'x y w h score', got {line!r}") from None
    if len(rows) != count:
        raise ValueError(f"{path}:2: header says {count} detections but the file has {len(rows)}")
    return name, np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def read_predictions(pred_dir: str | Path) -> dict[str, np.ndarray]:
    """Read an official prediction folder ``<pred_dir>/<event>/<image>.txt``.

    Returns:
        ``{"<event>/<image stem>": float64[K, 5] x y w h score}``.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"{pred_dir}: prediction folder not found")
    predictions = {}
    for path in sorted(pred_dir.glob("*/*.txt")):
        name, rows = read_prediction_file(path)
        predictions[image_key(path.parent.name, name)] = rows
    return predictions


def write_predictions(pred_dir: str | Path, predictions: Mapping[str, np.ndarray]) -> None:
    """Write ``{"<event>/<stem>": float[K, 5]}`` as an official prediction folder."""
    for key, rows in predictions.items():
        event, stem = key.split("/", 1)
        write_prediction_file(Path(pred_dir) / event / f"{stem}.txt", f"{stem}.jpg", rows)


# --------------------------------------------------------------------------------------- scoring


def box_overlaps(boxes: np.ndarray, query_boxes: np.ndarray) -> np.ndarray:
    """IoU with the official ``+1`` pixel convention; float[N, 4], float[K, 4] ``x1 y1 x2 y2`` -> [N, K]."""
    width = np.minimum(boxes[:, None, 2], query_boxes[None, :, 2]) - np.maximum(boxes[:, None, 0],
                                                                                query_boxes[None, :, 0]) + 1
    height = np.minimum(boxes[:, None, 3], query_boxes[None, :, 3]) - np.maximum(boxes[:, None, 1],
                                                                                 query_boxes[None, :, 1]) + 1
    overlapping = (width > 0) & (height > 0)
    inter = np.where(overlapping, width * height, 0.0)
    area_boxes = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    area_query = (query_boxes[:, 2] - query_boxes[:, 0] + 1) * (query_boxes[:, 3] - query_boxes[:, 1] + 1)
    union = area_boxes[:, None] + area_query[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(overlapping, inter / union, 0.0)


def evaluate_image(pred: np.ndarray, gt_xywh: np.ndarray, kept: np.ndarray,
                   iou_threshold: float = IOU_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """Match one image's predictions (official ``image_eval``).

    Args:
        pred: float[N, 5] ``x y w h score`` in evaluation order.
        gt_xywh: float[G, 4] ``x y w h``, G >= 1.
        kept: bool[G], True for faces in the subset.

    Returns:
        ``recalled_so_far`` float[N] (distinct kept faces recalled by predictions 0..n) and
        ``is_proposal`` bool[N] (False for predictions matched to an ignored face).
    """
    pred_corners = pred[:, :4].copy()
    pred_corners[:, 2:] += pred_corners[:, :2]
    gt_corners = gt_xywh.astype(np.float64).copy()
    gt_corners[:, 2:] += gt_corners[:, :2]
    overlaps = box_overlaps(pred_corners, gt_corners)  # (N, G)
    best_gt = overlaps.argmax(axis=1)
    matched = overlaps[np.arange(len(pred)), best_gt] >= iou_threshold
    to_kept = matched & kept[best_gt]
    is_proposal = ~(matched & ~kept[best_gt])
    _, first = np.unique(best_gt[to_kept], return_index=True)  # first prediction recalling each face
    newly_recalled = np.zeros(len(pred))
    newly_recalled[np.flatnonzero(to_kept)[first]] = 1
    return np.cumsum(newly_recalled), is_proposal


def image_pr_counts(scores: np.ndarray, recalled_so_far: np.ndarray, is_proposal: np.ndarray,
                    thresholds: np.ndarray) -> np.ndarray:
    """Official ``img_pr_info``: per threshold, ``(proposals, recalled)`` up to the *last* prediction (in
    the given order) whose normalised score is ``>= threshold``; float[T, 2]."""
    order = np.argsort(-scores, kind="stable")
    last_index = np.maximum.accumulate(order)  # last position among the k best-scored predictions
    num_above = len(scores) - np.searchsorted(np.sort(scores), thresholds, side="left")  # (T,)
    counts = np.zeros((len(thresholds), 2))
    has = num_above > 0
    last = last_index[num_above[has] - 1]
    counts[has, 0] = np.cumsum(is_proposal)[last]
    counts[has, 1] = recalled_so_far[last]
    return counts


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-point interpolated AP (area under the monotone precision envelope)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def normalise_scores(predictions: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Official min-max normalisation over the whole prediction set (copies; bounds start at 1 and 0)."""
    nonempty = [p[:, 4] for p in predictions.values() if len(p)]
    low = min([1.0] + [float(s.min()) for s in nonempty])
    high = max([0.0] + [float(s.max()) for s in nonempty])
    spread = high - low
    normalised = {}
    for key, rows in predictions.items():
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 5).copy()
        if len(rows):
            rows[:, 4] = (rows[:, 4] - low) / spread if spread > 0 else 1.0
        normalised[key] = rows
    return normalised


def evaluate(
    predictions: Mapping[str, np.ndarray],
    ground_truth: Mapping[str, ImageGroundTruth],
    subsets: Iterable[str] = SUBSETS,
    iou_threshold: float = IOU_THRESHOLD,
    num_thresholds: int = NUM_THRESHOLDS,
) -> dict[str, float]:
    """WIDER FACE AP per subset, scoring only images present in ``predictions``.

    Args:
        predictions: ``{key: float[K, 5] x y w h score}`` (raw scores; normalised here).
        ground_truth: ``{key: ImageGroundTruth}`` (e.g. :func:`load_mat_ground_truth`).
        subsets: subset names present in every ``ImageGroundTruth.keep``.

    Returns:
        ``{subset: AP in [0, 1]}``.

    Example:
        >>> gt = load_mat_ground_truth("ground_truth")  # doctest: +SKIP
        >>> evaluate(read_predictions("widerface_txt"), gt)  # doctest: +SKIP
        {'easy': 0.889, 'medium': 0.862, 'hard': 0.726}
    """
    predictions = normalise_scores(predictions)
    thresholds = 1 - (np.arange(num_thresholds) + 1) / num_thresholds
    scored = [key for key in ground_truth if key in predictions]
    results = {}
    for subset in subsets:
        pr_counts = np.zeros((num_thresholds, 2))
        num_faces = 0
        for key in scored:
            truth = ground_truth[key]
            if subset not in truth.keep:
                raise ValueError(f"ground truth of {key!r} has no {subset!r} subset; has {sorted(truth.keep)}")
            keep = np.asarray(truth.keep[subset], dtype=np.int64)
            num_faces += len(keep)
            pred = predictions[key]
            if len(truth.boxes) == 0 or len(pred) == 0:
                continue
            kept = np.zeros(len(truth.boxes), dtype=bool)
            kept[keep] = True
            recalled, is_proposal = evaluate_image(pred, truth.boxes, kept, iou_threshold)
            pr_counts += image_pr_counts(pred[:, 4], recalled, is_proposal, thresholds)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(pr_counts[:, 0] > 0, pr_counts[:, 1] / pr_counts[:, 0], 0.0)
        recall = pr_counts[:, 1] / max(num_faces, 1)
        results[subset] = voc_ap(recall, precision)
    return results


def evaluate_folder(pred_dir: str | Path, gt_dir: str | Path) -> dict[str, float]:
    """Score an official prediction folder against the official ``.mat`` ground truth."""
    return evaluate(read_predictions(pred_dir), load_mat_ground_truth(gt_dir))
