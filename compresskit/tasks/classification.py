"""Image classification as a ready :class:`~compresskit.tasks.protocol.Task`: a model plus data loaders is enough.

Batches are ``(images float[N, C, H, W], labels long[N])``; the model returns logits ``[N, classes]``.
The loss is cross-entropy (optionally label-smoothed), the headline metric top-1 accuracy on the
validation loader, and the layer groups are the model's stages (:func:`stage_groups`: the stem and
each top-level block, e.g. ``conv1``+``layer1`` ... ``layer4`` of a torchvision ResNet); the
classifier (the last ``Linear``, else the last ``Conv2d``) is protected, so the logits keep their count.

Two ways in::

    task = ClassificationTask(lambda: MyNet(num_classes=10), train_loader_fn, val_loader_fn,
                              builder="my_pkg.models:MyNet", builder_kwargs={"num_classes": 10})

    # recipe (task: image_classification), or in Python:
    task = image_folders("torchvision:resnet18:r18.pth", "data/train", "data/val", image_size=224)

``train_loader_fn(batch_size)`` / ``val_loader_fn(batch_size)`` return iterables of batches, typically
``torch.utils.data.DataLoader`` (training: shuffled with the global torch RNG, so seeded runs repeat).

Caveats:
    * ``subset < 1`` (search trials) subsamples the dataset of a ``DataLoader``; other iterables are
      cut to the first ``subset`` fraction of their batches.
    * :func:`stage_groups` is a heuristic over the module tree; a recipe's ``prune.groups`` overrides it.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from compresskit.tasks.protocol import Task

__all__ = ["ClassificationTask", "classifier_name", "image_folders", "stage_groups"]

LoaderFn = Callable[[int], Iterable[Any]]

#: Above this many top-level blocks, :func:`stage_groups` merges them into this many stages.
MAX_STAGES = 4


def classifier_name(model: nn.Module) -> str:
    """The module producing the logits: the last ``nn.Linear``, else the last ``nn.Conv2d``.

    Raises:
        ValueError: The model has neither.
    """
    for kind in (nn.Linear, nn.Conv2d):
        names = [name for name, module in model.named_modules() if isinstance(module, kind)]
        if names:
            return names[-1]
    raise ValueError(f"{type(model).__name__} has no nn.Linear or nn.Conv2d to produce logits")


def _prunable(module: nn.Module, head: str, prefix: str) -> bool:
    return any(isinstance(m, (nn.Conv2d, nn.Linear)) and f"{prefix}{name}".rstrip(".") != head
               for name, m in module.named_modules())


def stage_groups(model: nn.Module, bounds: tuple[float, float] = (0.0, 0.6)) -> list[Any]:
    """Layer groups by stage: ``stem`` (leaf layers before the first block) and one group per block.

    A flat run of layers with no blocks is treated as blocks of one layer each.

    The module tree is descended while a single child holds every prunable layer (e.g.
    ``features`` of a MobileNet). More than ``MAX_STAGES`` blocks are merged into ``MAX_STAGES``
    contiguous ``stage1..`` groups. The classifier (:func:`classifier_name`) belongs to no group.

    Returns:
        ``LayerGroupSpec`` list with ``bounds`` each.

    Example:
        >>> [g.name for g in stage_groups(resnet18())]   # doctest: +SKIP
        ['stem', 'layer1', 'layer2', 'layer3', 'layer4']
    """
    from compresskit.groups.find import LayerGroupSpec

    head, module, prefix = classifier_name(model), model, ""
    while True:
        children = [(name, child) for name, child in module.named_children()
                    if _prunable(child, head, f"{prefix}{name}.")]
        if len(children) == 1 and list(children[0][1].children()):
            prefix, module = f"{prefix}{children[0][0]}.", children[0][1]
            continue
        break
    stem = [f"{prefix}{name}" for name, child in itertools.takewhile(lambda c: not list(c[1].children()), children)]
    if len(stem) == len(children):  # a flat run of layers (VGG-style features): they are the blocks
        stem = []
    blocks = [(f"{prefix}{name}", (f"{prefix}{name}", f"{prefix}{name}.*")) for name, child in children[len(stem):]]
    named: list[tuple[str, tuple[str, ...]]] = [("stem", tuple(stem))] if stem else []
    if len(blocks) > MAX_STAGES:
        size = math.ceil(len(blocks) / MAX_STAGES)
        named += [(f"stage{i + 1}", tuple(p for _, patterns in blocks[i * size:(i + 1) * size] for p in patterns))
                  for i in range(math.ceil(len(blocks) / size))]
    else:
        named += [(name.replace(".", "_"), patterns) for name, patterns in blocks]
    return [LayerGroupSpec(name, patterns=patterns, bounds=bounds) for name, patterns in named]


class ClassificationTask(Task):
    """Image classification from a model function and two loader functions.

    Args:
        model_fn: ``() -> nn.Module`` (called with the recipe's ``model_args``), or a model spec
            string (``torchvision:resnet18``, ``package.module:callable``, each ``[:WEIGHTS]``; see
            :mod:`compresskit.models.spec`).
        train_loader_fn: ``batch_size -> iterable of (images, labels)``, shuffled.
        val_loader_fn: ``batch_size -> iterable of (images, labels)``, fixed order.
        builder: ``"package.module:callable"`` that rebuilds ``model_fn``'s architecture, for saving
            the pruned model; default: ``model_fn`` itself when it is a module-level function or class.
        builder_kwargs: Keyword arguments for ``builder``.
        label_smoothing: Of the cross-entropy, in [0, 1).

    Model names: ``build_model("model")`` calls ``model_fn``; a name containing ``:`` is built as a
    model spec (e.g. a larger teacher ``torchvision:resnet50:r50.pth``). Anything else is refused.

    Example:
        >>> task = ClassificationTask(SmallNet, lambda b: DataLoader(train, b, shuffle=True),
        ...                           lambda b: DataLoader(val, b))              # doctest: +SKIP
        >>> task.evaluate(task.build_model("model"))                           # doctest: +SKIP
        {'accuracy': 0.1, 'val_loss': 2.3}
    """

    distill_kinds: Sequence[str] = ("classification",)
    #: The model name ``build_model`` maps to ``model_fn``.
    MODEL = "model"

    def __init__(self, model_fn: Callable[..., nn.Module] | str, train_loader_fn: LoaderFn, val_loader_fn: LoaderFn,
                 builder: str | None = None, builder_kwargs: Mapping[str, Any] | None = None,
                 label_smoothing: float = 0.0) -> None:
        if not (callable(model_fn) or isinstance(model_fn, str)):
            raise TypeError(f"model_fn must be a callable returning an nn.Module or a model spec string, "
                            f"got {type(model_fn).__name__}")
        for name, function in (("train_loader_fn", train_loader_fn), ("val_loader_fn", val_loader_fn)):
            if not callable(function):
                raise TypeError(f"{name} must be a callable batch_size -> loader, got {type(function).__name__}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.model_fn, self.train_loader_fn, self.val_loader_fn = model_fn, train_loader_fn, val_loader_fn
        self._builder, self._builder_kwargs = builder, dict(builder_kwargs or {})
        self.label_smoothing = label_smoothing
        self._structure: dict[str, tuple[list[Any], tuple[str, ...]]] = {}
        self._kwargs: dict[str, dict[str, Any]] = {}  # the model_args each name was last built with

    # --- models ----------------------------------------------------------------------

    def _spec(self, name: str, kwargs: Mapping[str, Any]) -> Any:
        from compresskit.models.spec import parse_spec

        if name == self.MODEL and isinstance(self.model_fn, str):
            return parse_spec(self.model_fn, kwargs=dict(kwargs))
        if name != self.MODEL and ":" in name:
            return parse_spec(name, kwargs=dict(kwargs))
        if name != self.MODEL:
            raise ValueError(f"unknown model {name!r}; ClassificationTask builds {self.MODEL!r} (its model_fn) "
                             "or a model spec such as 'torchvision:resnet18' or 'my_pkg.models:build'")
        return None

    def build_model(self, name: str = MODEL, **kwargs: Any) -> nn.Module:
        self._kwargs[name] = dict(kwargs)
        return self._build(name, kwargs)

    def _build(self, name: str, kwargs: Mapping[str, Any], weights: bool = True) -> nn.Module:
        spec = self._spec(name, kwargs)
        if spec is not None:
            import dataclasses

            from compresskit.models.spec import build

            return build(spec if weights else dataclasses.replace(spec, weights=None))[0]
        model = self.model_fn(**kwargs)  # type: ignore[operator]
        if not isinstance(model, nn.Module):
            raise TypeError(f"model_fn returned {type(model).__name__}, not an nn.Module")
        return model

    def builder(self, name: str = MODEL, **kwargs: Any) -> tuple[str, dict[str, Any]]:
        spec = self._spec(name, kwargs)
        if spec is not None:
            from compresskit.models.spec import resolve_spec

            return resolve_spec(spec)
        if self._builder is not None:
            return self._builder, {**self._builder_kwargs, **kwargs}
        function = self.model_fn
        qualname = getattr(function, "__qualname__", "")
        if "<" in qualname or not qualname or getattr(function, "__module__", "__main__") == "__main__":
            raise ValueError(f"ClassificationTask cannot save a model built by {qualname or function!r}: pass "
                             "builder='package.module:callable' (an importable, module-level function)")
        return f"{function.__module__}:{qualname}", {**self._builder_kwargs, **kwargs}

    def _model_structure(self, name: str) -> tuple[list[Any], tuple[str, ...]]:
        """Groups and classifier of ``name`` as last built (same ``model_args``; weights not loaded)."""
        if name not in self._structure:
            model = self._build(name, self._kwargs.get(name, {}), weights=False)
            self._structure[name] = (stage_groups(model), (classifier_name(model),))
        return self._structure[name]

    def layer_groups(self, model_name: str) -> list[Any]:
        return list(self._model_structure(model_name)[0])

    def protect(self, model_name: str) -> Sequence[str]:
        return self._model_structure(model_name)[1]

    # --- data ------------------------------------------------------------------------

    def train_loader(self, batch_size: int, subset: float = 1.0, seed: int = 0) -> Iterable[Any]:
        if not 0.0 < subset <= 1.0:
            raise ValueError(f"subset must be in (0, 1], got {subset!r}")
        loader = self.train_loader_fn(batch_size)
        if subset >= 1.0:
            return loader
        if isinstance(loader, DataLoader):
            dataset: Any = loader.dataset
            count = max(1, int(len(dataset) * subset))
            order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
            return DataLoader(Subset(dataset, order[:count].tolist()), batch_size=batch_size, shuffle=True,
                              num_workers=loader.num_workers, collate_fn=loader.collate_fn)
        batches = list(loader)
        return batches[:max(1, int(len(batches) * subset))]

    def val_loader(self, batch_size: int) -> Iterable[Any]:
        return self.val_loader_fn(batch_size)

    # --- loss and metrics ------------------------------------------------------------

    def _check_labels(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        if logits.ndim != 2:
            raise ValueError(f"a classifier must return logits [N, classes], got shape {tuple(logits.shape)}")
        if labels.numel() and int(labels.max()) >= logits.shape[1]:
            raise ValueError(f"the model returns {logits.shape[1]} logits but the data has label {int(labels.max())}: "
                             "build the model with as many outputs as the data has classes")

    def task_loss(self, outputs: Any, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        labels = batch[1]
        self._check_labels(outputs, labels)
        loss = F.cross_entropy(outputs, labels, label_smoothing=self.label_smoothing)
        return loss, {"ce": float(loss.detach())}

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Top-1 ``accuracy`` (headline) and mean cross-entropy ``val_loss`` over the validation loader."""
        was_training = getattr(model, "training", False)
        if hasattr(model, "eval"):
            model.eval()
        device = next((p.device for p in model.parameters()), torch.device("cpu")) \
            if hasattr(model, "parameters") else torch.device("cpu")
        correct, total, loss_sum = 0, 0, 0.0
        for images, labels in self.val_loader(64):
            images, labels = images.to(device), labels.to(device)
            logits = model(images)
            self._check_labels(logits, labels)
            loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
            correct += int((logits.argmax(dim=1) == labels).sum())
            total += len(labels)
        if hasattr(model, "train"):
            model.train(was_training)
        if total == 0:
            raise ValueError("the validation loader yielded no samples")
        return {"accuracy": correct / total, "val_loss": loss_sum / total}


def image_folders(model: str, train_dir: str | os.PathLike[str], val_dir: str | os.PathLike[str],
                  image_size: int | Sequence[int] = 224, weights: str | None = None,
                  mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                  num_workers: int = 0, label_smoothing: float = 0.0) -> ClassificationTask:
    """A :class:`ClassificationTask` over ``train_dir/CLASS/*`` and ``val_dir/CLASS/*`` image folders.

    This is the recipe task ``image_classification``; its ``task_args`` are these arguments.

    Args:
        model: A model spec (``torchvision:resnet18``, ``timm:NAME``, ``package.module:callable``),
            optionally ``:WEIGHTS``; recipes then name the student ``model``.
        train_dir: Training images, one sub-folder per class.
        val_dir: Validation images, the same class folders.
        image_size: Side (or ``(H, W)``) images are resized to.
        weights: Trained weights for ``model`` (the same as a ``:WEIGHTS`` suffix).
        mean: Per-channel RGB mean of ``x / 255``; default ImageNet's.
        std: Per-channel standard deviation; default ImageNet's.
        num_workers: DataLoader worker processes.
        label_smoothing: Of the cross-entropy.

    Raises:
        ValueError: A folder is missing or empty (naming the ``task_args`` key), or the model spec is bad.

    Example:
        >>> task = image_folders("torchvision:resnet18:r18.pth", "data/train", "data/val")  # doctest: +SKIP
    """
    from compresskit.models.spec import parse_spec
    from compresskit.tasks.image_folder import IMAGENET_MEAN, IMAGENET_STD, ImageFolder

    spec = parse_spec(model, weights)
    text = spec.source + (f":{spec.weights}" if spec.weights is not None else "")
    if spec.weights is not None and not spec.weights.is_file():
        raise ValueError(f"task_args.weights: file not found: {spec.weights}")
    norm = {"mean": tuple(mean or IMAGENET_MEAN), "std": tuple(std or IMAGENET_STD)}
    datasets = {}
    for key, folder in (("train_dir", train_dir), ("val_dir", val_dir)):
        try:
            datasets[key] = ImageFolder(folder, image_size, classes=datasets["train_dir"].classes
                                        if key == "val_dir" else None, **norm)
        except ValueError as error:
            raise ValueError(f"task_args.{key}: {error}") from None

    def loader(key: str, shuffle: bool) -> LoaderFn:
        return lambda batch_size: DataLoader(datasets[key], batch_size=batch_size, shuffle=shuffle,
                                             num_workers=num_workers)

    task = ClassificationTask(text, loader("train_dir", True), loader("val_dir", False),
                              label_smoothing=label_smoothing)
    task.classes = datasets["train_dir"].classes  # type: ignore[attr-defined]
    return task
