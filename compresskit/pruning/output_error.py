"""Channel selection from data: rank a group's channels by the output error their removal causes downstream.

For every dense layer that consumes the group's channels (a conv with ``groups == 1`` or a Linear), the
inputs it receives on calibration data give ``G = X^T X`` over unfolded input patches (one column per input
channel and kernel tap, plus a constant column). Removing the columns ``S`` of one input channel (``k*k``
columns for a ``k x k`` conv) and re-fitting the remaining columns (and an intercept) by least squares to the
layer's original output ``X W^T`` costs exactly

    dE = trace(W_S [(G^-1)_SS]^-1 W_S^T),

the structured Optimal Brain Surgeon step (Hassibi & Stork 1993; per-layer and structured: Frantar &
Alistarh, "Optimal Brain Compression", NeurIPS 2022, ``trueobs.py``). Channels are removed greedily
(backward elimination): each step removes the channel whose removal, with the optimal compensation of what is
left, increases the error least, then updates ``W <- W - W_S [(G^-1)_SS]^-1 (G^-1)_S:`` and
``G^-1 <- G^-1 - (G^-1)_:S [(G^-1)_SS]^-1 (G^-1)_S:`` (the inverse Gram of the remaining columns). A coupled
set's step cost is the sum over all its consumers (a residual channel feeds several layers). The score of a
channel is the step at which it is eliminated (``0`` = removed first), so
:meth:`~compresskit.groups.ChannelGroup.select` at any rate takes exactly the greedy selection.

Each consumer's error is measured after its own BatchNorm where one follows it alone
(:func:`compresskit.pruning.batchnorm.following_batchnorms`): rows of ``W`` are scaled by ``gamma / sqrt(var + eps)``,
so the error is in the units the next layers see. A removed channel is removed with its BatchNorm's beta
(soft zeroing), so the mean it carried is lost too; the constant column prices in that an intercept can
restore it (:func:`compresskit.pruning.reconstruct.reconstruct` with ``intercept=True`` does).

Caveats:
    * The statistics (``G``) are gathered once, from the model as it is at the first call (the unpruned
      model in :func:`compresskit.pruning.soft_fpgm.prune`); later calls reuse them with the current weights. Build a new
      :class:`OutputError` for a changed model.
    * Channels are scored per group against the other channels of the same consumers as they are now;
      channels of other groups that will be removed too are assumed present.
    * A group none of whose consumers is a dense layer (only depthwise convs, or a model output) falls back
      to :func:`compresskit.pruning.importance.fpgm`.
    * Damping ``damping * mean(diag G)`` is added to ``G`` (1 % as in OBC), so dead channels are not singular.

Costs for global allocation (:meth:`OutputError.eliminate`): the error increase of each greedy step, divided per
consumer by that consumer's output variance ``trace(W Cov W^T)`` (after its BatchNorm scale; ``Cov`` is the centred,
undamped input covariance), summed over the consumers, and accumulated: ``curve[k]`` is the relative output error
after removing ``k`` channels with compensation, so groups in different layers compare
(:func:`compresskit.search.global_allocation.allocate_rates`). The order itself is unchanged (unnormalised sums).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from compresskit.groups.channel_group import ChannelGroup
from compresskit.layers.rules import IN
from compresskit.pruning._calibration import as_args, input_rows, is_dense
from compresskit.pruning.batchnorm import following_batchnorms
from compresskit.pruning.importance import fpgm
from compresskit.utils.forward import evaluating

__all__ = ["DATA_IMPORTANCES", "Elimination", "OutputError", "SequentialSelection"]


def _input_rows(layer: nn.Module, inputs: Tensor, positions: int, generator: torch.Generator) -> Tensor:
    """``(P, C*k*k + 1)``: the layer's input patches at ``positions`` sampled output positions, then a ones column."""
    columns = input_rows(layer, inputs, positions, generator)[0].double()
    return torch.cat([columns, columns.new_ones(len(columns), 1)], dim=1)


