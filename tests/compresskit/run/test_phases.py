"""Each phase of a run on its own: a toy task, a tiny workspace, a hand-made Config; inputs -> outputs.

A phase reads only its ``Config``, the run files earlier phases wrote and the task, so each test
writes those inputs itself (a freshly built student as ``student.pt``, rates as ``rates.json``) and
checks the files and the summary the phase produces.
"""

from __future__ import annotations

import json

import pytest
import torch
from test_pipeline import TOY, quiet, write_recipe
from torch import nn

from compresskit.config import (
    BudgetConfig,
    QuantizeConfig,
    RecipeError,
    ReconstructConfig,
    ScheduleConfig,
    SearchConfig,
    TrainConfig,
    TrialConfig,
    load_recipe,
)
from compresskit.groups.find import LayerGroupSpec
from compresskit.run.context import ModelSource
from compresskit.run.distillation import Distillation
from compresskit.run.layer_groups import GroupSelection
from compresskit.run.phase_configs import PHASE_CONFIGS, distillation
from compresskit.run.phases import distill_student as distill
from compresskit.run.phases import evaluate, finetune, remove, soft_prune, teacher
from compresskit.run.phases import export_files as export
from compresskit.run.phases import quantize_int8 as quantize
from compresskit.run.phases import rate_search as search
from compresskit.run.phases import write_report as report
from compresskit.run.seeding import PHASE_NAMES, phase_seed
from compresskit.run.workspace import Workspace
from examples.shapes_classifier import ShapesTask

STUDENT = ModelSource("student", "resnet_tiny")
TEACHER = ModelSource("teacher", "resnet_student")
SPECS = (LayerGroupSpec("stem_stage1", patterns=("stem.*", "stage1.*"), bounds=(0.0, 0.5)),
         LayerGroupSpec("stage2", patterns=("stage2.*",), bounds=(0.0, 0.7)),
         LayerGroupSpec("stage3", patterns=("stage3.*",), bounds=(0.0, 0.8)))
GROUPS = GroupSelection(SPECS, protect=("fc",))
RATES = {"stem_stage1": 0.25, "stage2": 0.5, "stage3": 0.5}
ONE_EPOCH = TrainConfig(epochs=1, batch_size=32)


@pytest.fixture(scope="module")
def task() -> ShapesTask:
    return ShapesTask(image_size=12, train_size=64, val_size=32)


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    return Workspace(run_dir=tmp_path, log=quiet)


def _save_student(workspace: Workspace, task: ShapesTask) -> nn.Module:
    torch.manual_seed(0)
    model = STUDENT.build(task)
    workspace.save(model.state_dict(), "student.pt")
    return model


def _soft_pruned(workspace: Workspace, task: ShapesTask) -> dict:
    _save_student(workspace, task)
    workspace.write_json("rates.json", {"rates": RATES})
    schedule = ScheduleConfig(epochs=1, batch_size=32, kind="linear")
    return soft_prune.run(soft_prune.Config(STUDENT, GROUPS, schedule), workspace, task)


# --- seeds and configs ------------------------------------------------------------------------


def test_phase_seed_is_the_seed_times_100_plus_the_phase_position():
    assert PHASE_NAMES[0] == "teacher" and PHASE_NAMES[-1] == "report" and len(PHASE_NAMES) == 10
    assert phase_seed(0, "teacher") == 0 and phase_seed(3, "search") == 302 and phase_seed(1, "report") == 109
    with pytest.raises(ValueError, match="unknown phase 'prune'"):
        phase_seed(0, "prune")


def test_configs_carry_exactly_the_recipe_keys_their_phase_reads(tmp_path, monkeypatch, task):
    recipe = load_recipe(write_recipe(tmp_path, {
        **TOY, "search": {"enabled": False}, "prune": {"rates": {"stage2": 0.4}, "protect": ["stem.*"]},
        "distill": {**TOY["distill"], "phases": ["finetune"], "alpha": 0.3}}, monkeypatch))
    config = PHASE_CONFIGS["search"](recipe, task)
    assert config.rates == {"stage2": 0.4} and not config.search.enabled and config.seed == recipe.seed
    assert config.groups.names == ["stem_stage1", "stage2", "stage3"] and config.groups.protect == ("fc", "stem.*")
    pruning = PHASE_CONFIGS["soft_prune"](recipe, task)
    assert pruning.distillation is None  # not in distill.phases
    assert pruning.rates == {"stage2": 0.4}  # fixed in YAML: handed straight to the phase that prunes
    tuned = PHASE_CONFIGS["finetune"](recipe, task)
    assert tuned.distillation == Distillation(ModelSource("teacher", "resnet_student", {}, recipe.source),
                                              temperature=recipe.distill.temperature, alpha=0.3,
                                              learnable_weights=recipe.distill.learnable_weights)
    assert tuned.train == recipe.finetune
    assert distillation(recipe, "soft_prune") is None
    assert set(PHASE_CONFIGS) == set(PHASE_NAMES)


