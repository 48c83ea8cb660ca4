"""Coupled channel sets from Torch-Pruning's dependency graph, plus our own checks.

Torch-Pruning (Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023)
traces the autograd graph and propagates channel indices through residual adds,
concatenations, splits, depthwise convs and flatten->linear. We keep its graph and
replace or add what it gets wrong or lacks:

* index relations are derived, not assumed: split/chunk/slice/concat offsets come from the
  autograd edges (output numbers) and recorded shapes (:func:`_derive_routing`), flatten strides
  from recorded shapes, inline ``view/transpose/view`` channel shuffles are recognised
  (:func:`_derive_shuffles`); the traversal keeps every (index, root) pair, and roots that reach
  one channel through two paths become one unit (:func:`_channel_units`, e.g. a ghost module's
  ``cat([x1, cheap(x1)])`` into a residual add couples ``j`` with ``j + C/2``);
* an op whose mapping Torch-Pruning cannot build (it raises) skips the sets that reach it, and
  a graph build that fails skips the whole model, with the reason: never a crash;
* ``nn.Linear`` on any leading shape is one node while tracing (:class:`_LinearNode`);
  attention modules with ``num_heads`` and q/k/v Linears get sets of whole heads
  (:func:`_head_groups`);

* :class:`~compresskit.shuffle.ChannelShuffle` is registered as a custom layer whose
  input->output dependency carries the shuffle permutation;
* :class:`~compresskit.pool.ChannelPool` is registered as a custom layer with no
  input->output dependency: its input channels are a consumer (like a conv's input),
  its 1-2 output maps belong to no coupled set;
* grouped convs (``1 < groups < channels``) become balance constraints (``cells``),
  and coupled sets that share one grouped conv are merged into one set;
* layers and graph ops we cannot keep exact (norms over several channels, inline reductions
  over the channel axis such as ``x.mean(dim=1)``, channel mixing outside a known
  layer such as a deformable conv written with ``F.conv2d``/``unfold``) mark their
  coupled set as unprunable, with a reason.

Everything found here is still verified numerically by :func:`compresskit.find_groups`.
"""

from __future__ import annotations

import contextlib
import math
import threading
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import Tensor, nn
from torch_pruning import _helpers
from torch_pruning import ops as tp_ops
from torch_pruning._helpers import _HybridIndex
from torch_pruning.dependency import index_mapping as tp_index_mapping
from torch_pruning.dependency.dependency import Dependency

from ._surgery import BOTH, IN, OUT, axis_size, flatten_outputs, is_attention, is_depthwise, run_model
from ._tracing import tracing
from .pool import ChannelPool
from .shuffle import ChannelShuffle

_MIXING_OPS = (
    "Convolution",
    "Mm",
    "Addmm",
    "Bmm",
    "Baddbmm",
    "Im2Col",
    "Col2Im",
    "GridSampler",
    "Linear",
    "Einsum",
)
_REDUCTIONS = (
    "Mean",
    "Sum",
    "Max",
    "Amax",
    "Min",
    "Amin",
    "Std",
    "Var",
    "Norm",
    "LinalgVectorNorm",
    "Logsumexp",
    "Softmax",
    "LogSoftmax",
    "Prod",
    "Median",
)
_GRAPH_OPS = (
    tp_ops._ElementWiseOp,
    tp_ops._ConcatOp,
    tp_ops._SplitOp,
    tp_ops._ReshapeOp,
    tp_ops._SliceOp,
    tp_ops._UnbindOp,
    tp_ops._ExpandOp,
)


@dataclass
class Item:
    """One module axis (or graph op) touched by a coupled set.

    ``index`` maps each channel of the set (a *root* index) to the indices it occupies
    on this axis: one for most layers, ``H*W`` for a Linear after a flatten, none where
    a split routes the channel elsewhere.
    """

    module: str
    kind: str  # "conv", "conv_transpose", "linear", "bn", "prelu", "shuffle", "pool", "heads", "op"
    axis: str
    size: int
    index: dict[int, tuple[int, ...]]
    groups: int = 1  # > 1 only for grouped (not depthwise) convs
    tied: bool = False  # an inline shuffle's input keyed by slot: sets sharing it are merged


@dataclass
class RawGroup:
    """A coupled channel set before layer-group assignment."""

    root: str
    num_channels: int
    items: list[Item]
    reason: str | None = None
    protected: bool = False
    cells: list[list[int]] = field(default_factory=list)
    balanced: bool = False  # grouped convs / chunks: cells lose channels in proportion to their sizes


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


class _Permute:
    """Index mapping through a permutation (list: new position of each old index)."""

    def __init__(self, mapping: list[int]) -> None:
        self.mapping = mapping

    def __call__(self, idxs: list[_HybridIndex]) -> list[_HybridIndex]:
        return [_HybridIndex(idx=self.mapping[i.idx], root_idx=i.root_idx) for i in idxs]


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
        forward.index_mapping[0] = _Permute(in_to_out)
        backward = Dependency(pruner.prune_out_channels, pruner.prune_in_channels, node, node)
        backward.index_mapping[0] = _Permute(source)
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


