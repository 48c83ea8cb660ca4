"""The run's seeds: every phase seeds the RNGs from the recipe's seed and its own name.

:func:`phase_seed` is the one rule (``seed * 100 +`` the phase's position in :data:`PHASE_NAMES`), so
code that reruns one phase outside a run (a benchmark) gets the very numbers the run got. In
deterministic CPU mode an interrupted and resumed run therefore ends with the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["PHASE_NAMES", "phase_seed", "seed_everything"]

#: The phases of a run, in order.
PHASE_NAMES = ("teacher", "distill", "search", "soft_prune", "remove", "finetune", "evaluate", "export",
               "quantize", "report")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def phase_seed(seed: int, name: str) -> int:
    """The seed phase ``name`` runs with in a run of recipe seed ``seed``.

    Raises:
        ValueError: ``name`` is not a phase.

    Example:
        >>> phase_seed(0, "search")
        2
    """
    if name not in PHASE_NAMES:
        raise ValueError(f"unknown phase {name!r}; valid: {list(PHASE_NAMES)}")
    return seed * 100 + PHASE_NAMES.index(name)
