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

:mod:`compresskit.pipeline` re-exports the public names (``run``, ``prepare``, ``PHASES``, ...).
"""
