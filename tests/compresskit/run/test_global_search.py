"""``search.method: global`` through a toy recipe: rates allocated from calibration data with no trials, the
budget met exactly (the exact predictor agrees with the pruned model), and ``search.start: global`` as the BO
search's first point; clear recipe errors."""

from __future__ import annotations

import json

import pytest
import torch
from test_pipeline import TOY, quiet, write_recipe

from compresskit import count_params
from compresskit.config import RecipeError, load_recipe
from compresskit.models.persist import load_pruned
from compresskit.pruning.budget import ParamPredictor
from compresskit.run import build_task, run
from compresskit.run.layer_groups import group_selection

ONE_SHOT = ["prune.schedule.epochs=0", "prune.schedule.kind=constant", "prune.importance=output_error",
            "prune.reconstruct.batches=2", "prune.reconstruct.batch_size=16", "search.budget.min_params=5000",
            "search.budget.max_params=9000"]


def test_global_method_meets_the_budget_exactly_and_the_pruned_model_has_the_predicted_size(tmp_path, monkeypatch):
    recipe = load_recipe(write_recipe(tmp_path, TOY, monkeypatch), [*ONE_SHOT, "search.method=global"])
    run_dir = tmp_path / "run"
    run(recipe, run_dir=run_dir, stop_after="remove", log=quiet)
    summary = json.loads((run_dir / "rates.json").read_text())
    assert summary["source"] == "search (global)" and not (run_dir / "search.json").exists()
    assert 5000 <= summary["predicted_params"] <= 9000
    assert summary["cost"] == pytest.approx(sum(summary["costs"].values()))
    task = build_task(recipe)
    student = task.build_model(recipe.student.model)
    student.load_state_dict(torch.load(run_dir / "student.pt", weights_only=True))
    groups = group_selection(recipe, task).find(student, task.example_inputs())
    predictor = ParamPredictor(student, groups)
    assert predictor(summary["rates"]) == summary["predicted_params"]
    for name, rate in summary["rates"].items():  # no layer group can prune less within the budget
        for lower in (r for r in (rate - 1 / 64, rate - 1 / 32, rate - 1 / 16) if r >= 0):
            assert predictor({**summary["rates"], name: lower}) in (summary["predicted_params"], *range(9001, 10**6))
    pruned = load_pruned(run_dir / "pruned.pt", trust=["examples.shapes_classifier"])
    assert count_params(pruned) == summary["predicted_params"]


def test_global_start_is_the_first_bo_trial(tmp_path, monkeypatch):
    recipe = load_recipe(write_recipe(tmp_path, TOY, monkeypatch),
                         [*ONE_SHOT, "search.start=global", "search.iterations=0", "search.initial_points=2"])
    run_dir = tmp_path / "run"
    run(recipe, run_dir=run_dir, stop_after="search", log=quiet)
    trials = json.loads((run_dir / "search.json").read_text())["trials"]
    assert [trial["kind"] for trial in trials] == ["start", "sobol", "sobol"]
    assert 5000 <= trials[0]["predicted_params"] <= 9000
    assert json.loads((run_dir / "search.json").read_text())["start"] == [trials[0]["rates"]]


@pytest.mark.parametrize(("overrides", "match"), [
    (["search.method=global"], (r"search.method global allocates rates from calibration data: it needs "
                                r"prune.reconstruct \(its batches\), got prune.reconstruct: null")),
    ([*ONE_SHOT, "search.start=global", "search.method=random"], (r"search.start global is a start point of "
                                                                  r"search.method bo, got 'random'")),
    ([*ONE_SHOT, "search.method=global", "search.bypass=[stage3]"], r"search.bypass needs a search with trials"),
])
def test_global_recipe_errors_name_the_key(tmp_path, monkeypatch, overrides, match):
    with pytest.raises(RecipeError, match=match):
        load_recipe(write_recipe(tmp_path, TOY, monkeypatch), overrides)