class _Stop(Exception):
    """Raised by the statistics hook once every requested layer was seen."""


@dataclass
class _Consumer:
    """One consumer during elimination: its (BN-scaled) weights and the inverse Gram of its remaining columns."""

    weights: Tensor  # (O, D + 1)
    inverse: Tensor  # (D + 1, D + 1)
    blocks: dict[int, Tensor]  # group channel -> its columns
    energy: float = 1.0  # output variance trace(W Cov W^T): divides the step costs of global allocation

    def costs(self, channels: list[int]) -> Tensor:
        """Error increase of removing each of ``channels`` alone (0 for channels this layer does not read)."""
        costs = torch.zeros(len(channels), dtype=torch.float64)
        by_size: dict[int, list[int]] = {}
        for position, channel in enumerate(channels):
            if channel in self.blocks:
                by_size.setdefault(len(self.blocks[channel]), []).append(position)
        for positions in by_size.values():
            blocks = torch.stack([self.blocks[channels[p]] for p in positions])  # (n, b)
            hessians = self.inverse[blocks[:, :, None], blocks[:, None, :]]  # (n, b, b)
            removed = self.weights[:, blocks].permute(1, 2, 0)  # (O, n, b) -> (n, b, O)
            solved = torch.linalg.solve(hessians, removed)  # (n, b, O)
            costs[positions] = (removed * solved).sum(dim=(1, 2))
        return costs

    def remove(self, channel: int) -> None:
        """Remove ``channel``'s columns and compensate with the rest (the OBS update)."""
        if channel not in self.blocks:
            return
        block = self.blocks[channel]
        rows = self.inverse[block]  # (b, D + 1)
        hessian = rows[:, block]
        self.weights -= self.weights[:, block] @ torch.linalg.solve(hessian, rows)
        self.inverse -= rows.T @ torch.linalg.solve(hessian, rows)


@dataclass(frozen=True)
class Elimination:
    """One group's greedy backward elimination (:meth:`OutputError.eliminate`).

    Attributes:
        scores: ``[C]``: the step at which each channel is removed (``0`` = first); the importance.
        curve: ``[C + 1]`` float64: ``curve[k]`` is the relative output error after removing the first ``k``
            channels (``curve[0] = 0``, non-decreasing), summed over the group's dense consumers.
    """

    scores: Tensor
    curve: Tensor


