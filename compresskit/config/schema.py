"""The recipe schema: one frozen dataclass per recipe section, and :class:`Recipe` holding them.

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

from compresskit.config.constraints import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, RATE, within

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

    epochs: int = field(default=1, metadata=within(0))
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
    alpha: float = field(default=0.7, metadata=within(0.0, 1.0))
    learnable_weights: bool = True
    phases: tuple[Literal["soft_prune", "finetune"], ...] = ()


@dataclass(frozen=True)
class BudgetConfig:
    """Feasible pruned students: parameter counts in ``[min_params, max_params]`` and, optionally,
    ONNX Runtime latency (``compresskit.deploy.latency``, settings in ``search.latency``).

    Attributes:
        max_latency_ms: Largest predicted latency in milliseconds (on this machine).
        max_latency_ratio: Largest predicted latency as a fraction of the unpruned student's.
            With both, the smaller limit holds.
    """

    min_params: int = field(default=0, metadata=NON_NEGATIVE)
    max_params: int = field(default=2**62, metadata=AT_LEAST_ONE)
    max_latency_ms: float | None = field(default=None, metadata=POSITIVE)
    max_latency_ratio: float | None = field(default=None, metadata=within(0.0, 1.0, low_inclusive=False))


@dataclass(frozen=True)
class LatencyConfig:
    """How a latency budget is measured and predicted (``compresskit.deploy.latency.LatencyModel``).

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

    epochs: int = field(default=1, metadata=within(0))
    subset: float = field(default=0.2, metadata=within(0.0, 1.0, low_inclusive=False))
    lr: float = field(default=1e-3, metadata=POSITIVE)
    batch_size: int = field(default=32, metadata=AT_LEAST_ONE)
    max_val_batches: int | None = field(default=None, metadata=AT_LEAST_ONE)
    holdout: float | None = field(default=None, metadata=within(0.0, 1.0, low_inclusive=False,
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
        bypass: Blocks of the student's ``bypassable`` the search may switch off (one more dimension
            each, ``bypass:<block>``); empty: none, rates only.
    """

    enabled: bool = True
    method: Literal["bo", "random"] = "bo"
    iterations: int = field(default=25, metadata=within(0))
    initial_points: int | None = field(default=None, metadata=AT_LEAST_ONE)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    trial: TrialConfig = field(default_factory=TrialConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    bypass: tuple[str, ...] = ()


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
        kind: A key of ``compresskit.pruning.schedules.SCHEDULES`` with a ramp.
        power: Exponent of the polynomial ramp.
        initial: Starting rate of the ramp.
        start: First epoch of the ramp.
        end: Epoch the final rate is reached (``null``: the last epoch).
        step_every: Re-rank and re-zero every this many epochs.
    """

    kind: Literal["polynomial", "linear", "constant"] = "polynomial"
    power: float = field(default=3.0, metadata=POSITIVE)
    initial: float = field(default=0.0, metadata=RATE)
    start: int = field(default=0, metadata=within(0))
    end: int | None = field(default=None, metadata=AT_LEAST_ONE)
    step_every: int = field(default=1, metadata=AT_LEAST_ONE)


@dataclass(frozen=True)
class ReconstructConfig:
    """One-shot pruning's least-squares refit of each dense layer to the unpruned student's output.

    Attributes:
        batches: Calibration batches from the task's training loader (inputs only; labels are not used).
        batch_size: Images per calibration batch.
        positions: Output positions sampled per batch and convolution.
        ridge: Damping towards the pruned weights, relative to the mean of ``diag(X^T X)``.
    """

    batches: int = field(default=8, metadata=AT_LEAST_ONE)
    batch_size: int = field(default=8, metadata=AT_LEAST_ONE)
    positions: int = field(default=2048, metadata=AT_LEAST_ONE)
    ridge: float = field(default=1e-2, metadata=POSITIVE)


@dataclass(frozen=True)
class PruneConfig:
    """Which channels may be pruned, how they are ranked, and the soft phase.

    Attributes:
        importance: A key of ``IMPORTANCES``, or ``output_error`` (``compresskit.pruning.OutputError``: chosen
            from ``reconstruct``'s batches, which it needs; the search's trials then rank with FPGM).
        groups: Layer groups by name; ``null`` takes the task's ``layer_groups()``.
        protect: Module globs whose output channels are never pruned (added to
            the task's own).
        rates: Fixed rate per layer group, used when ``search.enabled`` is false.
        schedule: The soft-pruning training phase.
        channel_multiple: Kept channels are rounded up to a multiple of this (e.g. 4, 8, 16:
            hardware-friendly widths; ``compresskit.groups.round_channels``); 1: no rounding.
        reconstruct: Refit the kept weights by least squares before removal (one-shot pruning only:
            ``schedule.epochs: 0``); ``null``: off.
    """

    importance: Literal["fpgm", "magnitude", "output_error"] = "fpgm"
    groups: dict[str, LayerGroupConfig] | None = None
    protect: tuple[str, ...] = ()
    rates: dict[str, float] | None = field(default=None, metadata=RATE)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    channel_multiple: int = field(default=1, metadata=AT_LEAST_ONE)
    reconstruct: ReconstructConfig | None = None


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
