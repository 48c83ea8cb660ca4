"""The run while it runs and after: one log line per search trial, the report's objective and chosen
trial, validation curves in training.png, metrics.csv."""

from __future__ import annotations

import csv
import json
import logging

import yaml

from compresskit.report.markdown import write_report
from compresskit.search.bayesian import random_search
from compresskit.utils.logs import forward_logs


def test_every_search_trial_is_one_log_line_with_rates_params_objective_and_time():
    lines: list[str] = []
    logger = logging.getLogger("compresskit.search")
    before = (logger.level, logger.propagate)
    with forward_logs("compresskit.search", lines.append):
        result = random_search(lambda rates: (rates["a"] - 0.3) ** 2, {"a": (0.0, 0.8), "b": (0.0, 0.5)},
                               lambda rates: int(1000 * (1 - rates["a"]) * (1 - rates["b"])), (0, 1000),
                               iterations=3, initial_points=2, progress=False)
    assert len(lines) == len(result.trials) == 5
    first = result.trials[0]
    assert lines[0].startswith(f"trial 1/5 (random): rates a={first.rates['a']:.2f} b={first.rates['b']:.2f}; "
                               f"{first.predicted_params:,} params; objective {first.objective:.4g} (best ")
    assert lines[-1].endswith("s proposing") and " s + " in lines[-1]
    assert not logger.handlers and (logger.level, logger.propagate) == before  # all restored after the block


def _run_dir(tmp_path):
    trials = [{"rates": {"stem": 0.1, "stage": 0.2}, "predicted_params": 900, "objective": 0.8, "seconds": 1.0,
               "kind": "sobol"},
              {"rates": {"stem": 0.3, "stage": 0.4}, "predicted_params": 700, "objective": 0.5, "seconds": 1.2,
               "kind": "bo"},
              {"rates": {"stem": 0.2, "stage": 0.5}, "predicted_params": 650, "objective": 0.6, "seconds": 1.1,
               "kind": "bo"}]
    (tmp_path / "search.json").write_text(json.dumps({"method": "bo", "budget": [0, 1000], "trials": trials}))
    recipe = {"name": "r", "task": "t", "student": {"model": "m"}, "seed": 0,
              "search": {"trial": {"epochs": 2, "subset": 0.25, "max_val_batches": 3}}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    records = [{"phase": "finetune", "epoch": 1, "epoch_loss": 1.0, "val/accuracy": 0.5},
               {"phase": "finetune", "epoch": 2, "epoch_loss": 0.8, "val/accuracy": 0.6, "lr": 0.01}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return tmp_path


def test_report_names_the_objective_marks_the_chosen_trial_and_writes_csv(tmp_path):
    run_dir = _run_dir(tmp_path)
    text = write_report(run_dir).read_text()
    assert ("Objective (lower is better): the candidate is pruned one-shot, trained 2 epoch(s) on 25% of the "
            "training data, then scored by the task loss on the first 3 validation batches.") in text
    assert "Chosen: trial 2 (bo), objective 0.5000, 700 predicted parameters" in text
    assert "| 2 | bo | 0.300 | 0.400 | 700 | 0.5000 | 1.2 | ★ chosen |" in text
    assert text.count("★ chosen") == 1
    with open(run_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["val/accuracy"] for r in rows] == ["0.5", "0.6"] and rows[0]["lr"] == "" and rows[1]["lr"] == "0.01"
    assert (run_dir / "plots" / "training.png").stat().st_size > 0


def test_training_plot_has_validation_panels(tmp_path, monkeypatch):
    import compresskit.report.plots as plots

    figures = {}
    monkeypatch.setattr(plots, "_save", lambda figure, path: figures.__setitem__(path.name, figure))
    records = [{"phase": p, "epoch": e, "epoch_loss": 1.0 / e, "val/accuracy": 0.1 * e}
               for p in ("distill", "finetune") for e in (1, 2)]
    plots.plot_training(records, tmp_path / "training.png")
    axes = figures["training.png"].axes
    assert len(axes) == 4  # 2 phases x (training loss, validation)
    assert [line.get_label() for line in axes[2].get_lines()] == ["accuracy"]
    assert list(axes[2].get_lines()[0].get_ydata()) == [0.1, 0.2]
