"""The ``Task`` protocol: what the pipeline needs from a model family and its data.

A recipe names a task (``task: featherface``) or points at the user's own code
(``task: mypackage.tasks:MyTask``); the callable is called with the recipe's
``task_args`` and must return an object with the methods below. The pipeline
never looks inside batches or model outputs: it hands them back to the task.

Data flow of one training step, as the pipeline runs it::

    outputs = model(*task.inputs(batch))
    loss, logs = task.task_loss(outputs, batch)
    # with a teacher (distillation):
    teacher_outputs = teacher(*task.inputs(batch))       # no grad
    loss, logs = distill(outputs, teacher_outputs, loss, mask=task.distill_mask(outputs, batch))

``outputs`` may be a tensor or a tuple of tensors; ``distill_kinds`` says, per
output and in the same order, whether it is ``"classification"`` (logits:
softened KL) or ``"regression"`` (smooth-L1 toward the teacher).

``Task`` is also a base class: a subclass inherits defaults for everything but
``build_model``, ``train_loader``, ``val_loader``, ``task_loss`` and ``evaluate``
(``inputs``: the batch's first element; ``example_inputs``: the first validation
sample; ``distill_mask``: None; ``layer_groups``: one group ``all`` over every prunable
layer; ``protect``: nothing; ``builder``: asks for one). A class that does not
subclass it still works when it has every member (checked by :func:`check_task`).
Ready task types live in :mod:`compresskit.tasks` (image classification).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import nn

if TYPE_CHECKING:  # only for annotations; groups.py is owned by the core area
    from compresskit.groups.find import LayerGroupSpec

__all__ = ["Task", "check_task", "task_args_error"]


@runtime_checkable
class Task(Protocol):
    """What a compression run needs from a model family, its data and its metrics.

    Attributes:
        distill_kinds: One of ``"classification"`` / ``"regression"`` per model
            output (a one-element sequence when the model returns one tensor).

    Example:
        >>> task = ShapesTask(image_size=32)            # doctest: +SKIP
        >>> model = task.build_model("resnet_small")     # doctest: +SKIP
        >>> outputs = model(*task.inputs(next(iter(task.train_loader(8)))))  # doctest: +SKIP
    """

    distill_kinds: Sequence[str] = ("classification",)

    def build_model(self, name: str, **kwargs: Any) -> nn.Module:
        """A freshly initialised model called ``name`` (seeded by the caller).

        Raises:
            ValueError: ``name`` is not a model of this task (list the valid names).
        """
        raise NotImplementedError(f"{type(self).__name__} must define build_model")

    def builder(self, name: str, **kwargs: Any) -> tuple[str, dict[str, Any]]:
        """``("module:callable", builder_kwargs)`` rebuilding model ``name`` for persistence.

        ``callable(**builder_kwargs)`` must return the same architecture as
        ``build_model(name, **kwargs)``; ``compresskit.models.persist.save_pruned`` stores both.
        The default raises: a saved model must name an importable, module-level builder.
        """
        raise ValueError(f"{type(self).__name__} cannot save model {name!r}: define builder(name, **kwargs) "
                         "returning ('package.module:callable', kwargs) that rebuilds it")

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        """Positional inputs of one forward pass (batch of 1), for tracing and export.

        Default: the inputs of the first validation batch, cut to one sample.
        """
        batch = next(iter(self.val_loader(1)))
        return tuple(x[:1] for x in self.inputs(batch))

    def train_loader(self, batch_size: int, subset: float = 1.0, seed: int = 0) -> Iterable[Any]:
        """Shuffled training batches; ``subset`` in (0, 1] takes a fraction chosen by ``seed``.

        Shuffle with the global torch RNG (the default ``DataLoader`` behaviour) so
        that seeding and checkpoint RNG restore make resumed runs exact.
        """
        raise NotImplementedError(f"{type(self).__name__} must define train_loader")

    def val_loader(self, batch_size: int) -> Iterable[Any]:
        """Validation batches in a fixed order."""
        raise NotImplementedError(f"{type(self).__name__} must define val_loader")

    def inputs(self, batch: Any) -> tuple[torch.Tensor, ...]:
        """The model's positional inputs from a batch; default: ``(batch[0],)`` for a tuple/list
        batch such as ``(images, labels)``, ``(batch,)`` for a tensor."""
        return (batch[0],) if isinstance(batch, (tuple, list)) else (batch,)

    def task_loss(self, outputs: Any, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """The task's own loss of ``outputs`` against the batch's targets, and logs."""
        raise NotImplementedError(f"{type(self).__name__} must define task_loss")

    def distill_mask(self, outputs: Any, batch: Any) -> torch.Tensor | None:
        """Which predictions the distillation term covers (e.g. positive priors); None: all (default)."""
        return None

    def teacher_mask(self, teacher_outputs: Any) -> torch.Tensor | None:
        """Optional: the distillation masks from the teacher's outputs alone (``distill.masks: teacher``, e.g.
        priors where the teacher sees an object); None: all predictions (default)."""
        return None

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Task metrics on the validation data; the first key is the headline metric."""
        raise NotImplementedError(f"{type(self).__name__} must define evaluate")

    def layer_groups(self, model_name: str) -> list[LayerGroupSpec]:
        """Default layer groups of model ``model_name`` when the recipe names none.

        Default: one group ``"all"`` over every prunable layer (``patterns=("*",)``, rates in [0, 0.7]).
        """
        from compresskit.groups.find import LayerGroupSpec

        return [LayerGroupSpec("all", patterns=("*",), bounds=(0.0, 0.7))]

    def protect(self, model_name: str) -> Sequence[str]:
        """Module globs of ``model_name`` whose output channels are never pruned (logits,
        detection heads, gates); the recipe's ``prune.protect`` is added to them. Default: none."""
        return ()


