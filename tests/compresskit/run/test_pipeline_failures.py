"""A non-finite loss stops the run with a clear error and keeps what was already done."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_pipeline import TOY as PIPELINE_TOY
from test_pipeline import write_recipe

import compresskit.distill
from compresskit.cli import cli
from compresskit.config import load_recipe
from compresskit.run import PhaseError, run
from compresskit.train import load_checkpoint

BATCHES_PER_EPOCH = 3  # the toy recipe: 96 training images, batch 32

TOY = {**PIPELINE_TOY, "name": "nan_toy", "distill": {"epochs": 3, "batch_size": 32}}


@pytest.fixture
def nan_in_second_distill_epoch(monkeypatch):
    """The distillation loss turns NaN on the first step of the second epoch."""
    original = compresskit.distill.WeightedDistillation.forward
    calls = {"training": 0}

    def forward(self, *args, **kwargs):
        loss, logs = original(self, *args, **kwargs)
        if torch.is_grad_enabled():
            calls["training"] += 1
            if calls["training"] > BATCHES_PER_EPOCH:
                loss = loss * float("nan")
        return loss, logs

    monkeypatch.setattr(compresskit.distill.WeightedDistillation, "forward", forward)


@pytest.fixture
def recipe_path(tmp_path, monkeypatch):
    return write_recipe(tmp_path, TOY, monkeypatch)


def test_nan_loss_stops_the_phase_and_keeps_the_last_good_checkpoint(recipe_path, tmp_path,
                                                                    nan_in_second_distill_epoch):
    run_dir = tmp_path / "run"
    with pytest.raises(PhaseError, match=r"\[distill\] stopped: .*(nan|non-finite)") as caught:
        run(load_recipe(recipe_path), run_dir=run_dir, log=lambda message: None)
    assert "distill.last.pt" in str(caught.value)
    assert (run_dir / "teacher.pt").exists()           # the completed phase is intact
    assert not (run_dir / "student.pt").exists()       # no distilled student was written
    state = load_checkpoint(run_dir / "distill.last.pt")
    assert state["epoch"] == 1                          # the epoch before the NaN
    weights = [value for value in state["model"].values() if value.is_floating_point()]
    assert all(torch.isfinite(value).all() for value in weights)


def test_cli_reports_a_nan_loss_in_one_line(recipe_path, tmp_path, nan_in_second_distill_epoch):
    result = CliRunner().invoke(cli, ["run", str(recipe_path), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert "[distill] stopped" in result.output
    assert "Traceback" not in result.output


# --- a finite loss with a non-finite gradient on an epoch's last step ----------------------------


def test_nan_gradient_on_an_epochs_last_step_never_reaches_the_checkpoint(recipe_path, tmp_path, monkeypatch):
    """The case the loss guard missed: finite loss, NaN gradients on the last step of epoch 2."""
    original = compresskit.distill.WeightedDistillation.forward
    calls = {"training": 0}

    def forward(self, outputs, *args, **kwargs):
        if torch.is_grad_enabled():
            calls["training"] += 1
            if calls["training"] == 2 * BATCHES_PER_EPOCH:
                outputs.register_hook(lambda grad: torch.full_like(grad, float("nan")))
        return original(self, outputs, *args, **kwargs)

    monkeypatch.setattr(compresskit.distill.WeightedDistillation, "forward", forward)
    run_dir = tmp_path / "run"
    with pytest.raises(PhaseError, match=r"\[distill\] stopped: non-finite gradient"):
        run(load_recipe(recipe_path), run_dir=run_dir, log=lambda message: None)
    state = load_checkpoint(run_dir / "distill.last.pt")
    assert state["epoch"] == 1
    for tensor in [*state["model"].values(),
                   *(v for s in state["optimizer"]["state"].values() for v in s.values())]:
        assert not tensor.is_floating_point() or torch.isfinite(tensor).all()
    monkeypatch.setattr(compresskit.distill.WeightedDistillation, "forward", original)
    resumed = run(load_recipe(recipe_path), run_dir=run_dir, resume=True, log=lambda message: None,
                  stop_after="distill")  # the kept checkpoint resumes
    assert "distill" in resumed.state["completed"]


# --- pre-flight: every model- and data-dependent problem before the first phase ------------------

PREFLIGHT = [
    ({"search": {"budget": {"min_params": 10, "max_params": 20}}}, "search.budget [10, 20] cannot be met"),
    ({"prune": {"groups": {"g": {"patterns": ["no_such_layer.*"]}}}}, "prune.groups"),
    ({"student": {"model": "no_such_model"}}, "student.model: building 'no_such_model' failed"),
    ({"teacher": {"model": "no_such_teacher"}}, "teacher.model: building 'no_such_teacher' failed"),
    ({"search": {"enabled": False}, "prune": {"rates": {"not_a_group": 0.5}}},
     "prune.rates.not_a_group is not a layer group"),
    ({"task_args": {"train_size": 0}}, "data: the training loader cannot be built"),
    ({"task_args": {"image_size": -3}}, "task_args rejected by"),
]


@pytest.mark.parametrize(("change", "fragment"), PREFLIGHT)
def test_preflight_fails_before_any_phase_and_writes_nothing(tmp_path, monkeypatch, change, fragment):
    from test_pipeline import REPO

    from compresskit.config import RecipeError

    recipe = {**TOY, "name": "preflight"}
    for key, value in change.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    path = write_recipe(tmp_path, recipe, monkeypatch)
    run_dir = tmp_path / "run"
    started = []
    with pytest.raises(RecipeError, match=fragment.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        run(load_recipe(path), run_dir=run_dir, log=started.append)
    assert not run_dir.exists() and not any("started" in line for line in started)
    result = CliRunner().invoke(cli, ["run", str(path), "--dry-run"])  # the same message in --dry-run
    assert result.exit_code == 2 and fragment in result.output.strip().splitlines()[-1]
    assert REPO.exists()


def test_a_run_that_completed_no_phase_can_be_replaced(recipe_path, tmp_path):
    from compresskit.run import RunDirError, prepare

    run_dir = tmp_path / "run"
    prepare(load_recipe(recipe_path), run_dir)  # a run dir whose run completed no phase
    (run_dir / "teacher.last.pt").write_bytes(b"half an epoch")
    (run_dir / "my_notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="completed no phase: pass --replace"):
        run(load_recipe(recipe_path), run_dir=run_dir, log=lambda message: None)
    changed = load_recipe(recipe_path, ["distill.epochs=2"])
    with pytest.raises(RunDirError, match="different recipe.*completed no phase: pass --replace"):
        run(changed, run_dir=run_dir, resume=True, log=lambda message: None)
    ctx = run(changed, run_dir=run_dir, replace=True, stop_after="teacher", log=lambda message: None)
    assert ctx.state["completed"] == ["teacher"] and (run_dir / "my_notes.txt").read_text() == "mine"
    with pytest.raises(RunDirError, match=r"completed phases \(teacher\); --replace only replaces"):
        run(changed, run_dir=run_dir, replace=True, log=lambda message: None)
    result = CliRunner().invoke(cli, ["run", str(recipe_path), "--run-dir", str(run_dir)])
    assert result.exit_code == 2 and result.output.count("\n") == 1


def test_run_dir_naming_a_file_is_one_line(recipe_path, tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    result = CliRunner().invoke(cli, ["run", str(recipe_path), "--set", f"run_dir={target}"])
    assert result.exit_code == 2 and "is a file, not a directory" in result.output
    assert result.output.count("\n") == 1


# --- corrupt files met by --resume: one line naming the file, exit 2 ----------------------------

CORRUPTIONS = {
    "state.json": b"{not json",
    "recipe.yaml": b"\x00\x01binary",
    "teacher.pt": b"",
    "student.pt": b"PK\x03\x04 truncated zip",
    "rates.json": b"[1, 2",
    "search.json": b"[]",
    "pruned.pt": b"\x80\x04garbage",
    "soft_pruned.pt": b"not torch",
    "distill.last.pt": b"half",
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):

    from test_pipeline import REPO

    directory = tmp_path_factory.mktemp("finished")
    old = os.getcwd()
    os.chdir(REPO)
    try:
        path = directory / "toy.yaml"
        path.write_text(__import__("yaml").safe_dump({**TOY, "name": "resume_toy"}))
        run(load_recipe(path), run_dir=directory / "run", log=lambda message: None, stop_after="finetune")
    finally:
        os.chdir(old)
    return path, directory / "run"


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupt_files_met_by_resume_are_one_line(finished_run, tmp_path, monkeypatch, name):
    import json
    import shutil

    from test_pipeline import REPO

    monkeypatch.chdir(REPO)
    recipe, source = finished_run
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    state = json.loads((run_dir / "state.json").read_text())
    needed = {"teacher.pt": "distill", "student.pt": "search", "rates.json": "soft_prune",
              "search.json": "search", "soft_pruned.pt": "remove", "pruned.pt": "finetune",
              "distill.last.pt": "distill"}.get(name)
    if needed is not None:  # make the phase that reads the file run again
        index = state["completed"].index(needed)
        state["completed"] = state["completed"][:index]
        (run_dir / "state.json").write_text(json.dumps(state))
    (run_dir / name).write_bytes(CORRUPTIONS[name])
    result = CliRunner().invoke(cli, ["run", "--resume", str(run_dir), *(["--stop-after", needed] if needed else [])]
                                if name != "recipe.yaml" else ["run", str(recipe), "--resume", str(run_dir)])
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and name in last and "Traceback" not in result.output


# --- the CLI boundary: unexpected errors name a log file ------------------------------------------


def test_unexpected_error_prints_one_line_with_a_log_file(recipe_path, tmp_path, monkeypatch):
    import compresskit.run

    def broken(ctx):
        raise RuntimeError("a bug, not the user's input")

    monkeypatch.setitem(compresskit.run.PHASES, "teacher", broken)
    monkeypatch.setenv("COMPRESSKIT_LOG_DIR", str(tmp_path / "logs"))
    result = CliRunner().invoke(cli, ["run", str(recipe_path), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]  # after the progress lines: one error line
    assert line.startswith("Error: ") and "unexpected RuntimeError: a bug, not the user's input; traceback in " in line
    log = Path(line.rsplit("traceback in ", 1)[1])
    assert log.parent == tmp_path / "logs" and "Traceback (most recent call last)" in log.read_text()
    assert "a bug, not the user's input" in log.read_text()


@pytest.mark.parametrize("errno_name", ["ENOSPC", "EDQUOT", "EROFS", "EACCES"])
def test_disk_full_read_only_and_permission_denied_are_user_errors(recipe_path, tmp_path, monkeypatch,
                                                                   errno_name):
    import errno

    import compresskit.utils.atomic

    code = getattr(errno, errno_name)

    def fail(*args, **kwargs):  # refused at the write layer, as torch.save reports it
        try:
            raise OSError(code, os.strerror(code))
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 331328 vs 331224")

    monkeypatch.setattr(compresskit.utils.atomic.torch, "save", fail)
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", str(recipe_path), "--run-dir", str(run_dir)])
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"Error: {os.strerror(code).lower()} while writing {run_dir / 'teacher.last.pt'}: ")
    assert last.endswith(f", then run `compresskit run --resume {run_dir}` (every earlier file is intact)")
    assert compresskit.utils.atomic.WRITE_ERRNOS[code] in last
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_a_refused_write_mid_phase_keeps_earlier_files_and_resume_continues(recipe_path, tmp_path, monkeypatch):
    """ENOSPC on distillation's second epoch checkpoint; once space is back, --resume ends as an uninterrupted run."""
    import errno

    from test_pipeline import state_dicts_equal

    import compresskit.utils.atomic

    original = compresskit.utils.atomic.torch.save
    saves = []

    def full_on_second_distill_epoch(obj, handle, *args, **kwargs):
        name = Path(handle.name).name
        saves.append(name)
        if name.startswith(".distill.last.pt.") and saves.count(name) == 1 and len(
                [s for s in saves if s.startswith(".distill.last.pt.")]) == 2:
            handle.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        original(obj, handle, *args, **kwargs)

    monkeypatch.setattr(compresskit.utils.atomic.torch, "save", full_on_second_distill_epoch)
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", str(recipe_path), "--run-dir", str(run_dir), "--stop-after", "distill"])
    assert result.exit_code == 2, result.output
    assert f"no space left on device while writing {run_dir / 'distill.last.pt'}" in result.output
    assert load_checkpoint(run_dir / "distill.last.pt")["epoch"] == 1  # the previous checkpoint, whole
    assert (run_dir / "teacher.pt").exists() and not list(run_dir.glob(".*.tmp"))
    monkeypatch.setattr(compresskit.utils.atomic.torch, "save", original)  # space freed
    result = CliRunner().invoke(cli, ["run", "--resume", str(run_dir), "--stop-after", "distill"])
    assert result.exit_code == 0, result.output
    reference = tmp_path / "reference"
    run(load_recipe(recipe_path), run_dir=reference, log=lambda message: None, stop_after="distill")
    for name in ("teacher.pt", "student.pt"):
        assert state_dicts_equal(torch.load(run_dir / name, weights_only=True),
                                 torch.load(reference / name, weights_only=True)), name


