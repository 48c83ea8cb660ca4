"""Building Torch-Pruning's dependency graph of a model, with our layers and fixes plugged in.

:func:`build_graph` runs ``tp.DependencyGraph().build_dependency`` on the model and returns the
graph with three additions the coupled-set traversal (:mod:`compresskit.groups._coupling`) relies on:

* ``graph.compresskit_failures``: ``{node: error}`` for ops whose index mapping Torch-Pruning
  could not build (it raised); the build carries on and the sets reaching them are skipped;
* ``graph.compresskit_shapes``: ``{autograd node: (output shape, [input shapes])}`` from one
  backward pass, from which :func:`compresskit.groups._routing.derive_routing` has already rewritten
  the split/slice/concat/reshape/inline-shuffle index mappings;
* custom pruners: :class:`~compresskit.layers.shuffle.ChannelShuffle` couples its inputs and outputs
  through its permutation, :class:`~compresskit.layers.pool.ChannelPool` consumes its inputs and
  produces 1-2 maps that belong to no set.

While tracing, every ``nn.Linear`` on a 3-D/4-D input is one autograd node
(:class:`_LinearNode`), so a token MLP's widths are the Linear's own channels. The model's
mode is restored; its parameters and ``.grad`` are untouched.
"""

from __future__ import annotations

import contextlib
import threading
import types
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import Tensor, nn
from torch_pruning.dependency import index_mapping as tp_index_mapping
from torch_pruning.dependency.dependency import Dependency

from compresskit.groups._routing import Permute, derive_routing
from compresskit.groups.surgery import flatten_outputs, run_model
from compresskit.layers.pool import ChannelPool
from compresskit.layers.shuffle import ChannelShuffle
from compresskit.layers.tracing import tracing

__all__ = ["build_graph"]


class _CustomLayerPruner(tp.BasePruningFunc):
    """Torch-Pruning hooks for our own layers; surgery itself lives in ``_surgery``.

    ``prune_in_channels`` and ``prune_out_channels`` are distinct functions, so
    Torch-Pruning adds no dependency between a layer's input and output channels:
    a ChannelShuffle gets its permutation from :func:`_add_shuffle_dependencies`,
    a ChannelPool needs none (its inputs are consumed, its outputs are new maps).
    """

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        return layer


class _ShufflePruner(_CustomLayerPruner):
    TARGET_MODULES = ChannelShuffle

    def get_out_channels(self, layer: nn.Module) -> int | None:
        return layer.traced_channels

    def get_in_channels(self, layer: nn.Module) -> int | None:
        return layer.traced_channels


class _PoolPruner(_CustomLayerPruner):
    TARGET_MODULES = ChannelPool

    def get_out_channels(self, layer: nn.Module) -> int | None:
        return len(layer.reductions)

    def get_in_channels(self, layer: nn.Module) -> int | None:
        return layer.num_channels


def _add_shuffle_dependencies(graph: tp.DependencyGraph, pruner: _ShufflePruner) -> None:
    """Couple each shuffle's inputs and outputs through its permutation."""
    for module, node in graph.module2node.items():
        if not isinstance(module, ChannelShuffle) or module.traced_channels is None:
            continue
        source = module.source_index(module.traced_channels).tolist()  # out j <- in source[j]
        in_to_out = [0] * len(source)
        for out_position, in_position in enumerate(source):
            in_to_out[in_position] = out_position
        forward = Dependency(pruner.prune_in_channels, pruner.prune_out_channels, node, node)
        forward.index_mapping[0] = Permute(in_to_out)
        backward = Dependency(pruner.prune_out_channels, pruner.prune_in_channels, node, node)
        backward.index_mapping[0] = Permute(source)
        node.dependencies += [forward, backward]