def test_split_groups_gives_every_channel_set_its_own_rate_and_global_prices_each(tmp_path, monkeypatch):
    recipe = load_recipe(write_recipe(tmp_path, TOY, monkeypatch),
                         [*ONE_SHOT, "search.method=global", "prune.split_groups=true"])
    task = build_task(recipe)
    plain = load_recipe(write_recipe(tmp_path, TOY, monkeypatch), ONE_SHOT)
    model = task.build_model(recipe.student.model)
    by_layer = group_selection(plain, task).find(model, task.example_inputs())
    by_set = group_selection(recipe, task).find(model, task.example_inputs())
    # the same channel sets, each now its own layer group "<layer group>/<set>" with its layer group's bounds
    assert [(g.name, g.num_channels) for g in by_set] == [(g.name, g.num_channels) for g in by_layer]
    assert [g.layer_group for g in by_set] == [f"{g.layer_group}/{g.name}" for g in by_layer]
    assert group_selection(recipe, task).bounds == {
        f"{g.layer_group}/{g.name}": group_selection(plain, task).bounds[g.layer_group] for g in by_layer}
    run_dir = tmp_path / "run"
    run(recipe, run_dir=run_dir, stop_after="remove", log=quiet)
    summary = json.loads((run_dir / "rates.json").read_text())
    assert sorted(summary["rates"]) == sorted(g.layer_group for g in by_set)
    assert count_params(load_pruned(run_dir / "pruned.pt", trust=["examples.shapes_classifier"])) == \
        summary["predicted_params"] <= 9000


def test_split_groups_needs_the_global_search(tmp_path, monkeypatch):
    with pytest.raises(RecipeError, match=r"prune.split_groups gives every channel set its own rate, which only "
                                          r"search.method: global prices .*got search.method: bo"):
        load_recipe(write_recipe(tmp_path, TOY, monkeypatch), [*ONE_SHOT, "prune.split_groups=true"])


def test_calibration_images_from_other_task_args(tmp_path, monkeypatch):
    """``prune.reconstruct.task_args``: the calibration batches come from the tasks built with them, in turn (here
    16 px and 20 px images while training uses 12 px); a refused argument fails the pre-flight, naming the key."""
    from compresskit.run.context import calibration_tasks
    from compresskit.run.phases.soft_prune import calibration_batches

    path = write_recipe(tmp_path, TOY, monkeypatch)
    assert calibration_tasks(load_recipe(path, ONE_SHOT)) == ()  # nothing changed: the run's own task
    one = load_recipe(path, [*ONE_SHOT, "prune.reconstruct.task_args={image_size: 16}"])  # a mapping: all batches
    assert one.prune.reconstruct.task_args == ({"image_size": 16},)
    task = build_task(one)
    batches = calibration_batches(one.prune.reconstruct, task, 0, calibration_tasks(one))
    assert [tuple(inputs[0].shape) for inputs in batches] == [(16, 3, 16, 16)] * 2
    assert next(iter(task.train_loader(16)))[0].shape[-1] == 12  # training is unchanged
    recipe = load_recipe(path, [*ONE_SHOT, "search.method=global", "prune.reconstruct.batches=3",
                                "prune.reconstruct.task_args=[{image_size: 16}, {image_size: 20}]"])
    batches = calibration_batches(recipe.prune.reconstruct, task, 0, calibration_tasks(recipe))
    assert [inputs[0].shape[-1] for inputs in batches] == [16, 20, 16]
    run_dir = tmp_path / "run"
    run(recipe, run_dir=run_dir, stop_after="remove", log=quiet)
    assert json.loads((run_dir / "reconstruction.json").read_text())["images"] == 48
    bad = load_recipe(path, [*ONE_SHOT, "search.method=global", "prune.reconstruct.task_args={no_such_arg: 1}"])
    with pytest.raises(RecipeError, match=r"prune.reconstruct.task_args rejected by .*no_such_arg"):
        run(bad, run_dir=tmp_path / "bad", log=quiet)
    assert not (tmp_path / "bad" / "student.pt").exists()