def test_a_full_file_system_is_one_line_and_resume_finishes_once_space_is_freed(recipe_path, tmp_path):
    """On a real 4 MB tmpfs (root only; skipped where mounting is not permitted)."""
    from tiny_fs import tiny_tmpfs

    with tiny_tmpfs(tmp_path / "tiny", "4m") as mount:
        filler = mount / "filler.bin"
        filler.write_bytes(b"\0" * (4 * 2**20 - 160 * 2**10))  # leaves ~160 KB: room for the teacher's files only
        run_dir = mount / "run"
        result = CliRunner().invoke(cli, ["run", str(recipe_path), "--run-dir", str(run_dir)])
        assert result.exit_code == 2, result.output
        last = result.output.strip().splitlines()[-1]
        assert last.startswith(f"Error: no space left on device while writing {run_dir}/"), last
        assert last.endswith(f"then run `compresskit run --resume {run_dir}` (every earlier file is intact)")
        assert not list(run_dir.glob(".*.tmp"))
        filler.unlink()
        result = CliRunner().invoke(cli, ["run", "--resume", str(run_dir)])
        assert result.exit_code == 0, result.output
        assert (run_dir / "final.pt").exists() and (run_dir / "report.md").exists()


# --- kills between a checkpoint and its metrics line; orphan temporaries ------------------------