class OutputError:
    """Importance from data: greedy least-squares output error of removing each channel (see module docstring).

    Args:
        batches: Calibration inputs (no labels), each a tensor or a tuple of positional inputs; held in memory.
        positions: Output positions sampled per batch and conv layer for the Gram matrices.
        damping: Added to each Gram matrix as ``damping * mean(diag G) * I``.
        seed: Seed of the position sampling.
        layers: Gather statistics of these dense layers only (default: all); the others count as no consumer.

    Raises:
        ValueError: no calibration batch.

    Example:
        >>> importance = OutputError(calibration_batches)
        >>> prune(model, example, 0.5, importance=importance, calibration=calibration_batches)  # doctest: +SKIP
        >>> prune(model, example, 0.5, importance="output_error", calibration=calibration_batches)  # the same
    """

    def __init__(self, batches: Iterable[Any], positions: int = 2048, damping: float = 1e-2, seed: int = 0,
                 layers: Collection[str] | None = None) -> None:
        self.batches = [as_args(batch) for batch in batches]
        if not self.batches:
            raise ValueError("OutputError needs at least one calibration batch")
        self.positions, self.damping, self.seed = positions, damping, seed
        self.layers = None if layers is None else set(layers)
        self._model: nn.Module | None = None
        self._grams: dict[str, Tensor] = {}
        self._batchnorms: dict[str, str] | None = None  # set by SequentialSelection: found once per model

    def _gather(self, model: nn.Module) -> None:
        """``X^T X / rows`` of every dense layer's inputs over the calibration batches (all calls summed)."""
        names = {module: name for name, module in model.named_modules()
                 if is_dense(module) and (self.layers is None or name in self.layers)}
        sums: dict[str, Tensor] = {}
        rows: dict[str, int] = {}
        generator = torch.Generator().manual_seed(self.seed)

        def accumulate(module: nn.Module, inputs: tuple[Any, ...], _output: Any) -> None:
            columns = _input_rows(module, inputs[0].detach(), self.positions, generator)
            name = names[module]
            sums[name] = sums[name] + columns.T @ columns if name in sums else columns.T @ columns
            rows[name] = rows.get(name, 0) + len(columns)
            seen.add(name)
            if self.layers is not None and seen >= self.layers:
                raise _Stop  # the rest of the forward pass is not needed

        hooks = [module.register_forward_hook(accumulate) for module in names]
        try:
            with evaluating(model):
                for batch in self.batches:
                    seen: set[str] = set()
                    try:
                        model(*batch)
                    except _Stop:
                        pass
        finally:
            for hook in hooks:
                hook.remove()
        self._grams = {name: total.cpu() / rows[name] for name, total in sums.items()}
        if self._batchnorms is None or self._model is not None:  # first gather, or another model
            self._batchnorms = following_batchnorms(model, self.batches[0])
        self._model = model

    def _consumer(self, group: ChannelGroup, name: str, index: dict[int, tuple[int, ...]]) -> _Consumer:
        layer = group.model.get_submodule(name)
        taps = math.prod(layer.kernel_size) if isinstance(layer, nn.Conv2d) else 1
        weights = layer.weight.detach().flatten(1).double().cpu()
        weights = torch.cat([weights, weights.new_zeros(len(weights), 1)], dim=1)  # the intercept column
        assert self._batchnorms is not None  # set by _gather
        if name in self._batchnorms:  # the error after the consumer's BatchNorm
            norm = group.model.get_submodule(self._batchnorms[name])
            scale = norm.weight.detach().double().cpu() / (norm.running_var.double().cpu() + norm.eps).sqrt()
            weights = weights * scale[:, None]
        gram = self._grams[name]
        damped = gram + self.damping * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
        blocks = {channel: torch.tensor([i * taps + j for i in idxs for j in range(taps)])
                  for channel, idxs in index.items() if idxs}
        mean = gram[-1, :-1]  # the constant column's row: each input column's mean
        covariance = gram[:-1, :-1] - torch.outer(mean, mean)
        energy = float((weights[:, :-1] @ covariance * weights[:, :-1]).sum())
        return _Consumer(weights, torch.linalg.inv(damped), blocks, energy if energy > 0 else 1.0)

    def eliminate(self, group: ChannelGroup) -> Elimination | None:
        """The greedy elimination of all of ``group``'s channels: scores and cumulative relative cost.

        Returns:
            An :class:`Elimination`, or ``None`` for a group none of whose consumers is a dense layer.
        """
        if self._model is not group.model:
            self._gather(group.model)
        consumers = [self._consumer(group, item.module, item.index) for item in group.items
                     if item.axis == IN and item.kind in ("conv", "linear") and item.module in self._grams]
        if not consumers:
            return None
        alive = list(range(group.num_channels))
        scores = torch.empty(group.num_channels)
        curve = torch.zeros(group.num_channels + 1, dtype=torch.float64)
        for step in range(group.num_channels):
            per_consumer = [consumer.costs(alive) for consumer in consumers]
            position = int(torch.argmin(sum(per_consumer)))  # ties: the lowest index
            channel = alive.pop(position)
            scores[channel] = step
            relative = sum(float(costs[position]) / c.energy for costs, c in zip(per_consumer, consumers))
            curve[step + 1] = curve[step] + max(relative, 0.0)
            for consumer in consumers:
                consumer.remove(channel)
        return Elimination(scores, curve)

    def __call__(self, group: ChannelGroup) -> Tensor:
        elimination = self.eliminate(group)
        return fpgm(group) if elimination is None else elimination.scores


