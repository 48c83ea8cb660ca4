"""compresskit: structured pruning that never breaks a model.

The package is a stack of concept sub-packages; each imports only from those listed before it::

    utils -> layers -> groups -> pruning -> search | distill | train -> models -> deploy -> tasks
          -> config -> report -> run -> cli

* ``layers``: :class:`LayerRule` per module type, :class:`ChannelPool`, :class:`ChannelShuffle`;
* ``groups``: :func:`find_groups` -- coupled channel sets, verified removable;
* ``pruning``: :class:`SoftFPGM`, :func:`prune`, :func:`remove_zeroed`, importances, schedules,
  least-squares reconstruction, :func:`count_params` / :func:`count_macs` / :class:`ParamPredictor`;
* ``search``: BoTorch rate search under a budget; ``distill``: weighted distillation loss;
  ``train``: :func:`fit` with :class:`Callback` hook points, resumable, DDP-aware;
* ``models``: :func:`save_pruned` / :func:`load_pruned`, model specs, recipe weights, bypasses;
* ``deploy``: ONNX / TorchScript export, INT8, runtimes, latency benchmarks and models;
* ``tasks``: the :class:`Task` protocol, :class:`ClassificationTask`;
* ``config``: recipes (YAML -> validated dataclasses); ``report``: report.md and plots;
* ``run``: the phases of ``compresskit run`` and their driver; ``cli``: the click commands.

The names below are imported on first use (PEP 562), so ``import compresskit`` and
``compresskit --help`` import neither torch nor onnx. Old module paths of compresskit 0.1
(``compresskit.prune``, ``compresskit.pipeline``, ``compresskit.recipe``, ...) still import, with a
``DeprecationWarning`` naming the new one (:mod:`compresskit.utils.moved`).
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

from compresskit.utils.moved import MovedModules

try:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _version

    __version__: str = _version("compresskit")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

#: The sub-package that offers each public name (imported on first access).
_PUBLIC: dict[str, tuple[str, ...]] = {
    "groups": ("ChannelGroup", "ChannelGroups", "LayerGroupSpec", "SkippedCoupling", "UnprunableWarning",
               "cell_removal_counts", "channels_to_remove", "find_groups"),
    "pruning": ("IMPORTANCES", "SCHEDULES", "ParamPredictor", "PruneSummary", "SoftFPGM", "StaleOptimizerWarning",
                "channel_summary", "constant", "count_macs", "count_params", "fpgm", "join", "linear", "magnitude",
                "polynomial", "predict_params", "prune", "remove_zeroed"),
    "deploy": ("Preprocessing", "check_onnx", "export_model", "export_onnx"),
    "models": ("UntrustedBuilderError", "load_pruned", "save_pruned", "trust_builder"),
    "layers": ("LAYER_RULES", "ChannelPool", "ChannelShuffle", "LayerRule", "rule_for"),
    "train": ("Callback", "TrainState", "fit"),
    "tasks": ("ClassificationTask", "Task"),
}
_EXPORTS: dict[str, str] = {name: package for package, names in _PUBLIC.items() for name in names}

#: compresskit 0.1's root modules -> where they live now (importable, with a DeprecationWarning).
MOVED_MODULES: dict[str, str] = {
    "benchmark": "compresskit.deploy.benchmark",
    "budget": "compresskit.pruning.budget",
    "bypass": "compresskit.models.bypass",
    "checkpoints": "compresskit.models.weights",
    "distributed": "compresskit.train.distributed",
    "export": "compresskit.deploy.export",
    "importance": "compresskit.pruning.importance",
    "latency": "compresskit.deploy.latency",
    "model_spec": "compresskit.models.spec",
    "persist": "compresskit.models.persist",
    "pipeline": "compresskit.run",
    "plan": "compresskit.run.plan",
    "plots": "compresskit.report.plots",
    "pool": "compresskit.layers.pool",
    "prune": "compresskit.pruning.soft_fpgm",
    "quantize": "compresskit.deploy.quantize",
    "recipe": "compresskit.config",
    "reconstruct": "compresskit.pruning.reconstruct",
    "runtime": "compresskit.deploy.runtime",
    "schedules": "compresskit.pruning.schedules",
    "shuffle": "compresskit.layers.shuffle",
    "task": "compresskit.tasks.protocol",
}
if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(MovedModules({f"{__name__}.{old}": new for old, new in MOVED_MODULES.items()},
                                      callables={f"{__name__}.prune": "prune"}))

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    else:
        try:  # a sub-package (compresskit.deploy, compresskit.run, ...) on attribute access
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
    from .deploy import Preprocessing, check_onnx, export_model, export_onnx
    from .groups import (
        ChannelGroup,
        ChannelGroups,
        LayerGroupSpec,
        SkippedCoupling,
        UnprunableWarning,
        cell_removal_counts,
        channels_to_remove,
        find_groups,
    )
    from .layers import LAYER_RULES, ChannelPool, ChannelShuffle, LayerRule, rule_for
    from .models import UntrustedBuilderError, load_pruned, save_pruned, trust_builder
    from .pruning import (
        IMPORTANCES,
        SCHEDULES,
        ParamPredictor,
        PruneSummary,
        SoftFPGM,
        StaleOptimizerWarning,
        channel_summary,
        constant,
        count_macs,
        count_params,
        fpgm,
        join,
        linear,
        magnitude,
        polynomial,
        predict_params,
        prune,
        remove_zeroed,
    )
    from .tasks import ClassificationTask, Task
    from .train import Callback, TrainState, fit