# --- teacher, distill ------------------------------------------------------------------------


def test_teacher_trains_and_writes_teacher_pt(workspace, task):
    summary = teacher.run(teacher.Config(TEACHER, None, ONE_EPOCH), workspace, task)
    assert summary["source"] == "trained" and summary["params"] > 0 and set(summary["metrics"]) == {
        "accuracy", "val_loss"}
    state_dict = torch.load(workspace.path("teacher.pt"), weights_only=True)
    assert state_dict.keys() == TEACHER.build(task).state_dict().keys()
    records = [json.loads(line) for line in workspace.path("metrics.jsonl").read_text().splitlines()]
    assert [(r["phase"], r["epoch"]) for r in records] == [("teacher", 1)] and "val/accuracy" in records[0]
    assert workspace.path("teacher.last.pt").exists()  # the driver deletes it once the phase is recorded


def test_teacher_loads_a_checkpoint_instead_of_training(workspace, task, tmp_path):
    torch.manual_seed(1)
    weights = TEACHER.build(task).state_dict()
    torch.save(weights, tmp_path / "given.pt")
    summary = teacher.run(teacher.Config(TEACHER, tmp_path / "given.pt", None), workspace, task)
    assert summary["source"] == str(tmp_path / "given.pt")
    loaded = torch.load(workspace.path("teacher.pt"), weights_only=True)
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)
    assert not workspace.path("metrics.jsonl").exists()


def test_teacher_is_skipped_without_a_teacher(workspace, task):
    assert teacher.run(teacher.Config(None, None, None), workspace, task) == {"skipped": "no teacher"}
    assert list(workspace.run_dir.iterdir()) == []


def test_distill_from_a_teacher_writes_student_pt_and_the_learnt_weights(workspace, task):
    torch.manual_seed(0)
    workspace.save(TEACHER.build(task).state_dict(), "teacher.pt")
    config = distill.Config(STUDENT, Distillation(TEACHER, learnable_weights=True), ONE_EPOCH)
    summary = distill.run(config, workspace, task)
    assert summary["start"] == {"source": "initialised"} and len(summary["log_variances"]) == 1
    assert torch.load(workspace.path("student.pt"), weights_only=True).keys() == STUDENT.build(task).state_dict().keys()
    record = json.loads(workspace.path("metrics.jsonl").read_text().splitlines()[-1])
    assert record["phase"] == "distill" and "kd" in record


def test_distill_without_a_teacher_trains_on_the_task_loss(workspace, task):
    summary = distill.run(distill.Config(STUDENT, Distillation(None), ONE_EPOCH), workspace, task)
    assert "log_variances" not in summary and workspace.path("student.pt").exists()


# --- search ------------------------------------------------------------------------------------


def test_search_disabled_writes_the_recipe_rates_zero_for_omitted_groups(workspace, task):
    config = search.Config(SearchConfig(enabled=False), GROUPS, STUDENT, rates={"stage2": 0.4})
    summary = search.run(config, workspace, task)
    assert summary == {"rates": {"stem_stage1": 0.0, "stage2": 0.4, "stage3": 0.0}, "source": "recipe"}
    assert workspace.read_json("rates.json") == summary


def test_search_disabled_refuses_a_rate_for_an_unknown_group(workspace, task):
    config = search.Config(SearchConfig(enabled=False), GROUPS, STUDENT, rates={"stage9": 0.4}, source="r.yaml")
    with pytest.raises(RecipeError, match=r"r.yaml: prune.rates.stage9 is not a layer group"):
        search.run(config, workspace, task)


def test_search_finds_rates_inside_the_bounds_and_the_budget(workspace, task):
    _save_student(workspace, task)
    settings = SearchConfig(method="random", iterations=0, initial_points=3,
                            budget=BudgetConfig(min_params=1000, max_params=12000),
                            trial=TrialConfig(epochs=0, batch_size=32, max_val_batches=1))
    summary = search.run(search.Config(settings, GROUPS, STUDENT), workspace, task)
    assert 1000 <= summary["predicted_params"] <= 12000 and summary["source"] == "search (random)"
    assert all(low <= summary["rates"][name] <= high for name, (low, high) in GROUPS.bounds.items())
    assert len(workspace.read_json("search.json")["trials"]) == summary["trials"] == 3
    assert workspace.read_json("rates.json") == summary


