"""A non-finite loss stops the run with a clear error and keeps what was already done."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

import compresskit.distill
from compresskit.cli import cli
from compresskit.pipeline import PhaseError, run
from compresskit.recipe import load_recipe
from compresskit.train import load_checkpoint
from test_pipeline import TOY as PIPELINE_TOY, write_recipe

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
