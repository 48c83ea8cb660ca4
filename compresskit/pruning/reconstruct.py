"""Least-squares reconstruction of a pruned model's layers from the unpruned model (no labels, no training).

After filters are zeroed, every dense layer (``nn.Conv2d`` with ``groups == 1``, ``nn.Linear``) is refit in
the order the forward pass calls it, so that its output on calibration inputs, fed with the pruned model's
own (already refit) inputs, matches what the same layer outputs in the unpruned model: a ridge
least-squares problem in closed form per layer, damped towards the layer's pruned weights (He et al., ICCV
2017, "Channel Pruning for Accelerating Very Deep Neural Networks"; Luo et al., ICCV 2017, "ThiNet").
A k x k convolution is fit on unfolded input patches at ``positions`` randomly chosen output positions per
calibration batch.

It works on the *soft-zeroed* model (same shapes as the unpruned model; :meth:`~compresskit.pruning.soft_fpgm.SoftFPGM.step`
zeroed the pruned channels): inputs of zeroed channels are exactly zero, so their weight columns are left
alone, and ``on_layer_done`` (e.g. :meth:`SoftFPGM.rezero`) zeroes the layer's own pruned filters again
before the next layer is fit. Removal afterwards (:meth:`SoftFPGM.apply`) is verified as usual: the
physically pruned model computes what the reconstructed soft-zeroed one computes.

Caveats (measured in ``benchmarks/RESULTS.md``): the target is the unpruned model's *pre-normalisation*
output, so it suits a model pruned in one shot from it, not one trained after zeroing (its
normalisation statistics no longer match the unpruned model's); depthwise convolutions cannot compensate for
a lost input and are not refit; a layer the forward pass calls more than once (shared weights) is skipped.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from compresskit.pruning._calibration import as_args, input_rows, is_dense
from compresskit.pruning.batchnorm import following_batchnorms, renormalized
from compresskit.utils.forward import evaluating, forward_with_hooks

__all__ = ["LayerFit", "reconstruct"]


@dataclass(frozen=True)
class LayerFit:
    """One refit layer.

    Attributes:
        name: The layer's module name.
        error_before: ``||X W0 - Y||^2 / ||Y||^2`` on the calibration positions with the pruned weights.
        error_after: The same with the refit weights.
    """

    name: str
    error_before: float
    error_after: float


class _Stop(Exception):
    """Raised by a capture hook: the rest of the forward pass is not needed."""


def _dense_layers_in_call_order(model: nn.Module, batch: tuple[Any, ...]) -> list[str]:
    """Names of the dense layers the forward pass calls exactly once, in the order it calls them."""
    calls: list[str] = []
    names = {module: name for name, module in model.named_modules()}
    forward_with_hooks(model, batch, [(module, lambda module, _i, _o: calls.append(names[module]))
                                      for module in names if is_dense(module)])
    return [name for name in dict.fromkeys(calls) if calls.count(name) == 1]


def _capture(model: nn.Module, layer: nn.Module, batch: tuple[Any, ...], want_input: bool) -> torch.Tensor:
    """The input (``want_input``) or output of ``layer`` when ``model`` runs ``batch``, forward cut short."""
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        captured.append(inputs[0] if want_input else output)
        raise _Stop

    handle = layer.register_forward_hook(hook)
    try:
        with evaluating(model):
            model(*batch)
    except _Stop:
        pass
    finally:
        handle.remove()
    return captured[0]


def _rows(layer: nn.Module, inputs: torch.Tensor, target: torch.Tensor, positions: int,
          generator: torch.Generator, constant: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Design matrix ``X`` (one row per sampled output position, a ones column if ``constant``) and target ``Y``."""
    columns, chosen = input_rows(layer, inputs, positions, generator)
    if chosen is None:
        values = target.reshape(-1, target.shape[-1])
    else:
        values = target.flatten(2)[:, :, chosen].transpose(1, 2).reshape(-1, target.shape[1])  # (N*l, O)
    if constant:  # the bias (or the intercept) is fit as the weight of a constant input
        columns = torch.cat([columns, columns.new_ones(len(columns), 1)], dim=1)
    return columns.double(), values.double()


