"""Which modules a user's globs and layer-group specs name, and which layer group owns a set.

Names are ``model.named_modules()`` names matched with :func:`fnmatch.fnmatchcase`; a glob that
matches nothing is a user error (``ValueError`` naming the glob). Used by
:func:`compresskit.find_groups` before tracing (protect globs) and after (layer-group ownership).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from torch import nn

from compresskit.groups._sets import FILTER_KINDS, RawGroup
from compresskit.groups.channel_group import LayerGroupSpec
from compresskit.layers.rules import IN

__all__ = ["module_names_matching", "owning_layer_group", "protected_names"]


def module_names_matching(model: nn.Module, pattern: str) -> list[str]:
    """Names of the submodules of ``model`` (not the root) that the glob ``pattern`` matches."""
    return [name for name, _ in model.named_modules() if name and fnmatch.fnmatchcase(name, pattern)]


def protected_names(model: nn.Module, protect: Sequence[str]) -> set[str]:
    """Module names matched by the ``protect`` globs.

    Raises:
        TypeError: ``protect`` is a string, not a sequence of globs.
        ValueError: a glob matches no module.
    """
    if isinstance(protect, str):
        raise TypeError(f"protect must be a sequence of globs, got the string {protect!r}")
    names: set[str] = set()
    for pattern in protect:
        matched = module_names_matching(model, pattern)
        if not matched:
            raise ValueError(f"protect pattern {pattern!r} matches no module")
        names.update(matched)
    return names


def owning_layer_group(
    raw: RawGroup, specs: dict[str, LayerGroupSpec], modules: dict[str, nn.Module]
) -> str | None:
    """The layer group of a coupled set: decided by the producers that match a spec.

    Producers are the convs/linears whose *output* channels are the set's channels (the trunk
    conv, but also depthwise convs and gating convs such as CBAM's ``fc2`` that multiply onto
    it). Producers matching no spec are ignored. If the matching producers belong to several
    specs, the spec whose producers hold the most weights wins (the trunk conv, not a
    depthwise conv that merely passes the channels through); ties go to the spec listed first.
    ``None`` when no producer matches.
    """
    weights: dict[str, int] = {}
    for item in raw.items:
        if item.kind not in FILTER_KINDS or item.axis == IN:
            continue
        module = modules[item.module]
        for spec in specs.values():
            if spec.matches(item.module, module):
                weights[spec.name] = weights.get(spec.name, 0) + module.weight.numel()
                break
    if not weights:
        return None
    most = max(weights.values())
    return next(name for name in specs if weights.get(name) == most)
