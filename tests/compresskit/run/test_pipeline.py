from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from compresskit.config import load_recipe
from compresskit.report.markdown import write_report
from compresskit.run import PHASES, RunDirError, run

REPO = Path(__file__).resolve().parents[3]

TOY = {
    "extends": str(REPO / "recipes" / "shapes_classifier.yaml"),
    "name": "toy",
    "task_args": {"image_size": 12, "train_size": 96, "val_size": 48},
    "teacher": {"model": "resnet_student", "train": {"epochs": 1, "batch_size": 32}},
    "student": {"model": "resnet_tiny"},
    "distill": {"epochs": 1, "batch_size": 32},
    "search": {"iterations": 1, "initial_points": 2, "budget": {"min_params": 1000, "max_params": 12000},
               "trial": {"epochs": 0, "batch_size": 48, "max_val_batches": 1}},
    "prune": {"schedule": {"epochs": 2, "batch_size": 32}},
    "finetune": {"epochs": 1, "batch_size": 32},
    "export": {"input_size": [12, 12]},
    "profiles": {},
}


def write_recipe(directory: Path, recipe: dict, monkeypatch) -> Path:
    """``recipe`` as ``<name>.yaml`` in ``directory``, with the repository as working directory."""
    monkeypatch.chdir(REPO)
    path = directory / f"{recipe['name']}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture
def toy_recipe(tmp_path, monkeypatch):
    return write_recipe(tmp_path, TOY, monkeypatch)


def quiet(message: str) -> None:
    pass


def state_dicts_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- phases that need only train/distill ------------------------------------------------


def test_teacher_and_distill_phases_write_outputs_and_resume_skips_them(toy_recipe, tmp_path):
    recipe = load_recipe(toy_recipe)
    run_dir = tmp_path / "run"
    ctx = run(recipe, run_dir=run_dir, stop_after="distill", log=quiet)
    assert ctx.state["completed"] == ["teacher", "distill"]
    for name in ("recipe.yaml", "state.json", "metrics.jsonl", "teacher.pt", "student.pt"):
        assert (run_dir / name).exists(), name
    stored = load_recipe(run_dir / "recipe.yaml")
    assert stored.student.model == "resnet_tiny" and stored.task_args["image_size"] == 12
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["phase"], r["epoch"]) for r in records] == [("teacher", 1), ("distill", 1)]
    assert "val/accuracy" in records[-1] and "kd" in records[-1]
    student = torch.load(run_dir / "student.pt", weights_only=True)

    messages: list[str] = []
    ctx = run(recipe, run_dir=run_dir, resume=True, stop_after="distill", log=messages.append)
    assert "[teacher] already completed, skipped" in messages
    assert "[distill] already completed, skipped" in messages
    assert state_dicts_equal(student, torch.load(run_dir / "student.pt", weights_only=True))


