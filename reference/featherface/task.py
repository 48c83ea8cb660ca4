"""What a compresskit recipe needs from the FeatherFace family (the ``Task`` protocol).

``task: featherface`` in a recipe resolves to :class:`FeatherFaceTask` through the ``compresskit.tasks`` entry point
declared in ``pyproject.toml``; ``task_args`` are its constructor arguments. Two data sources:

* ``data: synthetic`` -- :class:`~featherface.data.synthetic.SyntheticFaces`, generated from
  the seed (no download); the embedded CPU run. Validation AP uses size-based easy/medium/hard subsets.
* ``data: widerface`` -- RetinaFace ``label.txt`` files (``train_labels`` / ``val_labels``, images in
  ``images/`` next to each, or given explicitly); with ``gt_dir`` (the official ``.mat`` files)
  validation AP follows the WIDER FACE protocol, otherwise size-based subsets of the val labels.

Training batches use the RetinaFace augmentation (:class:`~featherface.data.augment.TrainTransform`)
at ``image_size``. Its random choices are seeded per item from the global torch RNG (drawn with the
shuffle order at the start of each epoch), so seeding the run and restoring a checkpoint's RNG reproduce
the batches exactly -- what ``compresskit run --resume`` relies on.

Outputs are ``(bbox_deltas [N, P, 4], cls_logits [N, P, 2], landmark_deltas [N, P, 10])``; distillation
treats them as regression / classification / regression, and the regression terms only cover priors
matched to a face (boxes) or to a face with landmarks (landmarks), as the MultiBox loss does.

Caveats:
    By default validation images are evaluated at the training size (``eval_size``, default
    ``image_size``), padded to a square: cheap, but not the original-size WIDER FACE protocol.
    ``eval_size: original`` (with ``gt_dir``) is that protocol, as ``compresskit evaluate``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from featherface import models
from featherface.data.augment import TrainTransform, pad_to_square
from featherface.data.decoded_cache import DecodedCache, freeze_in_workers
from featherface.data.synthetic import SUBSET_MIN_SIDE, SyntheticFaces
from featherface.data.widerface import (
    BGR_MEAN,
    ParseResult,
    WiderFaceDataset,
    check_records,
    detection_collate,
    parse_retinaface_labels,
    to_tensor,
)
from featherface.evaluation import ImageGroundTruth, evaluate, image_key, load_mat_ground_truth, size_subsets
from featherface.loss import MultiBoxLoss
from featherface.postprocess import postprocess
from featherface.priors import PriorCache

if TYPE_CHECKING:
    from compresskit.groups.find import LayerGroupSpec

__all__ = ["FeatherFaceTask", "layer_group_specs"]

_LAYER_GROUPS = {
    "nano_b": (models.NANO_B_LAYER_GROUPS, models.NANO_B_PROTECT_PATTERNS),
    "featherface_v1": (models.FEATHERFACE_V1_LAYER_GROUPS, models.FEATHERFACE_V1_PROTECT_PATTERNS),
    "retinaface_mnet025": (models.RETINAFACE_LAYER_GROUPS, models.RETINAFACE_PROTECT_PATTERNS),
}
#: ``teacher_mask``: a prior is a face the teacher sees above this probability (its confident detections; the
#: evaluation keeps detections from 0.02, the demo draws them from 0.5).
TEACHER_FACE_THRESHOLD = 0.5
_SYNTHETIC_VAL_CACHE_BYTES = 512 * 2**20  # synthetic validation scenes are rendered once and kept up to this


def layer_group_specs(model_name: str) -> list[LayerGroupSpec]:
    """The pruning layer groups of ``model_name`` (``models.*_LAYER_GROUPS``) as ``compresskit.LayerGroupSpec``s.

    Raises:
        ValueError: no table for ``model_name``.
    """
    from compresskit.groups.find import LayerGroupSpec

    if model_name not in _LAYER_GROUPS:
        raise ValueError(f"no layer groups for {model_name!r}; known: {sorted(_LAYER_GROUPS)} "
                         f"(name prune.groups in the recipe)")
    return [LayerGroupSpec(g["name"], patterns=tuple(g["patterns"]), bounds=tuple(g["bounds"]))
            for g in _LAYER_GROUPS[model_name][0]]


class _Raw:
    """Raw ``(image_bgr uint8[H, W, 3], targets float32[G, 15] pixels)`` by index (read-only when cached)."""

    def __init__(self, source: SyntheticFaces | WiderFaceDataset, cache_bytes: int = 0) -> None:
        self.source = source
        self.cache = DecodedCache(cache_bytes)

    def __len__(self) -> int:
        return len(self.source)

    def __call__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.cache(index, self.load)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(self.source, SyntheticFaces):
            return self.source.sample(index)
        return self.source.load_image(index), self.source.records[index].targets.copy()

    def key(self, index: int) -> str:
        if isinstance(self.source, SyntheticFaces):
            return self.source.key(index)
        path = self.source.records[index].path
        return image_key(path.parent.name, path.name)


class _AugmentedItems(Dataset):
    """``dataset[(index, seed)]``: item ``index`` augmented with a generator seeded by ``seed``.

    ``dataset[index]`` (a plain index, as :class:`~torch.utils.data.DistributedSampler` gives under ``torchrun``,
    see :func:`compresskit.train.distributed.shard_loader`) draws the seed from the torch RNG of the process that
    loads it, which the run seeds and checkpoints (the loader's workers are seeded from it)."""

    def __init__(self, raw: _Raw, indices: Sequence[int], image_size: int, crop_scale: float = 1.0) -> None:
        self.raw, self.indices = raw, list(indices)
        self.transform = TrainTransform(image_size, seed=0, crop_scale=crop_scale)

    def __len__(self) -> int:
        return len(self.indices)

    def caches(self) -> list[DecodedCache]:
        return [self.raw.cache]

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, Tensor]:
        position, seed = (key, int(torch.randint(0, 2**62, ()))) if isinstance(key, int) else key
        self.transform.rng = np.random.default_rng(seed)
        image, targets = self.raw(self.indices[position])
        return self.transform(image, targets.copy())


