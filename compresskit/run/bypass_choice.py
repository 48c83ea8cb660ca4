"""Blocks the search may switch off (``search.bypass``): search dimensions, decoding, the reduced students.

Each candidate block (a name in the student's ``bypassable``, :mod:`compresskit.models.bypass`) is one more
search dimension, named ``bypass:<block>`` so it cannot clash with a layer group. The generic search
(:mod:`compresskit.search`) only optimises named dimensions inside bounds; it wants ``hi < 1``, so a
bypass dimension's bounds are :data:`BYPASS_BOUNDS` and the block is bypassed in the upper half
(value ``>= THRESHOLD``: the unit-cube coordinate ``>= 0.5``). :func:`decode` splits a point into
layer-group rates and the chosen blocks.

:class:`Reductions` holds, per subset of bypassed blocks (built once, on first use), the distilled
student with those blocks replaced by :class:`~compresskit.models.bypass.Bypass`, its channel groups (found on
the reduced model; layer-group patterns that named only removed modules are dropped by
:meth:`~compresskit.run.layer_groups.GroupSelection.find`) and its exact
:class:`~compresskit.pruning.budget.ParamPredictor`. Cost: one ``find_groups`` (trace + exactness check) per
subset the search visits, at most ``2 ** len(search.bypass)``.

Under a latency budget, :class:`BypassLatency` holds one latency model per subset
(:class:`~compresskit.deploy.latency.LatencyModel` of the reduced student, timed against the full student),
calibrated the first time the search asks for a prediction in that subset.

The chosen blocks travel in ``rates.json`` (``"bypass"``); every later phase builds the student with
them bypassed through its builder (``model_args.bypass``), so saved models record and rebuild them
(:func:`with_bypass`, :func:`load_student`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from compresskit.run.context import ModelSource
from compresskit.run.workspace import Workspace
from compresskit.tasks.protocol import Task

__all__ = ["BYPASS_BOUNDS", "BYPASS_PREFIX", "THRESHOLD", "BypassLatency", "Reductions", "bypass_dims", "chosen_bypass",
           "decode", "fit_rates", "load_student", "with_bypass"]

#: Prefix of a bypass dimension's name (``bypass:assn``).
BYPASS_PREFIX = "bypass:"
#: Bounds of a bypass dimension (the generic search requires ``0 <= lo < hi < 1``).
BYPASS_BOUNDS = (0.0, 0.99)
#: A block is bypassed when its dimension's value is at least this (the middle of the bounds).
THRESHOLD = (BYPASS_BOUNDS[0] + BYPASS_BOUNDS[1]) / 2


def bypass_dims(blocks: Sequence[str]) -> dict[str, tuple[float, float]]:
    """The search dimensions of the candidate ``blocks``: ``{"bypass:<block>": BYPASS_BOUNDS}``."""
    return {f"{BYPASS_PREFIX}{block}": BYPASS_BOUNDS for block in blocks}


def decode(point: Mapping[str, float], blocks: Sequence[str]) -> tuple[dict[str, float], list[str]]:
    """A search point -> ``(layer-group rates, bypassed blocks in candidate order)``."""
    rates = {name: float(value) for name, value in point.items() if not name.startswith(BYPASS_PREFIX)}
    return rates, [block for block in blocks if float(point[f"{BYPASS_PREFIX}{block}"]) >= THRESHOLD]


def fit_rates(rates: Mapping[str, float], layer_groups: Sequence[str]) -> dict[str, float]:
    """``rates`` of the layer groups a (reduced) model still has (a bypass may remove a whole group)."""
    return {name: rate for name, rate in rates.items() if name in layer_groups}


def with_bypass(source: ModelSource, blocks: Sequence[str]) -> ModelSource:
    """``source`` with ``blocks`` added to its builder's ``bypass`` argument (``source`` itself without blocks)."""
    if not blocks:
        return source
    fixed = list(source.model_args.get("bypass", ()))
    return dataclasses.replace(source, model_args={**source.model_args,
                                                   "bypass": [*fixed, *[b for b in blocks if b not in fixed]]})


def chosen_bypass(workspace: Workspace) -> list[str]:
    """The blocks the search chose (``rates.json``'s ``"bypass"``; none without it or without the file)."""
    if not workspace.path("rates.json").exists():
        return []
    return list(workspace.read_json("rates.json").get("bypass", []))


