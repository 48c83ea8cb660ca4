"""What ``compresskit inspect`` reports: per-layer channels, parameters and MACs, before and after pruning.

:func:`layer_table` runs one forward pass with hooks on every conv / linear layer and counts its
multiply-accumulates (conv: output elements x input channels per group x kernel size; linear:
output elements x input features), the same convention as :func:`compresskit.count_macs` restricted
to these layers. :func:`describe` puts a model (and, for a pruned checkpoint, the unpruned model its
builder makes) into one JSON-ready dict.

Caveats:
    * MACs of matmuls outside ``nn.Linear`` (attention) are in the total, not in any layer row.
    * "before" is the builder's fresh model: same architecture as the one pruned, not its weights.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from compresskit.layers.rules import ConvRule, LinearRule, rule_for
from compresskit.utils.forward import evaluating

__all__ = ["check_forward", "describe", "layer_table"]


def _layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    if isinstance(rule_for(module), ConvRule):
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        return output.numel() * per_output
    return output.numel() * module.in_features  # nn.Linear


def layer_table(model: nn.Module, inputs: tuple[torch.Tensor, ...] | None) -> dict[str, dict[str, Any]]:
    """``{layer name: {kind, in, out, params, macs}}`` of every conv / linear layer.

    ``macs`` is ``None`` when ``inputs`` is None or the layer did not run in the forward pass.

    Raises:
        ValueError: The forward pass fails on ``inputs`` (one line: the shape and the first line
            of the model's error).
    """
    rows: dict[str, dict[str, Any]] = {}
    hooks = []
    for name, module in model.named_modules():
        rule = rule_for(module)
        if isinstance(rule, (ConvRule, LinearRule)):
            conv = isinstance(rule, ConvRule)
            rows[name] = {"kind": type(module).__name__,
                          "in": module.in_channels if conv else module.in_features,
                          "out": module.out_channels if conv else module.out_features,
                          "params": sum(p.numel() for p in module.parameters(recurse=False)),
                          "macs": None}

            def hook(module: nn.Module, args: Any, output: Any, name: str = name) -> None:
                if isinstance(output, torch.Tensor):
                    rows[name]["macs"] = (rows[name]["macs"] or 0) + _layer_macs(module, output)

            hooks.append(module.register_forward_hook(hook))
    try:
        if inputs is not None:
            check_forward(model, inputs)
    finally:
        for handle in hooks:
            handle.remove()
    return rows


def check_forward(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
    """Run ``model(*inputs)`` once in eval mode without gradients.

    Raises:
        ValueError: The model rejects the input (one line: the shape, the first line of the
            model's error, and the fix).
    """
    try:
        with evaluating(model):
            model(*inputs)
    except Exception as error:  # noqa: BLE001 - the model rejects this input: the user's to fix
        shape = ",".join(str(v) for v in inputs[0].shape)
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"the model does not accept an input of shape {shape} ({type(error).__name__}: "
                         f"{first[:200]}); give --input-shape as the model expects, e.g. 1,3,224,224") from None


def describe(model: nn.Module, inputs: tuple[torch.Tensor, ...] | None,
             before: nn.Module | None = None) -> dict[str, Any]:
    """A JSON-ready summary: totals and layers of ``model`` and, if given, of ``before``.

    Returns:
        ``{"model": type name, "params": int, "macs": int | None, "layers": {...}}`` plus
        ``"before": {"params", "macs", "layers"}`` when ``before`` is given (each layer row of
        the model then also has ``out_before`` and ``macs_before``).
    """
    from compresskit.pruning.budget import count_macs, count_params

    result: dict[str, Any] = {"model": type(model).__name__, "params": count_params(model),
                              "layers": layer_table(model, inputs)}
    result["macs"] = count_macs(model, inputs) if inputs is not None else None
    if before is not None:
        layers = layer_table(before, inputs)
        result["before"] = {"params": count_params(before),
                            "macs": count_macs(before, inputs) if inputs is not None else None}
        for name, row in result["layers"].items():
            row["out_before"] = layers.get(name, {}).get("out")
            row["macs_before"] = layers.get(name, {}).get("macs")
    return result
