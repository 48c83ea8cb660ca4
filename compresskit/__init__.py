"""compresskit: structured pruning that never breaks a model.

Public API (see docs/DESIGN.md for the contracts between modules):

* groups: :func:`find_groups`, :class:`LayerGroupSpec`, :class:`ChannelGroup`, :class:`ChannelShuffle`,
  :class:`ChannelPool`
* importance: :func:`fpgm`, :func:`magnitude`, :data:`IMPORTANCES`
* pruning: :class:`SoftFPGM`, :func:`prune`, :func:`remove_zeroed`, :class:`PruneSummary`
* layer rules: :class:`LayerRule`, :data:`LAYER_RULES`, :func:`rule_for` (one rule per module type)
* budget: :func:`count_params`, :func:`count_macs`, :class:`ParamPredictor`, :func:`predict_params`,
  :func:`channel_summary`
* persistence: :func:`save_pruned`, :func:`load_pruned`
* training: :func:`fit`, :class:`Callback`, :class:`TrainState`; tasks: :class:`Task`,
  :class:`ClassificationTask` (``compresskit.tasks``)
* schedules: :func:`polynomial`, :func:`linear`, :func:`constant`, :func:`join`, :data:`SCHEDULES`
* export: :func:`export_onnx`, :func:`check_onnx`, :func:`export_model` (ONNX / TorchScript, dynamic axes,
  :class:`Preprocessing` metadata); deployment: ``compresskit.quantize`` (INT8), ``compresskit.benchmark``
  (latency), ``compresskit.runtime`` (ONNX Runtime sessions) are imported on use

Every name is imported on first use (PEP 562 module ``__getattr__``), so ``import compresskit``
and ``compresskit --help`` do not import torch or onnx. ``compresskit.prune`` is the module
:mod:`compresskit.prune`; calling it (``compresskit.prune(model, inputs, 0.3)``) runs the one-shot
:func:`compresskit.prune.prune`, so both ``import compresskit.prune`` and
``from compresskit import prune`` keep working.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

try:
    from importlib.metadata import PackageNotFoundError, version as _version

    __version__: str = _version("compresskit")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

#: Public name -> the submodule that defines it (imported on first access).
_EXPORTS: dict[str, str] = {
    "ParamPredictor": "budget", "channel_summary": "budget", "count_macs": "budget",
    "count_params": "budget", "predict_params": "budget",
    "Preprocessing": "export", "check_onnx": "export", "export_model": "export", "export_onnx": "export",
    "ChannelGroup": "groups", "ChannelGroups": "groups", "LayerGroupSpec": "groups",
    "SkippedCoupling": "groups", "UnprunableWarning": "groups", "cell_removal_counts": "groups",
    "channels_to_remove": "groups", "find_groups": "groups",
    "IMPORTANCES": "importance", "fpgm": "importance", "magnitude": "importance",
    "UntrustedBuilderError": "persist", "load_pruned": "persist", "save_pruned": "persist",
    "trust_builder": "persist",
    "PruneSummary": "prune", "SoftFPGM": "prune", "remove_zeroed": "prune",
    "StaleOptimizerWarning": "_stale",
    "SCHEDULES": "schedules", "constant": "schedules", "join": "schedules", "linear": "schedules",
    "polynomial": "schedules",
    "ChannelPool": "pool", "ChannelShuffle": "shuffle",
    "Callback": "train", "TrainState": "train", "fit": "train",
    "LAYER_RULES": "layers", "LayerRule": "layers", "rule_for": "layers",
    "Task": "task",
    "ClassificationTask": "tasks.classification",
}

__all__ = sorted([*_EXPORTS, "__version__", "prune"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    else:
        try:  # a submodule (compresskit.prune, compresskit.pipeline, ...) on attribute access
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # what static checkers see; at run time the names above are lazy
    from . import prune
    from ._stale import StaleOptimizerWarning
    from .budget import ParamPredictor, channel_summary, count_macs, count_params, predict_params
    from .export import Preprocessing, check_onnx, export_model, export_onnx
    from .groups import (ChannelGroup, ChannelGroups, LayerGroupSpec, SkippedCoupling, UnprunableWarning,
                         cell_removal_counts, channels_to_remove, find_groups)
    from .importance import IMPORTANCES, fpgm, magnitude
    from .layers import LAYER_RULES, LayerRule, rule_for
    from .persist import UntrustedBuilderError, load_pruned, save_pruned, trust_builder
    from .pool import ChannelPool
    from .prune import PruneSummary, SoftFPGM, remove_zeroed
    from .schedules import SCHEDULES, constant, join, linear, polynomial
    from .shuffle import ChannelShuffle
    from .task import Task
    from .tasks.classification import ClassificationTask
    from .train import Callback, TrainState, fit