class _Killed(BaseException):
    """Stands for SIGKILL: nothing in the pipeline catches it."""


def test_kill_after_the_checkpoint_loses_no_line_and_repeats_none(recipe_path, tmp_path, monkeypatch):
    import json

    from compresskit.run import RunContext

    original = RunContext.append_metrics
    appended = []

    def append_then_die(self, record):
        if record["phase"] == "distill" and record["epoch"] == 2:
            raise _Killed  # epoch 2's checkpoint is on disk, its line is not
        appended.append(record)
        original(self, record)

    monkeypatch.setattr(RunContext, "append_metrics", append_then_die)
    run_dir = tmp_path / "run"
    with pytest.raises(_Killed):
        run(load_recipe(recipe_path), run_dir=run_dir, log=lambda message: None)
    assert load_checkpoint(run_dir / "distill.last.pt")["epoch"] == 2
    with open(run_dir / "metrics.jsonl", "a") as handle:  # and a line torn by a kill mid-write
        handle.write('{"phase": "distill", "ep')
    orphan = run_dir / ".student.pt.abcd1234.tmp"
    orphan.write_bytes(b"half a file")
    monkeypatch.setattr(RunContext, "append_metrics", original)
    run(load_recipe(recipe_path), run_dir=run_dir, resume=True, log=lambda message: None, stop_after="distill")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["phase"], r["epoch"]) for r in records] == [("teacher", 1), ("distill", 1), ("distill", 2),
                                                           ("distill", 3)]
    assert not orphan.exists() and not list(run_dir.glob(".*.tmp"))