def test_cli_resume_from_the_run_dir_alone(toy_recipe, tmp_path):
    from click.testing import CliRunner

    from compresskit.cli import cli

    run_dir = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(cli, ["run", str(toy_recipe), "--run-dir", str(run_dir), "--stop-after", "teacher"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["run", "--resume", str(run_dir), "--stop-after", "distill"])
    assert result.exit_code == 0, result.output
    assert "[teacher] already completed, skipped" in result.output and "[distill] done" in result.output
    assert json.loads((run_dir / "state.json").read_text())["completed"] == ["teacher", "distill"]


def test_existing_run_dir_needs_resume_and_the_same_recipe(toy_recipe, tmp_path):
    recipe = load_recipe(toy_recipe)
    run_dir = tmp_path / "run"
    run(recipe, run_dir=run_dir, stop_after="teacher", log=quiet)
    with pytest.raises(RunDirError, match="already holds a run"):
        run(recipe, run_dir=run_dir, stop_after="teacher", log=quiet)
    other = load_recipe(toy_recipe, ["distill.epochs=3"])
    with pytest.raises(RunDirError, match=r"differs at distill.epochs"):
        run(other, run_dir=run_dir, resume=True, log=quiet)


def test_runs_are_deterministic(toy_recipe, tmp_path):
    recipe = load_recipe(toy_recipe)
    run(recipe, run_dir=tmp_path / "a", stop_after="distill", log=quiet)
    run(recipe, run_dir=tmp_path / "b", stop_after="distill", log=quiet)
    assert state_dicts_equal(torch.load(tmp_path / "a" / "student.pt", weights_only=True),
                             torch.load(tmp_path / "b" / "student.pt", weights_only=True))


def _kill_when(process: subprocess.Popen, condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the run ended before it could be killed: rc={process.returncode}")
        if condition():
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            return
        time.sleep(0.02)
    process.kill()
    raise AssertionError("condition never met")


def _metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


@pytest.mark.slow
def test_sigkill_twice_then_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    """Kill a real run (SIGKILL) mid-distill and again mid-soft-prune (after an epoch checkpoint);
    the resumed run ends with exactly the weights, rates and ONNX of an uninterrupted one."""
    recipe_path = write_recipe(tmp_path, {
        **TOY, "task_args": {"image_size": 12, "train_size": 256, "val_size": 48},
        "distill": {"epochs": 4, "batch_size": 32},
        "prune": {"schedule": {"epochs": 4, "batch_size": 32}},
    }, monkeypatch)
    command = [sys.executable, "-m", "compresskit.cli", "run", str(recipe_path)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    reference = tmp_path / "uninterrupted"
    subprocess.run([*command, "--run-dir", str(reference)], check=True, env=env, capture_output=True)

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen([*command, "--run-dir", str(interrupted)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(process, lambda: (interrupted / "distill.last.pt").exists()
               and any(r["phase"] == "distill" and r["epoch"] >= 2 for r in _metrics(interrupted)))
    assert not (interrupted / "student.pt").exists()

    process = subprocess.Popen([*command, "--resume", str(interrupted)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(process, lambda: (interrupted / "soft_prune.last.pt").exists())
    assert not (interrupted / "soft_pruned.pt").exists()

    result = subprocess.run([*command, "--resume", str(interrupted)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "[distill] already completed, skipped" in result.stdout
    assert "[soft_prune] started" in result.stdout
    assert "[soft_prune] resuming after epoch" in result.stdout  # from its epoch checkpoint

    for name in ("teacher.pt", "student.pt"):
        assert state_dicts_equal(torch.load(reference / name, weights_only=True),
                                 torch.load(interrupted / name, weights_only=True)), name
    assert json.loads((reference / "rates.json").read_text()) == json.loads((interrupted / "rates.json").read_text())
    final = [torch.load(d / "final.pt", weights_only=True) for d in (reference, interrupted)]
    assert final[0]["history"] == final[1]["history"]
    assert state_dicts_equal(final[0]["state_dict"], final[1]["state_dict"])
    assert (reference / "model.onnx").read_bytes() == (interrupted / "model.onnx").read_bytes()


# --- report -------------------------------------------------------------------------------


def test_report_from_a_hand_made_run_dir(tmp_path):
    run_dir = tmp_path
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump({"name": "demo", "task": "t", "seed": 0,
                                                         "student": {"model": "s"}, "teacher": {"model": "t"}}))
    profile = {"params": 1000, "macs": 5000, "latency_ms": 1.5, "metrics": {"accuracy": 0.9, "val_loss": 0.3}}
    evaluation = {"teacher": {**profile, "params": 4000}, "student": profile,
                  "pruned": {**profile, "params": 400, "metrics": {"accuracy": 0.85, "val_loss": 0.4}}}
    (run_dir / "evaluation.json").write_text(json.dumps(evaluation))
    (run_dir / "rates.json").write_text(json.dumps({"rates": {"a": 0.25, "b": 0.5}, "source": "search (bo)",
                                                    "predicted_params": 400, "objective": 0.4, "trials": 2}))
    (run_dir / "channels.json").write_text(json.dumps({"before": {"conv1": 16, "fc": 4},
                                                       "after": {"conv1": 8, "fc": 4}}))
    (run_dir / "schedule.json").write_text(json.dumps({"step_every": 1, "rates": {"a": [0, 0.2, 0.25]}}))
    (run_dir / "search.json").write_text(json.dumps({"method": "bo", "budget": [100, 500], "trials": [
        {"rates": {"a": 0.1}, "predicted_params": 450, "objective": 0.5},
        {"rates": {"a": 0.3}, "predicted_params": 300, "objective": 0.4}]}))
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"phase": "distill", "epoch": 1, "epoch_loss": 1.0}, {"phase": "distill", "epoch": 2, "epoch_loss": 0.5}]))
    path = write_report(run_dir)
    text = path.read_text()
    assert "| pruned | 400 | 5,000 | 1.50 | 0.8500 | 0.4000 |" in text
    assert "keeps 40.0% of the student's parameters" in text
    assert "| a | 0.250 |" in text
    assert "1 of 2 layers changed" in text and "| conv1 | 16 | 8 |" in text
    for plot in ("comparison", "channels", "search_trace", "schedule", "training"):
        assert f"plots/{plot}.png" in text
        assert (run_dir / "plots" / f"{plot}.png").stat().st_size > 1000


# --- the whole pipeline ------------------------------------------------------------------


@pytest.mark.slow
def test_toy_pipeline_end_to_end(toy_recipe, tmp_path):
    recipe = load_recipe(toy_recipe)
    run_dir = tmp_path / "run"
    ctx = run(recipe, run_dir=run_dir, log=quiet)  # speed lives in benchmarks/, not in timed tests
    assert ctx.state["completed"] == list(PHASES)
    for name in ("recipe.yaml", "metrics.jsonl", "search.json", "rates.json", "pruned.pt", "final.pt",
                 "evaluation.json", "model.onnx", "report.md", "plots/comparison.png"):
        assert (run_dir / name).exists(), name
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    params = evaluation["pruned"]["params"]
    assert 1000 <= params <= 12000
    assert params < evaluation["student"]["params"]
    rates = json.loads((run_dir / "rates.json").read_text())
    assert rates["predicted_params"] == params  # the predictor is exact
    assert ctx.state["phases"]["export"]["max_abs_difference"] <= recipe.export.atol
    timing = json.loads((run_dir / "onnxruntime_latency.json").read_text())  # the deployment speed, side by side
    assert list(timing["median_ms"]) == ["student", "pruned", "teacher"] and timing["ratio"]["student"] == 1.0
    assert 0 < timing["ratio"]["pruned"] < 10 and timing["threads"] == 1
    assert "ONNX Runtime, input" in (run_dir / "report.md").read_text()
    from compresskit.models.persist import load_pruned

    model = load_pruned(run_dir / "final.pt", trust=["examples.shapes_classifier"])
    assert sum(p.numel() for p in model.parameters()) == params


def test_a_resumption_with_another_thread_count_is_told_its_results_can_differ(toy_recipe, tmp_path):
    recipe = load_recipe(toy_recipe, ["threads=null"])
    before = torch.get_num_threads()
    messages: list[str] = []
    try:
        torch.set_num_threads(1)
        ctx = run(recipe, run_dir=tmp_path / "run", log=messages.append, stop_after="teacher")
        assert ctx.state["threads"] == 1
        torch.set_num_threads(2)
        ctx = run(recipe, run_dir=tmp_path / "run", resume=True, log=messages.append, stop_after="distill")
    finally:
        torch.set_num_threads(before)
    assert ctx.state["threads"] == 1  # the count the run started with stays recorded
    assert any("started with 1 torch threads and resumes with 2" in m and "OMP_NUM_THREADS=1" in m for m in messages)
