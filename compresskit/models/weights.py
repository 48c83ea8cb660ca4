"""Weights named in a recipe: loading them, checking them before training, inheriting them.

A recipe names weights in two places: ``teacher.checkpoint`` (the trained model to compress or
distil from) and ``student.checkpoint`` (a student that is already trained). ``student.init_from:
teacher`` instead copies into the freshly built student every teacher tensor whose name and shape
match (e.g. a shared backbone), in the spirit of "inherited weights" initialisation of
pruning/distillation pipelines (Hinton et al. 2015, Sanh et al. 2019, "DistilBERT").

One loader serves every command: :func:`load_weights` calls the task's own
``load_checkpoint(model, path)`` when the task has one (a task may know official key names,
wrapper dicts, ``module.`` prefixes ...), else a strict ``load_state_dict`` of a plain or
``{"state_dict": ...}``-wrapped state dict read with ``torch.load(weights_only=True)``.

:func:`compresskit.run.plan.load_recipe_checkpoints` loads every checkpoint a recipe names into a
freshly built model with it, before any phase runs (``compresskit run --dry-run`` too), so a wrong file
is one line naming the recipe key, the file and the first mismatching keys.

Caveats:
    ``init_from`` matches by name and shape only: a tensor with the same name and shape but a
    different meaning (e.g. a re-purposed head) is copied too. The summary says how many were.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compresskit.models.bypass import drop_bypassed

__all__ = ["InheritSummary", "check_state_dict", "inherit_matching", "load_weights",
           "load_state_dict_file"]

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``path`` (``weights_only=True``), unwrapped from ``{"state_dict": ...}``.

    Raises:
        ValueError: the file cannot be read as weights, or holds no mapping of tensors.
    """
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # noqa: BLE001 - pickled objects, truncated files: say which file
        first_line = (str(error).splitlines() or [""])[0]
        raise ValueError(f"{path}: cannot be read as a weights-only torch checkpoint ({first_line})") from None
    if isinstance(checkpoint, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(checkpoint.get(key), Mapping):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, Mapping) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(checkpoint).__name__}")
    return dict(checkpoint)


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path, hint: str = "") -> None:
    """Raise ``ValueError`` unless ``state`` has exactly ``model``'s keys and shapes.

    The one-line message names ``path``, the architecture, the first missing, unexpected and wrongly
    shaped keys, then ``hint`` (what the caller's user should do).
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad_shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                  for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or bad_shapes:
        raise ValueError(f"{path}: does not match {type(model).__name__} ({len(missing)} missing keys, e.g. "
                         f"{missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]}; "
                         f"{len(bad_shapes)} wrong shapes, e.g. {bad_shapes[:3]}){hint}")


def _strict_load(model: nn.Module, path: str | Path) -> nn.Module:
    state = drop_bypassed(model, load_state_dict_file(path))
    check_state_dict(model, state, path)
    model.load_state_dict(state, strict=True)
    return model


def load_weights(task: Any, model: nn.Module, path: str | Path) -> nn.Module:
    """Load the weights file ``path`` into ``model`` strictly, with the task's loader if it has one.

    Args:
        task: The recipe's task; its optional ``load_checkpoint(model, path)`` is used when present.
        model: A freshly built model of the architecture the file was saved from.
        path: The weights file.

    Returns:
        ``model``.

    Raises:
        ValueError: the file does not hold weights for this model (message names the file and the
            first mismatching keys).
        FileNotFoundError: no such file.

    Example:
        >>> load_weights(task, task.build_model("retinaface_mnet025"), "mnet.pth")  # doctest: +SKIP
    """
    loader: Callable[[nn.Module, Any], Any] | None = getattr(task, "load_checkpoint", None)
    if loader is None:
        return _strict_load(model, path)
    loader(model, path)
    return model


@dataclass(frozen=True)
class InheritSummary:
    """What :func:`inherit_matching` copied.

    Attributes:
        tensors: State-dict entries copied (parameters and buffers).
        params: Parameter elements copied (buffers not counted).
        student_params: All parameter elements of the student.
        skipped: Teacher entries whose name exists in the student with another shape.
    """

    tensors: int
    params: int
    student_params: int
    skipped: tuple[str, ...] = ()

    def describe(self) -> str:
        share = self.params / self.student_params if self.student_params else 0.0
        return (f"inherited {self.tensors} tensors / {self.params:,} of {self.student_params:,} parameters "
                f"({share:.1%}) from the teacher; {len(self.skipped)} same-name tensors differ in shape")


@torch.no_grad()
def inherit_matching(student: nn.Module, teacher: nn.Module) -> InheritSummary:
    """Copy into ``student`` every teacher state-dict tensor whose name and shape match.

    Args:
        student: The model that receives the tensors (changed in place).
        teacher: The source model (unchanged).

    Returns:
        An :class:`InheritSummary` of what was copied.

    Example:
        >>> from mypkg.models import build_model  # doctest: +SKIP
        >>> summary = inherit_matching(build_model("small"), build_model("large"))  # doctest: +SKIP
        >>> summary.describe()  # doctest: +SKIP
        'inherited 284 tensors / 214,330 of 454,024 parameters (47.2%) from the teacher; ...'
    """
    source = teacher.state_dict()
    target = student.state_dict()
    parameter_names = {name for name, _ in student.named_parameters()}
    tensors = params = 0
    skipped = []
    for name, tensor in target.items():
        if name not in source:
            continue
        if source[name].shape != tensor.shape:
            skipped.append(name)
            continue
        tensor.copy_(source[name])
        tensors += 1
        params += tensor.numel() if name in parameter_names else 0
    return InheritSummary(tensors=tensors, params=params,
                          student_params=sum(p.numel() for p in student.parameters()),
                          skipped=tuple(skipped))
