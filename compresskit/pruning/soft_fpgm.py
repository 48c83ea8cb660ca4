"""Soft filter pruning with FPGM, then exact physical removal.

:class:`SoftFPGM` implements soft filter pruning (SFP; He et al., "Soft Filter
Pruning for Accelerating Deep Convolutional Neural Networks", IJCAI 2018) with the
geometric-median criterion (FPGM; He et al., CVPR 2019): at every epoch end the
channels of each coupled group are re-ranked and the lowest-ranked ones are set to
zero, across the whole coupled set (producer filters and biases, BatchNorm gamma
and beta, every producer into a residual add), but stay trainable, so they may
recover. The rate follows a schedule such as AGP's cubic ramp (Zhu & Gupta 2017,
:mod:`compresskit.pruning.schedules`), always against the original channel counts.

:meth:`SoftFPGM.apply` then removes exactly the channels zeroed at the last step
(never re-ranking). Because every producer of a removed channel was zeroed, the
channel contributes exactly zero to its consumers, and the pruned model computes
what the soft-zeroed model computed (in eval mode; up to float summation order).

Caveats:
    * Between steps the optimizer updates zeroed filters (that is SFP). The
      soft == hard equality holds for the model as zeroed at the last step;
      ``on_train_end`` re-zeroes the stored channels so the trained model matches.
      Use ``zero_every_step=True`` to keep them at zero after every optimizer step.
    * ``apply`` replaces parameters: rebuild optimizers, schedulers and EMA copies.
      The groups refer to the old shapes afterwards; call ``find_groups`` again to
      prune further. An optimizer built before ``apply`` that is stepped again emits a
      :class:`compresskit.pruning.stale.StaleOptimizerWarning` (once per optimizer).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from compresskit.groups.find import ChannelGroup, SkippedCoupling, find_groups
from compresskit.groups.surgery import ChannelOp, inexact_reason, remove_channels
from compresskit.pruning.budget import LayerChange, channel_counts, channel_summary, count_params, rates_by_layer_group
from compresskit.pruning.importance import Importance, fpgm, resolve_importance
from compresskit.pruning.output_error import DATA_IMPORTANCES
from compresskit.pruning.schedules import Schedule
from compresskit.pruning.stale import retire

__all__ = ["HISTORY_ATTRIBUTE", "PruneSummary", "SoftFPGM", "prune", "remove_zeroed"]

#: Every physical removal appends its ops (plain lists) to ``model.<HISTORY_ATTRIBUTE>``;
#: :func:`compresskit.save_pruned` stores it and :func:`compresskit.load_pruned` replays it.
HISTORY_ATTRIBUTE = "compresskit_history"


@dataclass
class PruneSummary:
    """What a physical removal did.

    Attributes:
        layers: Channel counts of every conv/linear/BN layer before and after.
        skipped: Couplings left unpruned by ``find_groups``, with reasons.
        params_before: Parameter count before removal.
        params_after: Parameter count after removal.
        history: The removal ops of this step, ``[module, axis, indices, size]`` lists.
    """

    layers: list[LayerChange]
    skipped: list[SkippedCoupling]
    params_before: int
    params_after: int
    history: list[list[Any]] = field(repr=False)

    @property
    def changed_layers(self) -> list[LayerChange]:
        """Only the layers whose channel counts changed."""
        return [layer for layer in self.layers if layer.changed]

    def __str__(self) -> str:
        lines = [
            f"params {self.params_before} -> {self.params_after} "
            f"({100.0 * (1 - self.params_after / max(self.params_before, 1)):.1f}% removed)",
            f"{'layer':<40} {'type':<16} {'in':>11} {'out':>11}",
        ]
        for layer in self.changed_layers:
            lines.append(
                f"{layer.name:<40} {layer.kind:<16} {layer.in_before:>4} -> {layer.in_after:<4}"
                f" {layer.out_before:>4} -> {layer.out_after:<4}"
            )
        for skipped in self.skipped:
            lines.append(f"skipped {skipped.name}: {skipped.reason}")
        return "\n".join(lines)


def _model_of(groups: Sequence[ChannelGroup]) -> nn.Module | None:
    model = getattr(groups, "model", None)
    if model is None and len(groups):
        model = groups[0].model
    return model


def remove_zeroed(
    groups: Sequence[ChannelGroup],
    removed: Sequence[Sequence[int]],
    verify: bool = True,
) -> PruneSummary:
    """Physically remove channels ``removed[i]`` of ``groups[i]`` from their model, in place.

    Args:
        groups: Channel groups of one model (from :func:`compresskit.find_groups`).
        removed: Per group, the channel indices to remove (e.g. those zeroed by SoftFPGM).
        verify: Before touching the model, remove exactly these channels from a float64 copy
            and require its outputs on the groups' example inputs to equal the soft-zeroed
            copy's (relative 1e-9); groups without example inputs are not checked.

    Returns:
        A :class:`PruneSummary`; the ops are also appended to ``model.compresskit_history``.

    Raises:
        ValueError: lengths differ, or ``verify`` and the outputs differ (the message names
            the groups whose removal alone is not exact; the model is left unchanged).
    """
    if len(removed) != len(groups):
        raise ValueError(f"need one index list per group: {len(groups)} groups, {len(removed)} lists")
    model = _model_of(groups)
    skipped = list(getattr(groups, "skipped", []))
    if model is None:
        return PruneSummary([], skipped, 0, 0, [])
    ops: list[ChannelOp] = []
    for group, indices in zip(groups, removed):
        bad = [i for i in indices if not 0 <= i < group.num_channels]
        if bad:
            raise ValueError(f"group {group.name!r} has {group.num_channels} channels, got indices {bad}")
        ops += group.ops(indices)
    example_inputs = getattr(groups, "example_inputs", None)
    if verify and example_inputs is not None:
        _verify(model, example_inputs, groups, removed, ops)
    before, params_before = channel_counts(model), count_params(model)
    old_parameters = list(model.parameters())
    remove_channels(model, ops)
    kept = {id(parameter) for parameter in model.parameters()}
    retire(p for p in old_parameters if id(p) not in kept)  # an optimizer still holding them warns
    step = [op.to_list() for op in ops]
    history = getattr(model, HISTORY_ATTRIBUTE, None)
    if not isinstance(history, list):
        history = []
        setattr(model, HISTORY_ATTRIBUTE, history)
    history.append(step)
    return PruneSummary(channel_summary(before, model), skipped, params_before, count_params(model), step)


def _verify(
    model: nn.Module,
    example_inputs: Any,
    groups: Sequence[ChannelGroup],
    removed: Sequence[Sequence[int]],
    ops: list[ChannelOp],
) -> None:
    reason = inexact_reason(model, example_inputs, ops)
    if reason is None:
        return
    culprits = [
        group.name for group, indices in zip(groups, removed)
        if indices and inexact_reason(model, example_inputs, group.ops(indices)) is not None
    ]
    where = f" (alone not exact: {', '.join(culprits)})" if culprits else " (only in combination)"
    raise ValueError(
        f"pruned model would differ from the soft-zeroed model: {reason}{where}; the model was not "
        "changed: leave those groups out (protect=...) or report the architecture"
    )


class SoftFPGM:
    """Soft filter pruning callback: re-rank and zero channels at each epoch end.

    Args:
        groups: Channel groups from :func:`compresskit.find_groups`.
        schedule: ``epoch -> rate`` for all layer groups, or a mapping layer group -> schedule.
        importance: ``group -> scores`` (higher = keep) or a name in ``IMPORTANCES``.
        zero_every_step: Also re-zero the stored channels after every optimizer step.

    Example:
        >>> groups = find_groups(model, torch.randn(1, 3, 32, 32), protect=["fc"])
        >>> pruner = SoftFPGM(groups, polynomial(0.0, 0.5, start=0, end=10))
        >>> fit(model, loss_fn, loader, epochs=12, make_optimizer=..., callbacks=[pruner])
        >>> summary = pruner.apply()   # remove the channels zeroed at the last epoch
    """

    def __init__(
        self,
        groups: Sequence[ChannelGroup],
        schedule: Schedule | Mapping[str, Schedule],
        importance: str | Importance = fpgm,
        zero_every_step: bool = False,
    ) -> None:
        self.groups = groups
        names = sorted(getattr(groups, "layer_groups", None) or {g.layer_group for g in groups})
        if isinstance(schedule, Mapping):
            unknown = sorted(set(schedule) - set(names))
            if unknown:
                raise ValueError(f"schedule names unknown layer group(s) {unknown}; valid: {names}")
            missing = sorted({g.layer_group for g in groups} - set(schedule))
            if missing:
                raise ValueError(f"schedule missing for layer group(s) {missing}")
            for name, value in schedule.items():
                if not callable(value):
                    raise TypeError(f"schedule for {name!r} must be callable, got {value!r}")
        elif not callable(schedule):
            raise TypeError(f"schedule must be callable or a mapping of callables, got {schedule!r}")
        self.schedule = schedule
        self.layer_groups = names
        self.importance = resolve_importance(importance)
        self.zero_every_step = bool(zero_every_step)
        self.zeroed: list[list[int]] | None = None
        self.rates: dict[str, float] = {}
        self._applied = False

    def rates_at(self, epoch: int) -> dict[str, float]:
        """Scheduled rate per layer group after ``epoch`` completed epochs."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        if isinstance(self.schedule, Mapping):
            rates = {name: float(self.schedule[name](epoch)) for name in self.schedule}
            rates.update({name: 0.0 for name in self.layer_groups if name not in rates})
        else:
            rates = {name: float(self.schedule(epoch)) for name in self.layer_groups}
        return rates_by_layer_group(rates, self.layer_groups)

    def step(self, epoch: int) -> dict[str, float]:
        """Re-rank every group and zero its lowest channels to ``schedule(epoch)``.

        Returns:
            The rate used per layer group.
        """
        if self._applied:
            raise ValueError("channels were already removed by apply(); call find_groups again")
        rates = self.rates_at(epoch)
        zeroed = []
        for group in self.groups:
            removed = group.select(self.importance(group), rates[group.layer_group])
            group.zero_(removed)
            zeroed.append(removed)
        self.zeroed, self.rates = zeroed, rates
        return rates

    def zeroed_indices(self) -> dict[str, list[int]]:
        """Channels zeroed at the last step, by group name."""
        if self.zeroed is None:
            return {}
        return {group.name: list(removed) for group, removed in zip(self.groups, self.zeroed)}

    def rezero(self) -> None:
        """Zero the channels of the last step again (no re-ranking)."""
        if self.zeroed is not None and not self._applied:
            for group, removed in zip(self.groups, self.zeroed):
                group.zero_(removed)

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs: the channels zeroed at the last step and its rates (plain data)."""
        return {"zeroed": self.zeroed, "rates": dict(self.rates)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (e.g. from a training checkpoint) and re-zero those channels."""
        zeroed = state["zeroed"]
        if zeroed is not None and len(zeroed) != len(self.groups):
            raise ValueError(f"pruner state has {len(zeroed)} groups, this pruner {len(self.groups)}")
        self.zeroed = None if zeroed is None else [[int(i) for i in removed] for removed in zeroed]
        self.rates = {str(k): float(v) for k, v in state["rates"].items()}
        self.rezero()

    def on_train_start(self, state: Any) -> None:
        # A pruner restored with load_state_dict continues: re-ranking already-zeroed filters could
        # pick other channels than the uninterrupted run did.
        if self.zeroed is None:
            self.step(state.epoch)
        else:
            self.rezero()

    def on_step_end(self, state: Any) -> None:
        if self.zero_every_step:
            self.rezero()

    def on_epoch_end(self, state: Any) -> None:
        self.step(state.epoch)

    def on_train_end(self, state: Any) -> None:
        self.rezero()

    def apply(self, verify: bool = True) -> PruneSummary:
        """Physically remove exactly the channels zeroed at the last step.

        Args:
            verify: First check on a float64 copy that soft-zeroed and pruned outputs agree on
                the groups' example inputs (see :func:`remove_zeroed`); raise if not.

        Raises:
            ValueError: no step was taken yet, or already applied, or verification failed.
        """
        if self.zeroed is None:
            raise ValueError("SoftFPGM.apply() needs a step() first")
        if self._applied:
            raise ValueError("SoftFPGM.apply() was already called")
        summary = remove_zeroed(self.groups, self.zeroed, verify=verify)
        self._applied = True
        return summary


