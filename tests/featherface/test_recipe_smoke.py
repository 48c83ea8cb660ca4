"""The shipped FeatherFace recipe end to end at toy scale, through ``compresskit run``.

``recipes/featherface_nano_b.yaml`` with ``--set`` overrides only (64 px images, 8 training images,
one epoch per phase, a 2 + 1 point search): every phase runs on the real models (V1 teacher,
Nano-B student), and the run ends with a physically pruned Nano-B inside the recipe's own
parameter budget (120K-180K), exported to ONNX and checked with ONNX Runtime, and a report
holding the AP table of teacher, student and pruned student. What the default run reaches at full
scale is in benchmarks/RESULTS.md ("Default run (featherface_nano_b)").
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from compresskit import count_params, load_pruned
from compresskit.cli import cli

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "featherface_nano_b.yaml"

TOY_OVERRIDES = [
    "threads=1",
    "task_args.image_size=64",
    "task_args.train_size=8",
    "task_args.val_size=4",
    "teacher.train.epochs=1",
    "distill.epochs=1",
    "search.iterations=1",
    "search.initial_points=2",
    "search.trial.epochs=0",
    "search.trial.max_val_batches=1",
    "prune.schedule.epochs=1",
    "finetune.epochs=1",
    "export.input_size=[64,64]",
]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("featherface_smoke") / "run"
    threads = torch.get_num_threads()
    args = ["run", str(RECIPE), "--run-dir", str(run_dir)]
    for override in TOY_OVERRIDES:
        args += ["--set", override]
    try:
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    return run_dir, recipe


def test_every_phase_completes(toy_run):
    run_dir, _ = toy_run
    state = json.loads((run_dir / "state.json").read_text())
    assert state["completed"] == ["teacher", "distill", "search", "soft_prune", "remove", "finetune",
                                  "evaluate", "export", "quantize", "report"]
    assert all(phase["peak_rss_mb"] > 0 for phase in state["phases"].values())


def test_final_model_is_physically_pruned_inside_the_recipe_budget(toy_run):
    run_dir, recipe = toy_run
    budget = recipe["search"]["budget"]
    assert (budget["min_params"], budget["max_params"]) == (120_000, 180_000)  # the seed's target
    model = load_pruned(run_dir / "final.pt")  # weights_only load + history replay
    params = count_params(model)
    assert budget["min_params"] <= params <= budget["max_params"]
    rates = json.loads((run_dir / "rates.json").read_text())
    assert rates["predicted_params"] == params  # the exact predictor matches the real model
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert evaluation["pruned"]["params"] == params < evaluation["student"]["params"]
    outputs = model.eval()(torch.zeros(1, 3, 64, 64))
    assert [tuple(o.shape[::2]) for o in outputs] == [(1, 4), (1, 2), (1, 10)]


def test_onnx_is_exported_and_matches_onnx_runtime(toy_run):
    run_dir, recipe = toy_run
    export = json.loads((run_dir / "state.json").read_text())["phases"]["export"]
    assert (run_dir / "model.onnx").stat().st_size == export["bytes"] > 0
    assert export["max_abs_difference"] <= recipe["export"]["atol"]
    assert export["input_shapes"] == [[1, 3, 64, 64]]


def test_report_has_the_ap_table_of_teacher_student_and_pruned(toy_run):
    run_dir, _ = toy_run
    report = (run_dir / "report.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| model |"))
    assert all(column in header for column in ("params", "MACs", "ap_easy", "ap_medium", "ap_hard"))
    for model in ("teacher", "student", "pruned"):
        assert any(line.startswith(f"| {model} |") for line in report.splitlines())
    assert "| **total** |" in report