_REQUIRED = (
    "build_model", "builder", "example_inputs", "train_loader", "val_loader", "inputs",
    "task_loss", "distill_mask", "evaluate", "layer_groups", "protect",
)


def check_task(task: object, spec: str = "<task>") -> Task:
    """Return ``task`` if it has everything :class:`Task` needs, else raise.

    Args:
        task: The object a recipe's ``task`` callable returned.
        spec: The recipe string, for the message.

    Returns:
        ``task`` unchanged.

    Raises:
        TypeError: Naming the missing methods/attributes and the spec.
    """
    missing = [name for name in _REQUIRED if not callable(getattr(task, name, None))]
    missing += [name for name in ("distill_kinds",) if not hasattr(task, name)]
    if missing:
        raise TypeError(f"task {spec!r} returned {type(task).__name__}, which lacks {missing}")
    kinds = task.distill_kinds  # type: ignore[attr-defined]
    bad = [k for k in kinds if k not in ("classification", "regression")]
    if isinstance(kinds, (str, Mapping)) or bad:
        raise TypeError(f"task {spec!r}: distill_kinds must be a sequence of 'classification'/"
                        f"'regression', got {kinds!r}")
    return task  # type: ignore[return-value]


def task_args_error(error: BaseException, task_args: Mapping[str, Any]) -> str:
    """One line for a task that refused its ``task_args``, naming the recipe key where it can.

    A file-system error whose path is the value of a ``task_args`` key (``FileNotFoundError``
    for ``/data/labels.txt`` given as ``task_args.train_labels``) is reported as
    ``task_args.train_labels: file not found: /data/labels.txt``; other errors as
    ``ExceptionType: message``.

    Example:
        >>> task_args_error(FileNotFoundError(2, "No such file or directory", "/x.txt"), {"train_labels": "/x.txt"})
        'task_args.train_labels: file not found: /x.txt'
    """
    text = " ".join(str(error).split())[:300]
    filename = getattr(error, "filename", None)
    if isinstance(error, OSError) and filename is not None:
        keys = [key for key, value in task_args.items() if isinstance(value, str) and value
                and (value == str(filename) or str(filename).startswith(value.rstrip("/") + "/"))]
        what = "file not found" if isinstance(error, FileNotFoundError) else (error.strerror or text)
        if keys:
            return f"task_args.{keys[0]}: {what}: {filename}"
        return f"{what}: {filename}"
    return f"{type(error).__name__}: {text}"
