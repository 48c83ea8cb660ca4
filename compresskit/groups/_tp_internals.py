"""The private names of Torch-Pruning that compresskit relies on, in one place.

Torch-Pruning (Fang et al., "DepGraph", CVPR 2023; pinned to ``>=1.6,<1.7`` in pyproject) builds
the dependency graph we trace coupled channel sets on. Its public API covers building the graph,
but the index type its mappings pass around, the item type of a group, the classes of its graph
ops and the module-name table of a built graph are private names of that third-party package.
They are imported here only and given public aliases, so a Torch-Pruning release that moves them
breaks this module and nothing else.
"""

from __future__ import annotations

from typing import Any

import torch_pruning as tp
from torch_pruning import _helpers
from torch_pruning import ops as tp_ops

__all__ = ["GRAPH_OPS", "ElementWiseOp", "GroupItem", "HybridIndex", "module_names"]

#: A channel index carried through the graph with the root channel it came from (``idx``, ``root_idx``).
HybridIndex = _helpers._HybridIndex
#: One ``(dependency, indices)`` entry of a ``tp.Group``.
GroupItem = _helpers.GroupItem
#: Element-wise graph ops (adds, multiplies, activations written inline, ...).
ElementWiseOp = tp_ops._ElementWiseOp
#: Graph ops that route channels without weights of their own.
GRAPH_OPS = (
    tp_ops._ElementWiseOp,
    tp_ops._ConcatOp,
    tp_ops._SplitOp,
    tp_ops._ReshapeOp,
    tp_ops._SliceOp,
    tp_ops._UnbindOp,
    tp_ops._ExpandOp,
)


def module_names(graph: tp.DependencyGraph) -> dict[Any, str]:
    """``{module: qualified name}`` of the model a graph was built on."""
    return graph._module2name