def test_reconcile_drops_repeats_and_later_epochs(tmp_path):
    import json

    from compresskit.run import RunContext
    from compresskit.run.workspace import reconcile_metrics

    ctx = RunContext(recipe=None, run_dir=tmp_path, task=None)  # type: ignore[arg-type]
    lines = [{"phase": "teacher", "epoch": 1}, {"phase": "distill", "epoch": 1}, {"phase": "distill", "epoch": 1},
             {"phase": "distill", "epoch": 2}, {"phase": "distill", "epoch": 3}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines) + "{torn")
    reconcile_metrics(ctx, "distill", 2, {"phase": "distill", "epoch": 2, "loss": 9.0})
    kept = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert kept == [{"phase": "teacher", "epoch": 1}, {"phase": "distill", "epoch": 1},
                    {"phase": "distill", "epoch": 2}]
    reconcile_metrics(ctx, "distill", 3, {"phase": "distill", "epoch": 3, "loss": 1.0})
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1]) == {
        "phase": "distill", "epoch": 3, "loss": 1.0}


@pytest.mark.parametrize("content", ["corrupt", "pickled", "onnx", "empty"])
def test_a_bad_teacher_checkpoint_fails_before_the_run_dir_exists(tmp_path, monkeypatch, content):
    from torch import nn

    checkpoint = tmp_path / "teacher.pth"
    if content == "pickled":
        torch.save({"model": nn.Linear(2, 2)}, checkpoint)  # a module: refused by weights_only
    elif content == "onnx":
        checkpoint.write_bytes(b"\x08\x07\x12\x07pytorch\x1a\x032.1")  # an ONNX protobuf header
    else:
        checkpoint.write_bytes(b"" if content == "empty" else b"PK\x03\x04 cut short")
    path = write_recipe(tmp_path, {**TOY, "name": "bad_teacher",
                                   "teacher": {**TOY["teacher"], "checkpoint": str(checkpoint)}}, monkeypatch)
    result = CliRunner().invoke(cli, ["run", str(path), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "teacher.checkpoint" in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()
