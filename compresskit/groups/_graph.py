"""Coupled channel sets from Torch-Pruning's dependency graph, plus our own checks.

Torch-Pruning (Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023)
traces the autograd graph and propagates channel indices through residual adds,
concatenations, splits, depthwise convs and flatten->linear. We keep its graph and
replace or add what it gets wrong or lacks:

* index relations are derived, not assumed: split/chunk/slice/concat offsets come from the
  autograd edges (output numbers) and recorded shapes, flatten strides from recorded shapes,
  inline ``view/transpose/view`` channel shuffles are recognised (:mod:`compresskit.groups._routing`);
  the traversal keeps every (index, root) pair, and roots that reach one channel through two
  paths become one unit (:func:`compresskit.groups._sets.channel_units`, e.g. a ghost module's
  ``cat([x1, cheap(x1)])`` into a residual add couples ``j`` with ``j + C/2``);
* an op whose mapping Torch-Pruning cannot build (it raises) skips the sets that reach it, and
  a graph build that fails skips the whole model, with the reason: never a crash;
* ``nn.Linear`` on any leading shape is one node while tracing (:mod:`compresskit.groups._depgraph`);
  attention modules with ``num_heads`` and q/k/v Linears get sets of whole heads
  (:mod:`compresskit.groups._heads`);
* :class:`~compresskit.layers.shuffle.ChannelShuffle` is registered as a custom layer whose
  input->output dependency carries the shuffle permutation;
* :class:`~compresskit.layers.pool.ChannelPool` is registered as a custom layer with no
  input->output dependency: its input channels are a consumer (like a conv's input),
  its 1-2 output maps belong to no coupled set;
* grouped convs (``1 < groups < channels``) become balance constraints (``cells``),
  and coupled sets that share one grouped conv are merged into one set (:mod:`compresskit.groups._sets`);
* layers and graph ops we cannot keep exact (norms over several channels, inline reductions
  over the channel axis such as ``x.mean(dim=1)``, channel mixing outside a known
  layer such as a deformable conv written with ``F.conv2d``/``unfold``) mark their
  coupled set as unprunable, with a reason (:mod:`compresskit.groups._coupling`).

:func:`trace_groups` is the entry point; everything it finds is still verified numerically
by :func:`compresskit.find_groups`.
"""

from __future__ import annotations

from typing import Any

import torch_pruning as tp
from torch import nn
from torch_pruning import ops as tp_ops

from compresskit.groups._coupling import Diverged, Protected, coupled_set, to_raw_group
from compresskit.groups._depgraph import build_graph
from compresskit.groups._heads import head_groups
from compresskit.groups._sets import RawGroup, merge_overlapping, split_into_cells
from compresskit.groups._tp_internals import module_names
from compresskit.groups.surgery import run_model
from compresskit.layers.rules import OUT, axis_size
from compresskit.utils.forward import evaluating

__all__ = ["trace_groups"]


def trace_groups(model: nn.Module, example_inputs: Any, protected: set[str]) -> list[RawGroup]:
    """All coupled channel sets rooted at convs/linears, in module definition order.

    Args:
        model: The model (any mode; restored afterwards). Not modified.
        example_inputs: A tensor, or a tuple of positional inputs.
        protected: Names of modules whose output channels are never pruned.

    Returns:
        The sets, merged where they overlap and split into cells, then the attention-head sets.
        A set that cannot be pruned carries its ``reason``; one that reaches a protected layer or
        a model output is marked ``protected``. If Torch-Pruning cannot build the graph at all,
        every conv/linear is one empty set with that reason.

    Raises:
        Exception: whatever the model itself raises on ``example_inputs`` (a bad input is the
            caller's error, not a skip).
    """
    try:
        graph, output_nodes = build_graph(model, example_inputs)
    except Exception as error:  # noqa: BLE001 - the tracer failed: skip all, unless the model itself fails
        return _untraceable(model, example_inputs, protected, error)
    tracer = _Tracer(graph, output_nodes, protected)
    groups: list[RawGroup] = []
    for name, module in model.named_modules():
        if module not in graph.module2node or module in tracer.visited:
            continue
        if not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            continue
        groups.append(tracer.trace(name, module))
    return split_into_cells(merge_overlapping(groups) + head_groups(model, protected))


def _untraceable(model: nn.Module, example_inputs: Any, protected: set[str], error: Exception) -> list[RawGroup]:
    """One empty set per conv/linear with the graph builder's error, after checking the model runs."""
    with evaluating(model):
        run_model(model, example_inputs)  # a bad input raises its own error here
    reason = f"Torch-Pruning's graph builder failed on this model: {type(error).__name__}: {error}"
    return [
        RawGroup(name, axis_size(module, OUT) or 0, [], reason, protected=name in protected)
        for name, module in model.named_modules()
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear))
    ]


class _Tracer:
    """Traces the coupled set of each conv/linear of one built graph.

    ``visited`` collects producers already covered by a set (all their output channels), so they
    do not root a set of their own; producers reached with only some channels are traced again
    and the overlapping sets merged by :func:`~compresskit.groups._sets.merge_overlapping`.
    """

    def __init__(self, graph: tp.DependencyGraph, output_nodes: set[Any], protected: set[str]) -> None:
        self.graph = graph
        self.output_nodes = output_nodes
        self.protected = protected
        self.protected_modules = {module for module, name in module_names(graph).items() if name in protected}
        self.visited: set[nn.Module] = set()

    def is_protected(self, node: Any, handler: Any) -> bool:
        """Whether the set may not shrink ``node`` (a model output, or a protected producer's outputs)."""
        if node.type == tp_ops.OPTYPE.OUTPUT:
            return True
        if handler.__name__ != "prune_out_channels":
            return False
        return node.grad_fn in self.output_nodes or node.module in self.protected_modules

    def trace(self, name: str, module: nn.Module) -> RawGroup:
        """The coupled set rooted at the output channels of ``module`` (named ``name``)."""
        num_channels = self.graph.get_pruner_of_module(module).get_out_channels(module)
        try:
            group, unsafe = coupled_set(self.graph, module, num_channels, self.is_protected)
        except Protected:
            return RawGroup(name, num_channels, [], protected=True)
        except Diverged as error:
            self.visited.add(module)
            where = error.args[0].name if error.args else "?"
            return RawGroup(name, num_channels, [], f"Torch-Pruning's index mapping diverged at {where}")
        except Exception as error:  # noqa: BLE001 - Torch-Pruning's index mapping gave up
            self.visited.add(module)
            return RawGroup(name, num_channels, [], f"Torch-Pruning could not trace it: {error!r}")
        self._visit_producers(group)
        raw = to_raw_group(self.graph, group, self.protected, self.output_nodes, name, num_channels)
        if unsafe is not None and not raw.protected:
            raw.reason = raw.reason or unsafe  # a layer's own reason is the more specific one
        return raw

    def _visit_producers(self, group: tp.Group) -> None:
        """Mark the producers the set covers whole; one reached with only some channels is traced on its own too."""
        for entry in group.items:
            target = entry.dep.target.module
            if entry.dep.handler.__name__ == "prune_out_channels" and isinstance(target, nn.Module):
                size = axis_size(target, OUT)
                if size is None or len({int(i) for i in entry.idxs}) >= size:
                    self.visited.add(target)
