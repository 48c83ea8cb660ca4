"""TensorBoard tracking: the event files hold exactly what metrics.jsonl holds, plus search trials,
evaluation numbers and the report's figures; log lines and progress bars share a terminal."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_pipeline import TOY, write_recipe

from compresskit.cli import cli
from compresskit.config import RecipeError, load_recipe


@pytest.mark.slow
def test_tensorboard_events_hold_the_metrics_jsonl_values(tmp_path, monkeypatch):
    recipe = write_recipe(tmp_path, TOY, monkeypatch)
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", str(recipe), "--run-dir", str(run_dir), "--track", "tensorboard",
                                      "--set", "search.method=random"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0}).Reload()
    tags = events.Tags()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records
    for record in records:
        for key, value in record.items():
            if key in ("phase", "epoch"):
                continue
            (event,) = [e for e in events.Scalars(f"{record['phase']}/{key}") if e.step == record["epoch"]]
            assert event.value == pytest.approx(value, rel=1e-6)  # float32 in the event file
    expected = sum(len(r) - 2 for r in records)
    assert sum(len(events.Scalars(t)) for t in tags["scalars"] if not t.startswith(("search/", "evaluate/"))) \
        == expected  # nothing else under the phases' tags
    trials = json.loads((run_dir / "search.json").read_text())["trials"]
    assert [e.value for e in events.Scalars("search/objective")] == pytest.approx([t["objective"] for t in trials])
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert events.Scalars("evaluate/pruned/params")[0].value == evaluation["pruned"]["params"]
    assert {f"report/{png.stem}" for png in (run_dir / "plots").glob("*.png")} == set(tags["images"]) != set()


def test_track_names_are_validated(tmp_path, monkeypatch):
    recipe = write_recipe(tmp_path, TOY, monkeypatch)
    assert load_recipe(recipe, ["track=[tensorboard]"], resolve=False).track == ("tensorboard",)
    with pytest.raises(RecipeError, match="track"):
        load_recipe(recipe, ["track=[wandb]"], resolve=False)


def test_a_log_line_clears_and_redraws_a_live_bar(monkeypatch):
    from tqdm import tqdm

    from compresskit.cli._run import _echo_above_bars

    terminal = io.StringIO()
    monkeypatch.setattr("sys.stdout", terminal)
    with tqdm(total=3, file=terminal, desc="epochs", mininterval=0) as bar:
        bar.update(1)
        before = terminal.getvalue()
        _echo_above_bars("[distill] epoch 1: loss=0.5")
        after = terminal.getvalue()[len(before):]
    assert after.startswith("\r") and "[distill] epoch 1: loss=0.5\n" in after  # bar cleared, line, bar redrawn
    assert "epochs" in after.split("loss=0.5\n", 1)[1]
