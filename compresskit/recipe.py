"""Recipes: plain YAML files turned into frozen, validated dataclasses.

A recipe says, for one compression run, which task (model family, data, loss,
metrics) to use and how long each phase of the pipeline runs. Everything that
reads a recipe goes through :func:`load_recipe`, which is the *only* place where
recipe values are checked. The CLI's ``--set a.b=c`` overrides and ``--profile``
selections are merged into the raw YAML first and checked by the same code, so a
bad override reads exactly like a bad file::

    recipes/x.yaml: prune.groups.backbone_early.bounds must be within [0, 1), got 1.2
    recipes/x.yaml (--set distill.alpha=1.5): distill.alpha must be within [0, 1], got 1.5

Composition, in order (later wins):

1. ``extends: base.yaml`` (a path relative to the extending file, or a list of
   them) -- the bases are deep-merged first; cycles are an error.
2. The file's own keys.
3. ``profiles.<name>`` selected with ``--profile NAME`` -- a named mapping of
   overrides (nested mappings, or dotted keys such as ``distill.epochs: 50``).
4. ``--set key.path=value`` overrides, each value parsed as a YAML scalar or
   flow collection (``--set export.input_size=[64,64]``).

Deep merge: mappings merge key by key; any other value (lists included) replaces.
Setting a key to ``null`` resets it to the default.

Tasks and models are named (``task: featherface``, ``model: nano_b``) or given as
``module:callable`` for users' own code, e.g. ``task:
examples.shapes_classifier:ShapesTask``. The module is imported with
:mod:`importlib` (the current directory is put on ``sys.path``, as ``python -m``
does); failures raise :class:`RecipeError` naming the string.

Caveats:
    PyYAML follows YAML 1.1, where ``1e-3`` (no dot) is a *string*. Float fields
    accept such strings when they parse as a number, so ``lr: 1e-3`` works.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import math
import os
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from compresskit._yaml import YamlInputError, decode_yaml_bytes, load_yaml

__all__ = [
    "BudgetConfig",
    "DistillConfig",
    "ExportConfig",
    "LayerGroupConfig",
    "PruneConfig",
    "QuantizeConfig",
    "Recipe",
    "RecipeError",
    "ScheduleConfig",
    "SearchConfig",
    "StudentConfig",
    "TASKS",
    "TeacherConfig",
    "TrainConfig",
    "TrialConfig",
    "apply_overrides",
    "checkpoint_path",
    "ensure_cwd_importable",
    "load_recipe",
    "parse_override",
    "recipe_to_dict",
    "resolve_object",
    "validate_recipe",
]

#: Named tasks: ``task: <name>`` in a recipe means the ``module:attr`` here. An
#: explicit table, imported lazily (the library never imports ``reference`` at
#: import time). Anything else is given as ``module:callable`` directly.
TASKS: dict[str, str] = {
    "featherface": "reference.featherface.task:FeatherFaceTask",
    "shapes": "examples.shapes_classifier:ShapesTask",
    "image_classification": "compresskit.tasks.classification:image_folders",
}


class RecipeError(ValueError):
    """A recipe (or an override of it) is malformed.

    The message always starts with the source (file, plus the ``--set`` or
    profile that introduced the value) and names the key path and the bad value.
    It is capped at :data:`MESSAGE_LIMIT` characters, so a huge quoted value cannot
    flood the terminal.
    """

    MESSAGE_LIMIT = 1000

    def __init__(self, message: str) -> None:
        if len(message) > self.MESSAGE_LIMIT:
            message = f"{message[:self.MESSAGE_LIMIT]}... (message cut, {len(message):,} chars)"
        super().__init__(message)


# --- field constraints ------------------------------------------------------


@dataclass(frozen=True)
class _Range:
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True

    def contains(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (value == self.low and not self.low_inclusive)):
            return False
        if self.high is not None and (
            value > self.high or (value == self.high and not self.high_inclusive)
        ):
            return False
        return True

    def describe(self) -> str:
        if self.high is None:
            return f">= {_fmt(self.low)}" if self.low_inclusive else f"> {_fmt(self.low)}"
        if self.low is None:
            return f"<= {_fmt(self.high)}" if self.high_inclusive else f"< {_fmt(self.high)}"
        left = "[" if self.low_inclusive else "("
        right = "]" if self.high_inclusive else ")"
        return f"within {left}{_fmt(self.low)}, {_fmt(self.high)}{right}"


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else str(value)


def _in(low: float | None = None, high: float | None = None, *, low_inclusive: bool = True,
        high_inclusive: bool = True, doc: str = "") -> dict[str, Any]:
    return {"range": _Range(low, high, low_inclusive, high_inclusive), "doc": doc}


RATE = _in(0.0, 1.0, high_inclusive=False)  # pruning rates: [0, 1)
POSITIVE = _in(0.0, low_inclusive=False)
NON_NEGATIVE = _in(0.0)
AT_LEAST_ONE = _in(1)


# --- schema -----------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """One training loop: used by ``teacher.train``, ``distill``, ``finetune``.

    Attributes:
        epochs: Epochs to train (0 skips the loop).
        lr: Peak learning rate.
        batch_size: Mini-batch size.
        weight_decay: Decoupled weight decay (AdamW) or L2 (SGD).
        optimizer: ``adamw`` or ``sgd`` (momentum 0.9, Nesterov).
        scheduler: ``cosine`` (annealed to 0 over ``epochs``, stepped per epoch), ``onecycle``
            (Smith's one-cycle policy, ``torch.optim.lr_scheduler.OneCycleLR``: warm-up over the
            first 15% of the optimizer steps, then cosine annealing, stepped per optimizer step;
            converges in far fewer epochs on short CPU runs) or ``none``.
    """

    epochs: int = field(default=1, metadata=_in(0))
    lr: float = field(default=1e-3, metadata=POSITIVE)
    batch_size: int = field(default=32, metadata=AT_LEAST_ONE)
    weight_decay: float = field(default=0.0, metadata=NON_NEGATIVE)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    scheduler: Literal["cosine", "onecycle", "none"] = "cosine"


@dataclass(frozen=True)
class TeacherConfig:
    """The teacher: trained first unless a checkpoint is given.

    Attributes:
        model: A model name known to the task, or ``module:callable``.
        model_args: Keyword arguments for the model builder.
        checkpoint: A state_dict file (``weights_only``); a relative path is taken from the
            working directory, else from the recipe's folder. ``null`` trains the teacher with ``train``.
        train: The teacher's training loop.
    """

    model: str
    model_args: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True)
class StudentConfig:
    """The student architecture that is distilled, then pruned.

    Attributes:
        model: A model name known to the task, or ``module:callable``.
        model_args: Keyword arguments for the model builder.
        checkpoint: Weights the student starts from (read like ``teacher.checkpoint``:
            ``task.load_checkpoint`` when the task has one, else a strict ``load_state_dict``).
        init_from: ``teacher``: before distillation, copy every teacher tensor whose name and
            shape match the student's (logged: how many tensors / parameters were inherited).
    """

    model: str
    model_args: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    init_from: Literal["teacher"] | None = None


@dataclass(frozen=True)
class DistillConfig(TrainConfig):
    """Student training with weighted knowledge distillation from the teacher.

    Without a teacher (``teacher: null``) the student trains on the task loss.

    Attributes:
        temperature: Softening temperature of classification outputs.
        alpha: Weight of the distillation term; ``1 - alpha`` weights the task loss.
        learnable_weights: Learn per-output Kendall weights (else fixed equal).
        phases: Later training phases that also distil from the (unpruned) teacher, with the
            same ``temperature`` / ``alpha`` and fresh loss weights: ``soft_prune``, ``finetune``.
    """

    temperature: float = field(default=4.0, metadata=POSITIVE)
    alpha: float = field(default=0.7, metadata=_in(0.0, 1.0))
    learnable_weights: bool = True
    phases: tuple[Literal["soft_prune", "finetune"], ...] = ()


@dataclass(frozen=True)
class BudgetConfig:
    """Feasible pruned students: parameter counts in ``[min_params, max_params]`` and, optionally,
    ONNX Runtime latency (``compresskit.latency``, settings in ``search.latency``).

    Attributes:
        max_latency_ms: Largest predicted latency in milliseconds (on this machine).
        max_latency_ratio: Largest predicted latency as a fraction of the unpruned student's.
            With both, the smaller limit holds.
    """

    min_params: int = field(default=0, metadata=NON_NEGATIVE)
    max_params: int = field(default=2**62, metadata=AT_LEAST_ONE)
    max_latency_ms: float | None = field(default=None, metadata=POSITIVE)
    max_latency_ratio: float | None = field(default=None, metadata=_in(0.0, 1.0, low_inclusive=False))


@dataclass(frozen=True)
class LatencyConfig:
    """How a latency budget is measured and predicted (``compresskit.latency.LatencyModel``).

    Attributes:
        input_size: ``[height, width]`` of the timed input (``null``: ``export.input_size``, else the
            task's example input).
        threads: ONNX Runtime intra-op threads.
        calibration: Sobol rate vectors measured directly to fit the predictor (plus the unpruned
            model and the two corners of the bounds).
        rounds: Interleaved timing rounds per direct measurement.
        cache_dir: Cache folder (``null``: ``$XDG_CACHE_HOME/compresskit/latency``); files are keyed
            by model, input size, threads and ONNX Runtime version.
    """

    input_size: tuple[int, int] | None = field(default=None, metadata=AT_LEAST_ONE)
    threads: int = field(default=1, metadata=AT_LEAST_ONE)
    calibration: int = field(default=12, metadata=AT_LEAST_ONE)
    rounds: int = field(default=10, metadata=AT_LEAST_ONE)
    cache_dir: str | None = None


@dataclass(frozen=True)
class TrialConfig:
    """How one candidate rate vector is scored during the search.

    The candidate is pruned one-shot from the distilled student, trained
    ``epochs`` on a ``subset`` fraction of the training data, and scored by the
    task loss on the validation loader (lower is better).

    With ``holdout`` (a fraction in (0, 1)), a part of the *training* set chosen by
    ``recipe.seed`` is held out instead: trials train on the rest and are scored by
    the task loss on the held-out part (``task.heldout_loader``), so the validation
    images that the reported metrics use are never seen by the search.
    """

    epochs: int = field(default=1, metadata=_in(0))
    subset: float = field(default=0.2, metadata=_in(0.0, 1.0, low_inclusive=False))
    lr: float = field(default=1e-3, metadata=POSITIVE)
    batch_size: int = field(default=32, metadata=AT_LEAST_ONE)
    max_val_batches: int | None = field(default=None, metadata=AT_LEAST_ONE)
    holdout: float | None = field(default=None, metadata=_in(0.0, 1.0, low_inclusive=False,
                                                               high_inclusive=False))


@dataclass(frozen=True)
class SearchConfig:
    """Per-layer-group pruning-rate search under a parameter budget.

    Attributes:
        enabled: ``false`` uses ``prune.rates`` as given.
        method: ``bo`` (BoTorch LogEI) or ``random``.
        iterations: Candidates evaluated after the initial points.
        initial_points: Sobol/random initial points (``null``: the search's default).
        budget: Feasible parameter counts (and latency).
        trial: How a candidate is scored.
        latency: How latency is measured, with a latency budget.
    """

    enabled: bool = True
    method: Literal["bo", "random"] = "bo"
    iterations: int = field(default=25, metadata=_in(0))
    initial_points: int | None = field(default=None, metadata=AT_LEAST_ONE)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    trial: TrialConfig = field(default_factory=TrialConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)


@dataclass(frozen=True)
class LayerGroupConfig:
    """A named set of layers that share one pruning rate (see ``LayerGroupSpec``).

    Attributes:
        patterns: ``fnmatch`` globs over ``model.named_modules()`` names.
        types: Module class names, e.g. ``[Conv2d]``.
        bounds: ``[low, high]`` range searched for this group's rate, in ``[0, 1)``.
    """

    patterns: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    bounds: tuple[float, float] = field(default=(0.0, 0.9), metadata=RATE)


@dataclass(frozen=True)
class ScheduleConfig(TrainConfig):
    """The soft-pruning phase: training while filters are re-zeroed on a schedule.

    The rate of each layer group ramps from ``initial`` to its searched (or
    given) rate between epochs ``start`` and ``end`` (``null``: ``epochs``),
    following ``kind`` (``polynomial`` with ``power`` 3 is AGP).

    Attributes:
        kind: A key of ``compresskit.schedules.SCHEDULES`` with a ramp.
        power: Exponent of the polynomial ramp.
        initial: Starting rate of the ramp.
        start: First epoch of the ramp.
        end: Epoch the final rate is reached (``null``: the last epoch).
        step_every: Re-rank and re-zero every this many epochs.
    """

    kind: Literal["polynomial", "linear", "constant"] = "polynomial"
    power: float = field(default=3.0, metadata=POSITIVE)
    initial: float = field(default=0.0, metadata=RATE)
    start: int = field(default=0, metadata=_in(0))
    end: int | None = field(default=None, metadata=AT_LEAST_ONE)
    step_every: int = field(default=1, metadata=AT_LEAST_ONE)


@dataclass(frozen=True)
class PruneConfig:
    """Which channels may be pruned, how they are ranked, and the soft phase.

    Attributes:
        importance: A key of ``compresskit.importance.IMPORTANCES``.
        groups: Layer groups by name; ``null`` takes the task's ``layer_groups()``.
        protect: Module globs whose output channels are never pruned (added to
            the task's own).
        rates: Fixed rate per layer group, used when ``search.enabled`` is false.
        schedule: The soft-pruning training phase.
        channel_multiple: Kept channels are rounded up to a multiple of this (e.g. 4, 8, 16:
            hardware-friendly widths; ``compresskit.groups.round_channels``); 1: no rounding.
    """

    importance: Literal["fpgm", "magnitude"] = "fpgm"
    groups: dict[str, LayerGroupConfig] | None = None
    protect: tuple[str, ...] = ()
    rates: dict[str, float] | None = field(default=None, metadata=RATE)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    channel_multiple: int = field(default=1, metadata=AT_LEAST_ONE)


@dataclass(frozen=True)
class ExportConfig:
    """ONNX export of the final pruned model and its ONNX Runtime parity check.

    Attributes:
        onnx: Export at all.
        input_size: ``[height, width]`` of the exported input (``null``: the task's).
        atol: Largest absolute difference allowed between PyTorch and ONNX Runtime.
        opset: ONNX opset version.
    """

    onnx: bool = True
    input_size: tuple[int, int] | None = field(default=None, metadata=AT_LEAST_ONE)
    atol: float = field(default=1e-4, metadata=POSITIVE)
    opset: int = field(default=17, metadata=_in(7, 30))


@dataclass(frozen=True)
class QuantizeConfig:
    """INT8 post-training static quantization of the final model (ONNX Runtime, QDQ); off by default.

    The phase exports the final model with dynamic axes (``model.fp32.onnx``), calibrates activation
    ranges on ``calibration_samples`` inputs from the task's training loader, writes
    ``model.int8.onnx``, and reports the task's metrics (AP for the detector) and the ONNX Runtime
    latency (1 thread, interleaved rounds) of both.

    Attributes:
        enabled: Run the phase.
        calibration_samples: Training inputs used for calibration.
        method: ``minmax``, ``entropy`` or ``percentile`` (``compresskit.quantize.CALIBRATION_METHODS``).
        per_channel: One weight scale per output channel (else per tensor).
        rounds: Interleaved latency rounds (FP32 vs INT8).
        exclude: ``fnmatch`` globs over ONNX node names kept in FP32 (``compresskit.quantize.quantize_onnx``).
    """

    enabled: bool = False
    calibration_samples: int = field(default=32, metadata=AT_LEAST_ONE)
    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    rounds: int = field(default=10, metadata=AT_LEAST_ONE)
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recipe:
    """A validated recipe. Build it with :func:`load_recipe`, never by hand.

    Attributes:
        name: The run's name (used in the report).
        task: A name in :data:`TASKS` or ``module:callable`` returning a ``Task``.
        student: The student architecture.
        seed: Seed of every random choice of the run.
        deterministic: Use deterministic algorithms (exact resume on CPU).
        threads: CPU threads for torch (``null``: torch's default). Keep it fixed
            across a run and its resumptions for bitwise-equal results.
        run_dir: Where outputs go; relative to the current directory.
        task_args: Passed as keyword arguments to the task factory.
        teacher: The teacher, or ``null`` (no distillation).
        distill: Student training (with distillation when there is a teacher).
        search: The pruning-rate search.
        prune: Layer groups, importance, soft-pruning schedule.
        finetune: Training after physical removal.
        export: ONNX export.
        quantize: INT8 quantization of the exported model (off by default).
        profiles: Named override sets; kept for reference, already applied.
        profile: The profile that was applied, if any.
        source: The recipe file this was loaded from.
    """

    name: str
    task: str
    student: StudentConfig
    seed: int = field(default=0, metadata=NON_NEGATIVE)
    deterministic: bool = True
    threads: int | None = field(default=None, metadata=AT_LEAST_ONE)
    run_dir: str | None = None
    task_args: dict[str, Any] = field(default_factory=dict)
    teacher: TeacherConfig | None = None
    distill: DistillConfig = field(default_factory=DistillConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    finetune: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    profile: str | None = None
    source: str = "<recipe>"

    @property
    def resolved_run_dir(self) -> Path:
        """``run_dir``, or ``runs/<name>`` when unset."""
        return Path(self.run_dir) if self.run_dir else Path("runs") / self.name


# --- provenance: which file / override introduced each value ---------------------


class _Sources:
    """Maps key paths to where their value came from, for error messages."""

    def __init__(self, default: str) -> None:
        self.default = default
        self._by_path: dict[tuple[str, ...], str] = {}

    def mark(self, data: Any, label: str, prefix: tuple[str, ...] = ()) -> None:
        self._by_path[prefix] = label
        if isinstance(data, Mapping):
            for key, value in data.items():
                self.mark(value, label, prefix + (str(key),))

    def label(self, path: tuple[str, ...]) -> str:
        for end in range(len(path), -1, -1):
            if path[:end] in self._by_path:
                return self._by_path[path[:end]]
        return self.default


class _Failure(Exception):
    def __init__(self, path: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def _dotted(path: Sequence[str]) -> str:
    return ".".join(path) if path else "<top level>"


# --- YAML loading, extends, merging -------------------------------------------


def _read_yaml(path: Path, label: str) -> dict[str, Any]:
    """Parse a recipe file with the bounded safe loader (:mod:`compresskit._yaml`): duplicate keys,
    alias bombs, deep nesting, binary and non-UTF-8 files are one-line :class:`RecipeError`s."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RecipeError(f"{label}: recipe file not found: {path}") from None
    except OSError as error:
        raise RecipeError(f"{label}: cannot read recipe file {path}: {error.strerror or error}") from None
    try:
        data = load_yaml(decode_yaml_bytes(raw))
    except YamlInputError as error:
        raise RecipeError(f"{label}: {error}") from None
    except yaml.YAMLError as error:
        raise RecipeError(f"{label}: invalid YAML: {' '.join(str(error).split())}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{label}: a recipe must be a mapping at the top level, "
                          f"got {type(data).__name__}")
    return data


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(dict(merged[key]), value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _display(path: Path) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:  # other drive on Windows
        return str(path)
    return str(path) if relative.startswith("..") else relative


def _load_with_extends(path: Path, sources: _Sources, chain: tuple[Path, ...]) -> dict[str, Any]:
    resolved = path.resolve()
    label = _display(path)
    if resolved in chain:
        cycle = " -> ".join(_display(p) for p in chain + (resolved,))
        raise RecipeError(f"{label}: extends cycle: {cycle}")
    data = _read_yaml(path, label)
    bases = data.pop("extends", None)
    if bases is None:
        bases = []
    elif isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise RecipeError(f"{label}: extends must be a path or a list of paths, got {bases!r}")
    merged: dict[str, Any] = {}
    for base in bases:
        base_path = path.parent / base
        if not base_path.exists():
            raise RecipeError(f"{label}: extends {base!r}: file not found: {_display(base_path)}")
        merged = _deep_merge(merged, _load_with_extends(base_path, sources, chain + (resolved,)))
    sources.mark(data, label)
    return _deep_merge(merged, data)


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """Split ``"a.b.c=value"`` into a key path and a YAML-parsed value.

    Args:
        text: The override as given to ``--set``.

    Returns:
        ``(("a", "b", "c"), value)``; ``value`` is parsed with ``yaml.safe_load``
        (``3`` -> int, ``1e-3`` -> float, ``[64,64]`` -> list, ``null`` -> None).

    Raises:
        RecipeError: If there is no ``=`` or the key is empty.

    Example:
        >>> parse_override("distill.alpha=0.5")
        (('distill', 'alpha'), 0.5)
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise RecipeError(f"--set {text}: expected key.path=value, e.g. distill.epochs=5")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise RecipeError(f"--set {text}: cannot parse value {raw!r}: {error}") from None
    value = _coerce_numeric_string(value)
    return tuple(key.split(".")), value


def _coerce_numeric_string(value: Any) -> Any:
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        if math.isfinite(number) and any(c in value.lower() for c in ".e"):
            return number
    return value


def _set_path(data: dict[str, Any], path: tuple[str, ...], value: Any, label: str) -> None:
    node = data
    for depth, key in enumerate(path[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict):
            raise RecipeError(
                f"{label}: cannot set {_dotted(path)}: {_dotted(path[: depth + 1])} "
                f"is {child!r}, not a mapping"
            )
        node = child
    node[path[-1]] = value


def apply_overrides(
    data: Mapping[str, Any], overrides: Sequence[str], source: str = "<recipe>"
) -> dict[str, Any]:
    """Apply ``--set key.path=value`` overrides to a raw (unvalidated) recipe dict.

    Validation happens afterwards, in :func:`validate_recipe`, exactly as for a file.

    Args:
        data: The raw recipe mapping.
        overrides: Strings ``"key.path=value"``.
        source: The recipe file name, for messages.

    Returns:
        A new dict with the overrides applied.

    Raises:
        RecipeError: If an override is malformed or descends into a non-mapping.

    Example:
        >>> apply_overrides({"distill": {"epochs": 2}}, ["distill.epochs=5"])
        {'distill': {'epochs': 5}}
    """
    result = copy.deepcopy(dict(data))
    for text in overrides:
        path, value = parse_override(text)
        _set_path(result, path, value, f"{source} (--set {text})")
    return result


def _expand_dotted(data: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1, "c": {"d.e": 2}}`` -> ``{"a": {"b": 1}, "c": {"d": {"e": 2}}}``."""
    result: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            value = _expand_dotted(value)
        parts = str(key).split(".")
        nested: Any = value
        for part in reversed(parts[1:]):
            nested = {part: nested}
        result = _deep_merge(result, {parts[0]: nested})
    return result


# --- validation -----------------------------------------------------------------


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is tuple:
        args = typing.get_args(annotation)
        plural = {int: "integers", float: "numbers", str: "strings"}.get(args[0], "items")
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {plural}"
        return f"a list of {len(args)} {plural}"
    if origin is dict:
        return f"a mapping of {_type_name(typing.get_args(annotation)[1])}"
    if dataclasses.is_dataclass(annotation):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def _convert(value: Any, annotation: Any, path: tuple[str, ...], metadata: Mapping[str, Any]) -> Any:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return copy.deepcopy(value)
    if origin in (Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        non_null = [a for a in options if a is not type(None)]
        if len(non_null) == 1:
            return _convert(value, non_null[0], path, metadata)
        raise _Failure(path, f"must be {_type_name(annotation)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value not in choices or isinstance(value, bool):
            raise _Failure(path, f"must be {_type_name(annotation)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, path)
    if origin is tuple:
        args = typing.get_args(annotation)
        if isinstance(value, str) and len(args) == 2 and args[1] is Ellipsis:
            value = [value]  # a single pattern is a one-element list
        if not isinstance(value, (list, tuple)):
            raise _Failure(path, f"must be {_type_name(annotation)}, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            element_types = [args[0]] * len(value)
        else:
            if len(value) != len(args):
                raise _Failure(path, f"must be {_type_name(annotation)}, got {value!r}")
            element_types = list(args)
        # Elements are reported under the tuple's own path: "bounds must be ..., got 1.2".
        return tuple(_convert(v, t, path, metadata) for v, t in zip(value, element_types))
    if origin is dict:
        _, value_type = typing.get_args(annotation)
        if not isinstance(value, Mapping):
            raise _Failure(path, f"must be {_type_name(annotation)}, got {value!r}")
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Failure(path, f"keys must be strings, got {key!r}")
            result[key] = _convert(item, value_type, path + (key,), metadata)
        return result
    if annotation is bool:
        if not isinstance(value, bool):
            raise _Failure(path, f"must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        ):
            raise _Failure(path, f"must be an integer, got {value!r}")
        value = int(value)
    elif annotation is float:
        value = _coerce_numeric_string(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Failure(path, f"must be a number, got {value!r}")
        if not math.isfinite(value):
            raise _Failure(path, f"must be a finite number, got {value!r}")
    elif annotation is str:
        if not isinstance(value, str) or not value:
            raise _Failure(path, f"must be a non-empty string, got {value!r}")
        return value
    else:  # pragma: no cover - schema bug
        raise TypeError(f"unsupported annotation {annotation!r} at {_dotted(path)}")
    check = metadata.get("range")
    if check is not None and not check.contains(value):
        raise _Failure(path, f"must be {check.describe()}, got {value!r}")
    return float(value) if annotation is float else value


def _build(cls: type, data: Any, path: tuple[str, ...]) -> Any:
    if not isinstance(data, Mapping):
        raise _Failure(path, f"must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _Failure(path + (str(key),), f"is not a known key{hint}; valid: {sorted(fields)}")
    values = {}
    for name, spec in fields.items():
        has_default = not (
            spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
        )
        if name not in data or (data[name] is None and not _accepts_none(hints[name])):
            if not has_default:
                problem = "is required" if name not in data else (
                    f"must be {_type_name(hints[name])}, got None")
                raise _Failure(path + (name,), problem)
            continue  # absent or null: the default
        values[name] = _convert(data[name], hints[name], path + (name,), spec.metadata)
    return cls(**values)


def _accepts_none(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType) and type(None) in typing.get_args(
        annotation
    )


def _check_spec_syntax(spec: str, path: tuple[str, ...], named: Mapping[str, str] | None) -> None:
    if ":" in spec:
        module, _, attr = spec.partition(":")
        if not module or not attr or not all(p.isidentifier() for p in module.split(".")) or not all(
            p.isidentifier() for p in attr.split(".")
        ):
            raise _Failure(path, f"must be a name or 'package.module:callable', got {spec!r}")
    elif named is not None and spec not in named:
        raise _Failure(path, f"must be one of {sorted(named)} or 'package.module:callable', got {spec!r}")


def _cross_checks(recipe: Recipe) -> None:
    """Constraints between fields; each raises naming the later key."""
    budget = recipe.search.budget
    if budget.min_params > budget.max_params:
        raise _Failure(("search", "budget", "min_params"),
                       f"must be <= search.budget.max_params ({budget.max_params}), "
                       f"got {budget.min_params}")
    groups = recipe.prune.groups or {}
    for name, group in groups.items():
        low, high = group.bounds
        if low > high:
            raise _Failure(("prune", "groups", name, "bounds"),
                           f"must be [low, high] with low <= high, got {list(group.bounds)}")
        if not group.patterns and not group.types:
            raise _Failure(("prune", "groups", name), "needs patterns or types, got neither")
    if recipe.prune.rates is not None and groups:
        for name, rate in recipe.prune.rates.items():
            if name not in groups:
                raise _Failure(("prune", "rates", name),
                               f"is not a layer group; groups: {sorted(groups)}")
            low, high = groups[name].bounds
            if not low <= rate <= high:
                raise _Failure(("prune", "rates", name),
                               f"must be within prune.groups.{name}.bounds "
                               f"[{low}, {high}], got {rate}")
    if not recipe.search.enabled and recipe.prune.rates is None:
        raise _Failure(("prune", "rates"),
                       "is required when search.enabled is false, got None")
    schedule = recipe.prune.schedule
    end = schedule.end if schedule.end is not None else schedule.epochs
    if schedule.kind != "constant" and schedule.epochs > 0 and end <= schedule.start:
        raise _Failure(("prune", "schedule", "end"),
                       f"must be > prune.schedule.start ({schedule.start}), got {end}")
    if schedule.end is not None and schedule.end > schedule.epochs:
        raise _Failure(("prune", "schedule", "end"),
                       f"must be <= prune.schedule.epochs ({schedule.epochs}), got {schedule.end}")
    if recipe.student.init_from == "teacher" and recipe.teacher is None:
        raise _Failure(("student", "init_from"), "needs a teacher, got teacher: null")
    if recipe.student.init_from is not None and recipe.student.checkpoint is not None:
        raise _Failure(("student", "init_from"),
                       f"cannot be combined with student.checkpoint, got {recipe.student.init_from!r}")
    _check_spec_syntax(recipe.task, ("task",), TASKS)
    _check_spec_syntax(recipe.student.model, ("student", "model"), None)
    if recipe.teacher is not None:
        _check_spec_syntax(recipe.teacher.model, ("teacher", "model"), None)
    if not recipe.name.replace("-", "_").replace(".", "_").isidentifier():
        raise _Failure(("name",), f"must be letters, digits, '_', '-', '.', got {recipe.name!r}")


def validate_recipe(data: Mapping[str, Any], source: str = "<recipe>",
                    sources: _Sources | None = None) -> Recipe:
    """Check a raw recipe mapping and build the frozen :class:`Recipe`.

    This is the one place recipe values are checked. Profiles are not applied
    here (see :func:`load_recipe`).

    Args:
        data: The merged raw mapping (after extends, profile and overrides).
        source: File name used in messages.
        sources: Provenance of keys (internal; names base files and overrides).

    Returns:
        The validated recipe.

    Raises:
        RecipeError: Naming the source, the key path and the bad value.
    """
    sources = sources or _Sources(source)
    data = dict(data)
    data.setdefault("source", source)
    try:
        recipe = _build(Recipe, data, ())
        for name, profile in recipe.profiles.items():
            if not isinstance(profile, Mapping):
                raise _Failure(("profiles", name), f"must be a mapping of overrides, got {profile!r}")
        _cross_checks(recipe)
    except _Failure as failure:
        raise RecipeError(f"{sources.label(failure.path)}: {_dotted(failure.path)} "
                          f"{failure.message}") from None
    return recipe


def load_recipe(
    path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    profile: str | None = None,
    resolve: bool = True,
) -> Recipe:
    """Load, compose and validate a recipe file.

    Args:
        path: The YAML file.
        overrides: ``--set`` strings ``"key.path=value"``, applied last.
        profile: A key of the recipe's ``profiles`` to apply before overrides.
        resolve: Also import the task given as ``module:callable`` (and model
            specs given that way) so a bad reference fails here, not mid-run.

    Returns:
        The validated :class:`Recipe`.

    Raises:
        RecipeError: For any problem, naming the file, the key path and the value.

    Example:
        >>> recipe = load_recipe("recipes/shapes_classifier.yaml", ["distill.epochs=1"])  # doctest: +SKIP
        >>> recipe.distill.epochs  # doctest: +SKIP
        1
    """
    path = Path(path)
    label = _display(path)
    sources = _Sources(label)
    data = _load_with_extends(path, sources, ())
    profiles = data.get("profiles") or {}
    if not isinstance(profiles, Mapping):
        raise RecipeError(f"{label}: profiles must be a mapping of name -> overrides, got {profiles!r}")
    # Every profile must validate, so a typo in a rarely used one fails early.
    for name, overrides_of_profile in profiles.items():
        if name == profile:
            continue
        if not isinstance(overrides_of_profile, Mapping):
            raise RecipeError(f"{label}: profiles.{name} must be a mapping of overrides, "
                              f"got {overrides_of_profile!r}")
        trial_sources = copy.deepcopy(sources)
        expanded = _expand_dotted(overrides_of_profile)
        trial_sources.mark(expanded, f"{label} (profile {name})")
        validate_recipe(_deep_merge(data, expanded), label, trial_sources)
    if profile is not None:
        if profile not in profiles:
            raise RecipeError(f"{label}: unknown profile {profile!r}; valid: {sorted(profiles)}")
        if not isinstance(profiles[profile], Mapping):
            raise RecipeError(f"{label}: profiles.{profile} must be a mapping of overrides, "
                              f"got {profiles[profile]!r}")
        expanded = _expand_dotted(profiles[profile])
        sources.mark(expanded, f"{label} (profile {profile})")
        data = _deep_merge(data, expanded)
        data["profile"] = profile
    for text in overrides:
        key_path, value = parse_override(text)
        _set_path(data, key_path, value, f"{label} (--set {text})")
        sources.mark(value, f"{label} (--set {text})", key_path)
    data["source"] = str(path)
    recipe = validate_recipe(data, label, sources)
    if resolve:
        if ":" in recipe.task or recipe.task in TASKS:
            resolve_object(TASKS.get(recipe.task, recipe.task), "task", sources.label(("task",)))
        for key_path, spec in (("student", recipe.student.model),
                               ("teacher", recipe.teacher.model if recipe.teacher else "")):
            if ":" in spec:
                resolve_object(spec, f"{key_path}.model", sources.label((key_path, "model")))
        for key_path, named in (("teacher", recipe.teacher.checkpoint if recipe.teacher else None),
                                ("student", recipe.student.checkpoint)):
            if named is not None and not checkpoint_path(named, path).exists():
                raise RecipeError(f"{sources.label((key_path, 'checkpoint'))}: {key_path}.checkpoint "
                                  f"file not found, got {named!r}")
    return recipe


def checkpoint_path(named: str, recipe_source: str | os.PathLike[str]) -> Path:
    """Where a recipe's ``*.checkpoint`` points: as given when absolute or present in the
    working directory, else relative to the recipe's folder."""
    checkpoint = Path(named)
    if not checkpoint.is_absolute() and not checkpoint.exists():
        checkpoint = Path(recipe_source).parent / checkpoint
    return checkpoint


def ensure_cwd_importable() -> None:
    """Put the current directory on ``sys.path`` (as ``python -m`` does), once.

    User code named as ``module:callable`` (in recipes, and as the builder of a
    saved pruned model) is imported relative to where ``compresskit`` runs.
    """
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def resolve_object(spec: str, key: str = "<spec>", source: str = "<recipe>") -> Any:
    """Import ``"package.module:attr"`` (attr may be dotted) and return the object.

    The current directory is put on ``sys.path`` (as ``python -m`` does), so a
    recipe can name a module next to it, e.g. ``examples.shapes_classifier:ShapesTask``.

    Args:
        spec: ``"module:attr"``.
        key: The recipe key path, for messages.
        source: The recipe file, for messages.

    Returns:
        The object (not called).

    Raises:
        RecipeError: If the string is malformed, the module cannot be imported,
            the attribute is missing, or it is not callable.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise RecipeError(f"{source}: {key} must be 'package.module:callable', got {spec!r}")
    ensure_cwd_importable()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise RecipeError(f"{source}: {key} {spec!r}: cannot import module {module_name!r} "
                          f"({error})") from None
    except Exception as error:  # noqa: BLE001 - the user's module failed while importing
        raise RecipeError(f"{source}: {key} {spec!r}: importing {module_name!r} failed: "
                          f"{type(error).__name__}: {error}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise RecipeError(f"{source}: {key} {spec!r}: module {module_name!r} has no "
                              f"attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise RecipeError(f"{source}: {key} {spec!r} is not callable (got {type(obj).__name__})")
    return obj


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain YAML-safe data (tuples become lists), ``source`` dropped.

    Writing this with ``yaml.safe_dump`` and loading it again gives an equal recipe.
    """

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    data = plain(dataclasses.asdict(recipe))
    data.pop("source", None)
    return data
