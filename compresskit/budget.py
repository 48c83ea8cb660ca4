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
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ._surgery import BOTH, IN, OUT, is_depthwise, run_model
from .groups import ChannelGroup, cell_removal_counts, channels_to_remove

__all__ = [
    "LayerChange",
    "ParamPredictor",
    "channel_counts",
    "channel_summary",
    "count_macs",
    "count_params",
    "predict_params",
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
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            run_model(model, example_inputs)
    finally:
        model.train(was_training)
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
    """``{name: (class name, in channels, out channels)}`` of convs, linears and BNs."""
    counts = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            counts[name] = (type(module).__name__, module.in_channels, module.out_channels)
        elif isinstance(module, nn.Linear):
            counts[name] = (type(module).__name__, module.in_features, module.out_features)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            counts[name] = (type(module).__name__, module.num_features, module.num_features)
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


def _rates_by_layer_group(rates: float | Mapping[str, float], names: Sequence[str]) -> dict[str, float]:
    """Validate ``rates`` (a float or ``{layer_group: rate}``) against the layer groups."""
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


@dataclass
class _Layer:
    kind: str
    in_channels: int
    out_channels: int
    groups: int
    kernel: int
    bias: bool
    depthwise: bool

    def params(self, removed_in: int, removed_out: int) -> int:
        cin, cout = self.in_channels - removed_in, self.out_channels - removed_out
        bias = cout if self.bias else 0
        if self.kind == "conv":
            groups = cout if self.depthwise else self.groups
            return cout * (cin // groups) * self.kernel + bias
        if self.kind == "conv_transpose":
            return cin * (cout // self.groups) * self.kernel + bias
        if self.kind == "linear":
            return cout * cin + bias
        if self.kind == "bn":
            return 2 * cout if self.bias else 0
        if self.kind == "prelu":
            return cout if self.bias else 0
        return 0


def _describe(module: nn.Module) -> _Layer | None:
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = 1
        for k in module.kernel_size:
            kernel *= k
        kind = "conv_transpose" if module.transposed else "conv"
        return _Layer(kind, module.in_channels, module.out_channels, module.groups, kernel,
                      module.bias is not None, is_depthwise(module))
    if isinstance(module, nn.Linear):
        return _Layer("linear", module.in_features, module.out_features, 1, 1, module.bias is not None, False)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return _Layer("bn", module.num_features, module.num_features, 1, 1, module.affine, False)
    if isinstance(module, nn.PReLU):
        n = module.num_parameters
        return _Layer("prelu", n, n, 1, 1, n > 1, False)
    return None


class ParamPredictor:
    """Exact parameter count of the pruned model for given rates, without building it.

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
        modules = dict(model.named_modules())
        self._layers: list[_Layer] = []
        self._base: list[int] = []
        index_of: dict[str, int] = {}
        #: Module name of each entry of ``_layers`` (what :meth:`layer_channels` reports).
        self.layer_names: list[str] = []
        # per group: its layer group, balanced flag, per cell (size, [(layer index, axis, multiplicity)]),
        # and its channel multiple
        self._groups: list[tuple[str, bool, list[tuple[int, list[tuple[int, int, int]]]], int]] = []
        axis_codes = {OUT: 0, IN: 1, BOTH: 2}
        for group in groups:
            items = []  # (layer index, axis code, item.index) of the items that hold parameters
            for item in group.items:
                layer = _describe(modules[item.module]) if item.module in modules else None
                if layer is None:
                    continue
                if item.module not in index_of:
                    index_of[item.module] = len(self._layers)
                    self._layers.append(layer)
                    self.layer_names.append(item.module)
                    self._base.append(layer.params(0, 0))
                items.append((index_of[item.module], axis_codes[item.axis], item.index))
            cells = []
            for cell in group.cells:
                multiplicities = [(layer, axis, len(index.get(cell[0], ()))) for layer, axis, index in items]
                cells.append((len(cell), [term for term in multiplicities if term[2]]))
            self._groups.append((group.layer_group, group.balanced, cells, group.multiple))

    def _removed(self, rates: float | Mapping[str, float]) -> list[list[int]]:
        """``[in, out]`` channels removed from each layer of ``layer_names`` at ``rates``."""
        by_group = _rates_by_layer_group(rates, self.layer_groups)
        removed = [[0, 0] for _ in self._layers]  # [in, out] per layer
        for layer_group, balanced, cells, multiple in self._groups:
            counts = cell_removal_counts([size for size, _ in cells], by_group[layer_group], balanced, multiple)
            for (size, terms), count in zip(cells, counts):
                if not count:
                    continue
                for layer, axis, multiplicity in terms:
                    if axis == 2:
                        removed[layer][0] += count * multiplicity
                        removed[layer][1] += count * multiplicity
                    else:
                        removed[layer][1 - axis] += count * multiplicity
        return removed

    def layer_channels(self, rates: float | Mapping[str, float]) -> list[tuple[int, int]]:
        """``(in, out)`` channels of each parameter-holding layer (``layer_names`` order) at ``rates``."""
        return [(layer.in_channels - r_in, layer.out_channels - r_out)
                for layer, (r_in, r_out) in zip(self._layers, self._removed(rates))]

    def __call__(self, rates: float | Mapping[str, float]) -> int:
        """Parameters after pruning at ``rates`` (a float, or ``{layer_group: rate}``)."""
        removed = self._removed(rates)
        total = self.total
        for layer, base, (r_in, r_out) in zip(self._layers, self._base, removed):
            if r_in or r_out:
                total -= base - layer.params(r_in, r_out)
        return total


def predict_params(model: nn.Module, groups: Sequence[ChannelGroup], rates: float | Mapping[str, float]) -> int:
    """One-off :class:`ParamPredictor` call (build the predictor once when calling often)."""
    return ParamPredictor(model, groups)(rates)