class _Keyed(Dataset):
    """``dataset[keys[i]]`` by position ``i``: a fixed order and fixed augmentation seeds."""

    def __init__(self, dataset: Dataset, keys: Sequence[tuple[int, int]]) -> None:
        self.dataset, self.keys = dataset, list(keys)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, position: int) -> tuple[Tensor, Tensor]:
        return self.dataset[self.keys[position]]


class _SeededShuffle(Sampler):
    """Shuffled positions, each with an augmentation seed, both drawn from the global torch RNG."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.randperm(self.length).tolist()
        seeds = torch.randint(0, 2**62, (self.length,)).tolist()
        return iter(zip(order, seeds))


class _SquareItems(Dataset):
    """Deterministic evaluation transform: pad to a square (mean colour), resize to ``size``."""

    def __init__(self, raw: _Raw, size: int) -> None:
        self.raw, self.size = raw, size

    def __len__(self) -> int:
        return len(self.raw)

    def scaled(self, index: int) -> tuple[np.ndarray, np.ndarray, float]:
        image, targets = self.raw(index)
        side = max(image.shape[:2])
        scale = self.size / side
        if image.shape[0] != image.shape[1]:
            image = pad_to_square(image, BGR_MEAN)
        if side != self.size:
            image = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        targets = targets.copy()
        targets[:, :4] *= scale
        with_landmarks = targets[:, 14] > 0
        targets[with_landmarks, 4:14] *= scale
        return image, targets, scale

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, targets, _ = self.scaled(index)
        return to_tensor(image, targets)


class FeatherFaceTask:
    """FeatherFace / RetinaFace detectors on synthetic faces or WIDER FACE.

    Args:
        data: ``"synthetic"`` or ``"widerface"``.
        image_size: Training (and default evaluation) input side in pixels.
        train_size: Training images (synthetic: generated; widerface: the first N, ``None`` = all).
        val_size: Validation images (likewise).
        seed: Synthetic data seed (validation uses ``seed + 1``).
        train_labels: WIDER FACE RetinaFace ``label.txt`` for training (``data: widerface``).
        val_labels: Same for validation.
        train_images: Folder the training ``# path`` lines are relative to (default: ``images/`` beside
            ``train_labels``).
        val_images: Same for validation.
        gt_dir: Folder with the official ``wider_*_val.mat`` files (WIDER FACE subsets).
        eval_size: Evaluation input side (``None``: ``image_size``), or ``"original"``: each validation
            image at its own size, unpadded (the WIDER FACE protocol; ``val_loader`` stays square at
            ``image_size``).
        crop_scale: Factor on the training crop sides (:class:`TrainTransform`): ``image_size / 640``
            trains on faces of the pixel size they have in 640 px training and at original-size
            evaluation, at a fraction of the cost; 1 (RetinaFace) shrinks faces with ``image_size``.
        cache_mb: Memory for decoded training images (MiB), so that each is decoded once
            (:mod:`featherface.data.decoded_cache`); the first images that fit are kept. ``0``: decode every time.
        workers: DataLoader worker processes for training batches (``0``: in the training process). Batches are
            bitwise the same for any number; worth it when the cores are free (see ``benchmarks/RESULTS.md``).

    Example:
        >>> task = FeatherFaceTask("synthetic", image_size=160, train_size=32, val_size=8)
        >>> model = task.build_model("nano_b")
        >>> loss, logs = task.task_loss(model(task.example_inputs()[0]), next(iter(task.val_loader(8))))
    """

    distill_kinds: Sequence[str] = ("regression", "classification", "regression")

    def __init__(self, data: str = "synthetic", image_size: int = 320, train_size: int | None = 2000,
                 val_size: int | None = 200, seed: int = 0, train_labels: str | None = None,
                 val_labels: str | None = None, gt_dir: str | None = None, eval_size: int | str | None = None,
                 train_images: str | None = None, val_images: str | None = None, crop_scale: float = 1.0,
                 cache_mb: int = 1024, workers: int = 0) -> None:
        if data not in ("synthetic", "widerface"):
            raise ValueError(f"data must be 'synthetic' or 'widerface', got {data!r}")
        if image_size < 32 or image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32 (>= 32), got {image_size!r}")
        if eval_size is not None and eval_size != "original" and (
                not isinstance(eval_size, int) or eval_size < 32 or eval_size % 32):
            raise ValueError(f"eval_size must be a multiple of 32 (>= 32) or 'original', got {eval_size!r}")
        if not isinstance(crop_scale, (int, float)) or not 0 < crop_scale <= 1:
            raise ValueError(f"crop_scale must be a number in (0, 1], got {crop_scale!r}")
        for name, value in (("cache_mb", cache_mb), ("workers", workers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        self.workers = workers
        self.image_size = image_size
        self.crop_scale = float(crop_scale)
        self.eval_original = eval_size == "original"
        self.eval_size = image_size if eval_size in (None, "original") else int(eval_size)
        self._parsed: dict[str, tuple[str, ParseResult]] = {}  # split -> (label file, parse), widerface only
        if data == "synthetic":
            if not train_size or not val_size:
                raise ValueError("synthetic data needs train_size and val_size")
            train: Any = SyntheticFaces(train_size, image_size, seed=seed)
            val: Any = SyntheticFaces(val_size, image_size, seed=seed + 1)
        else:
            if train_labels is None or val_labels is None:
                raise ValueError("data: widerface needs train_labels and val_labels (RetinaFace label.txt)")
            train_parsed = parse_retinaface_labels(train_labels, train_images)
            val_parsed = parse_retinaface_labels(val_labels, val_images)
            train = WiderFaceDataset(self._first(train_parsed.records, train_size))
            val = WiderFaceDataset(self._first(val_parsed.records, val_size))
            self._parsed = {"train": (train_labels, train_parsed), "val": (val_labels, val_parsed)}
        self._train = _Raw(train, cache_mb * 2**20)
        self._val = _Raw(val, _SYNTHETIC_VAL_CACHE_BYTES if data == "synthetic" else 0)
        self._val_items = _SquareItems(self._val, self.eval_size)
        self._gt_dir = gt_dir
        self._ground_truth: dict[str, ImageGroundTruth] | None = None
        self.criterion = MultiBoxLoss()
        self._priors = PriorCache()

    def check_data(self) -> dict[str, Any]:
        """The pre-flight data check (``compresskit.run.plan.check_data``), before any training.

        Returns:
            Image counts per split and, for label files, the faces dropped by reason.

        Raises:
            ValueError: a split has no images, or images are unreadable (empty, truncated, missing);
                the message names the first such image and its label file and line.
        """
        report: dict[str, Any] = {}
        for split, raw in (("train", self._train), ("val", self._val)):
            label_file = self._parsed[split][0] if split in self._parsed else f"synthetic {split} data"
            if len(raw) == 0:
                raise ValueError(f"{label_file}: no images in the {split} set")
            report[f"{split}_images"] = len(raw)
            if isinstance(raw.source, WiderFaceDataset):
                problems = check_records(raw.source.records)
                if problems:
                    raise ValueError(f"{len(problems)} unreadable {split} image(s); first: {problems[0]}")
            if split in self._parsed:
                parsed = self._parsed[split][1]
                report[f"{split}_dropped_faces"] = dict(parsed.dropped)
                if parsed.skipped:
                    report[f"{split}_skipped_blocks"] = len(parsed.skipped)
        return report

    @staticmethod
    def _first(records: list[Any], count: int | None) -> list[Any]:
        return records if count is None else records[:count]

    # -- models --
    def build_model(self, name: str, **kwargs: Any) -> nn.Module:
        return models.build_model(name, **kwargs)

    def load_checkpoint(self, model: nn.Module, path: str) -> nn.Module:
        """Load a weights file strictly with :func:`featherface.models.load_weights` (official
        key names, ``module.`` prefixes, wrapper dicts, ``thop`` leftovers); the recipe's loader."""
        return models.load_weights(model, path)

    def builder(self, name: str, **kwargs: Any) -> tuple[str, dict[str, Any]]:
        return "featherface.models:build_model", {"name": name, **kwargs}

    def example_inputs(self) -> tuple[Tensor, ...]:
        generator = torch.Generator().manual_seed(0)
        # mean-subtracted BGR pixel scale, like real inputs
        return (torch.randn(1, 3, self.image_size, self.image_size, generator=generator) * 50,)

    def layer_groups(self, model_name: str) -> list[Any]:
        return layer_group_specs(model_name)

    def protect(self, model_name: str) -> Sequence[str]:
        if model_name in _LAYER_GROUPS:
            return tuple(_LAYER_GROUPS[model_name][1])
        return tuple(models.HEAD_OUTPUT_PATTERNS)

    # -- data --
    def heldout_split(self, fraction: float, seed: int) -> tuple[list[int], list[int]]:
        """``(kept, heldout)`` training-image indices: ``heldout`` is ``max(1, int(n * fraction))`` images
        drawn by ``seed`` (the same for every call), ``kept`` the rest; both sorted.

        Raises:
            ValueError: ``fraction`` outside (0, 1), or nothing would be left to train on.
        """
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"holdout fraction must be in (0, 1), got {fraction!r}")
        count = max(1, int(len(self._train) * fraction))
        if count >= len(self._train):
            raise ValueError(f"holdout {fraction} of {len(self._train)} training images leaves none to train on")
        order = torch.randperm(len(self._train), generator=torch.Generator().manual_seed(seed)).tolist()
        return sorted(order[count:]), sorted(order[:count])

    def heldout_loader(self, batch_size: int, fraction: float, seed: int = 0) -> DataLoader:
        """Fixed batches of the held-out training images (:meth:`heldout_split`), for a search objective.

        Each image gets the training augmentation at ``image_size`` with a fixed per-image seed, so the
        batches (and a loss over them) are identical on every call; validation images are never read.
        """
        _, heldout = self.heldout_split(fraction, seed)
        items = _AugmentedItems(self._train, heldout, self.image_size, self.crop_scale)
        keys = [(position, seed * 100_003 + index) for position, index in enumerate(heldout)]
        return DataLoader(_Keyed(items, keys), batch_size=batch_size, shuffle=False, collate_fn=detection_collate)

    def train_loader(self, batch_size: int, subset: float = 1.0, seed: int = 0,
                     holdout: float | None = None) -> DataLoader:
        """Shuffled, augmented training batches; ``holdout`` excludes :meth:`heldout_split` ``(holdout, seed)``."""
        indices = list(range(len(self._train))) if holdout is None else self.heldout_split(holdout, seed)[0]
        if subset < 1.0:
            count = max(1, int(len(indices) * subset))
            order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))
            indices = sorted(indices[i] for i in order[:count].tolist())
        items = _AugmentedItems(self._train, indices, self.image_size, self.crop_scale)
        if self.workers:  # workers live one epoch: fill the cache here, where they fork from
            self._train.cache.fill(indices, self._train.load)
        return DataLoader(items, batch_size=batch_size, sampler=_SeededShuffle(len(items)),
                          collate_fn=detection_collate, num_workers=self.workers,
                          worker_init_fn=freeze_in_workers if self.workers else None)

    def val_loader(self, batch_size: int) -> DataLoader:
        return DataLoader(self._val_items, batch_size=batch_size, shuffle=False, collate_fn=detection_collate)

    def inputs(self, batch: Any) -> tuple[Tensor, ...]:
        return (batch[0],)

    # -- losses --
    def priors(self, height: int, width: int) -> Tensor:
        return self._priors((height, width))

    def task_loss(self, outputs: Any, batch: Any) -> tuple[Tensor, dict[str, float]]:
        images, targets = batch
        loss, parts = self.criterion(outputs, targets, self.priors(*images.shape[2:]))
        return loss, {name: float(value) for name, value in parts.items()}

    def distill_mask(self, outputs: Any, batch: Any) -> list[Tensor | None]:
        images, targets = batch
        labels, _, _ = self.criterion.build_targets(targets, self.priors(*images.shape[2:]))  # [N, P]
        return [labels != 0, None, labels > 0]

    def teacher_mask(self, teacher_outputs: Any) -> list[Tensor | None]:
        """``distill.masks: teacher``: boxes and landmarks distilled on the priors where the teacher's face
        probability exceeds ``TEACHER_FACE_THRESHOLD`` (faces it sees, labelled or not), classes on every prior."""
        faces = torch.softmax(teacher_outputs[1], dim=-1)[..., 1] > TEACHER_FACE_THRESHOLD  # [N, P]
        return [faces, None, faces]

    # -- metrics --
    def ground_truth(self) -> dict[str, ImageGroundTruth]:
        """Validation ground truth at the evaluation scale (official subsets when ``gt_dir`` is given)."""
        if self._ground_truth is None:
            if self._gt_dir is not None:
                official = load_mat_ground_truth(self._gt_dir)
                self._ground_truth = {self._val.key(i): official[self._val.key(i)] for i in range(len(self._val))
                                      if self._val.key(i) in official}
            else:
                min_sides = {name: fraction * self.eval_size for name, fraction in SUBSET_MIN_SIDE.items()}
                truth = {}
                for index in range(len(self._val)):
                    targets = self._val(index)[1] if self.eval_original else self._val_items.scaled(index)[1]
                    xywh = np.concatenate((targets[:, :2], targets[:, 2:4] - targets[:, :2]), axis=1)
                    truth[self._val.key(index)] = ImageGroundTruth(xywh.astype(np.float64),
                                                                   size_subsets(xywh, min_sides))
                self._ground_truth = truth
        return self._ground_truth

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """AP easy / medium / hard (headline: ``ap_easy``) and the MultiBox loss on the val set."""
        was_training = model.training
        model.eval()
        predictions, losses = {}, []
        official = self._gt_dir is not None
        for index in range(len(self._val)):
            if self.eval_original:  # the WIDER FACE protocol: the image as it is, boxes in its pixels
                image, targets = self._val(index)
                scale = 1.0
            else:
                image, targets, scale = self._val_items.scaled(index)
            size = image.shape[:2]
            tensor, normalised = to_tensor(image, targets)
            outputs = model(tensor[None])
            losses.append(float(self.criterion(outputs, [normalised], self.priors(*size))[0]))
            bbox_deltas, cls_logits, landmark_deltas = (o[0] for o in outputs)
            # official GT is in original pixels: divide by the scale; ours is at the eval scale
            dets = postprocess(bbox_deltas, cls_logits, landmark_deltas, self.priors(*size), size,
                               resize=scale if official else 1.0)
            if self.eval_original and official:  # exactly the official prediction files' rounding
                predictions[self._val.key(index)] = dets.to_xywhs()
                continue
            boxes = dets.boxes.numpy().astype(np.float64)
            xywhs = np.concatenate((boxes[:, :2], boxes[:, 2:] - boxes[:, :2],
                                    dets.scores.numpy()[:, None]), axis=1)
            predictions[self._val.key(index)] = xywhs
        model.train(was_training)
        ap = evaluate(predictions, self.ground_truth())
        return {**{f"ap_{subset}": float(value) for subset, value in ap.items()},
                "val_loss": sum(losses) / max(1, len(losses))}