def load_student(source: ModelSource, workspace: Workspace, task: Task, blocks: Sequence[str]) -> nn.Module:
    """The student built with ``blocks`` bypassed and ``student.pt`` loaded strictly, minus exactly the
    bypassed blocks' tensors.

    Raises:
        RuntimeError: the builder did not bypass a block, or the weights do not fit (strict load).
    """
    from compresskit.models.bypass import Bypass, drop_bypassed

    model = with_bypass(source, blocks).build(task)
    kept = [b for b in blocks if not isinstance(model.get_submodule(b), Bypass)]
    if kept:
        raise RuntimeError(f"the student builder {source.model!r} did not bypass {kept} (bypass={list(blocks)})")
    state = drop_bypassed(model, workspace.load_state_dict("student.pt"))
    model.load_state_dict(state)  # strict: anything but the bypassed blocks' tensors must fit
    return model


class Reductions:
    """The student with each subset of candidate blocks bypassed: ``(model, groups, predictor)``, cached.

    Args:
        student: The distilled student (never modified; each subset bypasses a copy).
        groups: Its channel groups (the empty subset's).
        find: ``find(model, example_inputs) -> groups`` (:meth:`GroupSelection.find`).
        example_inputs: The task's example inputs (tracing and the bypass shape check).
    """

    def __init__(self, student: nn.Module, groups: Any, find: Callable[..., Any],
                 example_inputs: tuple[torch.Tensor, ...]) -> None:
        from compresskit.pruning.budget import ParamPredictor

        self.find, self.example_inputs = find, example_inputs
        self.student = student
        self.cache: dict[tuple[str, ...], tuple[nn.Module, Any, Any]] = {
            (): (student, groups, ParamPredictor(student, groups))}

    def get(self, blocks: Sequence[str]) -> tuple[nn.Module, Any, Any]:
        """``(reduced model, its channel groups, its ParamPredictor)`` with ``blocks`` bypassed."""
        from compresskit.models.bypass import bypass_blocks
        from compresskit.pruning.budget import ParamPredictor

        key = tuple(blocks)
        if key not in self.cache:
            model = bypass_blocks(copy.deepcopy(self.student), key, self.example_inputs)
            groups = self.find(model, self.example_inputs)
            self.cache[key] = (model, groups, ParamPredictor(model, groups))
        return self.cache[key]

    def params(self, rates: Mapping[str, float], blocks: Sequence[str]) -> int:
        """Exact parameter count of the student with ``blocks`` bypassed, pruned at ``rates``."""
        predictor = self.get(blocks)[2]
        return int(predictor(fit_rates(rates, predictor.layer_groups)))


class BypassLatency:
    """Latency per subset of bypassed blocks: a search point -> that subset's calibrated prediction.

    Each subset has its own :class:`~compresskit.deploy.latency.LatencyModel`: the reduced student (from
    ``reductions``), its cache file keyed by the blocks and the reduced architecture, timed against the
    unpruned full student and on its millisecond scale (:meth:`~compresskit.deploy.latency.LatencySettings.open_reduced`),
    so one limit applies to every subset. It is calibrated inside the bounds of the layer groups the
    subset keeps the first time the search predicts a point in it: ``3 + search.latency.calibration``
    exports and timings (cached on disk; a resumed search or a second run measures nothing).

    Args:
        budget: The run's :class:`~compresskit.deploy.latency.LatencyBudget` (the empty subset's model, settings).
        reductions: The reduced students (:class:`Reductions`).
        bounds: The layer groups' rate bounds.
        candidates: The ``search.bypass`` blocks, in order.
    """

    def __init__(self, budget: Any, reductions: Reductions, bounds: Mapping[str, tuple[float, float]],
                 candidates: Sequence[str]) -> None:
        self.budget, self.reductions, self.bounds, self.candidates = budget, reductions, dict(bounds), list(candidates)
        self.models: dict[tuple[str, ...], Any] = {}

    def get(self, blocks: Sequence[str]) -> Any:
        """The calibrated latency model of the student with ``blocks`` bypassed (calibrated on first use)."""
        key = tuple(blocks)
        if key not in self.models:
            model, groups, predictor = self.reductions.get(key)
            settings = self.budget.settings
            latency = settings.open_reduced(model, groups, key, self.budget.model)
            if latency.weights is None:
                kept = {name: bound for name, bound in self.bounds.items() if name in predictor.layer_groups}
                latency.calibrate(kept, samples=settings.samples, seed=settings.seed)
            self.models[key] = latency
        return self.models[key]

    def resolve(self, point: Mapping[str, float]) -> tuple[Any, dict[str, float]]:
        """A search point -> ``(its subset's calibrated latency model, the rates of the groups it keeps)``."""
        rates, blocks = decode(point, self.candidates)
        latency = self.get(blocks)
        return latency, fit_rates(rates, latency.predictor.layer_groups)

    def predict(self, point: Mapping[str, float]) -> float:
        """Predicted milliseconds of the search point (rates and blocks)."""
        latency, rates = self.resolve(point)
        return float(latency.predict(rates))