def test_the_search_objective_scores_a_candidate_the_same_twice(workspace, task):
    _save_student(workspace, task)
    trial = TrialConfig(epochs=1, subset=0.5, batch_size=32, max_val_batches=1)
    problem = search.search_problem(search.Config(SearchConfig(trial=trial), GROUPS, STUDENT), workspace, task)
    assert problem.bounds == {"stem_stage1": (0.0, 0.5), "stage2": (0.0, 0.7), "stage3": (0.0, 0.8)}
    assert problem.objective(RATES) == problem.objective(RATES)
    assert problem.predict_params({name: 0.0 for name in RATES}) == sum(
        p.numel() for p in STUDENT.build(task).parameters())


# --- soft pruning, removal, fine-tuning ------------------------------------------------------


def test_soft_prune_zeroes_the_scheduled_channels_and_records_them(workspace, task):
    summary = _soft_pruned(workspace, task)
    assert workspace.read_json("schedule.json") == {
        "step_every": 1, "rates": {name: [0.0, rate] for name, rate in RATES.items()}}  # linear over 1 epoch
    payload = torch.load(workspace.path("soft_pruned.pt"), weights_only=True)
    assert summary["zeroed_channels"] == sum(len(v) for v in payload["zeroed"].values()) > 0
    assert summary["rates"] == RATES
    student = STUDENT.build(task)
    student.load_state_dict(payload["state_dict"])  # full shapes: nothing removed yet
    for layer, indices in payload["zeroed"].items():  # e.g. "stem.0": [0, 7], a quarter of its 8 filters
        weight = student.get_submodule(layer).weight
        assert weight[indices].abs().sum() == 0 and weight.abs().sum() > 0
    assert len(payload["zeroed"]["stem.0"]) == 8 * RATES["stem_stage1"]


def test_soft_prune_takes_fixed_recipe_rates_without_rates_json(workspace, task):
    """``prune.rates`` fixed in the recipe reach the pruner from the phase's Config (0 for omitted groups)."""
    _save_student(workspace, task)
    schedule = ScheduleConfig(epochs=0, batch_size=32, kind="constant")
    summary = soft_prune.run(soft_prune.Config(STUDENT, GROUPS, schedule, rates={"stage2": 0.5}), workspace, task)
    assert not workspace.path("rates.json").exists()
    assert summary["rates"] == {"stem_stage1": 0.0, "stage2": 0.5, "stage3": 0.0}
    assert workspace.read_json("schedule.json")["rates"] == {"stem_stage1": [0.0], "stage2": [0.5], "stage3": [0.0]}


def test_one_shot_soft_prune_with_reconstruct_refits_the_kept_weights_towards_the_student(workspace, task):
    """``prune.reconstruct`` (zero epochs): kept weights refit to the unpruned student's layer outputs;
    pruned filters stay zero; per-layer errors in ``reconstruction.json``; closer outputs on val inputs."""
    unpruned = _save_student(workspace, task).eval()
    schedule = ScheduleConfig(epochs=0, batch_size=32, kind="constant")
    inputs = next(iter(task.val_loader(32)))[0]
    distance = {}
    for refit in (None, ReconstructConfig(batches=2, batch_size=16)):
        summary = soft_prune.run(soft_prune.Config(STUDENT, GROUPS, schedule, rates=RATES, reconstruct=refit),
                                 workspace, task)
        payload = torch.load(workspace.path("soft_pruned.pt"), weights_only=True)
        student = STUDENT.build(task)
        student.load_state_dict(payload["state_dict"])
        for layer, indices in payload["zeroed"].items():
            assert student.get_submodule(layer).weight[indices].abs().sum() == 0
        with torch.no_grad():
            distance[refit is None] = float((student.eval()(inputs) - unpruned(inputs)).pow(2).mean())
    fitted = workspace.read_json("reconstruction.json")
    assert summary["reconstruction"]["images"] == 32 and "layers" not in summary["reconstruction"]
    assert fitted["layers"] and all(after <= before + 1e-6 for before, after in fitted["layers"].values())
    assert fitted["mean_error_after"] < fitted["mean_error_before"]
    assert distance[False] < 0.5 * distance[True]


def test_output_error_importance_ranks_on_the_calibration_batches_and_differs_from_fpgm(workspace, task):
    """``prune.importance: output_error`` with ``prune.reconstruct``: the channels are chosen from the same
    calibration batches the refit uses (not by filter geometry), the removal stays exact, and the refit
    model is at least as close to the unpruned student as FPGM's."""
    unpruned = _save_student(workspace, task).eval()
    schedule = ScheduleConfig(epochs=0, batch_size=32, kind="constant")
    inputs = next(iter(task.val_loader(32)))[0]
    refit = ReconstructConfig(batches=2, batch_size=16)
    zeroed, distance = {}, {}
    for importance in ("fpgm", "output_error"):
        soft_prune.run(soft_prune.Config(STUDENT, GROUPS, schedule, rates=RATES, importance=importance,
                                         reconstruct=refit), workspace, task)
        payload = torch.load(workspace.path("soft_pruned.pt"), weights_only=True)
        zeroed[importance] = payload["zeroed"]
        student = STUDENT.build(task)
        student.load_state_dict(payload["state_dict"])
        with torch.no_grad():
            distance[importance] = float((student.eval()(inputs) - unpruned(inputs)).pow(2).mean())
    assert {k: len(v) for k, v in zeroed["fpgm"].items()} == {k: len(v) for k, v in zeroed["output_error"].items()}
    assert zeroed["fpgm"] != zeroed["output_error"]
    assert distance["output_error"] <= distance["fpgm"] * 1.05


