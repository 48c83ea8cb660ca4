"""Budgets: parameter and MAC counts, and exact parameter prediction for given rates.

:class:`ParamPredictor` answers "how many parameters would the physically pruned
model have at these rates?" exactly and without building it (a rate search calls
it thousands of times). It uses the same rate -> channel-count function as the
pruner (:func:`compresskit.groups.cell_removal_counts`) and the same per-module
formulas as the layers themselves, so ``predictor(rates) == count_params(pruned)``.

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` (maintained in PyTorch
itself; it sees functional ``F.conv2d`` calls inside custom modules, which
hook-based counters such as Torch-Pruning's ``count_ops_and_params`` miss).

Caveats:
    ``count_macs`` counts multiply-accumulates of convolutions, linear layers and
    matrix products (FLOPs / 2). BatchNorm, activations, pooling and element-wise
    ops are not counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from compresskit.groups.find import ChannelGroup, cell_removal_counts, channels_to_remove
from compresskit.groups.surgery import run_model
from compresskit.layers.rules import BOTH, IN, OUT, Axis, ParamCount, rule_for
from compresskit.utils.forward import evaluating

__all__ = [
    "LayerChange",
    "ParamPredictor",
    "channel_counts",
    "channel_summary",
    "count_macs",
    "count_params",
    "predict_params",
    "rates_by_layer_group",
]


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, example_inputs: Any) -> int:
    """Multiply-accumulates of one forward pass on ``example_inputs`` (conv/linear/matmul).

    Example:
        >>> count_macs(nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.randn(1, 3, 4, 4))
        3456
    """
    counter = FlopCounterMode(display=False)
    with evaluating(model), counter:
        run_model(model, example_inputs)
    return counter.get_total_flops() // 2


@dataclass(frozen=True)
class LayerChange:
    """Channel counts of one layer before and after pruning."""

    name: str
    kind: str
    in_before: int
    in_after: int
    out_before: int
    out_after: int

    @property
    def changed(self) -> bool:
        return self.in_before != self.in_after or self.out_before != self.out_after


def channel_counts(model: nn.Module) -> dict[str, tuple[str, int, int]]:
    """``{name: (class name, in channels, out channels)}`` of the layers whose rule reports channels
    (:meth:`compresskit.layers.LayerRule.channels`: convs, linears and batch norms)."""
    counts = {}
    for name, module in model.named_modules():
        rule = rule_for(module)
        channels = None if rule is None else rule.channels(module)
        if channels is not None:
            counts[name] = (type(module).__name__, *channels)
    return counts


def channel_summary(
    before: nn.Module | Mapping[str, tuple[str, int, int]],
    after: nn.Module | Mapping[str, tuple[str, int, int]],
) -> list[LayerChange]:
    """Per-layer channel table of two models (or :func:`channel_counts` snapshots).

    Args:
        before: The original model (e.g. a ``copy.deepcopy`` taken before pruning).
        after: The pruned model.

    Returns:
        One :class:`LayerChange` per conv/linear/BN layer present in both, in order.
    """
    first = channel_counts(before) if isinstance(before, nn.Module) else before
    second = channel_counts(after) if isinstance(after, nn.Module) else after
    return [
        LayerChange(name, kind, cin, second[name][1], cout, second[name][2])
        for name, (kind, cin, cout) in first.items()
        if name in second
    ]


def rates_by_layer_group(rates: float | Mapping[str, float], names: Sequence[str]) -> dict[str, float]:
    """``{layer_group: rate}`` for every name in ``names``, from one rate or a mapping (validated).

    Raises:
        ValueError: a mapping names an unknown layer group or misses one, or a rate is out of [0, 1).
        TypeError: ``rates`` is neither a number nor a mapping.
    """
    if isinstance(rates, Mapping):
        unknown = sorted(set(rates) - set(names))
        if unknown:
            raise ValueError(f"unknown layer group(s) {unknown} in rates; valid: {sorted(names)}")
        missing = sorted(set(names) - set(rates))
        if missing:
            raise ValueError(f"rates missing for layer group(s) {missing}")
        out = dict(rates)
    elif isinstance(rates, (int, float)) and not isinstance(rates, bool):
        out = {name: float(rates) for name in names}
    else:
        raise TypeError(f"rates must be a float or a mapping layer group -> rate, got {rates!r}")
    for rate in out.values():
        channels_to_remove(1, rate)  # validates type and range, naming the bad value
    return out


class _Layer(NamedTuple):
    """A parameter-holding layer as found: channel counts and its parameter formula."""

    in_channels: int
    out_channels: int
    count: ParamCount


class _Term(NamedTuple):
    """Removing one channel of a cell removes ``multiplicity`` channels on ``axis`` of ``layer``."""

    layer: int
    axis: Axis
    multiplicity: int


class ParamPredictor:
    """Exact parameter count of the pruned model for given rates, without building it.

    Every parameter-holding module of a group (one whose layer rule has a
    :meth:`~compresskit.layers.LayerRule.params` formula) is snapshotted at construction; a
    call turns rates into channels removed per cell (:func:`compresskit.groups.cell_removal_counts`),
    sums them per layer and axis, and re-evaluates the formulas of the layers that changed.

    Args:
        model: The model the groups were found on (unpruned).
        groups: Its channel groups (from :func:`compresskit.find_groups`).

    Example:
        >>> predictor = ParamPredictor(model, groups)
        >>> predictor(0.3) == count_params(prune(copy.deepcopy(model), x, 0.3))
        True
    """

    def __init__(self, model: nn.Module, groups: Sequence[ChannelGroup]) -> None:
        self.total = count_params(model)
        self.layer_groups = sorted({g.layer_group for g in groups})
        if hasattr(groups, "layer_groups"):
            self.layer_groups = sorted(groups.layer_groups)  # type: ignore[attr-defined]
        #: Module name of each parameter-holding layer (the order of :meth:`layer_channels`).
        self.layer_names: list[str] = []
        self._layers: list[_Layer] = []
        self._base: list[int] = []  # parameters of each layer before pruning
        self._layer_index: dict[str, int] = {}  # module name -> position in layer_names
        # per group: its layer group, balanced flag, per cell (size, terms), and its channel multiple
        self._groups: list[tuple[str, bool, list[tuple[int, list[_Term]]], int]] = []
        modules = dict(model.named_modules())
        for group in groups:
            items = self._parameter_items(group, modules)
            cells = []
            for cell in group.cells:
                terms = [_Term(layer, axis, len(index.get(cell[0], ()))) for layer, axis, index in items]
                cells.append((len(cell), [term for term in terms if term.multiplicity]))
            self._groups.append((group.layer_group, group.balanced, cells, group.multiple))

    def _parameter_items(self, group: ChannelGroup, modules: dict[str, nn.Module]) -> list[tuple[int, Axis, Any]]:
        """``(layer index, axis, channel index)`` of the group's items that hold parameters,
        registering each new layer."""
        items = []
        for item in group.items:
            module = modules.get(item.module)
            rule = None if module is None else rule_for(module)
            count = None if rule is None else rule.params(module)
            if count is None:
                continue
            if item.module not in self._layer_index:
                layer = _Layer(rule.size(module, IN), rule.size(module, OUT), count)
                self._layer_index[item.module] = len(self.layer_names)
                self.layer_names.append(item.module)
                self._layers.append(layer)
                self._base.append(count(layer.in_channels, layer.out_channels))
            items.append((self._layer_index[item.module], item.axis, item.index))
        return items

    def _removed(self, rates: float | Mapping[str, float]) -> tuple[list[int], list[int]]:
        """Input and output channels removed from each layer of ``layer_names`` at ``rates``."""
        by_group = rates_by_layer_group(rates, self.layer_groups)
        removed_in, removed_out = [0] * len(self._layers), [0] * len(self._layers)
        for layer_group, balanced, cells, multiple in self._groups:
            counts = cell_removal_counts([size for size, _ in cells], by_group[layer_group], balanced, multiple)
            for (_, terms), count in zip(cells, counts):
                if not count:
                    continue
                for term in terms:
                    if term.axis in (IN, BOTH):
                        removed_in[term.layer] += count * term.multiplicity
                    if term.axis in (OUT, BOTH):
                        removed_out[term.layer] += count * term.multiplicity
        return removed_in, removed_out

    def layer_channels(self, rates: float | Mapping[str, float]) -> list[tuple[int, int]]:
        """``(in, out)`` channels of each parameter-holding layer (``layer_names`` order) at ``rates``."""
        removed_in, removed_out = self._removed(rates)
        return [(layer.in_channels - r_in, layer.out_channels - r_out)
                for layer, r_in, r_out in zip(self._layers, removed_in, removed_out)]

    def __call__(self, rates: float | Mapping[str, float]) -> int:
        """Parameters after pruning at ``rates`` (a float, or ``{layer_group: rate}``)."""
        total = self.total
        removed_in, removed_out = self._removed(rates)
        for layer, base, r_in, r_out in zip(self._layers, self._base, removed_in, removed_out):
            if r_in or r_out:
                total -= base - layer.count(layer.in_channels - r_in, layer.out_channels - r_out)
        return total


def predict_params(model: nn.Module, groups: Sequence[ChannelGroup], rates: float | Mapping[str, float]) -> int:
    """One-off :class:`ParamPredictor` call (build the predictor once when calling often)."""
    return ParamPredictor(model, groups)(rates)
