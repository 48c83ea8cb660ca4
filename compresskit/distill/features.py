"""Feature distillation: pull a student's named intermediate outputs toward its teacher's.

FitNets (Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015) match a student's intermediate
features to a teacher's. Here the student *is* the teacher's architecture (the teacher itself, or a pruned
copy of it), so no learned regressor is needed: features are matched by module name, and where the student
lost channels the teacher's are selected by the indices the student kept (``kept``, recorded at removal by
:func:`compresskit.distill.kept_channels.match_kept_channels`).

Per feature ``f`` (channel axis 1, as conv / BatchNorm / linear outputs), with ``t_f`` the teacher's feature
restricted to the kept channels::

    L_f = mean((s_f - t_f) ** 2) / max(mean(t_f ** 2), eps)

(scale-free: a layer of large activations does not outweigh a small one; 0 exactly when the student
reproduces the teacher), and the loss is the mean of ``L_f`` over the features.

Caveats:
    * Outputs are recorded by forward hooks (:class:`FeatureRecorder`) and cloned, so an in-place op after
      the module (an ``inplace=True`` activation behind a BatchNorm) does not change what was recorded.
    * A recorded module must return one tensor and run once per forward (a module reused on several
      inputs, e.g. one head shared by the pyramid levels, raises); name its sub-modules instead.
    * The teacher's features are detached: only the student learns.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from typing_extensions import Self

__all__ = ["FeatureRecorder", "feature_loss", "find_modules"]


def find_modules(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Names of ``model``'s sub-modules matching any ``fnmatch`` glob of ``patterns``, in module order.

    Raises:
        ValueError: A pattern matches no sub-module (the message names it).
    """
    names = [name for name, _ in model.named_modules() if name]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise ValueError(f"feature pattern {pattern!r} matches no module of {type(model).__name__}")
    return [name for name in names if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)]


class FeatureRecorder:
    """Record the outputs of named sub-modules of ``model`` during one forward (forward hooks, a context).

    The hooks exist only inside the ``with`` block, so the model is untouched elsewhere (evaluation,
    export, copies).

    Args:
        model: The model whose features are recorded.
        names: Sub-module names (e.g. from :func:`find_modules`).

    Example:
        >>> names = find_modules(model, ["fpn.merge*", "ssh?"])
        >>> with FeatureRecorder(model, names) as recorder:
        ...     outputs = model(images)
        >>> recorder.features  # {"fpn.merge1": tensor, ..., "ssh3": tensor}
    """

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        self.model = model
        self.names = list(names)
        self.features: dict[str, Tensor] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> Self:
        self.features = {}
        self._handles = [self.model.get_submodule(name).register_forward_hook(self._hook(name))
                         for name in self.names]
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            if not isinstance(output, Tensor):
                raise TypeError(f"feature {name!r}: the module returns {type(output).__name__}, not a tensor; "
                                "name its sub-modules instead")
            if name in self.features:
                raise ValueError(f"feature {name!r}: the module ran twice in one recording; name a module "
                                 "that runs once per forward")
            self.features[name] = output.clone()  # an in-place op after the module must not change it

        return record


def feature_loss(student: Mapping[str, Tensor], teacher: Mapping[str, Tensor],
                 kept: Mapping[str, Sequence[int]] | None = None,
                 eps: float = 1e-8) -> tuple[Tensor, dict[str, float]]:
    """Mean normalised squared error of ``student``'s features to ``teacher``'s (module docstring).

    Args:
        student: Features by name, ``[N, C_s, ...]``.
        teacher: The teacher's features by the same names, ``[N, C_t, ...]`` (detached here).
        kept: Per feature whose channels the student lost, the ``C_s`` teacher channel indices it kept.
        eps: Floor of the normaliser ``mean(t ** 2)``.

    Returns:
        ``(loss, logs)``; logs hold ``feat/<name>`` per feature and ``feat``.

    Raises:
        ValueError: The names differ, or a feature's shapes differ and ``kept`` does not map the
            teacher's channels onto the student's (the message names the feature).
    """
    if set(student) != set(teacher) or not student:
        raise ValueError(f"student features {sorted(student)} != teacher features {sorted(teacher)} (or none)")
    kept = kept or {}
    terms, logs = [], {}
    for name in student:
        target = _teacher_channels(name, student[name], teacher[name].detach(), kept.get(name))
        error = (student[name].float() - target.float()).pow(2).mean()
        term = error / target.float().pow(2).mean().clamp_min(eps)
        terms.append(term)
        logs[f"feat/{name}"] = float(term.detach())
    loss = torch.stack(terms).mean()
    logs["feat"] = float(loss.detach())
    return loss, logs


def _teacher_channels(name: str, student: Tensor, teacher: Tensor, kept: Sequence[int] | None) -> Tensor:
    """``teacher`` restricted to the channels ``kept`` (axis 1) when the shapes differ; checked."""
    if student.shape == teacher.shape:
        return teacher
    same_other_axes = student.ndim == teacher.ndim >= 2 and student.shape[:1] + student.shape[2:] == (
        teacher.shape[:1] + teacher.shape[2:])
    if kept is None or not same_other_axes:
        raise ValueError(f"feature {name!r}: student shape {tuple(student.shape)} != teacher shape "
                         f"{tuple(teacher.shape)} and no kept-channel map says which teacher channels "
                         "the student kept (distil features of a model pruned from the teacher)")
    if len(kept) != student.shape[1] or not all(0 <= i < teacher.shape[1] for i in kept):
        raise ValueError(f"feature {name!r}: kept channels ({len(kept)}, max {max(kept, default=-1)}) do not map "
                         f"{teacher.shape[1]} teacher channels onto the student's {student.shape[1]}")
    return teacher.index_select(1, torch.as_tensor(list(kept), device=teacher.device))
