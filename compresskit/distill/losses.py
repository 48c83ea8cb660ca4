"""Weighted knowledge distillation as a loss term.

Per output, the student is pulled toward the teacher:

* ``"classification"``: Hinton et al., "Distilling the Knowledge in a Neural
  Network" (2015): ``KL(softmax(t/T) || softmax(s/T)) * T**2`` over the last
  (class) axis, averaged over the remaining positions (``batchmean`` for 2-D).
* ``"regression"``: smooth-L1 (``beta=1``) or L2 toward the teacher, averaged
  over the last axis and then over positions.

The per-output terms are combined with learnable log-variances ``s_i`` as in
Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses
for Scene Geometry and Semantics" (CVPR 2018): ``sum_i exp(-s_i) * L_i + s_i``,
and the total is ``alpha * KD + (1 - alpha) * task_loss`` (``KD`` alone with ``alpha = 1``, where the
task loss may be left out: ``task_loss=None``).

Caveats:
    * ``s_i`` is bounded *smoothly*: ``s = c + h * tanh((raw - c) / h)`` with
      ``c, h`` the centre and half-width of ``log_variance_range``. A hard clamp
      would zero the gradient once an optimizer step overshoots and freeze ``s``
      at the bound; the tanh keeps a gradient. Near 0, ``s ~ raw``.
    * With learnable weights the KD value can be negative (the ``+ s_i`` terms);
      compare runs by the logged per-term losses, not by the total.
    * Keep ``weight_parameters()`` out of weight decay, otherwise the weights are
      pulled toward 1 regardless of the data.
    * The teacher outputs are detached; masks select *positions* (all axes but
      the last), e.g. priors where the teacher is confident. A mask selecting no
      position contributes an exact zero (with a graph) for that output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["KINDS", "REGRESSION_LOSSES", "WeightedDistillation"]

KINDS = ("classification", "regression")
REGRESSION_LOSSES = ("smooth_l1", "l2")

Outputs = Union[Tensor, Sequence[Tensor], Mapping[str, Tensor]]
MaskFn = Callable[[Tensor], Tensor]


class WeightedDistillation(nn.Module):
    """Knowledge-distillation loss over one or several model outputs.

    Data contract: ``student_out`` and ``teacher_out`` have the same structure —
    a tensor (``kinds`` is one kind or a one-element sequence), a tuple/list
    (``kinds`` a sequence of the same length) or a dict (``kinds`` a mapping with
    the same keys) — and matching shapes per output, ``[..., C]`` with the class
    (or coordinate) axis last. A mask per output is a bool tensor broadcastable to
    ``out.shape[:-1]``.

    Args:
        kinds: ``"classification"`` or ``"regression"`` per output.
        temperature: Softmax temperature ``T > 0`` for classification outputs.
        alpha: Weight of the KD part in ``[0, 1]``; ``1 - alpha`` weighs the task loss.
        regression: ``"smooth_l1"`` or ``"l2"``.
        mask_fns: Optional ``mask_fn(teacher_out) -> bool tensor`` per output (same
            structure as ``kinds``; ``None`` entries mean unmasked). An explicit
            ``mask`` passed to :meth:`forward` takes precedence.
        log_variance_range: Bounds ``(lo, hi)`` with ``lo < 0 < hi`` of the learnable
            log-variances (initialised to 0, i.e. weight 1); ``None`` fixes every
            weight to 1 (plain sum).

    Example:
        >>> distill = WeightedDistillation(
        ...     ["regression", "classification", "regression"],
        ...     mask_fns=[None, None, None], temperature=4.0, alpha=0.7)
        >>> optimizer = torch.optim.AdamW([
        ...     {"params": student.parameters(), "weight_decay": 5e-4},
        ...     {"params": distill.weight_parameters(), "weight_decay": 0.0}])
        >>> with torch.no_grad():
        ...     teacher_out = teacher(images)
        >>> loss, logs = distill(student(images), teacher_out, task_loss)
    """

    def __init__(
        self,
        kinds: str | Sequence[str] | Mapping[str, str],
        temperature: float = 4.0,
        alpha: float = 0.7,
        regression: str = "smooth_l1",
        mask_fns: Sequence[MaskFn | None] | Mapping[str, MaskFn | None] | None = None,
        log_variance_range: tuple[float, float] | None = (-4.0, 4.0),
    ) -> None:
        super().__init__()
        if isinstance(kinds, str):
            kinds = [kinds]
        if isinstance(kinds, Mapping):
            self._keys: list[Any] = list(kinds)
            self._is_mapping = True
            kind_list = [kinds[key] for key in self._keys]
        elif isinstance(kinds, Sequence):
            self._keys = list(range(len(kinds)))
            self._is_mapping = False
            kind_list = list(kinds)
        else:
            raise TypeError(f"kinds must be a str, sequence or mapping, got {kinds!r}")
        if not kind_list:
            raise ValueError("kinds must name at least one output, got an empty collection")
        for key, kind in zip(self._keys, kind_list):
            if kind not in KINDS:
                raise ValueError(f"unknown kind {kind!r} for output {key!r}; valid: {list(KINDS)}")
        self.kinds = kind_list
        if not (isinstance(temperature, (int, float)) and temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        if regression not in REGRESSION_LOSSES:
            raise ValueError(f"unknown regression loss {regression!r}; valid: {list(REGRESSION_LOSSES)}")
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.regression = regression
        self._mask_fns = self._per_output(mask_fns, "mask_fns") if mask_fns is not None else None
        if log_variance_range is None:
            self.raw_log_variances = None
            self._centre = self._half_width = 0.0
        else:
            lo, hi = (float(v) for v in log_variance_range)
            if not (lo < 0.0 < hi):
                raise ValueError(f"log_variance_range must satisfy lo < 0 < hi, got {log_variance_range!r}")
            self._centre, self._half_width = (lo + hi) / 2, (hi - lo) / 2
            # raw such that s(raw) == 0 at start (weight exp(-0) == 1)
            raw0 = self._centre + self._half_width * math.atanh(-self._centre / self._half_width)
            self.raw_log_variances = nn.Parameter(torch.full((len(kind_list),), raw0))

    # ------------------------------------------------------------------ helpers

    @property
    def names(self) -> list[str]:
        """Readable name of each output (dict key or index)."""
        return [str(key) for key in self._keys]

    def weight_parameters(self) -> list[nn.Parameter]:
        """The learnable loss-weight parameters (exclude them from weight decay)."""
        return [] if self.raw_log_variances is None else [self.raw_log_variances]

    def log_variances(self) -> Tensor:
        """Current bounded log-variances ``s_i`` (zeros when weights are fixed)."""
        if self.raw_log_variances is None:
            return torch.zeros(len(self.kinds))
        h = self._half_width
        return self._centre + h * torch.tanh((self.raw_log_variances - self._centre) / h)

    def _per_output(self, value: Any, what: str) -> list[Any]:
        """Flatten ``value`` to a list in output order, checking it matches ``kinds``."""
        if self._is_mapping:
            if not isinstance(value, Mapping):
                raise ValueError(f"{what}: expected a mapping with keys {self._keys}, got {type(value).__name__}")
            if set(value) != set(self._keys):
                raise ValueError(f"{what}: keys {sorted(map(str, value))} != kinds keys {sorted(map(str, self._keys))}")
            return [value[key] for key in self._keys]
        if isinstance(value, Tensor) or value is None:
            value = [value]
        if isinstance(value, Mapping) or not isinstance(value, Sequence):
            raise ValueError(f"{what}: expected a tensor or sequence of {len(self._keys)}, got {type(value).__name__}")
        if len(value) != len(self._keys):
            raise ValueError(f"{what}: expected {len(self._keys)} outputs, got {len(value)}")
        return list(value)

    def _term(self, kind: str, student: Tensor, teacher: Tensor, mask: Tensor | None) -> Tensor:
        """Per-position loss averaged over masked positions."""
        if kind == "classification":
            temperature = self.temperature
            a, b = student.float() / temperature, teacher.float() / temperature
            lse_student, lse_teacher = torch.logsumexp(a, dim=-1), torch.logsumexp(b, dim=-1)
            p_teacher = (b - lse_teacher.unsqueeze(-1)).exp()  # as logsumexp's backward computes softmax(a)
            # KL(p_t || p_s) = sum_c p_t (log p_t - log p_s) = sum_c p_t (b - a) + lse(a) - lse(b) (sum_c p_t = 1):
            # (..., C) -> (...). Its gradient softmax(a) - p_t is exactly 0 for a student equal to the teacher
            # (the textbook form leaves p_t (sum_c p_t - 1), a rounding error that Adam would scale up to lr-sized steps).
            per_position = (p_teacher * (b - a)).sum(-1) + lse_student - lse_teacher
            per_position = per_position * temperature**2
        elif self.regression == "smooth_l1":
            per_position = F.smooth_l1_loss(student.float(), teacher.float(), reduction="none").mean(-1)
        else:
            per_position = F.mse_loss(student.float(), teacher.float(), reduction="none").mean(-1)
        if mask is None:
            return per_position.mean()
        weights = mask.to(per_position.dtype).expand_as(per_position)
        return (per_position * weights).sum() / weights.sum().clamp(min=1.0)

    def _position_mask(self, index: int, name: str, student: Tensor, teacher: Tensor,
                       mask: Tensor | None) -> Tensor | None:
        """The given mask, else ``mask_fns[index](teacher)``, checked: bool, broadcastable to positions."""
        if mask is None and self._mask_fns is not None and self._mask_fns[index] is not None:
            mask = self._mask_fns[index](teacher)
        if mask is None:
            return None
        mask = torch.as_tensor(mask, device=student.device)
        if mask.dtype != torch.bool:
            raise ValueError(f"output {name!r}: mask must be bool, got {mask.dtype}")
        try:
            torch.broadcast_shapes(mask.shape, student.shape[:-1])
        except RuntimeError as error:
            raise ValueError(f"output {name!r}: mask shape {tuple(mask.shape)} does not "
                             f"broadcast to positions {tuple(student.shape[:-1])}") from error
        return mask

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        student_out: Outputs,
        teacher_out: Outputs,
        task_loss: Tensor | None,
        mask: Sequence[Tensor | None] | Mapping[str, Tensor | None] | Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """Return ``(alpha * KD + (1 - alpha) * task_loss, logs)``.

        Args:
            student_out: Student outputs (tensor, tuple/list or dict, as ``kinds``).
            teacher_out: Teacher outputs, same structure and shapes (detached here).
            task_loss: The real task loss (scalar tensor); when the student requires
                grad it must require grad too. ``None`` only with ``alpha == 1`` (no
                label loss: it need not be computed at all).
            mask: Optional bool masks per output (same structure; ``None`` entries
                fall back to ``mask_fns``).

        Returns:
            The loss and logs: ``kd/<name>`` (unweighted term), ``kd_weight/<name>``
            (``exp(-s_i)``), ``log_var/<name>``, ``kd``, ``task`` (not with ``task_loss=None``) and ``loss``.

        Raises:
            TypeError: ``task_loss`` is not a tensor (nor ``None`` with ``alpha == 1``).
            ValueError: Structures, shapes or masks do not match, or ``task_loss``
                is not a scalar or is detached from a student that requires grad.
        """
        students = self._per_output(student_out, "student_out")
        teachers = self._per_output(teacher_out, "teacher_out")
        masks = self._per_output(mask, "mask") if mask is not None else [None] * len(students)
        if task_loss is not None or self.alpha != 1.0:
            _check_task_loss(task_loss, any(s.requires_grad for s in students if isinstance(s, Tensor)))

        log_variances = self.log_variances().to(students[0].device if isinstance(students[0], Tensor) else "cpu")
        terms: list[Tensor] = []
        logs: dict[str, float] = {}
        for index, (name, kind) in enumerate(zip(self.names, self.kinds)):
            student, teacher = _check_pair(name, students[index], teachers[index])
            teacher = teacher.detach()
            position_mask = self._position_mask(index, name, student, teacher, masks[index])
            term = self._term(kind, student, teacher, position_mask)
            s = log_variances[index]
            terms.append(torch.exp(-s) * term + s if self.raw_log_variances is not None else term)
            logs[f"kd/{name}"] = float(term.detach())
            logs[f"kd_weight/{name}"] = float(torch.exp(-s.detach()))
            logs[f"log_var/{name}"] = float(s.detach())
        kd = torch.stack(terms).sum()
        if task_loss is None:  # alpha == 1: no label loss
            loss = kd
        else:
            loss = self.alpha * kd + (1.0 - self.alpha) * task_loss.reshape(())
            logs["task"] = float(task_loss.detach())
        logs.update(kd=float(kd.detach()), loss=float(loss.detach()))
        return loss, logs


def _check_task_loss(task_loss: Any, student_requires_grad: bool) -> None:
    """Raise unless ``task_loss`` is a scalar tensor attached to the graph when the student is."""
    if not isinstance(task_loss, Tensor):
        raise TypeError(f"task_loss must be a tensor (the real task loss), got {task_loss!r}")
    if task_loss.numel() != 1:
        raise ValueError(f"task_loss must be a scalar tensor, got shape {tuple(task_loss.shape)}")
    if student_requires_grad and not task_loss.requires_grad:
        raise ValueError(
            "task_loss does not require grad while the student does: pass the real task loss "
            f"computed from the student outputs, got {task_loss!r}"
        )


def _check_pair(name: str, student: Any, teacher: Any) -> tuple[Tensor, Tensor]:
    """Raise unless ``student`` and ``teacher`` are tensors of one shape with at least one axis."""
    if not isinstance(student, Tensor) or not isinstance(teacher, Tensor):
        raise ValueError(f"output {name!r}: expected tensors, got {type(student).__name__} "
                         f"and {type(teacher).__name__}")
    if student.shape != teacher.shape or student.ndim == 0:
        raise ValueError(f"output {name!r}: student shape {tuple(student.shape)} != "
                         f"teacher shape {tuple(teacher.shape)} (or 0-d)")
    return student, teacher
