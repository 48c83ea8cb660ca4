"""The run directory: where every phase reads and writes, and the state a resumed run continues from.

A :class:`Workspace` is the directory plus the run's ``state.json`` content, its log sink and its
progress switch. Every write is atomic (temporary file + ``os.replace``, :mod:`compresskit.utils.atomic`)
and, under ``torchrun``, made by rank 0 only. A model is never written with a NaN/inf tensor. A file
that cannot be read back is a :class:`RunDirError` naming it ("the run directory is damaged").

``metrics.jsonl`` holds one JSON line per epoch of every training phase; :func:`reconcile_metrics`
makes it agree with the epoch checkpoint after a kill, so a resume neither loses nor repeats a line.

Run directory layout::

    recipe.yaml        the resolved recipe (profile and overrides applied)
    state.json         completed phases and their summaries
    metrics.jsonl      one JSON line per epoch of every training phase
    teacher.pt         teacher state_dict
    student.pt         distilled student state_dict
    search.json        search trials (resumable)
    rates.json         the per-layer-group rates used for pruning
    schedule.json      the soft-pruning rate of each layer group per epoch
    channels.json      output channels per conv/linear layer, before and after
    soft_pruned.pt     student after soft pruning (zeroed filters, full shapes) + zeroed indices
    pruned.pt          physically pruned student (compresskit.models.persist format)
    final.pt           pruned and fine-tuned student (compresskit.models.persist format)
    evaluation.json    params, MACs, latency and task metrics, keyed teacher / student / pruned (final.pt)
    evaluations.json   task metrics by model digest: no model is scored twice (compresskit.run.evaluations)
    onnxruntime_latency.json  the models timed with ONNX Runtime side by side, ratios to the student
    model.onnx         the final model in ONNX (checked against PyTorch with ONNX Runtime)
    model.fp32.onnx    with quantize.enabled: the final model, dynamic axes (checked at up to three shapes)
    model.int8.onnx    with quantize.enabled: its INT8 (QDQ) quantization
    report.md          the report, with plots under plots/
    metrics.csv        metrics.jsonl as one CSV table (written with the report)
    <phase>.last.pt    the epoch checkpoint of a training phase in progress
    run.lock           held by the run using the directory: its PID, host, start (compresskit.run.lock)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from compresskit.run.tracking import Tracker, record_scalars
from compresskit.train import NonFiniteLossError, distributed
from compresskit.utils.atomic import atomic_torch_save, atomic_write_text, raise_if_refused, remove_stale_temporaries
from compresskit.utils.finite import non_finite_entries
from compresskit.utils.safe_yaml import decode_yaml_bytes, load_yaml

__all__ = ["RUN_FILES", "PhaseError", "RunDirError", "Workspace", "check_run_dir", "damaged", "read_run_state",
           "reconcile_metrics", "replace_run"]

#: Files a run writes (see the module docstring); ``--replace`` deletes these and ``*.last.pt`` only.
RUN_FILES = ("recipe.yaml", "state.json", "metrics.jsonl", "teacher.pt", "student.pt", "search.json",
             "rates.json", "schedule.json", "channels.json", "soft_pruned.pt", "pruned.pt", "final.pt",
             "evaluation.json", "evaluations.json", "onnxruntime_latency.json", "model.onnx", "report.md",
             "metrics.csv")


class RunDirError(RuntimeError):
    """The run directory cannot be used (exists without --resume, or another recipe)."""


class PhaseError(RuntimeError):
    """A phase stopped (e.g. a non-finite loss); completed phases and checkpoints are kept."""


def damaged(path: Path, error: Exception) -> RunDirError:
    """The one-line error for a run file that cannot be read back."""
    return RunDirError(f"{path}: unreadable ({type(error).__name__}: {' '.join(str(error).split())[:200]}); "
                       f"the run directory is damaged: start a new run in another run_dir")


def _empty_state() -> dict[str, Any]:
    return {"completed": [], "phases": {}}


@dataclass(kw_only=True)
class Workspace:
    """A run directory as the phases see it.

    Attributes:
        run_dir: The run directory (exists once the run started).
        state: ``state.json``'s content: ``completed`` phase names and ``phases`` summaries.
        progress: Show progress bars.
        log: Called with one-line progress messages.
        trackers: Experiment trackers fed every ``metrics.jsonl`` line (:mod:`compresskit.run.tracking`).
    """

    run_dir: Path
    state: dict[str, Any] = field(default_factory=_empty_state)
    progress: bool = False
    log: Callable[[str], None] = print
    trackers: list[Tracker] = field(default_factory=list)

    def path(self, name: str) -> Path:
        """The path of run file ``name``."""
        return self.run_dir / name

    def append_metrics(self, record: Mapping[str, Any]) -> None:
        """Append one JSON line to ``metrics.jsonl`` (rank 0 only)."""
        if not distributed.is_main():
            return
        path = self.path("metrics.jsonl")
        try:  # a torn line (full disk, kill) is dropped by reconcile_metrics on resume
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(dict(record)) + "\n")
        except OSError as error:
            raise_if_refused(path, error)
            raise
        for tracker in self.trackers:  # copies; metrics.jsonl stays the source of truth
            tracker.scalars(*record_scalars(record))

    def write_text(self, name: str, text: str) -> None:
        """Write run file ``name`` atomically (rank 0 only)."""
        if distributed.is_main():
            atomic_write_text(self.path(name), text)

    def write_json(self, name: str, data: Any) -> None:
        """Write run file ``name`` as indented JSON, atomically (rank 0 only)."""
        self.write_text(name, json.dumps(data, indent=2, sort_keys=False) + "\n")

    def read_json(self, name: str) -> Any:
        """Run file ``name`` as JSON; an unreadable file is a :class:`RunDirError`."""
        path = self.path(name)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            raise damaged(path, error) from None

    def save(self, obj: Any, name: str) -> None:
        """``torch.save`` ``obj`` as run file ``name``, atomically; refused when a tensor is NaN/inf.

        Raises:
            NonFiniteLossError: ``obj`` holds a non-finite tensor (nothing is written).
        """
        count, names = non_finite_entries(obj)
        if count:  # never write a non-finite model
            raise NonFiniteLossError(f"{count} tensors for {name} hold NaN/inf (e.g. {', '.join(names)}); "
                                     f"{name} not written")
        if distributed.is_main():
            atomic_torch_save(obj, self.path(name))

    def load_state_dict(self, name: str) -> dict[str, Any]:
        """Run file ``name`` read with ``weights_only``; anything but a dict is a :class:`RunDirError`."""
        path = self.path(name)
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as error:  # noqa: BLE001 - truncated, pickled or foreign: all the same to the run
            raise damaged(path, error) from None
        if not isinstance(state_dict, dict):
            raise damaged(path, TypeError(f"holds {type(state_dict).__name__}, not a state_dict"))
        return state_dict


def reconcile_metrics(workspace: Workspace, phase: str, epoch: int, record: Mapping[str, Any] | None) -> None:
    """Make ``metrics.jsonl`` hold exactly one line per checkpointed epoch of ``phase`` (1..``epoch``).

    Drops a torn last line, lines of later epochs and repeated epochs; appends ``record`` (kept in
    the epoch checkpoint) when the kill came between the checkpoint and its line.
    """
    path = workspace.path("metrics.jsonl")
    if not distributed.is_main() or not path.exists() and record is None:
        return
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    kept, seen = [], set()
    for line in lines:
        try:
            item = json.loads(line)
        except ValueError:
            continue  # torn by a kill mid-write
        if not isinstance(item, dict):
            continue
        key = (item.get("phase"), item.get("epoch"))
        if item.get("phase") == phase and (not isinstance(item.get("epoch"), int) or item["epoch"] > epoch
                                           or key in seen):
            continue
        seen.add(key)
        kept.append(json.dumps(item))
    if record is not None and (phase, epoch) not in seen:
        kept.append(json.dumps(dict(record)))
    if kept != lines:
        workspace.write_text("metrics.jsonl", "".join(line + "\n" for line in kept))


def read_run_state(directory: Path) -> tuple[Any, dict[str, Any]]:
    """``(stored recipe, state)`` of an existing run; an unreadable file is a :class:`RunDirError`."""
    try:
        stored = load_yaml(decode_yaml_bytes((directory / "recipe.yaml").read_bytes()))
        state = (Workspace(run_dir=directory).read_json("state.json")
                 if (directory / "state.json").exists() else None)
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise RunDirError(f"{directory}: cannot read the run's recipe.yaml/state.json "
                          f"({type(error).__name__}: {str(error)[:200]}); choose another run_dir") from None
    if state is None:
        state = _empty_state()
    if (not isinstance(state, dict) or not isinstance(state.get("completed"), list)
            or not isinstance(state.get("phases"), dict)):
        raise RunDirError(f"{directory}/state.json is not a run state; choose another run_dir")
    return stored, state


def replace_run(directory: Path) -> None:
    """Delete the run files (:data:`RUN_FILES`, ``*.last.pt``) and stale temporaries of ``directory``."""
    for entry in directory.iterdir():
        if entry.is_file() and (entry.name in RUN_FILES or entry.name.endswith(".last.pt")):
            entry.unlink()
    remove_stale_temporaries(directory)


def check_run_dir(directory: Path, resolved: Mapping[str, Any], resume: bool,
                  replace: bool) -> tuple[dict[str, Any], bool]:
    """May a run of the recipe ``resolved`` (as written to ``recipe.yaml``) use ``directory``? Reads only.

    Returns:
        ``(state, start_over)``: the state to continue from (empty for a new run) and whether the
        directory's run files must be deleted first (``replace`` of a run that completed no phase).

    Raises:
        RunDirError: The directory is a file, holds a run and neither ``resume`` nor (for a run
            that completed no phase) ``replace`` is given, or holds a run of a different recipe.
    """
    if directory.exists() and not directory.is_dir():
        raise RunDirError(f"run_dir {directory} is a file, not a directory; choose another run_dir")
    if not (directory / "recipe.yaml").exists():
        if resume and not directory.exists():
            raise RunDirError(f"cannot resume {directory}: no such run directory")
        return _empty_state(), False
    stored, state = read_run_state(directory)
    completed = state["completed"]
    how = (f"pass --replace to start it over with this recipe (deletes its run files), "
           f"or --resume {directory} to continue it")
    if replace:
        if completed:
            raise RunDirError(f"{directory} holds a run with completed phases ({', '.join(completed)}); "
                              f"--replace only replaces a run that completed no phase: choose another "
                              f"run_dir, or --resume {directory}")
        return _empty_state(), True
    if not resume:
        raise RunDirError(f"{directory} already holds a run; pass --resume {directory} "
                          f"to continue it, or choose another run_dir"
                          + ("" if completed else f" (it completed no phase: {how})"))
    differing = sorted(_differences(stored, resolved))
    if differing:
        raise RunDirError(f"{directory} holds a run of a different recipe "
                          f"(differs at {', '.join(differing[:5])}); cannot resume it"
                          + ("" if completed else "; it completed no phase: pass --replace to "
                             "start it over with this recipe (deletes its run files)"))
    return state, False


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]