def _dense_consumers(group: ChannelGroup) -> set[str]:
    return {item.module for item in group.items if item.axis == IN and item.kind in ("conv", "linear")}


class SequentialSelection:
    """Select each group's channels on the partly pruned and refit model, just before its first consumer is refit.

    :class:`OutputError` on the unpruned model assumes every other channel is still there. Here the Gram matrices
    are gathered again before each consumer's refit, from the model as :func:`compresskit.pruning.reconstruct.reconstruct`
    has left it (earlier groups removed, earlier layers refit): the selection sees the inputs the pruned model
    will really feed (ThiNet, Luo et al. ICCV 2017; El Halabi et al., NeurIPS 2022: selecting on pruned inputs
    works best). A group none of whose dense consumers is reached is selected by :meth:`finish`.

    Args:
        groups: Channel groups of the model being refit.
        rates: One rate for every group, or ``{layer_group: rate}``.
        batches: Calibration inputs (the ones given to ``reconstruct``).
        damping: As in :class:`OutputError`.

    Example:
        >>> selection = SequentialSelection(groups, 0.5, batches)
        >>> reconstruct(model, unpruned, batches, before_layer=selection.before_layer,
        ...             on_layer_done=selection.rezero, intercept=True)  # doctest: +SKIP
        >>> remove_zeroed(groups, selection.finish())  # doctest: +SKIP
    """

    def __init__(self, groups: Sequence[ChannelGroup], rates: float | Mapping[str, float], batches: Iterable[Any],
                 damping: float = 1e-2) -> None:
        self.groups, self.rates, self.damping = list(groups), rates, damping
        self.batches = [as_args(batch) for batch in batches]
        self.zeroed: list[list[int] | None] = [None] * len(self.groups)
        self._consumers = [_dense_consumers(group) for group in self.groups]
        self._batchnorms: dict[str, str] | None = None

    def _importance(self, layers: set[str] | None) -> OutputError:
        importance = OutputError(self.batches, damping=self.damping, layers=layers)
        if self._batchnorms is None and self.groups:
            self._batchnorms = following_batchnorms(self.groups[0].model, self.batches[0])
        importance._batchnorms = self._batchnorms
        return importance

    def _select(self, pending: list[int], importance: OutputError) -> None:
        for index in pending:  # the statistics were gathered before any of them was zeroed
            group = self.groups[index]
            rate = self.rates if isinstance(self.rates, (int, float)) else self.rates[group.layer_group]
            self.zeroed[index] = group.select(importance(group), rate)
            group.zero_(self.zeroed[index])

    def before_layer(self, name: str) -> None:
        """Select the groups not selected yet that ``name`` consumes (``reconstruct``'s ``before_layer``)."""
        pending = [i for i, done in enumerate(self.zeroed) if done is None and name in self._consumers[i]]
        if pending:
            layers = set().union(*(self._consumers[i] for i in pending))
            self._select(pending, self._importance(layers))

    def rezero(self) -> None:
        """Zero the selected channels again (``reconstruct``'s ``on_layer_done``)."""
        for group, removed in zip(self.groups, self.zeroed):
            if removed:
                group.zero_(removed)

    def finish(self) -> list[list[int]]:
        """Select the groups left, then return the channels to remove per group (for ``remove_zeroed``)."""
        pending = [i for i, done in enumerate(self.zeroed) if done is None]
        if pending:
            self._select(pending, self._importance(None))
        return [list(removed or []) for removed in self.zeroed]


#: Importances computed from calibration data: name -> constructor taking the calibration batches
#: (:func:`compresskit.pruning.soft_fpgm.prune` builds one when given ``importance=name`` and ``calibration=``).
DATA_IMPORTANCES = {"output_error": OutputError}