class _Route:
    """Index mapping along every autograd edge between two graph nodes (``[(a_range, b_offset)]``).

    ``a_range = (start, stop, step)`` selects the source channels that travel along one edge
    (one output of a split, a slice, or everything); ``b_offset`` is where they land in the
    target (a concat input's offset, or 0). ``reverse`` maps target indices back.
    """

    def __init__(self, edges: list[tuple[tuple[int, int, int], int, int]], reverse: bool) -> None:
        self.edges = edges  # ((start, stop, step), b_offset, b_size)
        self.reverse = reverse

    def __call__(self, idxs: list[_HybridIndex]) -> list[_HybridIndex]:
        out: dict[tuple[int, Any], None] = {}
        for (start, stop, step), b_offset, b_size in self.edges:
            for i in idxs:
                if self.reverse:
                    part = i.idx - b_offset
                    if 0 <= part < b_size:
                        out[(start + part * step, i.root_idx)] = None
                elif start <= i.idx < stop and (i.idx - start) % step == 0:
                    out[(b_offset + (i.idx - start) // step, i.root_idx)] = None
        return [_HybridIndex(idx=idx, root_idx=root) for idx, root in out]


def _output_ranges(grad_fn: Any) -> list[tuple[int, int, int]] | None:
    """Channel range ``(start, stop, step)`` of each output of a split/slice over dim 1, else ``None``."""
    name = grad_fn.name() if grad_fn is not None else ""
    sizes = getattr(grad_fn, "_saved_self_sym_sizes", None)
    if sizes is None or len(sizes) < 2 or not hasattr(grad_fn, "_saved_dim"):
        return None
    if _normalise_dims(grad_fn._saved_dim, len(sizes)) != {1}:
        return None
    channels = int(sizes[1])
    if name.startswith("SplitWithSizesBackward"):
        bounds = [0]
        for size in grad_fn._saved_split_sizes:
            bounds.append(bounds[-1] + int(size))
        return [(bounds[k], bounds[k + 1], 1) for k in range(len(bounds) - 1)]
    if name.startswith("SplitBackward"):
        size = int(grad_fn._saved_split_size)
        return [(k, min(k + size, channels), 1) for k in range(0, channels, size)]
    if name.startswith("SliceBackward"):
        start, end, step = (int(v) for v in (grad_fn._saved_start, grad_fn._saved_end, grad_fn._saved_step))
        start, end = (v + channels if v < 0 else v for v in (start, end))
        return [(max(start, 0), min(end, channels), step)]
    return None


_VIEWS = ("ViewBackward", "UnsafeViewBackward", "ReshapeAliasBackward", "_ReshapeAliasBackward")


def _set_mapping(source: Any, target: Any, forward: Any, backward: Any) -> None:
    """Index mappings of the dependencies ``source -> target`` and ``target -> source``."""
    for dep in source.dependencies:
        if dep.target is target:
            dep.index_mapping = [forward, None]
    for dep in target.dependencies:
        if dep.target is source:
            dep.index_mapping = [backward, None]


def _inline_shuffle(fn: Any, shapes: dict[Any, Any]) -> tuple[list[Any], int, int] | None:
    """``([view, transpose, (clone,) view] grad_fns, groups, channels)`` if ``fn`` ends an inline
    channel shuffle ``x.view(N, g, C/g, *).transpose(1, 2)(.contiguous()).view(N, C, *)``."""
    if fn is None or not fn.name().startswith(_VIEWS) or not fn.next_functions:
        return None
    chain = [fn]
    node = fn.next_functions[0][0]
    if node is not None and node.name().startswith("CloneBackward"):
        chain.append(node)
        node = node.next_functions[0][0]
    if node is None:
        return None
    name = node.name()
    swaps = (name.startswith("TransposeBackward") and {int(node._saved_dim0), int(node._saved_dim1)} == {1, 2}) or (
        name.startswith("PermuteBackward") and tuple(node._saved_dims)[:3] == (0, 2, 1)
        and tuple(node._saved_dims)[3:] == tuple(range(3, len(node._saved_dims)))
    )
    if not swaps or not node.next_functions:
        return None
    chain.append(node)
    first = node.next_functions[0][0]
    if first is None or not first.name().startswith(_VIEWS):
        return None
    chain.append(first)
    (split_shape, in_shapes), (joined_shape, _) = shapes.get(first, (None, [None])), shapes.get(fn, (None, None))
    in_shape = in_shapes[0] if in_shapes else None
    if split_shape is None or in_shape is None or joined_shape is None or len(in_shape) < 2:
        return None
    channels, rest = int(in_shape[1]), tuple(in_shape[2:])
    groups = int(split_shape[1]) if len(split_shape) == len(in_shape) + 1 else 0
    if (
        groups < 2 or tuple(split_shape) != (in_shape[0], groups, channels // groups, *rest)
        or channels % groups or tuple(joined_shape) != tuple(in_shape)
    ):
        return None
    return chain[::-1], groups, channels


def _derive_shuffles(graph: tp.DependencyGraph, by_grad_fn: dict[Any, Any], shapes: dict[Any, Any]) -> set[Any]:
    """Map channels through inline ``view/transpose/view`` shuffles (torchvision's ShuffleNetV2).

    Input channel ``a * C/g + b`` becomes output channel ``b * g + a``. The ops in between carry
    input coordinates. The shuffle stays a shuffle after removal only if every removed ``b``
    is removed from all ``g`` input groups at once, so the first view is marked with
    ``compresskit_tie = C/g``: :func:`_convert` keys its item by ``index % (C/g)`` and
    :func:`_channel_units` joins those channels into one unit.
    """
    failures = getattr(graph, "compresskit_failures", {})
    shuffle_nodes: set[Any] = set()
    for node in list(by_grad_fn.values()):
        found = _inline_shuffle(node.grad_fn, shapes)
        if found is None or any(fn not in by_grad_fn for fn in found[0]):
            continue
        chain, groups, channels = found
        nodes = [by_grad_fn[fn] for fn in chain]
        per_group = channels // groups
        in_to_out = [(k % per_group) * groups + k // per_group for k in range(channels)]
        out_to_in = [0] * channels
        for k, j in enumerate(in_to_out):
            out_to_in[j] = k
        for producer in nodes[0].inputs:
            _set_mapping(producer, nodes[0], None, None)
        for source, target in zip(nodes[:-1], nodes[1:-1]):
            _set_mapping(source, target, None, None)
        _set_mapping(nodes[-2], nodes[-1], _Permute(in_to_out), _Permute(out_to_in))
        for consumer in nodes[-1].outputs:
            _set_mapping(nodes[-1], consumer, None, None)
        for shuffle_node in nodes:
            failures.pop(shuffle_node, None)
        nodes[0].compresskit_tie = per_group
        shuffle_nodes.update(nodes)
    return shuffle_nodes


class _Flatten:
    """``(N, C, *rest) -> (N, C * S)``: channel ``c`` becomes features ``[c*S, (c+1)*S)`` (reverse: ``j // S``)."""

    def __init__(self, stride: int, reverse: bool) -> None:
        self.stride, self.reverse = stride, reverse

    def __call__(self, idxs: list[_HybridIndex]) -> list[_HybridIndex]:
        if self.reverse:
            pairs = {(i.idx // self.stride, i.root_idx): None for i in idxs}
        else:
            pairs = {(i.idx * self.stride + s, i.root_idx): None for i in idxs for s in range(self.stride)}
        return [_HybridIndex(idx=idx, root_idx=root) for idx, root in pairs]


def _derive_reshapes(graph: tp.DependencyGraph, shapes: dict[Any, Any], skip: set[Any]) -> None:
    """Index mappings of views/reshapes read off their recorded shapes where that is unambiguous.

    Torch-Pruning infers a flatten's stride from the channel count of the nearest producer it
    finds, which is wrong behind an inline shuffle or a split. Here: a view that keeps the batch
    and channel axes maps channels to themselves; ``(N, C, *rest) -> (N, C * S)`` maps channel
    ``c`` to ``[c*S, (c+1)*S)``. Other reshapes keep Torch-Pruning's mapping.
    """
    for node in graph.module2node.values():
        fn = node.grad_fn
        if node in skip or fn is None or not fn.name().startswith(_VIEWS) or fn not in shapes:
            continue
        out_shape, in_shapes = shapes[fn]
        in_shape = in_shapes[0] if in_shapes else None
        if out_shape is None or in_shape is None or len(in_shape) < 2 or len(out_shape) < 2:
            continue
        if in_shape[0] != out_shape[0]:
            continue
        if in_shape[1] == out_shape[1] and (len(in_shape) > 2 or len(out_shape) > 2):
            forward = backward = None  # channels untouched: (N, C, H, W) <-> (N, C, H*W)
        elif len(out_shape) == 2 and math.prod(in_shape[1:]) == out_shape[1]:
            stride = math.prod(in_shape[2:])
            forward, backward = _Flatten(stride, reverse=False), _Flatten(stride, reverse=True)
        else:
            continue
        for producer in node.inputs:
            _set_mapping(producer, node, forward, backward)
        for consumer in node.outputs:
            _set_mapping(node, consumer, None, None)


def _derive_routing(graph: tp.DependencyGraph) -> None:
    """Replace Torch-Pruning's split / slice / concat index mappings by ones read off the autograd graph.

    Torch-Pruning matches a split's outputs to its consumers by discovery order and composes a
    split followed by a concat in the wrong order, so a CSP block (``chunk`` whose parts are
    concatenated again) or a ShuffleNetV2 unit gets indices outside the layers. Here every edge
    carries its output number (``next_functions``) and every concat input its offset (recorded
    input shapes), so the mapping of each edge is derived, not assumed.
    """
    shapes = getattr(graph, "compresskit_shapes", {})
    if not shapes:
        return
    by_grad_fn = {node.grad_fn: node for node in graph.module2node.values() if node.grad_fn is not None}
    shuffles = _derive_shuffles(graph, by_grad_fn, shapes)
    _derive_reshapes(graph, shapes, shuffles)
    for target in graph.module2node.values():
        grad_fn = target.grad_fn
        if grad_fn is None or not hasattr(grad_fn, "next_functions"):
            continue
        is_cat = grad_fn.name().startswith("CatBackward")
        offsets: list[tuple[int, int]] = []
        if is_cat:
            out_shape, in_shapes = shapes.get(grad_fn, (None, []))
            if out_shape is None or len(out_shape) < 2 or _normalise_dims(grad_fn._saved_dim, len(out_shape)) != {1}:
                continue
            if len(in_shapes) != len(grad_fn.next_functions) or any(s is None for s in in_shapes):
                continue
            start = 0
            for shape in in_shapes:
                offsets.append((start, int(shape[1])))
                start += int(shape[1])
        edges: dict[Any, list[tuple[tuple[int, int, int], int, int]]] = {}
        for slot, (fn, output_nr) in enumerate(grad_fn.next_functions):
            source = by_grad_fn.get(fn)
            if source is None or source is target:
                continue
            ranges = _output_ranges(fn)
            if ranges is None and not is_cat:
                continue
            if ranges is not None:
                a_range = ranges[output_nr]
            else:
                a_range = (0, 1 << 62, 1)
            b_offset, b_size = offsets[slot] if is_cat else (0, len(range(*a_range)))
            edges.setdefault(source, []).append((a_range, b_offset, b_size))
        for source, routes in edges.items():
            _set_mapping(source, target, _Route(routes, reverse=False), _Route(routes, reverse=True))


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
    _derive_routing(graph)
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
                retain_graph=True,  # _op_reason still reads saved tensors
            )
    except RuntimeError:
        shapes.clear()  # no shape information: fall back to Torch-Pruning's couplings
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def _channel_edge(graph: tp.DependencyGraph, node: Any, other: Any) -> bool:
    """Whether channels flow between ``node`` and its graph neighbour ``other``.

    Torch-Pruning couples every input of an element-wise op with its output. Inputs
    broadcast along the channel axis (a CBAM spatial gate ``[N, 1, H, W]``, a BiFPN
    fusion weight, a deformable conv's modulator) or feeding a non-channel argument
    (``grid_sample``'s grid) carry no channels; this drops those edges.
    """
    if other in node.inputs:
        consumer, producer = node, other
    elif node in other.inputs:
        consumer, producer = other, node
    else:
        return True
    if not isinstance(consumer.module, tp_ops._ElementWiseOp):
        return True
    grad_fn = consumer.grad_fn
    shapes = getattr(graph, "compresskit_shapes", {}).get(grad_fn)
    if shapes is None or producer.grad_fn is None:
        return True
    out_shape, in_shapes = shapes
    slots = [i for i, (f, _) in enumerate(grad_fn.next_functions) if f is producer.grad_fn]
    if not slots or out_shape is None:
        return True
    if grad_fn.name().startswith("GridSampler"):
        return 0 in slots
    for slot in slots:
        in_shape = in_shapes[slot] if slot < len(in_shapes) else None
        if in_shape is None or not _broadcasts_over_channels(tuple(in_shape), tuple(out_shape)):
            return True
    return False


def _broadcasts_over_channels(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> bool:
    """``in_shape`` broadcasts to ``out_shape`` without a channel axis of its own."""
    if len(out_shape) < 2 or out_shape[1] == 1 or len(in_shape) > len(out_shape):
        return False
    padded = (1,) * (len(out_shape) - len(in_shape)) + in_shape
    if any(i not in (1, o) for i, o in zip(padded, out_shape)):
        return False
    return padded[1] == 1


def _normalise_dims(dims: Any, ndim: int) -> set[int]:
    if isinstance(dims, int):
        dims = (dims,)
    out = set()
    for d in dims:
        d = int(d)
        if d >= 2**63:  # autograd stores negative dims as unsigned
            d -= 2**64
        out.add(d % ndim if ndim else d)
    return out


def _op_reason(grad_fn: Any) -> str | None:
    """Why an autograd op breaks channel-wise pruning, or ``None`` if it may be fine."""
    if grad_fn is None or not hasattr(grad_fn, "name"):
        return None
    name = grad_fn.name()
    if name.startswith(tuple(op + "Backward" for op in _MIXING_OPS)):
        return (
            f"channel-mixing op {name} outside a prunable layer (attention's q @ k^T / attn @ v, or a custom "
            "module using F.conv2d / unfold)"
        )
    if name.startswith(tuple(op + "Backward" for op in _REDUCTIONS)):
        sizes = getattr(grad_fn, "_saved_self_sym_sizes", None)
        if sizes is None and hasattr(grad_fn, "_saved_self"):
            sizes = grad_fn._saved_self.shape
        if sizes is None and hasattr(grad_fn, "_saved_result"):
            sizes = grad_fn._saved_result.shape
        if sizes is None or len(sizes) < 2:
            return None
        dims = getattr(grad_fn, "_saved_dim", None)
        if dims is None or 1 in _normalise_dims(dims, len(sizes)):
            return (
                f"{name} reduces over the channel axis (e.g. CBAM spatial attention's channel mean/max; "
                "write channel max/mean as compresskit.ChannelPool)"
            )
    return None


def _chunks(grad_fn: Any) -> int:
    """Number of equal parts of a ``chunk``/``split(size)`` over channels, else 1.

    The user's code splits the *pruned* tensor into equal parts again, so removal stays exact
    only if every part loses the same number of channels: the part acts like a grouped conv's
    group (equal-removal cells, see :func:`_finish`).
    """
    ranges = _output_ranges(grad_fn) if grad_fn is not None and grad_fn.name().startswith("SplitBackward") else None
    if not ranges or len(ranges) < 2 or len({stop - start for start, stop, _ in ranges}) != 1:
        return 1
    return len(ranges)


def _find(parent: list[int], i: int) -> int:
    """Root of ``i`` in the union-find forest ``parent`` (path halving)."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _channel_units(num_channels: int, items: list[Item]) -> list[list[int]]:
    """Partition the root channels into units that must be removed together.

    Two roots belong to one unit when they reach the same index of the same module axis or
    graph op: removing one without the other would either keep a channel the other one
    zeroes or remove a channel the other one still needs. Derived from the traced index
    relations (concat offsets, splits, slices, depthwise convs, residual adds), never assumed.
    """
    parent = list(range(num_channels))

    for item in items:
        owner: dict[int, int] = {}
        for root, idxs in item.index.items():
            for i in idxs:
                if i in owner:
                    parent[_find(parent, root)] = _find(parent, owner[i])
                else:
                    owner[i] = root
    units: dict[int, list[int]] = {}
    for root in range(num_channels):
        units.setdefault(_find(parent, root), []).append(root)
    return sorted(units.values())


def _by_unit(items: list[Item], units: list[list[int]]) -> list[Item]:
    """Items re-keyed from root channels to units (the union of their roots' indices)."""
    out = []
    for item in items:
        index = {}
        for u, roots in enumerate(units):
            idxs = sorted({i for r in roots for i in item.index.get(r, ())})
            if idxs:
                index[u] = tuple(idxs)
        out.append(Item(item.module, item.kind, item.axis, item.size, index, item.groups, item.tied))
    return out


def _convert(
    graph: tp.DependencyGraph,
    group: Any,
    protected: set[str],
    output_nodes: set[Any],
    root: str,
    num_channels: int,
) -> RawGroup:
    """Torch-Pruning group -> :class:`RawGroup` (items keyed by channel unit, see :func:`_channel_units`)."""
    names = graph._module2name
    items: list[Item] = []
    reason: str | None = None
    is_protected = False
    for entry in group.items:
        dep = entry.dep
        node, module = dep.target, dep.target.module
        axis = OUT if dep.handler.__name__ == "prune_out_channels" else IN
        name = names.get(module, str(module))
        index: dict[int, list[int]] = {}
        tie = getattr(node, "compresskit_tie", None)  # an inline shuffle's input: key by slot, see _derive_shuffles
        for idx, root_idx in zip(entry.idxs, entry.root_idxs):
            if root_idx is None:
                reason = reason or f"Torch-Pruning lost the channel mapping at {name}"
                continue
            index.setdefault(int(root_idx), []).append(int(idx) % tie if tie else int(idx))
        frozen = {k: tuple(sorted(set(v))) for k, v in index.items()}
        kind, groups = "op", 1
        if node.type == tp_ops.OPTYPE.OUTPUT or (axis == OUT and node.grad_fn in output_nodes):
            is_protected = True
            continue
        if isinstance(module, nn.Parameter):
            continue
        if isinstance(module, nn.modules.conv._ConvNd):
            if module.transposed:
                kind = "conv_transpose"
                if module.groups > 1:
                    reason = reason or f"grouped transposed conv {name} is not supported"
            else:
                kind = "conv"
                if is_depthwise(module):
                    axis = BOTH
                elif module.groups > 1:
                    if module.groups in (module.in_channels, module.out_channels):
                        reason = reason or (
                            f"conv {name} with groups={module.groups}, in={module.in_channels}, "
                            f"out={module.out_channels} (one channel per group) cannot be pruned evenly"
                        )
                    groups = module.groups
        elif isinstance(module, nn.Linear):
            kind = "linear"
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            kind, axis = "bn", OUT
            if not module.affine:
                reason = reason or f"BatchNorm {name} without affine parameters cannot be soft-zeroed"
        elif isinstance(module, nn.PReLU):
            kind, axis = "prelu", OUT
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            reason = reason or (
                f"{type(module).__name__} {name} normalises over these channels: removing one changes the "
                "mean and variance the others are normalised with, so removal is not exact"
            )
        elif isinstance(module, nn.MultiheadAttention):
            reason = reason or (
                f"nn.MultiheadAttention {name}: its projections must stay as wide as the query, so neither "
                "its channels nor its heads can be removed (write attention with q/k/v Linears and num_heads)"
            )
        elif isinstance(module, ChannelShuffle):
            kind = "shuffle"
        elif isinstance(module, ChannelPool):
            kind = "pool"
            if axis != IN:
                reason = reason or f"the output maps of ChannelPool {name} cannot be pruned"
        elif isinstance(module, _GRAPH_OPS):
            op_reason = _op_reason(node.grad_fn)
            if op_reason is not None:
                reason = reason or op_reason
            grad_name = getattr(node.grad_fn, "name", lambda: "?")()
            name = f"{type(module).__name__.strip('_')}:{grad_name}:{getattr(module, 'id', '')}"
            groups = _chunks(node.grad_fn)
        else:
            reason = reason or f"unsupported layer {name} ({type(module).__name__})"
        if axis in (OUT, BOTH) and name in protected:
            is_protected = True
        size = axis_size(module, axis) or 0  # graph ops have no size of their own
        if groups > 1 and kind == "op":  # x.chunk(k, dim=1): equal parts, like a grouped conv's groups
            size = int(node.grad_fn._saved_self_sym_sizes[1])
        if size and any(not 0 <= i < size for idxs in frozen.values() for i in idxs):
            reason = reason or (
                f"Torch-Pruning's index mapping is inconsistent at {name} (indices beyond its {size} "
                "channels; a split/chunk whose parts are concatenated again?)"
            )
        items.append(Item(name, kind, axis, size, frozen, groups, tied=bool(tie)))
    units = _channel_units(num_channels, items)
    if len(units) < num_channels:
        items = _by_unit(items, units)
    return RawGroup(root, len(units), items, reason, is_protected)


class _Protected(Exception):
    """The coupled set reaches a protected layer or a model output."""


class _Diverged(Exception):
    """Torch-Pruning's index mapping keeps producing new index lists."""


_TRAVERSAL_BUDGET = 2_000_000  # index entries mapped while collecting one coupled set


def _coupled_set(
    graph: tp.DependencyGraph,
    module: nn.Module,
    num_channels: int,
    is_protected: Any,
) -> Any:
    """Torch-Pruning's ``get_pruning_group`` for all channels of ``module``, made safe.

    Returns the group and, if it reaches an op that makes removal inexact (see
    :func:`_op_reason`), the reason; the traversal does not continue through that op.

    Same traversal over the dependency graph (Torch-Pruning's index mappings are reused
    as built once by ``build_dependency``), but it stops as soon as the set reaches a
    protected layer or a model output (raises :class:`_Protected`) and gives up when the
    index mapping diverges (raises :class:`_Diverged`) instead of running for ever, as
    it does on some detection heads that reshape and concatenate their outputs.
    """
    pruner = graph.get_pruner_of_module(module)
    pruning_fn = pruner.prune_out_channels
    if is_depthwise(module):
        pruning_fn = tp.prune_depthwise_conv_out_channels
    root = graph.module2node[module]
    if is_protected(root, pruning_fn):
        raise _Protected
    group = tp.Group()
    group.add_dep(
        Dependency(pruning_fn, pruning_fn, source=root, target=root),
        [_HybridIndex(idx=i, root_idx=i) for i in range(num_channels)],
    )
    failures = getattr(graph, "compresskit_failures", {})
    # Worklist of deltas: each (node, handler) is pushed only the (index, root) pairs it has not
    # seen yet, so the traversal is monotone and ends after every pair was reached once (every
    # index mapping acts on each index on its own). The work budget still catches mappings that
    # keep producing new indices.
    seen: dict[tuple[Any, Any], set[tuple[int, Any]]] = {
        (root, pruning_fn): {(i.idx, i.root_idx) for i in group[0].idxs}
    }
    stack = [(group[0].dep, group[0].idxs)]
    work = 0
    unsafe: str | None = None
    while stack:
        dep, idxs = stack.pop()
        node, fn = dep.target, dep.handler
        for new_dep in node.dependencies:
            if not new_dep.is_triggered_by(fn):
                continue
            neighbour = new_dep.target
            if neighbour in failures:
                unsafe = unsafe or (
                    f"Torch-Pruning could not map channels through {neighbour.name} ({failures[neighbour]}); "
                    "an inline view/transpose channel shuffle? write it as compresskit.ChannelShuffle"
                )
                continue
            if isinstance(neighbour.module, tp_ops._ElementWiseOp) and node in neighbour.inputs:
                reason = _op_reason(neighbour.grad_fn)
                if reason is not None:
                    unsafe = unsafe or reason
                    continue
            if neighbour is not node and not _channel_edge(graph, node, neighbour):
                continue
            new_idxs = idxs
            for mapping in new_dep.index_mapping:
                if mapping is not None:
                    new_idxs = mapping(new_idxs)
            work += len(new_idxs)
            if work > _TRAVERSAL_BUDGET:
                raise _Diverged(new_dep.target)
            have = seen.setdefault((neighbour, new_dep.handler), set())
            fresh = [i for i in dict.fromkeys(new_idxs) if (i.idx, i.root_idx) not in have]
            if not fresh:
                continue
            if is_protected(neighbour, new_dep.handler):
                raise _Protected
            have.update((i.idx, i.root_idx) for i in fresh)
            group.add_dep(new_dep, fresh)
            stack.append((new_dep, fresh))
    # One item per (target, handler) with *every* (index, root) pair reached. Torch-Pruning's
    # ``add_and_merge`` keeps one root per index; that loses the relation "root j and root k
    # reach the same channel" (a ghost module's cat([x1, cheap(x1)]) into a residual add), which
    # :func:`_channel_units` needs.
    pairs: dict[tuple[Any, Any], tuple[Any, dict[tuple[int, Any], None]]] = {}
    for dep, idxs in group.items:
        if isinstance(dep.target.module, nn.Parameter):  # raw parameters are never pruned
            continue
        _, seen = pairs.setdefault((dep.target, dep.handler), (dep, {}))
        for k in idxs:
            seen[(k.idx, k.root_idx)] = None
    merged = tp.Group()
    for dep, seen in pairs.values():
        item = _helpers.GroupItem(dep, [idx for idx, _ in seen])
        item.root_idxs = [root for _, root in seen]
        merged.add_dep(dep, [])
        merged[len(merged) - 1] = item
    return merged, unsafe


def trace_groups(
    model: nn.Module, example_inputs: Any, protected: set[str]
) -> list[RawGroup]:
    """All coupled channel sets rooted at convs/linears, in module definition order."""
    try:
        graph, output_nodes = build_graph(model, example_inputs)
    except Exception as error:  # noqa: BLE001 - the tracer failed: skip all, unless the model itself fails
        was_training = model.training
        try:
            with torch.no_grad():
                run_model(model.eval(), example_inputs)  # a bad input raises its own error here
        finally:
            model.train(was_training)
        reason = f"Torch-Pruning's graph builder failed on this model: {type(error).__name__}: {error}"
        return [
            RawGroup(name, axis_size(module, OUT) or 0, [], reason, protected=name in protected)
            for name, module in model.named_modules()
            if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear))
        ]
    names = graph._module2name
    protected_modules = {module for module, name in names.items() if name in protected}

    def is_protected(node: Any, handler: Any) -> bool:
        if node.type == tp_ops.OPTYPE.OUTPUT:
            return True
        if handler.__name__ != "prune_out_channels":
            return False
        return node.grad_fn in output_nodes or node.module in protected_modules

    visited: set[nn.Module] = set()
    groups: list[RawGroup] = []
    for name, module in model.named_modules():
        if module not in graph.module2node or module in visited:
            continue
        if not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            continue
        num_channels = graph.get_pruner_of_module(module).get_out_channels(module)
        try:
            group, unsafe = _coupled_set(graph, module, num_channels, is_protected)
        except _Protected:
            groups.append(RawGroup(name, num_channels, [], protected=True))
            continue
        except _Diverged as error:
            visited.add(module)
            where = error.args[0].name if error.args else "?"
            groups.append(RawGroup(name, num_channels, [], f"Torch-Pruning's index mapping diverged at {where}"))
            continue
        except Exception as error:  # noqa: BLE001 - Torch-Pruning's index mapping gave up
            visited.add(module)
            groups.append(RawGroup(name, num_channels, [], f"Torch-Pruning could not trace it: {error!r}"))
            continue
        for entry in group.items:
            target = entry.dep.target.module
            if entry.dep.handler.__name__ == "prune_out_channels" and isinstance(target, nn.Module):
                # a producer reached with only some of its channels is traced on its own too;
                # the overlapping sets are merged by _merge_grouped
                size = axis_size(target, OUT)
                if size is None or len({int(i) for i in entry.idxs}) >= size:
                    visited.add(target)
        raw = _convert(graph, group, protected, output_nodes, name, num_channels)
        if unsafe is not None and not raw.protected:
            raw.reason = raw.reason or unsafe  # a layer's own reason is the more specific one
        groups.append(raw)
    return _finish(_merge_grouped(groups) + _head_groups(model, protected))


_QKV_NAMES = (("qkv",), ("q", "k", "v"), ("query", "key", "value"), ("to_q", "to_k", "to_v"))
_PROJ_NAMES = ("proj", "out_proj", "o", "to_out", "out")


def _head_groups(model: nn.Module, protected: set[str]) -> list[RawGroup]:
    """One coupled set of whole heads per attention module with ``num_heads`` and q/k/v Linears.

    Removing head ``h`` removes rows ``[h*D, (h+1)*D)`` of q, k and v (of each third of a fused
    ``qkv``), the same input columns of the output projection, and lowers ``num_heads``. With the
    head zeroed, its values are zero, so its attention output is zero whatever the softmax: exact
    when the module's forward splits heads with ``num_heads`` (checked numerically like every set).
    """
    groups = []
    modules = dict(model.named_modules())
    for name, module in modules.items():
        if not is_attention(module) or module.num_heads < 2:
            continue
        prefix = f"{name}." if name else ""

        def linear(child: str) -> nn.Linear | None:
            found = modules.get(prefix + child)
            return found if isinstance(found, nn.Linear) else None

        qkv = next((names for names in _QKV_NAMES if all(linear(n) for n in names)), None)
        proj = next((n for n in _PROJ_NAMES if linear(n)), None)
        if qkv is None or proj is None:
            continue
        heads = module.num_heads
        thirds = 3 if len(qkv) == 1 else 1  # a fused qkv holds q, k and v one after the other
        width = linear(qkv[0]).out_features // thirds  # type: ignore[union-attr]
        if width % heads or linear(proj).in_features != width:  # type: ignore[union-attr]
            continue
        dim = width // heads
        items = []
        for child in qkv:
            index = {h: tuple(t * width + h * dim + d for t in range(thirds) for d in range(dim)) for h in range(heads)}
            items.append(Item(prefix + child, "linear", OUT, thirds * width, index))
        items.append(Item(prefix + proj, "linear", IN, width, {h: tuple(range(h * dim, (h + 1) * dim)) for h in range(heads)}))
        items.append(Item(name, "heads", OUT, heads, {h: (h,) for h in range(heads)}))
        is_protected = any(prefix + child in protected for child in qkv)
        groups.append(RawGroup(f"{name}:heads", heads, items, protected=is_protected))
    return groups


def _merge_grouped(groups: list[RawGroup]) -> list[RawGroup]:
    """Merge sets that share a grouped conv axis (its groups need equal removal counts) or any
    channel of a layer or op (partial overlaps, e.g. through an inline channel shuffle)."""
    parent = list(range(len(groups)))

    owner: dict[tuple[str, str], int] = {}
    slot_owner: dict[tuple[str, str, int], int] = {}
    for g, group in enumerate(groups):
        for item in group.items:
            # sets that reach the same channel of one layer or op (or the same slot of an inline
            # shuffle's input) are one set: removing it for one would remove it for the other
            for idxs in item.index.values():
                for i in idxs:
                    slot = (item.module, item.axis, i)
                    if slot in slot_owner:
                        parent[_find(parent, g)] = _find(parent, slot_owner[slot])
                    else:
                        slot_owner[slot] = g
            if item.groups > 1:
                covered = {i for idxs in item.index.values() for i in idxs}
                if len(covered) < item.size:
                    key = (item.module, item.axis)
                    if key in owner:
                        parent[_find(parent, g)] = _find(parent, owner[key])
                    else:
                        owner[key] = g
    clusters: dict[int, list[int]] = {}
    for g in range(len(groups)):
        clusters.setdefault(_find(parent, g), []).append(g)
    merged: list[RawGroup] = []
    for members in sorted(clusters.values()):
        if len(members) == 1:
            merged.append(groups[members[0]])
            continue
        first = groups[members[0]]
        combined: dict[tuple[str, str, str], Item] = {}
        offset = 0
        reason = None
        for g in members:
            group = groups[g]
            if group.reason or group.protected:
                reason = reason or (
                    f"shares a grouped conv or an inline channel shuffle with {group.root}, whose channels "
                    f"cannot be pruned ({group.reason or 'protected'})"
                )
            for item in group.items:
                key = (item.module, item.kind, item.axis)
                shifted = {r + offset: idxs for r, idxs in item.index.items()}
                if key in combined:
                    combined[key].index.update(shifted)
                else:
                    combined[key] = Item(
                        item.module, item.kind, item.axis, item.size, shifted, item.groups, item.tied
                    )
            offset += group.num_channels
        items = list(combined.values())
        units = _channel_units(offset, items)  # tied slots join channels of different members
        if len(units) < offset:
            items = _by_unit(items, units)
        merged.append(RawGroup(first.root, len(units), items, reason))
    return merged


def _finish(groups: list[RawGroup]) -> list[RawGroup]:
    """Check grouped-conv coverage and split each set into equally sized cells."""
    for group in groups:
        if group.reason or group.protected or not group.items:
            continue
        roots = range(group.num_channels)
        signatures: dict[int, list[int]] = {r: [] for r in roots}
        grouped = [item for item in group.items if item.groups > 1]
        for item in grouped:
            covered = {i for idxs in item.index.values() for i in idxs}
            if len(covered) < item.size:
                group.reason = (
                    f"grouped conv or chunk {item.module} (groups={item.groups}) also reads channels "
                    f"that cannot be pruned with this set"
                )
                break
            block = item.size // item.groups
            for r in roots:
                blocks = {i // block for i in item.index.get(r, ())}
                signatures[r].append(blocks.pop() if len(blocks) == 1 else -len(blocks))
        if group.reason:
            continue
        for item in group.items:
            for r in roots:
                signatures[r].append(len(item.index.get(r, ())))
        cells: dict[tuple[int, ...], list[int]] = {}
        for r in roots:
            cells.setdefault(tuple(signatures[r]), []).append(r)
        group.cells = list(cells.values())
        sizes = sorted({len(c) for c in group.cells})
        # Each grouped conv / chunk asks for equal removal per group: homogeneous linear constraints
        # that removing *all* channels satisfies (the set covers those axes), so removing the same
        # fraction of every cell does too. That is possible in whole channels when every cell size
        # is a multiple of the smallest: k * size / smallest from each (see ChannelGroup.removal_counts).
        if grouped and any(size % sizes[0] for size in sizes):
            group.reason = (
                f"grouped convs or chunks split this set into cells of sizes {sizes}, not multiples of the "
                "smallest; a channel shuffle between grouped convs with g groups needs a multiple of g "
                "channels per group"
            )
        group.balanced = bool(grouped)
    return groups