def prune(
    model: nn.Module,
    example_inputs: Any,
    rates: float | Mapping[str, float],
    groups: Sequence[ChannelGroup] | None = None,
    protect: Sequence[str] = (),
    importance: str | Importance = "fpgm",
    verify: bool = True,
    calibration: Iterable[Any] | None = None,
) -> nn.Module:
    """One-shot structured pruning: rank, zero and remove in one call (in place).

    Args:
        model: The model to prune (modified in place and returned).
        example_inputs: Inputs for tracing (a tensor or a tuple of positional inputs).
        rates: One rate for all layer groups, or ``{layer_group: rate}``.
        groups: Groups from ``find_groups(model, ...)``; found here when omitted.
        protect: Module globs whose outputs are kept (only when ``groups`` is omitted).
        importance: A name in ``IMPORTANCES``, a name in ``DATA_IMPORTANCES`` (built from ``calibration``,
            e.g. ``"output_error"``: :class:`compresskit.pruning.output_error.OutputError`) or a callable.
        verify: Check soft-zeroed vs pruned outputs (float64 copy) before changing the model;
            raise ``ValueError`` rather than return a model that differs.
        calibration: Inputs (no labels) to refit the remaining weights on before removal, so that each
            dense layer reproduces the unpruned model's output (:func:`compresskit.pruning.reconstruct.reconstruct`);
            ``None``: the kept weights are left as they are.

    Returns:
        ``model``, pruned.

    Raises:
        ValueError: a data importance without ``calibration``, or groups of another model.

    Example:
        >>> pruned = prune(model, torch.randn(1, 3, 32, 32), 0.3, protect=["fc"])
        >>> pruned = prune(model, example, 0.5, importance="output_error", calibration=batches)  # doctest: +SKIP
    """
    if isinstance(importance, str) and importance in DATA_IMPORTANCES:
        if calibration is None:
            raise ValueError(f"importance {importance!r} is computed from data: pass calibration=[inputs, ...]")
        calibration = list(calibration)
        importance = DATA_IMPORTANCES[importance](calibration)
    if groups is None:
        groups = find_groups(model, example_inputs, protect=protect)
    elif protect:
        raise ValueError(f"protect={protect!r} is only used when groups are found here; pass it to find_groups")
    if _model_of(groups) not in (None, model):
        raise ValueError("groups were found on a different model")
    reference = None if calibration is None else copy.deepcopy(model)
    pruner = SoftFPGM(groups, schedule=_constant_rates(rates), importance=importance)
    pruner.step(0)
    if reference is not None:
        from compresskit.pruning.reconstruct import reconstruct

        reconstruct(model, reference, calibration, on_layer_done=pruner.rezero)
    pruner.apply(verify=verify)
    return model


def _constant_rates(rates: float | Mapping[str, float]) -> Schedule | dict[str, Schedule]:
    if isinstance(rates, Mapping):
        return {name: (lambda epoch, rate=rate: rate) for name, rate in rates.items()}
    return lambda epoch: rates