def test_output_error_importance_needs_reconstruct(tmp_path, monkeypatch):
    path = write_recipe(tmp_path, TOY, monkeypatch)
    with pytest.raises(RecipeError, match=r"prune.importance output_error chooses channels from calibration data: "
                                          r"it needs prune.reconstruct"):
        load_recipe(path, ["prune.importance=output_error"])
    recipe = load_recipe(path, ["prune.importance=output_error", "prune.schedule.epochs=0",
                                "prune.reconstruct.batches=2"])
    assert recipe.prune.importance == "output_error"


def test_reconstruct_is_refused_after_soft_pruning_epochs(tmp_path, monkeypatch):
    path = write_recipe(tmp_path, TOY, monkeypatch)
    with pytest.raises(RecipeError, match=r"prune.reconstruct needs one-shot pruning .*got prune.schedule.epochs: 2"):
        load_recipe(path, ["prune.schedule.epochs=2", "prune.reconstruct.batches=4"])


def test_schedule_table_holds_the_rate_at_every_epoch():
    config = ScheduleConfig(epochs=4, kind="linear", initial=0.0, start=0, end=4)
    assert soft_prune.schedule_table(config, {"a": 0.4, "b": 0.0}) == {
        "a": pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4]), "b": [0.0] * 5}


def test_remove_shrinks_the_zeroed_channels_then_finetune_keeps_the_shapes(workspace, task):
    soft = _soft_pruned(workspace, task)
    removed = remove.run(remove.Config(STUDENT, GROUPS), workspace, task)
    assert removed["params_before"] == soft["params_unpruned"] > removed["params_after"]
    channels = workspace.read_json("channels.json")
    assert set(channels["before"]) == set(channels["after"]) and channels["after"]["fc"] == 4
    assert sum(channels["after"].values()) < sum(channels["before"].values())
    tuned = finetune.run(finetune.Config(STUDENT, ONE_EPOCH), workspace, task)
    assert tuned["params"] == removed["params_after"] and workspace.path("final.pt").exists()
    evaluation = evaluate.run(evaluate.Config(STUDENT), workspace, task)
    assert set(evaluation) == {"student", "pruned"} and evaluation["pruned"]["params"] == removed["params_after"]
    stored = workspace.read_json("evaluation.json")
    assert stored["pruned"]["macs"] < stored["student"]["macs"] and stored["pruned"]["latency_ms"] > 0


def test_layer_channels_lists_the_output_channels_of_convs_and_linears():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    assert remove.layer_channels(model) == {"0": 8, "4": 2}


# --- export, quantize, report ---------------------------------------------------------------


def test_export_inputs_take_the_configured_size_and_the_seed(task):
    config = export.Config(STUDENT, input_size=(16, 20), seed=3)
    first, second = export.export_inputs(config, task), export.export_inputs(config, task)
    assert first[0].shape == (1, 3, 16, 20) and torch.equal(first[0], second[0])
    assert export.export_inputs(export.Config(STUDENT), task)[0].shape == (1, 3, 12, 12)


def test_export_quantize_and_report_are_skipped_or_read_the_run_files(workspace, task):
    assert export.run(export.Config(STUDENT, onnx=False), workspace, task) == {"skipped": "export.onnx is false"}
    assert quantize.run(quantize.Config(QuantizeConfig(), export.Config(STUDENT)), workspace, task) == {
        "skipped": "quantize.enabled is false"}
    workspace.write_json("rates.json", {"rates": RATES, "source": "recipe"})
    assert report.run(report.Config(), workspace, task) == {"path": "report.md"}
    assert "## Pruning rates" in workspace.path("report.md").read_text()


def test_export_writes_an_onnx_model_that_matches_pytorch(workspace, task):
    pytest.importorskip("onnxruntime")
    from compresskit.models.persist import save_pruned

    torch.manual_seed(0)
    builder, kwargs = STUDENT.builder(task)
    save_pruned(workspace.path("final.pt"), STUDENT.build(task), builder, kwargs)
    summary = export.run(export.Config(STUDENT, input_size=(16, 16)), workspace, task)
    assert summary["path"] == "model.onnx" and summary["input_shapes"] == [[1, 3, 16, 16]]
    assert summary["max_abs_difference"] <= 1e-4 and workspace.path("model.onnx").stat().st_size == summary["bytes"]
