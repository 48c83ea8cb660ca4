"""Cost features of a channel configuration: what :meth:`compresskit.deploy.latency.LatencyModel.predict`
is linear in.

For the conv / transposed-conv / linear layers of a :class:`compresskit.ParamPredictor` (the
parameter-holding layers of the groups) at given rates, :class:`CostFeatures` computes four numbers:
multiply-accumulates of dense convs and linears, multiply-accumulates of depthwise convs, output
elements of all of them (memory traffic), and a constant 1. The first three are fractions of the
unpruned model's totals. A layer's output positions (``H * W`` of a conv, tokens of a linear) come
from one forward pass at the timed input shape (:func:`output_positions`) and do not change with
channels.

Contract: exact arithmetic on the predictor's channel counts, no model is built; no feature grows
when channels are removed, so non-negative weights make a prediction monotone in every layer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from compresskit.layers.rules import ConvRule, LinearRule, is_depthwise, rule_for
from compresskit.pruning.budget import ParamPredictor
from compresskit.utils.forward import forward_with_hooks

__all__ = ["CostFeatures", "output_positions"]


def output_positions(model: nn.Module, names: Sequence[str], inputs: tuple[torch.Tensor, ...]) -> dict[str, int]:
    """Output positions (``H * W`` of a conv, tokens of a linear) of each named layer, by one forward.

    Layers without ``out_channels`` / ``out_features``, or that did not run, are left out.
    """
    positions: dict[str, int] = {}
    hooks = []
    modules = dict(model.named_modules())
    for name in names:
        module = modules[name]
        width = getattr(module, "out_channels", None) or getattr(module, "out_features", None)
        if width is None:
            continue

        def hook(_module: nn.Module, _args: Any, output: Any, name: str = name, width: int = width) -> None:
            if isinstance(output, torch.Tensor):
                positions[name] = output.numel() // (output.shape[0] * width)

        hooks.append((module, hook))
    forward_with_hooks(model, inputs, hooks)
    return positions


def _mac_settings(module: nn.Module) -> tuple[int, int, bool] | None:
    """``(kernel elements, groups, depthwise)`` of a conv or linear layer; ``None`` for other layers."""
    rule = rule_for(module)
    if isinstance(rule, ConvRule):
        return math.prod(module.kernel_size), module.groups, is_depthwise(module)
    if isinstance(rule, LinearRule):
        return 1, 1, False
    return None


class CostFeatures:
    """The four cost features of ``model`` at given rates (see the module docstring).

    Args:
        model: The unpruned model (run once at ``input_shape``; not modified).
        predictor: Its :class:`~compresskit.ParamPredictor` (channel counts per layer at given rates).
        input_shape: The timed input shape.

    Example:
        >>> features = CostFeatures(model, ParamPredictor(model, groups), (1, 3, 640, 640))  # doctest: +SKIP
        >>> features(0.0)  # doctest: +SKIP
        array([1., 1., 1., 1.])
    """

    def __init__(self, model: nn.Module, predictor: ParamPredictor, input_shape: Sequence[int]) -> None:
        self.predictor = predictor
        names = predictor.layer_names
        modules = dict(model.named_modules())
        positions = output_positions(model, names, (torch.zeros(tuple(input_shape)),))
        settings = [(index, _mac_settings(modules[name])) for index, name in enumerate(names)]
        measured = [(index, setting) for index, setting in settings
                    if setting is not None and names[index] in positions]
        self._index = [index for index, _ in measured]  # positions in the predictor's layer list
        self._positions = np.array([positions[names[index]] for index in self._index], dtype=np.float64)
        self._kernel = np.array([kernel for _, (kernel, _, _) in measured], dtype=np.float64)
        self._groups = np.array([groups for _, (_, groups, _) in measured], dtype=np.float64)
        self._depthwise = np.array([depthwise for _, (_, _, depthwise) in measured], dtype=bool)
        base = self.totals(0.0)
        self._scale = np.where(base > 0, base, 1.0)  # unpruned totals: features are fractions of them

    def totals(self, rates: float | Mapping[str, float]) -> np.ndarray:
        """Dense MACs, depthwise MACs, output elements (absolute) and 1 at ``rates``."""
        channels = self.predictor.layer_channels(rates)
        cin = np.array([channels[i][0] for i in self._index], dtype=np.float64)
        cout = np.array([channels[i][1] for i in self._index], dtype=np.float64)
        per_group_in = np.where(self._depthwise, 1.0, np.floor(cin / self._groups))
        macs = cout * per_group_in * self._kernel * self._positions
        elements = cout * self._positions
        return np.array([macs[~self._depthwise].sum(), macs[self._depthwise].sum(), elements.sum(), 1.0])

    def __call__(self, rates: float | Mapping[str, float]) -> np.ndarray:
        """The features at ``rates``: :meth:`totals` as fractions of the unpruned model's."""
        return self.totals(rates) / self._scale
