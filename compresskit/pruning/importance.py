"""Channel importance: one score per channel of a group, higher = more important.

``fpgm`` follows He et al., "Filter Pruning via Geometric Median for Deep
Convolutional Neural Networks Acceleration", CVPR 2019: within one layer, the
filters closest to the geometric median of all filters are the most replaceable.
As in the paper's implementation, the distance to the geometric median is
approximated by the sum of Euclidean distances to all other filters of the layer
(``torch.cdist``); a small sum means "near the median, redundant".

A coupled group has several producers (the convs feeding a residual add, a
depthwise conv, ...). Each producer is scored on its own filters, its scores are
divided by their mean (so layers with large weights do not dominate), and a
channel's score is the average over the producers that compute it.

Caveats:
    * Unlike Torch-Pruning's ``FPGMImportance`` this uses only the producers' filters
      (the paper's criterion), not consumers' input slices or BN parameters.
    * A filter that was soft-zeroed and not retrained sits at the origin; its
      distance sum is the sum of the other filters' norms, so FPGM may keep it. With
      soft filter pruning (SFP) training between steps moves it off the origin.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from compresskit.groups.find import ChannelGroup

__all__ = ["DATA_IMPORTANCE_NAMES", "IMPORTANCES", "Importance", "fpgm", "magnitude", "resolve_importance"]

#: Importances built from calibration data (:data:`compresskit.pruning.output_error.DATA_IMPORTANCES`) -> the
#: class a user builds; named here so that a plain lookup can say what they need without importing them.
DATA_IMPORTANCE_NAMES: dict[str, str] = {"output_error": "compresskit.pruning.OutputError"}

Importance = Callable[[ChannelGroup], Tensor]


def _combine(group: ChannelGroup, score_filters: Callable[[Tensor], Tensor]) -> Tensor:
    """Average of per-producer scores (each divided by its mean) per channel."""
    total = torch.zeros(group.num_channels, dtype=torch.float64)
    count = torch.zeros(group.num_channels, dtype=torch.float64)
    for filters, channels in group.producer_slices():
        scores = score_filters(filters.detach().double().cpu())
        mean = scores.mean()
        scores = scores / mean if mean > 0 else torch.zeros_like(scores)
        total.index_add_(0, channels, scores)
        count.index_add_(0, channels, torch.ones_like(scores))
    return (total / count.clamp(min=1.0)).float()


def fpgm(group: ChannelGroup) -> Tensor:
    """Sum of distances from each filter to all other filters (He et al. 2019).

    Args:
        group: A channel group from :func:`compresskit.find_groups`.

    Returns:
        ``[group.num_channels]`` scores; the smallest are nearest the geometric median.

    Example:
        >>> scores = fpgm(groups[0])
        >>> removed = groups[0].select(scores, rate=0.3)
    """
    return _combine(group, lambda filters: torch.cdist(filters, filters).sum(dim=1))


def magnitude(group: ChannelGroup) -> Tensor:
    """L2 norm of each producer filter (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017).

    Args:
        group: A channel group from :func:`compresskit.find_groups`.

    Returns:
        ``[group.num_channels]`` scores; small-norm filters are pruned first.
    """
    return _combine(group, lambda filters: filters.norm(dim=1))


IMPORTANCES: dict[str, Importance] = {"fpgm": fpgm, "magnitude": magnitude}


def resolve_importance(importance: str | Importance) -> Importance:
    """A callable importance, looking names up in :data:`IMPORTANCES`.

    Raises:
        ValueError: unknown name.
        TypeError: neither a string nor a callable.
    """
    if isinstance(importance, str):
        if importance not in IMPORTANCES:
            if importance in DATA_IMPORTANCE_NAMES:
                raise ValueError(f"importance {importance!r} is computed from calibration data: pass calibration= "
                                 f"to prune(), or build {DATA_IMPORTANCE_NAMES[importance]}(batches)")
            raise ValueError(f"unknown importance {importance!r}; valid: {sorted(IMPORTANCES)}")
        return IMPORTANCES[importance]
    if not callable(importance):
        raise TypeError(f"importance must be a name or a callable, got {importance!r}")
    return importance
