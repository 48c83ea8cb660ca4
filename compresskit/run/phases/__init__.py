"""The phases of a run, one module each, in order::

    teacher -> distill -> search -> soft_prune -> remove -> finetune -> evaluate -> export -> quantize -> report

Every phase module has a frozen ``Config`` (only what the phase reads; the driver builds it from the
recipe) and ``run(config, workspace, task) -> summary``: it reads the run files earlier phases wrote,
writes its own atomically through the :class:`~compresskit.run.workspace.Workspace` and returns a
small JSON-able summary that the driver records in ``state.json``.
"""