def _weights(layer: nn.Module, constant: bool) -> torch.Tensor:
    """``(O, C*k*k [+1])``: the layer's weight matrix with its bias (or a zero intercept) as the last column."""
    matrix = layer.weight.detach().flatten(1).double()
    if constant:
        bias = layer.bias.detach().double() if layer.bias is not None else matrix.new_zeros(len(matrix))
        matrix = torch.cat([matrix, bias[:, None]], dim=1)
    return matrix


def _relative_error(weights: torch.Tensor, gram: torch.Tensor, cross: torch.Tensor, energy: float) -> float:
    """``||X W^T - Y||^2 / ||Y||^2`` from ``gram = X^T X``, ``cross = X^T Y``, ``energy = ||Y||^2``."""
    residual = (weights @ gram * weights).sum() - 2 * (weights * cross.T).sum() + energy
    return float(residual.clamp_min(0) / max(energy, 1e-30))


def _refit(model: nn.Module, unpruned: nn.Module, name: str, batches: Sequence[tuple[Any, ...]],
           positions: int, ridge: float, generator: torch.Generator, intercept: bool = False,
           norm: nn.Module | None = None, transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> LayerFit:
    """Refit layer ``name``; with ``intercept`` its bias is not damped, and a bias-free layer gets an intercept
    folded into ``norm.running_mean`` (``norm``: the BatchNorm reading only its output); ``transform`` maps the
    unpruned layer's output to the target."""
    layer, target_layer = model.get_submodule(name), unpruned.get_submodule(name)
    constant = layer.bias is not None or norm is not None
    gram = cross = None
    energy = 0.0
    for batch in batches:
        inputs = _capture(model, layer, batch, want_input=True)
        target = _capture(unpruned, target_layer, batch, want_input=False)
        if transform is not None:
            target = transform(target)
        columns, values = _rows(layer, inputs, target, positions, generator, constant)
        gram = columns.T @ columns if gram is None else gram + columns.T @ columns
        cross = columns.T @ values if cross is None else cross + columns.T @ values
        energy += float((values**2).sum())
    assert gram is not None and cross is not None
    before = _weights(layer, constant)
    live = gram.diagonal() > 0  # zeroed input channels give all-zero columns: their weights stay
    solved = before.clone()
    if live.any():  # min ||X W - Y||^2 + damping ||W - W0||^2: pulled towards the kept weights, not towards 0
        system = gram[live][:, live]
        damping = ridge * system.diagonal().mean()
        identity = torch.eye(len(system), dtype=system.dtype, device=system.device)
        if intercept and constant:  # the intercept is not pulled towards the old bias (or zero)
            identity[-1, -1] = 0
        solved[:, live] = torch.linalg.solve(system + damping * identity,
                                             cross[live] + damping * identity @ before[:, live].T).T
    with torch.no_grad():
        matrix = solved
        if layer.bias is not None:
            layer.bias.copy_(matrix[:, -1].to(layer.bias.dtype))
            matrix = matrix[:, :-1]
        elif norm is not None:  # BN(y + b) with mean m == BN(y) with mean m - b
            norm.running_mean.sub_(matrix[:, -1].to(norm.running_mean.dtype))
            matrix = matrix[:, :-1]
        layer.weight.copy_(matrix.reshape(layer.weight.shape).to(layer.weight.dtype))
    return LayerFit(name, _relative_error(before, gram, cross, energy), _relative_error(solved, gram, cross, energy))


def _check_shapes(model: nn.Module, unpruned: nn.Module, names: Sequence[str]) -> None:
    for name in names:
        try:
            theirs = unpruned.get_submodule(name).weight.shape
        except AttributeError:
            raise ValueError(f"reconstruct: the unpruned model has no layer {name!r}; pass the unpruned model the "
                             f"pruned one came from") from None
        ours = model.get_submodule(name).weight.shape
        if ours != theirs:
            raise ValueError(f"reconstruct needs the soft-zeroed model (same shapes as the unpruned model); layer "
                             f"{name!r} has weight {tuple(ours)} vs {tuple(theirs)}: reconstruct before removal")


def _batchnorm_roles(model: nn.Module, unpruned: nn.Module, name: str, norm_name: str | None, intercept: bool,
                     post_bn: bool) -> tuple[nn.Module | None, Callable[[torch.Tensor], torch.Tensor] | None]:
    """``(BatchNorm taking the intercept, target transform)`` of layer ``name`` (``norm_name``: its sole reader)."""
    if norm_name is None:
        return None, None
    norm = model.get_submodule(norm_name)
    fold = norm if intercept and model.get_submodule(name).bias is None else None
    transform = (functools.partial(renormalized, source=unpruned.get_submodule(norm_name), destination=norm)
                 if post_bn else None)
    return fold, transform


def reconstruct(model: nn.Module, unpruned: nn.Module, batches: Iterable[Any],
                on_layer_done: Callable[[], None] | None = None, positions: int = 2048, ridge: float = 1e-2,
                seed: int = 0, progress: bool = False, intercept: bool = False,
                before_layer: Callable[[str], None] | None = None, post_bn: bool = False) -> list[LayerFit]:
    """Refit ``model``'s dense layers, in call order, to reproduce ``unpruned``'s layer outputs (in place).

    Args:
        model: The soft-zeroed model (same module names and weight shapes as ``unpruned``).
        unpruned: The unpruned model (not changed; run in eval mode).
        batches: Calibration inputs, each a tensor or a tuple of positional inputs (no labels needed);
            all of them are held in memory.
        on_layer_done: Called after each layer is refit (``pruner.rezero`` keeps pruned filters at zero).
        positions: Output positions sampled per batch and convolution (all rows of a linear layer).
        ridge: Damping towards the pruned weights, ``ridge * mean(diag(X^T X)) * ||W - W0||^2``.
        seed: Seed of the position sampling.
        progress: Show a tqdm bar over the layers.
        intercept: Fit an undamped intercept (the mean the removed channels carried): into the bias of a layer
            that has one, else into the ``running_mean`` of the BatchNorm that alone reads the layer's output
            (:func:`compresskit.pruning.batchnorm.following_batchnorms`); other bias-free layers get none.
        before_layer: Called with each layer's name before it is refit (a selection that reads the
            partly refit model: :class:`compresskit.pruning.output_error.SequentialSelection`).
        post_bn: For a layer that a BatchNorm alone reads, fit the unpruned model's output *after* its BatchNorm
            through this model's own BatchNorm (:func:`compresskit.pruning.batchnorm.renormalized`): for a model whose
            normalisation changed after zeroing (trained), not only one pruned in one shot (there it is the same).

    Returns:
        One :class:`LayerFit` per refit layer, in call order.

    Raises:
        ValueError: no calibration batch, or a dense layer whose weight shape differs from the unpruned model's.

    Example:
        >>> unpruned = copy.deepcopy(model)
        >>> pruner = SoftFPGM(groups, schedule=lambda epoch: 0.3)
        >>> pruner.step(0)
        >>> fits = reconstruct(model, unpruned, calibration_images, on_layer_done=pruner.rezero)
        >>> pruner.apply()  # doctest: +SKIP
    """
    calibration = [as_args(batch) for batch in batches]
    if not calibration:
        raise ValueError("reconstruct needs at least one calibration batch")
    names = _dense_layers_in_call_order(model, calibration[0])
    _check_shapes(model, unpruned, names)
    generator = torch.Generator().manual_seed(seed)
    norms = following_batchnorms(model, calibration[0]) if intercept or post_bn else {}
    fits = []
    for name in tqdm(names, desc="reconstruct", disable=not progress):
        if before_layer is not None:
            before_layer(name)
        norm, transform = _batchnorm_roles(model, unpruned, name, norms.get(name), intercept, post_bn)
        fits.append(_refit(model, unpruned, name, calibration, positions, ridge, generator, intercept, norm, transform))
        if on_layer_done is not None:
            on_layer_done()
    return fits
