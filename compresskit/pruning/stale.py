"""Detect an optimizer that still holds parameters that physical pruning replaced.

:func:`compresskit.remove_zeroed` (so ``SoftFPGM.apply()`` and ``prune()``) swaps the weights of
every layer it shrinks for new ``nn.Parameter`` objects. An optimizer built before that keeps
updating the old, detached tensors: the pruned layers silently stop training. :func:`retire`
records the replaced parameters, and a global optimizer step pre-hook
(``torch.optim.optimizer.register_optimizer_step_pre_hook``) warns with
:class:`StaleOptimizerWarning`, once per optimizer, on its next ``step()``.

Caveats:
    * The check costs one dictionary look-up per parameter per step, and only once something
      was pruned in this process; nothing is checked before.
    * It warns rather than raises: an optimizer over a pruned model's *unchanged* layers is
      legitimate, and only the user knows which layers were meant to train.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

__all__ = ["StaleOptimizerWarning", "retire"]


class StaleOptimizerWarning(UserWarning):
    """An optimizer steps parameters that pruning replaced: rebuild it from ``model.parameters()``."""


#: id(parameter) -> weak reference, for every parameter replaced by pruning (ids checked on use).
_RETIRED: dict[int, weakref.ref[torch.Tensor]] = {}
_WARNED: weakref.WeakSet[torch.optim.Optimizer] = weakref.WeakSet()
_HOOK: Any = None


def retire(parameters: Iterable[torch.Tensor]) -> None:
    """Mark ``parameters`` as replaced by pruning; optimizers that step them get a warning."""
    global _HOOK
    for parameter in parameters:
        key = id(parameter)
        _RETIRED[key] = weakref.ref(parameter, lambda _, key=key: _RETIRED.pop(key, None))
    if _HOOK is None and _RETIRED:
        _HOOK = register_optimizer_step_pre_hook(_check)


def stale_parameters(optimizer: torch.optim.Optimizer) -> int:
    """How many parameters of ``optimizer`` were replaced by pruning."""
    count = 0
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            ref = _RETIRED.get(id(parameter))
            count += ref is not None and ref() is parameter
    return count


def _check(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    if not _RETIRED or optimizer in _WARNED:
        return
    stale = stale_parameters(optimizer)
    if stale:
        _WARNED.add(optimizer)
        warnings.warn(
            f"{type(optimizer).__name__} steps {stale} parameter(s) that pruning replaced, so the pruned "
            "layers no longer train: build a new optimizer from model.parameters() after "
            "SoftFPGM.apply()/prune() (compresskit.fit rebuilds its own)", StaleOptimizerWarning, stacklevel=3)
