"""Toy-scale runs of the real-face recipes on a few shared WIDER FACE images, with the real weights.

Skipped (with the reason) when ``../shared/data`` is absent; each run takes seconds (8 train images at
64 px, 2 val images at their original size).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compresskit.config import RecipeError, load_recipe
from compresskit.models.persist import load_pruned
from compresskit.run import run
from featherface import models
from featherface.detect import evaluate_widerface
from featherface.task import FeatherFaceTask

REPO = Path(__file__).resolve().parents[2]
BUILDER = "featherface.models:build_model"
pytestmark = pytest.mark.shared_data


def data_overrides(shared: Path) -> list[str]:
    wider = shared / "widerface"
    return [f"task_args.train_labels={wider}/retinaface_labels/train_label.txt",
            f"task_args.train_images={wider}/WIDER_train/images",
            f"task_args.val_labels={wider}/retinaface_labels/val_label.txt",
            f"task_args.val_images={wider}/WIDER_val/images",
            f"task_args.gt_dir={wider}/ground_truth",
            "task_args.image_size=64", "task_args.train_size=8", "task_args.val_size=2"]


TOY_SCHEDULE = ["search.initial_points=2", "search.iterations=0", "search.trial.epochs=0",
                "search.trial.holdout=0.25", "prune.schedule.epochs=1", "prune.schedule.end=1",
                "finetune.epochs=1", "export.onnx=false"]


def quiet(message: str) -> None:
    pass


#: The default recipe at toy scale: one calibration batch, a 320 px latency model of 2 measurements (its own cache).
def toy_data_driven(tmp_path: Path) -> list[str]:
    return ["prune.reconstruct.batches=1", "finetune.epochs=1", "export.onnx=false", "search.latency.calibration=2",
            "search.latency.rounds=3", "search.latency.input_size=[320,320]", f"search.latency.cache_dir={tmp_path}"]


def test_retinaface_wider_recipe_toy_run_prunes_from_data_under_both_budgets(shared_data, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    weights = shared_data / "weights" / "retinaface_mnet025_official.pth"
    recipe = load_recipe(REPO / "recipes" / "retinaface_wider.yaml",
                         [*data_overrides(shared_data), *toy_data_driven(tmp_path), f"teacher.checkpoint={weights}"])
    ctx = run(recipe, run_dir=tmp_path / "run", log=quiet, stop_after="finetune")
    phases = ctx.state["phases"]
    assert phases["teacher"]["source"] == str(weights) and phases["teacher"]["params"] == 426_608
    assert phases["distill"]["start"] == {"source": "teacher", "inherited_tensors": 300,
                                          "inherited_params": 426_608, "shape_mismatches": 0}
    rates = phases["search"]
    assert rates["source"] == "search (global)" and len(rates["rates"]) == 32  # one rate per channel set
    assert rates["predicted_latency_ms"] <= rates["latency"]["limit_ms"]
    fitted = phases["soft_prune"]["reconstruction"]  # the kept weights refit before removal
    assert fitted["images"] == 8 and fitted["mean_error_after"] < fitted["mean_error_before"]
    final = load_pruned(tmp_path / "run" / "final.pt", trust=[BUILDER])
    assert 196_000 <= sum(p.numel() for p in final.parameters()) <= 213_304  # the recipe's budget
    assert rates["predicted_params"] == phases["remove"]["params_after"]
    widths = [m.out_channels for m in final.modules() if isinstance(m, torch.nn.Conv2d)]
    assert sum(w % 8 != 0 for w in widths) <= 9  # only the protected head outputs (2/4/10 per level) off the grid
    kept = json.loads((tmp_path / "run" / "kept_channels.json").read_text())["kept"]  # the feature KD's map
    assert kept and all(len(channels) % 8 == 0 for channels in kept.values())  # pruned outputs, on the grid
    assert set(phases["finetune"]["metrics"]) == {"ap_easy", "ap_medium", "ap_hard", "val_loss"}


def test_retinaface_wider_soft_profile_searches_and_soft_prunes(shared_data, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    weights = shared_data / "weights" / "retinaface_mnet025_official.pth"
    recipe = load_recipe(REPO / "recipes" / "retinaface_wider.yaml",
                         [*data_overrides(shared_data), *TOY_SCHEDULE, f"teacher.checkpoint={weights}"], profile="soft")
    ctx = run(recipe, run_dir=tmp_path / "run", log=quiet, stop_after="remove")
    phases = ctx.state["phases"]
    assert phases["search"]["source"] == "search (bo)" and len(phases["search"]["rates"]) == 5
    assert 196_000 <= phases["remove"]["params_after"] <= 213_304
    with pytest.raises(RecipeError, match="prune.reconstruct needs one-shot pruning"):
        load_recipe(REPO / "recipes" / "retinaface_wider.yaml",
                    [*data_overrides(shared_data), "prune.schedule.epochs=1", f"teacher.checkpoint={weights}"])


def test_featherface_wider_recipe_toy_run_nano_b_inherits_the_v1_backbone(shared_data, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    weights = shared_data / "weights" / "featherface_v1_thirdparty.pth"
    recipe = load_recipe(REPO / "recipes" / "featherface_wider.yaml",
                         [*data_overrides(shared_data), *TOY_SCHEDULE, "distill.epochs=1",
                          f"teacher.checkpoint={weights}"])
    ctx = run(recipe, run_dir=tmp_path / "run", log=quiet, stop_after="remove")
    start = ctx.state["phases"]["distill"]["start"]
    assert start["source"] == "teacher" and start["inherited_params"] == 214_330
    assert 120_000 <= ctx.state["phases"]["remove"]["params_after"] <= 180_000


def test_featherface_wider_v1_profile_is_valid_and_loads_the_official_v1(shared_data, monkeypatch):
    monkeypatch.chdir(REPO)
    weights = shared_data / "weights" / "featherface_v1_thirdparty.pth"
    recipe = load_recipe(REPO / "recipes" / "featherface_wider.yaml",
                         [*data_overrides(shared_data), f"teacher.checkpoint={weights}"], profile="v1_pruned")
    assert recipe.student.model == "featherface_v1" and recipe.distill.epochs == 0
    from compresskit.run.plan import load_recipe_checkpoints
    from compresskit.run import RunContext, build_task

    task = build_task(recipe)
    ctx = RunContext(recipe=recipe, run_dir=Path("unused"), task=task, log=quiet)
    assert load_recipe_checkpoints(recipe, task, ctx.build) == {"teacher.checkpoint": str(weights)}


def _task(shared: Path, **kwargs) -> FeatherFaceTask:
    wider = shared / "widerface"
    return FeatherFaceTask("widerface", train_labels=str(wider / "retinaface_labels" / "train_label.txt"),
                           train_images=str(wider / "WIDER_train" / "images"),
                           val_labels=str(wider / "retinaface_labels" / "val_label.txt"),
                           val_images=str(wider / "WIDER_val" / "images"), gt_dir=str(wider / "ground_truth"),
                           **kwargs)


def test_heldout_split_is_fixed_by_seed_disjoint_and_from_train_only(shared_data):
    task = _task(shared_data, image_size=64, train_size=40, val_size=2)
    kept, heldout = task.heldout_split(0.25, seed=3)
    assert len(heldout) == 10 and len(kept) == 30 and not set(kept) & set(heldout)
    assert task.heldout_split(0.25, seed=3) == (kept, heldout)
    assert task.heldout_split(0.25, seed=4) != (kept, heldout)
    first = [batch[0] for batch in task.heldout_loader(4, 0.25, seed=3)]
    again = [batch[0] for batch in task.heldout_loader(4, 0.25, seed=3)]
    assert sum(len(b) for b in first) == 10 and all(torch.equal(a, b) for a, b in zip(first, again))
    training = task.train_loader(8, holdout=0.25, seed=3)
    assert sorted(training.dataset.indices) == kept  # training never sees the held-out images
    with pytest.raises(ValueError, match="holdout fraction must be in"):
        task.heldout_split(1.0, seed=0)


def test_eval_size_original_is_the_official_protocol(shared_data, tmp_path):
    task = _task(shared_data, image_size=64, train_size=2, val_size=2, eval_size="original")
    model = models.build_model("retinaface_mnet025", weights=shared_data / "weights" / "retinaface_mnet025_official.pth")
    ours = task.evaluate(model)
    folder = tmp_path / "val"
    for index in range(2):  # the same two images, scored by the code behind `compresskit evaluate`
        path = task._val.source.records[index].path
        (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
        (folder / path.parent.name / path.name).symlink_to(path.resolve())
    official = evaluate_widerface(model, folder, shared_data / "widerface" / "ground_truth", progress=False)
    assert [ours[f"ap_{s}"] for s in ("easy", "medium", "hard")] == pytest.approx(list(official.values()), abs=1e-9)
