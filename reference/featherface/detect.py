"""Face detection with a RetinaFace-family model: single images, folders, and WIDERFace evaluation.

Pre-processing is that of the RetinaFace / FeatherFace test scripts (Deng et al., CVPR 2020): BGR float
image, minus the mean ``(104, 117, 123)``, CHW, optionally resized by a factor (1.0 = original size, the
WIDERFace protocol); post-processing is :func:`featherface.postprocess.postprocess`.

CLI::

    python -m featherface.detect detect retinaface_mnet025:weights.pth images/ --out out/
    python -m featherface.detect evaluate retinaface_mnet025:weights.pth \\
        --images WIDER_val/images --gt ground_truth [--pred-dir widerface_txt]

``MODEL_OR_CHECKPOINT`` is ``name:weights_path`` (``build_model(name)`` + ``load_weights``), a bare model
name (random weights, for smoke tests), or a pruned checkpoint readable by ``compresskit.models.persist.load_pruned``.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import click
import cv2
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from compresskit.utils.images import DEFAULT_MAX_SIZE
from featherface.data.widerface import BGR_MEAN, image_to_tensor, read_image, read_image_downscaled
from featherface.evaluation import evaluate, evaluate_folder, image_key, load_mat_ground_truth, write_predictions
from featherface.postprocess import CONF_THRESHOLD, KEEP_TOP_K, NMS_THRESHOLD, TOP_K, Detections, postprocess
from featherface.priors import PriorCache

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")


def preprocess(image_bgr: np.ndarray, resize: float = 1.0) -> torch.Tensor:
    """uint8/float HxWx3 BGR image -> FloatTensor[1, 3, H', W'] mean-subtracted (H' = H * resize)."""
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 BGR image, got shape {image_bgr.shape}")
    image = np.float32(image_bgr)
    if resize != 1.0:
        image = cv2.resize(image, None, None, fx=resize, fy=resize, interpolation=cv2.INTER_LINEAR)
    return image_to_tensor(image).unsqueeze(0)  # (3, H, W) -> (1, 3, H, W)


_PRIORS = PriorCache()


@torch.inference_mode()
def detect_detections(
    model: nn.Module,
    image_bgr: np.ndarray,
    resize: float = 1.0,
    conf_threshold: float = CONF_THRESHOLD,
    nms_threshold: float = NMS_THRESHOLD,
    top_k: int = TOP_K,
    keep_top_k: int = KEEP_TOP_K,
) -> Detections:
    """Run ``model`` (in eval mode) on one BGR image; returns :class:`Detections` in original pixels."""
    images = preprocess(image_bgr, resize)
    input_size = (images.shape[2], images.shape[3])
    bbox_deltas, cls_logits, landmark_deltas = model(images)
    priors = _PRIORS(input_size)
    if bbox_deltas.shape[1] != priors.shape[0]:
        raise ValueError(f"model returned {bbox_deltas.shape[1]} priors for a {input_size} input; "
                         f"priors.py expects {priors.shape[0]}")
    return postprocess(bbox_deltas[0], cls_logits[0], landmark_deltas[0], priors, input_size, resize,
                       conf_threshold, nms_threshold, top_k, keep_top_k)


def detect_image(model: nn.Module, image_bgr: np.ndarray, resize: float = 1.0,
                 conf_threshold: float = CONF_THRESHOLD, nms_threshold: float = NMS_THRESHOLD,
                 top_k: int = TOP_K, keep_top_k: int = KEEP_TOP_K) -> list[dict]:
    """Detect faces in one BGR image.

    Args:
        model: a RetinaFace-family model following the forward contract of docs/DESIGN.md.
        image_bgr: uint8[H, W, 3] BGR (as ``cv2.imread``).
        resize: input scale factor (1.0 = original size).

    Returns:
        One dict per face, by descending score: ``{"box": [x1, y1, x2, y2], "score": float,
        "landmarks": [[x, y] * 5]}`` in original-image pixels (landmark order: left eye, right eye,
        nose, left mouth corner, right mouth corner).

    Example:
        >>> faces = detect_image(model.eval(), cv2.imread("group.jpg"))  # doctest: +SKIP
        >>> faces[0]["box"], faces[0]["score"]  # doctest: +SKIP
    """
    was_training = model.training
    model.eval()
    try:
        dets = detect_detections(model, image_bgr, resize, conf_threshold, nms_threshold, top_k, keep_top_k)
    finally:
        model.train(was_training)
    return [{"box": [round(float(v), 2) for v in box], "score": float(score),
             "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in landmarks.view(5, 2)]}
            for box, score, landmarks in zip(dets.boxes, dets.scores, dets.landmarks)]


def draw_detections(image_bgr: np.ndarray, faces: list[dict], min_score: float = 0.5) -> np.ndarray:
    """A copy of the image with boxes, scores and landmarks of faces scoring ``>= min_score``."""
    canvas = image_bgr.copy()
    colours = ((0, 0, 255), (0, 255, 255), (255, 0, 255), (0, 255, 0), (255, 0, 0))
    for face in faces:
        if face["score"] < min_score:
            continue
        x1, y1, x2, y2 = (int(round(v)) for v in face["box"])
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (0, 0, 255), 2)
        cv2.putText(canvas, f"{face['score']:.2f}", (x1, max(y1 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (255, 255, 255), 1)
        for (x, y), colour in zip(face["landmarks"], colours):
            cv2.circle(canvas, (int(round(x)), int(round(y))), 2, colour, -1)
    return canvas


#: Multiple the input is padded to in :class:`FaceDetector` (the largest prior step, stride 32).
PAD_MULTIPLE = 32


class FaceDetector:
    """A face detector in one call, like ``cv2.FaceDetectorYN``: ``detect(image) -> float32[N, 15]``.

    Rows, by descending score: ``x, y, w, h`` (top-left corner and size, original-image pixels), the
    five landmarks ``x, y`` (image-left eye, image-right eye, nose, image-left and image-right mouth
    corner: the positions of ``FaceDetectorYN``'s right-eye-first order), and the score in [0, 1] last
    (column 14, as ``FaceDetectorYN``). The image (BGR, as ``cv2.imread``) is preprocessed as the
    model file says (ONNX ``metadata_props``) or as the RetinaFace family is; it is padded at the
    right and bottom to a multiple of 32 (a mean-colour border: zeros after mean subtraction), which
    moves no coordinate. A model with a fixed input size gets the image scaled to fit and padded.

    Args:
        spec: ``name:weights.pth``, a pruned checkpoint ``.pt``, an ``.onnx`` file (FP32 or INT8), or a
            bare name (random weights; warns).
        score_threshold: Faces scoring below are dropped (``FaceDetectorYN``'s default is 0.9).
        nms_threshold: IoU above which a lower-scored box is suppressed.
        top_k: Candidates kept before NMS.
        threads: ONNX Runtime intra-op threads (torch models use the process's torch setting).
        resize: Scale applied to the image first (models with a dynamic input size).

    Example:
        >>> detector = FaceDetector("runs/x/model.int8.onnx")  # doctest: +SKIP
        >>> faces = detector.detect(cv2.imread("group.jpg"))  # doctest: +SKIP
        >>> faces[:, :4], faces[:, 14]  # doctest: +SKIP
    """

    def __init__(self, spec: str | Path, score_threshold: float = 0.5, nms_threshold: float = NMS_THRESHOLD,
                 top_k: int = TOP_K, threads: int = 1, resize: float = 1.0) -> None:
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        if not resize > 0:
            raise ValueError(f"resize must be > 0, got {resize}")
        self.model = load_model(str(spec), threads=threads)
        self.resize = resize
        self.score_threshold, self.nms_threshold, self.top_k = score_threshold, nms_threshold, top_k
        from compresskit.deploy.export import Preprocessing

        metadata = getattr(self.model, "metadata", None) or getattr(self.model, "onnx_metadata", None) or {}
        self.preprocessing = Preprocessing.from_metadata(metadata) or Preprocessing("BGR", BGR_MEAN, 1.0, None)
        shape = getattr(self.model, "input_shape", None)  # OrtModule: None where an axis is dynamic
        self.fixed_size = tuple(shape[2:]) if shape and None not in shape[2:] else None

    def input_for(self, image_bgr: np.ndarray) -> tuple[np.ndarray, float]:
        """The model input for one image and the scale applied to it: ``(float32[1, 3, H, W], scale)``."""
        from compresskit.deploy.quantize import preprocess_image

        if image_bgr is None or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 BGR image, got {None if image_bgr is None else image_bgr.shape}")
        height, width = image_bgr.shape[:2]
        scale = self.resize
        if self.fixed_size is not None:
            scale = min(self.fixed_size[0] / height, self.fixed_size[1] / width)
            target = self.fixed_size
        else:
            target = tuple(-(-round(size * scale) // PAD_MULTIPLE) * PAD_MULTIPLE for size in (height, width))
        resized = (round(height * scale), round(width * scale))
        array = preprocess_image(image_bgr, self.preprocessing, resized if scale != 1.0 else None)
        padded = np.zeros((1, 3, *target), dtype=np.float32)  # zero = the mean colour after subtraction
        padded[:, :, : array.shape[2], : array.shape[3]] = array
        return padded, scale

    @torch.inference_mode()
    def detect(self, image_bgr: np.ndarray) -> np.ndarray:
        """float32[N, 15] faces of one uint8 HxWx3 BGR image (see the class docstring)."""
        array, scale = self.input_for(image_bgr)
        bbox_deltas, cls_logits, landmark_deltas = self.model(torch.from_numpy(array))
        size = (array.shape[2], array.shape[3])
        priors = _PRIORS(size)
        if bbox_deltas.shape[1] != priors.shape[0]:
            raise ValueError(f"model returned {bbox_deltas.shape[1]} priors for a {size} input; "
                             f"priors.py expects {priors.shape[0]}")
        dets = postprocess(bbox_deltas[0], cls_logits[0], landmark_deltas[0], priors, size, scale,
                           self.score_threshold, self.nms_threshold, self.top_k, KEEP_TOP_K)
        boxes = dets.boxes.numpy()
        faces = np.empty((len(dets), 15), dtype=np.float32)
        faces[:, :2] = boxes[:, :2]
        faces[:, 2:4] = boxes[:, 2:] - boxes[:, :2]
        faces[:, 4:14] = dets.landmarks.numpy()
        faces[:, 14] = dets.scores.numpy()
        return faces


def faces_to_dicts(faces: np.ndarray) -> list[dict]:
    """:meth:`FaceDetector.detect` rows -> the dicts of :func:`detect_image` (``box`` as ``x1, y1, x2, y2``)."""
    return [{"box": [round(float(v), 2) for v in (x, y, x + w, y + h)], "score": float(row[14]),
             "landmarks": [[round(float(a), 2), round(float(b), 2)] for a, b in row[4:14].reshape(5, 2)]}
            for row in faces for x, y, w, h in [row[:4]]]


# ------------------------------------------------------------------------------------------ datasets


def predict_widerface(
    model: nn.Module,
    images_root: str | Path,
    resize: float = 1.0,
    progress: bool = True,
    num_threads: int | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
    **postprocess_kwargs: float,
) -> dict[str, np.ndarray]:
    """Predictions for every ``<images_root>/<event>/<image>.jpg`` in the WIDERFace prediction format.

    An image whose header says its longest side is over ``max_size`` is refused before decoding
    (the protocol scores images at their own size, so none is downscaled).

    Returns:
        ``{"<event>/<stem>": float64[K, 5] x y w h score}`` with the official integer rounding.
    """
    images_root = Path(images_root)
    paths = sorted(p for p in images_root.glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"{images_root}: no images found in <event>/ sub-folders")
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    model.eval()
    predictions = {}
    for path in tqdm(paths, desc="detect", disable=not progress):
        image = read_image(path, max_size=max_size, option="--max-size")  # empty, truncated, corrupt, too large
        dets = detect_detections(model, image, resize, **postprocess_kwargs)
        predictions[image_key(path.parent.name, path.name)] = dets.to_xywhs()
    return predictions


def evaluate_widerface(model: nn.Module, images_root: str | Path, gt_dir: str | Path,
                       pred_dir: str | Path | None = None, **kwargs) -> dict[str, float]:
    """AP easy/medium/hard of ``model`` on the images under ``images_root`` (official ``.mat`` GT,
    only images that have predictions are scored). ``pred_dir`` also writes the official txt folder."""
    predictions = predict_widerface(model, images_root, **kwargs)
    if pred_dir is not None:
        write_predictions(pred_dir, predictions)
    return evaluate(predictions, load_mat_ground_truth(gt_dir))


# ------------------------------------------------------------------------------------------ models


def load_model(spec: str, threads: int = 1) -> nn.Module:
    """Build a model from ``name:weights``, ``name:released``, ``name``, a pruned checkpoint or an ``.onnx`` file.

    An ``.onnx`` file (e.g. from ``compresskit export`` / ``compresskit quantize``, FP32 or INT8) runs in
    ONNX Runtime with ``threads`` intra-op threads behind the model call interface
    (:class:`compresskit.deploy.runtime.OrtModule`). A bare name builds the model with random weights and
    warns (:class:`RandomWeightsWarning`): its detections mean nothing.
    """
    from compresskit.models.released import resolve_weights
    from featherface import models  # imported lazily: the CLI's --help must not need it

    path = Path(spec)
    if path.suffix == ".onnx" and ":" not in spec:
        from compresskit.deploy.runtime import OrtModule

        return OrtModule(path, threads=threads)
    if path.suffix in (".pt", ".pth", ".ckpt") and path.is_file() and ":" not in spec:
        from compresskit.models.persist import load_pruned

        return load_pruned(path).eval()
    name, _, weights = spec.partition(":")
    model = models.build_model(name)
    if weights:
        models.load_weights(model, resolve_weights(name, weights))  # "released": fetched, hash-checked
    else:
        warnings.warn(f"{name!r} has random weights (no ':weights' given): its detections are meaningless; "
                      f"use {name}:path/to/weights.pth", RandomWeightsWarning, stacklevel=2)
    return model.eval()


class RandomWeightsWarning(UserWarning):
    """A detector was built without trained weights."""


class InputError(click.ClickException):
    """Bad user input (unreadable image, bad checkpoint, unknown model): one line, exit status 2."""

    exit_code = 2


def _spec_error(spec: str, error: Exception) -> InputError:
    """``error`` as one line naming ``spec`` (unless the message already names its file)."""
    message = str(error)
    return InputError(message if spec.rpartition(":")[2] in message else f"{spec}: {message}")


def _load_model_or_exit(spec: str) -> nn.Module:
    try:
        return load_model(spec)
    except (ValueError, OSError) as error:  # unknown name, bad or missing checkpoint
        raise _spec_error(spec, error) from None


def _iter_images(target: Path) -> Iterable[Path]:
    if target.is_file():
        return [target]
    paths = sorted(p for p in target.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise click.BadParameter(f"{target}: no images found")
    return paths


@click.group()
def cli() -> None:
    """Face detection and WIDERFace evaluation with RetinaFace-family models."""


@cli.command("detect")
@click.argument("model_spec", metavar="MODEL_OR_CHECKPOINT")
@click.argument("target", metavar="IMAGE_OR_DIR", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="output folder")
@click.option("--resize", default=1.0, show_default=True, help="input scale factor (dynamic-shape models)")
@click.option("--json-threshold", default=0.3, show_default=True, help="min score written to detections.json")
@click.option("--draw-threshold", default=0.6, show_default=True, help="min score drawn on the images")
@click.option("--nms", "nms_threshold", default=NMS_THRESHOLD, show_default=True, help="NMS IoU threshold")
@click.option("--threads", default=2, show_default=True)
@click.option("--max-size", default=DEFAULT_MAX_SIZE, show_default=True, type=click.IntRange(min=32),
              help="longest image side processed (px); larger images are downscaled (JPEG decoded reduced), "
                   "boxes reported in the file's pixels")
def detect_command(model_spec: str, target: Path, out_dir: Path, resize: float, json_threshold: float,
                   draw_threshold: float, nms_threshold: float, threads: int, max_size: int) -> None:
    """Detect faces; writes detections.json and annotated images to --out.

    MODEL_OR_CHECKPOINT is one of: NAME:WEIGHTS (e.g. retinaface_mnet025:weights/retinaface.pth; NAME is
    retinaface_mnet025, featherface_v1 or nano_b), a pruned compresskit checkpoint (.pt), an ONNX file
    from 'compresskit export' or 'compresskit quantize' (FP32 or INT8; run in ONNX Runtime), or a bare
    NAME (random weights: a warning, detections meaningless).
    """
    torch.set_num_threads(threads)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RandomWeightsWarning)
            detector = FaceDetector(model_spec, score_threshold=min(json_threshold, draw_threshold),
                                    nms_threshold=nms_threshold, threads=threads, resize=resize)
    except (ValueError, OSError) as error:  # unknown name, bad or missing checkpoint / ONNX file
        raise _spec_error(model_spec, error) from None
    for warning in caught:
        click.echo(f"warning: {warning.message}", err=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    from compresskit.utils.atomic import atomic_path

    images = detections = 0
    with atomic_path(out_dir / "detections.json") as temporary, open(temporary, "w", encoding="utf-8") as handle:
        handle.write("{")  # streamed one image at a time: memory stays flat over any number of images
        for path in tqdm(_iter_images(target), desc="detect"):
            try:  # cv2.imread decodes a truncated JPEG without an error; a huge image is read downscaled
                image, scale = read_image_downscaled(path, max_size)
            except ValueError as error:
                raise InputError(str(error)) from None
            found = detector.detect(image)
            in_file = found.copy()
            in_file[:, :14] /= scale  # x, y, w, h and landmarks in the file's pixels
            faces = [face for face in faces_to_dicts(in_file) if face["score"] >= json_threshold]
            handle.write(f"{',' if images else ''}\n {json.dumps(str(path))}: {json.dumps(faces)}")
            images, detections = images + 1, detections + len(faces)
            drawn = draw_detections(image, faces_to_dicts(found), draw_threshold)
            cv2.imwrite(str(out_dir / f"{path.stem}_detections.jpg"), drawn)
        handle.write("\n}\n")
    click.echo(f"{detections} detections in {images} images -> {out_dir}")


@cli.command("evaluate")
@click.argument("model_spec", metavar="[MODEL_OR_CHECKPOINT]", required=False)
@click.option("--images", "images_root", type=click.Path(exists=True, path_type=Path),
              help="WIDER_val/images (event sub-folders); needed with a model")
@click.option("--gt", "gt_dir", required=True, type=click.Path(exists=True, path_type=Path),
              help="folder with wider_face_val.mat and wider_{easy,medium,hard}_val.mat")
@click.option("--predictions", "predictions_dir", type=click.Path(exists=True, path_type=Path), default=None,
              help="score this official txt prediction folder (written by any tool) instead of running a model")
@click.option("--pred-dir", type=click.Path(path_type=Path), default=None, help="also write official txt files")
@click.option("--resize", default=1.0, show_default=True)
@click.option("--threads", default=2, show_default=True)
@click.option("--max-size", default=DEFAULT_MAX_SIZE, show_default=True, type=click.IntRange(min=32),
              help="longest image side accepted (px); a larger image is refused before decoding")
def evaluate_command(model_spec: str | None, images_root: Path | None, gt_dir: Path,
                     predictions_dir: Path | None, pred_dir: Path | None, resize: float, threads: int,
                     max_size: int) -> None:
    """WIDERFace AP table (easy / medium / hard) of a model on a folder of val images, or of a
    prediction folder (``--predictions``)."""
    start = time.perf_counter()
    if predictions_dir is not None:
        if model_spec is not None:
            raise click.UsageError("give either MODEL_OR_CHECKPOINT or --predictions, not both")
        try:
            ap = evaluate_folder(predictions_dir, gt_dir)
        except (ValueError, OSError) as error:  # malformed prediction file, unreadable .mat
            raise InputError(str(error)) from None
    else:
        if model_spec is None or images_root is None:
            raise click.UsageError("give MODEL_OR_CHECKPOINT with --images, or --predictions DIR")
        model = _load_model_or_exit(model_spec)
        try:
            ap = evaluate_widerface(model, images_root, gt_dir, pred_dir, resize=resize, num_threads=threads,
                                    max_size=max_size)
        except (ValueError, OSError) as error:  # an unreadable image or .mat file
            raise InputError(str(error)) from None
    click.echo("subset   AP")
    for subset, value in ap.items():
        click.echo(f"{subset:<8} {100 * value:.2f}")
    click.echo(f"({time.perf_counter() - start:.1f} s)")


main: Callable[[], None] = cli

if __name__ == "__main__":
    cli()