class _LinearNode(torch.autograd.Function):
    """``F.linear`` on any leading shape ``(*, in) -> (*, out)`` as one autograd node.

    Autograd records a Linear on a 3-D/4-D input (ViT tokens, ConvNeXt's channels-last MLP) as
    view -> addmm -> view; the graph tracer then maps only the last view to the module and
    sees a bare ``addmm`` mixing channels. While tracing, :func:`_whole_linears` runs such
    Linears through this node instead, so the module's in/out channels are its last axis.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        rows, grad_rows = x.reshape(-1, x.shape[-1]), grad.reshape(-1, grad.shape[-1])  # (*, c) -> (M, c)
        grad_bias = grad_rows.sum(0) if ctx.has_bias else None
        return grad @ weight, grad_rows.t() @ rows, grad_bias


def _linear_forward(module: nn.Linear, x: Tensor) -> Tensor:
    if x.dim() <= 2:
        return F.linear(x, module.weight, module.bias)
    return _LinearNode.apply(x, module.weight, module.bias)


@contextlib.contextmanager
def _whole_linears(model: nn.Module) -> Iterator[None]:
    """Run every ``nn.Linear`` of ``model`` through :class:`_LinearNode` (instance attributes, restored)."""
    linears = [m for m in model.modules() if type(m) is nn.Linear and "forward" not in vars(m)]
    try:
        for module in linears:
            module.forward = types.MethodType(_linear_forward, module)
        yield
    finally:
        for module in linears:
            vars(module).pop("forward", None)


_BUILD_LOCK = threading.Lock()
_UPDATERS = (
    "update_concat_index_mapping",
    "update_split_index_mapping",
    "update_reshape_index_mapping",
    "update_unbind_index_mapping",
    "update_expand_index_mapping",
    "update_slice_index_mapping",
)


@contextlib.contextmanager
def _tolerant_index_mapping(failures: dict[Any, str]) -> Iterator[None]:
    """While building, an op whose index mapping Torch-Pruning cannot work out is recorded in
    ``failures`` (node -> error) instead of aborting the whole build.

    Three or more inline ``view/transpose/view`` channel shuffles make Torch-Pruning's reshape
    mapping divide by zero; every set that reaches such a node is skipped with that reason.
    """
    originals = {name: getattr(tp_index_mapping, name) for name in _UPDATERS if hasattr(tp_index_mapping, name)}

    def tolerant(update: Any) -> Any:
        def wrapped(graph: Any, node: Any) -> None:
            try:
                update(graph, node)
            except Exception as error:  # noqa: BLE001 - Torch-Pruning gave up on this op
                failures[node] = f"{type(error).__name__}: {error}"
        return wrapped

    try:
        for name, update in originals.items():
            setattr(tp_index_mapping, name, tolerant(update))
        yield
    finally:
        for name, update in originals.items():
            setattr(tp_index_mapping, name, update)


def build_graph(model: nn.Module, example_inputs: Any) -> tuple[tp.DependencyGraph, set[Any]]:
    """Trace ``model`` with Torch-Pruning (mode restored afterwards).

    Returns:
        The graph and the autograd nodes that produced the model outputs.
    """
    was_training = model.training
    pruner = _ShufflePruner()
    outputs: list[Any] = []

    def forward(module: nn.Module, inputs: Any) -> Any:
        output = run_model(module, inputs)
        outputs.append(output)
        return output
    failures: dict[Any, str] = {}
    try:
        # the lock: _tolerant_index_mapping swaps functions of Torch-Pruning's module for the build
        with _BUILD_LOCK, torch.enable_grad(), tracing(), _tolerant_index_mapping(failures), _whole_linears(model):
            graph = tp.DependencyGraph().build_dependency(
                model,
                example_inputs,
                forward_fn=forward,
                customized_pruners={ChannelShuffle: pruner, ChannelPool: _PoolPruner()},
                # Raw nn.Parameters (e.g. BiFPN fusion weights) are never pruned; a
                # per-channel raw parameter makes its set fail the numerical check.
                ignored_params=list(model.parameters()),
                verbose=False,
            )
    finally:
        model.train(was_training)
    graph.compresskit_failures = failures
    _add_shuffle_dependencies(graph, pruner)
    tensors = [t for t in flatten_outputs(outputs[0]) if t.grad_fn is not None]
    graph.compresskit_shapes = _record_shapes(model, tensors)
    derive_routing(graph)
    return graph, {t.grad_fn for t in tensors}


def _record_shapes(model: nn.Module, outputs: list[Any]) -> dict[Any, tuple[Any, list[Any]]]:
    """``{autograd node: (output shape, [input shapes])}`` from one backward pass.

    Gradients are taken with ``torch.autograd.grad`` (nothing is accumulated into
    ``.grad``); a node's hook sees the gradient of its output and of each input.
    """
    shapes: dict[Any, tuple[Any, list[Any]]] = {}
    handles = []
    seen: set[Any] = set()
    stack = [t.grad_fn for t in outputs]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)

        def hook(grad_inputs: Any, grad_outputs: Any, node: Any = node) -> None:
            out = grad_outputs[0].shape if grad_outputs and grad_outputs[0] is not None else None
            shapes[node] = (out, [g.shape if g is not None else None for g in grad_inputs])

        try:
            handles.append(node.register_hook(hook))
        except (RuntimeError, AttributeError):
            continue
        stack.extend(f for f, _ in getattr(node, "next_functions", ()))
    parameters = [p for p in model.parameters() if p.requires_grad]
    try:
        if parameters:
            torch.autograd.grad(
                outputs, parameters, grad_outputs=[torch.ones_like(t) for t in outputs], allow_unused=True,
                retain_graph=True,  # op_reason still reads saved tensors
            )
    except RuntimeError:
        shapes.clear()  # no shape information: fall back to Torch-Pruning's couplings
    finally:
        for handle in handles:
            handle.remove()
    return shapes
