"""Phase ``report``: ``report.md``, its plots and ``metrics.csv`` from the run directory alone.

Inputs: whatever earlier phases wrote (:func:`compresskit.report.write_report` skips sections whose
files are absent). Outputs: ``report.md``, ``plots/*.png``, ``metrics.csv``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from compresskit.run.workspace import Workspace
from compresskit.tasks.protocol import Task

__all__ = ["Config", "run"]


@dataclass(frozen=True)
class Config:
    """The report phase reads nothing from the recipe (``recipe.yaml`` in the run directory suffices)."""


def run(config: Config, workspace: Workspace, task: Task) -> dict[str, Any]:
    """Write ``report.md`` and plots; returns the report's file name."""
    from compresskit.report.markdown import write_report

    path = write_report(workspace.run_dir)
    return {"path": str(path.name)}
