"""Running a recipe: the pre-flight plan, the run directory, the phases and the driver.

Modules, in the order a run uses them::

    plan.py           plan(recipe, task) -> Plan: every model- and data-dependent check, before training
    context.py        ModelSource (a model the recipe names), RunContext, build_task
    layer_groups.py   GroupSelection: the layer groups a run prunes, found the same way by every phase
    workspace.py      the run directory: atomic writes, state.json, metrics.jsonl, damaged-file errors
    training.py       train_phase: fit with the recipe's optimizer, schedule, logging, epoch checkpoints
    distillation.py   what a phase trains when it distils from the teacher
    phases/<name>.py  one phase each: a frozen Config and run(config, workspace, task) -> summary
    phase_configs.py  each phase's Config from the recipe sections it reads
    seeding.py        phase_seed(seed, name): the one seeding rule
    driver.py         run / prepare: the phases in order, resumable; the only code given the whole recipe
    measure.py        peak memory, latency, a model's profile
    standalone.py     one phase's work outside a run (search_problem, finetune_model), for benchmarks

The public names below (``run``, ``prepare``, ``PHASES``, ...) are imported on first use.
"""

from compresskit.utils.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "RunContext": "context", "build_task": "context",
    "PHASES": "driver", "TRAINING_PHASES": "driver", "prepare": "driver", "run": "driver",
    "measure_latency": "measure", "peak_rss_mb": "measure",
    "layer_channels": "phases.remove", "SearchProblem": "phases.rate_search",
    "reachable_params": "plan",
    "phase_seed": "seeding", "seed_everything": "seeding",
    "finetune_model": "standalone", "search_problem": "standalone",
    "loader_loss": "training", "validation_loss": "training",
    "RUN_FILES": "workspace", "PhaseError": "workspace", "RunDirError": "workspace",
})
