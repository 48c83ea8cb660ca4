"""Coupled sets of whole attention heads.

Torch-Pruning sees single q/k/v channels, which ``q @ k^T`` mixes, so a transformer block's
attention width is pruned here by heads instead: :func:`head_groups` finds modules with
``num_heads`` and q/k/v (or a fused ``qkv``) plus an output projection Linear, named by
convention (:data:`_QKV_NAMES`, :data:`_PROJ_NAMES`), and returns one set per module named
``"<module>:heads"``. A module whose forward does not split heads with ``num_heads`` fails the
numerical check of :func:`compresskit.find_groups` and is skipped, never pruned wrongly.
"""

from __future__ import annotations

from torch import nn

from compresskit.groups._sets import Item, RawGroup
from compresskit.layers.rules import IN, OUT, is_attention

__all__ = ["head_groups"]

_QKV_NAMES = (("qkv",), ("q", "k", "v"), ("query", "key", "value"), ("to_q", "to_k", "to_v"))
_PROJ_NAMES = ("proj", "out_proj", "o", "to_out", "out")


def head_groups(model: nn.Module, protected: set[str]) -> list[RawGroup]:
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
