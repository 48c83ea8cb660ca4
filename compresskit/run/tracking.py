"""Experiment tracking: TensorBoard (and MLflow where installed) fed what the run files get.

``metrics.jsonl`` stays the source of truth; a tracker is a copy for watching a run. Recipe key
``track: [tensorboard]`` (or ``compresskit run --track tensorboard``) opens one per name in
:data:`TRACKERS`; they receive:

* every ``metrics.jsonl`` line as it is appended (:meth:`Workspace.append_metrics`): scalars
  ``<phase>/<key>`` at step ``epoch`` (losses, learning rate, ``val/...`` metrics);
* after the ``search`` phase, each trial of ``search.json``: ``search/objective``,
  ``search/predicted_params`` and ``search/rate/<group>`` at step = trial index;
* after ``evaluate``, ``evaluation.json``'s numbers as ``evaluate/<model>/<key>`` at step 0;
* after ``report``, the report's figures (``plots/*.png``) as images ``report/<name>``.

TensorBoard writes ``<run_dir>/tensorboard/`` (``tensorboard --logdir runs/``); MLflow logs to its own
tracking URI (``MLFLOW_TRACKING_URI``, default ``./mlruns``). A missing package names its extra.

Caveats:
    Search trials reach the tracker when the search phase ends, not one by one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

__all__ = ["TRACKERS", "MLflowTracker", "TensorBoardTracker", "Tracker", "open_trackers", "track_phase"]


def _missing(package: str) -> ValueError:
    return ValueError(f"{package} is not installed; it is needed for 'track: [{package}]': "
                      f"pip install {package}" + (" (or 'compresskit[track]')" if package == "tensorboard" else ""))


class Tracker(Protocol):
    """What the run feeds a tracker."""

    def scalars(self, prefix: str, values: Mapping[str, float], step: int) -> None: ...

    def figure(self, tag: str, png: Path) -> None: ...

    def close(self) -> None: ...


class TensorBoardTracker:
    """Scalars and figures in ``<run_dir>/tensorboard`` (``torch.utils.tensorboard.SummaryWriter``)."""

    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _missing("tensorboard") from None
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def scalars(self, prefix: str, values: Mapping[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(f"{prefix}/{key}", value, step)
        self.writer.flush()

    def figure(self, tag: str, png: Path) -> None:
        from matplotlib.image import imread  # the report phase drew the figure with it

        self.writer.add_image(tag, imread(png)[..., :3], 0, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MLflowTracker:
    """Metrics and figures in an MLflow run named after the run directory."""

    def __init__(self, run_dir: Path):
        try:
            import mlflow
        except ImportError:
            raise _missing("mlflow") from None
        self.mlflow = mlflow
        self.run = mlflow.start_run(run_name=run_dir.name)

    def scalars(self, prefix: str, values: Mapping[str, float], step: int) -> None:
        self.mlflow.log_metrics({f"{prefix}/{key}": value for key, value in values.items()}, step=step)

    def figure(self, tag: str, png: Path) -> None:
        self.mlflow.log_artifact(str(png), artifact_path=tag.rpartition("/")[0] or None)

    def close(self) -> None:
        self.mlflow.end_run()


#: Tracker name (recipe ``track``) -> its class, called with the run directory.
TRACKERS: dict[str, Callable[[Path], Tracker]] = {"tensorboard": TensorBoardTracker, "mlflow": MLflowTracker}


def open_trackers(names: Iterable[str], run_dir: Path) -> list[Tracker]:
    """One tracker per name (see :data:`TRACKERS`).

    Raises:
        ValueError: An unknown name.
    """
    names = list(names)
    unknown = [name for name in names if name not in TRACKERS]
    if unknown:
        raise ValueError(f"unknown tracker {unknown[0]!r}; valid: {sorted(TRACKERS)}")
    return [TRACKERS[name](run_dir) for name in names]


def record_scalars(record: Mapping[str, Any]) -> tuple[str, dict[str, float], int]:
    """A ``metrics.jsonl`` line as ``(phase, numeric values, epoch)``."""
    values = {key: float(value) for key, value in record.items()
              if key not in ("phase", "epoch") and isinstance(value, (int, float)) and not isinstance(value, bool)}
    return str(record.get("phase", "run")), values, int(record.get("epoch", 0))


def track_phase(trackers: list[Tracker], run_dir: Path, phase: str) -> None:
    """Feed ``trackers`` what phase ``phase`` wrote (search trials, evaluation, report figures)."""
    if not trackers:
        return
    if phase == "search" and (run_dir / "search.json").is_file():
        trials = json.loads((run_dir / "search.json").read_text(encoding="utf-8")).get("trials", [])
        for index, trial in enumerate(trials):
            values = {"objective": trial["objective"], "predicted_params": trial["predicted_params"],
                      **{f"rate/{group}": rate for group, rate in trial["rates"].items()}}
            for tracker in trackers:
                tracker.scalars("search", values, index)
    if phase == "evaluate" and (run_dir / "evaluation.json").is_file():
        for model, numbers in json.loads((run_dir / "evaluation.json").read_text(encoding="utf-8")).items():
            values = {key: value for key, value in numbers.items() if isinstance(value, (int, float))}
            for tracker in trackers:
                tracker.scalars(f"evaluate/{model}", values, 0)
    if phase == "report":
        for png in sorted((run_dir / "plots").glob("*.png")):
            for tracker in trackers:
                tracker.figure(f"report/{png.stem}", png)
