"""BatchNorm after pruning: which layer feeds which BatchNorm, and statistics re-estimated on data.

:func:`following_batchnorms` finds the BatchNorm that alone consumes a dense layer's output (``conv -> bn``
with nothing else reading the conv's output), where a shift of that output can be folded exactly into the
BatchNorm's ``running_mean`` (:func:`compresskit.pruning.reconstruct.reconstruct` with ``intercept=True``).

:func:`recalibrate_bn` re-estimates every BatchNorm's running statistics on calibration inputs after
channels were removed (adaptive BN: Li et al., "Revisiting Batch Normalization For Practical Domain
Adaptation", 2016; used to compare pruned candidates without training by EagleEye, Li et al., ECCV 2020;
NNCF's default "BN adaptation" after compression).

Caveats:
    * :func:`recalibrate_bn` runs BatchNorm layers in training mode, so each batch is normalised with its
      own statistics while the later layers' statistics are gathered (the usual adaptive-BN pass, not the
      eval-mode statistics layer by layer). The running mean is then the average of the per-batch means (the
      mean over all inputs when batches have equal sizes); the running variance is the average of the
      per-batch unbiased variances, which leaves out the spread of the batch means.
    * :func:`following_batchnorms` reads the autograd graph of one forward pass: a conv whose output is also
      used by another op (a residual add, a second branch) has no folding BatchNorm.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from compresskit.pruning._calibration import as_args, is_dense

__all__ = ["following_batchnorms", "recalibrate_bn", "renormalized"]


def _graph_uses(outputs: Any) -> Counter:
    """How many autograd nodes take each node's result as an input, over the graph behind ``outputs``."""
    flat = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    tensors = [t for t in flat if isinstance(t, torch.Tensor)]
    uses: Counter = Counter()
    stack = [t.grad_fn for t in tensors if t.grad_fn is not None]
    seen = set(stack)
    while stack:
        node = stack.pop()
        for parent, _ in node.next_functions:
            if parent is None:
                continue
            uses[parent] += 1
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return uses


def following_batchnorms(model: nn.Module, inputs: Any) -> dict[str, str]:
    """``{dense layer name: BatchNorm name}`` for every dense layer whose output only a BatchNorm reads.

    Args:
        model: The model (its mode is restored; parameters are not changed).
        inputs: One batch of example inputs (a tensor or a tuple of positional inputs).

    Returns:
        The pairs where ``bn(layer(x))`` is the only use of ``layer(x)``, so that adding ``b`` to the
        layer's output is the same as subtracting ``b`` from the BatchNorm's ``running_mean``.

    Example:
        >>> following_batchnorms(nn.Sequential(nn.Conv2d(3, 8, 1, bias=False), nn.BatchNorm2d(8)),
        ...                      torch.randn(1, 3, 4, 4))
        {'0': '1'}
    """
    names = {module: name for name, module in model.named_modules()}
    produced: dict[str, tuple[torch.Tensor, Any]] = {}
    pairs: dict[str, str] = {}

    def record_output(module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        produced[names[module]] = (output, output.grad_fn)

    def match_input(module: nn.Module, args: tuple[Any, ...], _output: Any) -> None:
        for name, (tensor, node) in produced.items():
            if args and args[0] is tensor and tensor.grad_fn is node:  # no in-place op in between
                pairs[name] = names[module]

    hooks = [module.register_forward_hook(record_output) for module in names if is_dense(module)]
    hooks += [module.register_forward_hook(match_input) for module in names
              if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    args = tuple(a.detach().requires_grad_() if torch.is_tensor(a) and a.is_floating_point() else a
                 for a in as_args(inputs))
    was_training = model.training
    try:
        model.eval()
        with torch.enable_grad():
            outputs = model(*args)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    uses = _graph_uses(outputs)
    return {name: bn for name, bn in pairs.items() if uses[produced[name][1]] == 1}


def renormalized(output: torch.Tensor, source: nn.Module, destination: nn.Module) -> torch.Tensor:
    """The input that ``destination`` (eval mode) maps to where ``source`` maps ``output``, per channel (dim 1).

    ``destination^-1(source(y))``: ``(gamma_s (y - mean_s) / sqrt(var_s + eps_s) + beta_s - beta_d)
    * sqrt(var_d + eps_d) / gamma_d + mean_d``. Channels where ``gamma_d == 0`` (soft-zeroed: the destination
    ignores its input there) keep ``output``.
    """
    shape = (1, -1) + (1,) * (output.dim() - 2)

    def affine(norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (norm.weight.detach().reshape(shape), norm.bias.detach().reshape(shape),
                norm.running_mean.reshape(shape))

    def scale(norm: nn.Module) -> torch.Tensor:
        return (norm.running_var + norm.eps).sqrt().reshape(shape)

    gamma_s, beta_s, mean_s = affine(source)
    gamma_d, beta_d, mean_d = affine(destination)
    normalized = gamma_s * (output - mean_s) / scale(source) + beta_s
    live = gamma_d != 0
    mapped = (normalized - beta_d) * scale(destination) / torch.where(live, gamma_d, torch.ones_like(gamma_d)) + mean_d
    return torch.where(live, mapped, output)


def recalibrate_bn(model: nn.Module, batches: Iterable[Any]) -> int:
    """Re-estimate every BatchNorm's running statistics on ``batches`` (in place; no gradients).

    The running statistics are reset and accumulated as a cumulative average (``momentum=None``) with only
    the BatchNorm layers in training mode (dropout and the rest stay in eval mode); modes and momenta are
    restored afterwards. Nothing but the running statistics (and ``num_batches_tracked``) changes.

    Args:
        model: Any model; BatchNorm layers without running statistics are left alone.
        batches: Inputs, each a tensor or a tuple of positional inputs (no labels); all held in memory.

    Returns:
        How many BatchNorm layers were re-estimated.

    Raises:
        ValueError: no batch.

    Example:
        >>> prune(model, example, 0.5, calibration=batches)  # doctest: +SKIP
        >>> recalibrate_bn(model, batches)  # doctest: +SKIP
    """
    calibration = [as_args(batch) for batch in batches]
    if not calibration:
        raise ValueError("recalibrate_bn needs at least one calibration batch")
    norms = [m for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    modes = {module: module.training for module in model.modules()}
    momenta = {norm: norm.momentum for norm in norms}
    try:
        model.eval()
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None
            norm.train()
        with torch.no_grad():
            for batch in calibration:
                model(*batch)
    finally:
        for module, training in modes.items():
            module.training = training
        for norm, momentum in momenta.items():
            norm.momentum = momentum
    return len(norms)
