"""The recipe schema: one frozen dataclass per recipe section, and :class:`Recipe` holding them.

The larger sections live beside this module and are re-exported here: :mod:`.schema_train` (teacher,
student, ``distill``, training loops), :mod:`.schema_search` (``search``), :mod:`.schema_prune` (``prune``).

A field's type and its ``metadata`` range (:mod:`compresskit.config.constraints`) are the whole
contract of a recipe key: :mod:`compresskit.config.validate` walks these classes to check and build
a recipe, so adding a key means adding a field here, with its doc in the class docstring. Checks
between fields live in :func:`compresskit.config.validate.cross_checks`; checks against the model
(group names, a reachable budget) belong to the run's pre-flight plan.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from compresskit.config.constraints import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, within
from compresskit.config.schema_prune import LayerGroupConfig, PruneConfig, ReconstructConfig, ScheduleConfig
from compresskit.config.schema_search import BudgetConfig, LatencyConfig, SearchConfig, TrialConfig
from compresskit.config.schema_train import DistillConfig, StudentConfig, TeacherConfig, TrainConfig

__all__ = [
    "BudgetConfig",
    "DistillConfig",
    "ExportConfig",
    "LatencyConfig",
    "LayerGroupConfig",
    "PruneConfig",
    "QuantizeConfig",
    "Recipe",
    "ReconstructConfig",
    "ScheduleConfig",
    "SearchConfig",
    "StudentConfig",
    "TeacherConfig",
    "TrainConfig",
    "TrialConfig",
    "recipe_to_dict",
]


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
    opset: int = field(default=17, metadata=within(7, 30))


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
        method: ``minmax``, ``entropy`` or ``percentile`` (``compresskit.deploy.quantize.CALIBRATION_METHODS``).
        per_channel: One weight scale per output channel (else per tensor).
        rounds: Interleaved latency rounds (FP32 vs INT8).
        exclude: ``fnmatch`` globs over ONNX node names kept in FP32 (``compresskit.deploy.quantize.quantize_onnx``).
    """

    enabled: bool = False
    calibration_samples: int = field(default=32, metadata=AT_LEAST_ONE)
    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    rounds: int = field(default=10, metadata=AT_LEAST_ONE)
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recipe:
    """A validated recipe. Build it with :func:`compresskit.config.load_recipe`, never by hand.

    Attributes:
        name: The run's name (used in the report).
        task: A name in :data:`compresskit.config.TASKS` or ``module:callable`` returning a ``Task``.
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
        track: Experiment trackers fed what ``metrics.jsonl`` gets (``tensorboard``, ``mlflow``).
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
    track: tuple[Literal["tensorboard", "mlflow"], ...] = ()
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    profile: str | None = None
    source: str = "<recipe>"

    @property
    def resolved_run_dir(self) -> Path:
        """``run_dir``, or ``runs/<name>`` when unset."""
        return Path(self.run_dir) if self.run_dir else Path("runs") / self.name


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain YAML-safe data (tuples become lists), ``source`` dropped.

    Writing this with ``yaml.safe_dump`` and loading it again gives an equal recipe.
    """

    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return {k: plain(v) for k, v in value.items()} if isinstance(value, dict) else value

    data = plain(dataclasses.asdict(recipe))
    data.pop("source", None)
    return data
