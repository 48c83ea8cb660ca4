"""Finiteness checks for what training and persistence write: nothing non-finite lands on disk."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

__all__ = ["non_finite_entries"]


def _walk(value: Any, prefix: str) -> Iterable[tuple[str, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _walk(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _walk(item, f"{prefix}[{index}]")


def non_finite_entries(value: Any, limit: int = 3) -> tuple[int, list[str]]:
    """Count floating tensors inside ``value`` (nested dicts/lists) holding NaN or inf.

    Args:
        value: A tensor, or a state_dict / optimizer state nested in dicts and lists.
        limit: How many offending names to return.

    Returns:
        ``(count, names)``: the number of non-finite tensors and the first ``limit`` key paths.

    Example:
        >>> non_finite_entries({"w": torch.tensor([1.0, float("nan")])})
        (1, ['w'])
    """
    names: list[str] = []
    count = 0
    for name, tensor in _walk(value, ""):
        if tensor.is_floating_point() or tensor.is_complex():
            if not bool(torch.isfinite(tensor).all()):
                count += 1
                if len(names) < limit:
                    names.append(name)
    return count, names
