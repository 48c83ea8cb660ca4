"""Decoded training images kept in memory, up to a byte budget, so that each JPEG is decoded once per process.

Every epoch draws a fresh random crop of every training image, so the crop cannot be cached -- but the
decoded full-size image can. :class:`DecodedCache` keeps the first images that fit in ``limit_bytes``
and none after (no eviction: under a uniform shuffle every policy hits the same fraction of lookups,
and memory stays flat). Cached arrays are made read-only: the augmentation never writes its input
(crops are views, every later step returns a new array), and a mistaken write would fail loudly
instead of changing later epochs. What a lookup returns is the same array a fresh decode gives, so
training is bitwise the same with or without the cache.

DataLoader workers are forked afresh every epoch (non-persistent workers keep the global torch RNG stream
of a single-process loader, so results do not depend on the number of workers). What a worker adds to
its copy of the cache is lost with it, so the main process fills the cache before the workers start
(:meth:`DecodedCache.fill`; the forked workers share those pages) and :func:`freeze_in_workers` (the
``worker_init_fn``) stops a worker from adding more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from torch.utils.data import get_worker_info

Item = tuple[np.ndarray, np.ndarray]


class DecodedCache:
    """``cache(index, load)``: the item ``load(index)`` returned the first time, kept while the budget lasts.

    Args:
        limit_bytes: Budget for the items' arrays (``0``: keep nothing).

    Example:
        >>> cache = DecodedCache(2**30)
        >>> image, targets = cache(3, raw_item)  # doctest: +SKIP
    """

    def __init__(self, limit_bytes: int) -> None:
        if limit_bytes < 0:
            raise ValueError(f"limit_bytes must be >= 0, got {limit_bytes}")
        self.limit_bytes = int(limit_bytes)
        self.used_bytes = 0
        self._items: dict[int, Item] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __call__(self, index: int, load: Callable[[int], Item]) -> Item:
        item = self._items.get(index)
        if item is not None:
            return item
        item = load(index)
        size = sum(array.nbytes for array in item)
        if self.used_bytes + size <= self.limit_bytes:
            for array in item:
                array.flags.writeable = False
            self._items[index] = item
            self.used_bytes += size
        return item

    def fill(self, indices: Iterable[int], load: Callable[[int], Item]) -> None:
        """Load ``indices`` in order into the cache until the first that does not fit (cached ones are skipped)."""
        for index in indices:
            self(index, load)
            if index not in self._items:
                return


def freeze_in_workers(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: the caches of the worker's dataset (``dataset.caches()``) take nothing more
    (see the module docstring). (Not ``cv2.setNumThreads``: after a fork from a process whose OpenCV thread pool
    has run, that call waits forever for the pool's threads, which the fork did not copy.)"""
    del worker_id
    info = get_worker_info()
    caches: Any = getattr(info.dataset, "caches", None) if info is not None else None
    for cache in caches() if caches is not None else ():
        cache.limit_bytes = cache.used_bytes
