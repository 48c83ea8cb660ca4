"""Recipe weights: the generic loader, init_from (inherit_matching), the pre-flight check, --dry-run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_pipeline import TOY, quiet, write_recipe
from torch import nn

from compresskit.cli import cli
from compresskit.config import RecipeError, load_recipe, validate_recipe
from compresskit.models.weights import inherit_matching, load_state_dict_file, load_weights
from compresskit.run import build_task, run
from compresskit.run.plan import load_recipe_checkpoints as check_checkpoints


def small(width: int = 4) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3), nn.BatchNorm2d(width), nn.Conv2d(width, 2, 1))


# --- load_checkpoint / load_state_dict_file -------------------------------------------


@pytest.mark.parametrize("wrap", [lambda sd: sd, lambda sd: {"state_dict": sd, "epoch": 3},
                                  lambda sd: {"model_state_dict": sd}])
def test_generic_loader_accepts_plain_and_wrapped_state_dicts(tmp_path, wrap):
    source = small()
    torch.save(wrap(source.state_dict()), tmp_path / "w.pt")
    target = load_weights(object(), small(), tmp_path / "w.pt")
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))


def test_generic_loader_names_file_and_first_mismatching_keys(tmp_path):
    torch.save(small(width=6).state_dict(), tmp_path / "w.pt")
    with pytest.raises(ValueError, match=r"w\.pt: does not match Sequential .*7 wrong shapes, e\.g\. \['0\.weight"):
        load_weights(object(), small(width=4), tmp_path / "w.pt")
    torch.save({"0.weight": torch.zeros(4, 3, 3, 3)}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match=r"partial\.pt: .*missing keys, e\.g\. \['0\.bias'"):
        load_weights(object(), small(), tmp_path / "partial.pt")


def test_generic_loader_rejects_non_weights(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pt: cannot be read as a weights-only torch checkpoint"):
        load_state_dict_file(tmp_path / "junk.pt")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list\.pt: expected a state dict"):
        load_state_dict_file(tmp_path / "list.pt")


def test_task_loader_is_used_when_the_task_has_one(tmp_path):
    calls = []

    class Task:
        def load_checkpoint(self, model, path):
            calls.append(Path(path).name)
            return model

    model = small()
    assert load_weights(Task(), model, tmp_path / "any.pth") is model
    assert calls == ["any.pth"]


# --- inherit_matching --------------------------------------------------------------------


def test_inherit_copies_exactly_the_tensors_whose_name_and_shape_match():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 8, 1))
    student = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    teacher[1].running_mean.fill_(0.5)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    summary = inherit_matching(student, teacher)
    copied = ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"]
    for name in copied:
        assert torch.equal(student.state_dict()[name], teacher.state_dict()[name]), name
    for name in ("2.weight", "2.bias"):  # 8 vs 2 output channels: left as they were
        assert torch.equal(student.state_dict()[name], before[name]), name
    assert summary.tensors == 7
    assert summary.params == 4 * 3 * 9 + 4 + 4 + 4  # conv weight + bias, BN weight + bias (buffers not counted)
    assert summary.student_params == sum(p.numel() for p in student.parameters())
    assert summary.skipped == ("2.weight", "2.bias")
    assert "inherited 7 tensors / 120 of 130 parameters" in summary.describe()


# --- recipes: the pre-flight check, --dry-run, the pipeline ----------------------------


def _teacher_file(tmp_path: Path, model: str) -> Path:
    from examples.shapes_classifier import build_model

    path = tmp_path / f"{model}.pt"
    torch.save(build_model(model).state_dict(), path)
    return path


def test_wrong_teacher_checkpoint_is_one_line_before_any_training(tmp_path, monkeypatch):
    wrong = _teacher_file(tmp_path, "resnet_tiny")  # the recipe's teacher is resnet_student
    path = write_recipe(tmp_path, {**TOY, "teacher": {**TOY["teacher"], "checkpoint": str(wrong)}}, monkeypatch)
    recipe = load_recipe(path)
    with pytest.raises(RecipeError) as error:
        check_checkpoints(recipe, build_task(recipe), prepare_build(recipe))
    message = str(error.value)
    assert "\n" not in message
    assert f"teacher.checkpoint {wrong}" in message and "teacher.model 'resnet_student'" in message
    assert "wrong shapes, e.g. ['" in message
    with pytest.raises(RecipeError, match="teacher.checkpoint"):
        run(recipe, run_dir=tmp_path / "run", log=quiet)
    assert not (tmp_path / "run" / "teacher.pt").exists()  # nothing was trained

    result = CliRunner().invoke(cli, ["run", str(path), "--dry-run"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error: ") and "teacher.checkpoint" in lines[-1] and str(wrong) in lines[-1]


def prepare_build(recipe):
    from compresskit.run import RunContext

    ctx = RunContext(recipe=recipe, run_dir=Path("unused"), task=build_task(recipe), log=quiet)
    return ctx.build


def test_dry_run_reports_a_good_checkpoint(tmp_path, monkeypatch):
    good = _teacher_file(tmp_path, "resnet_student")
    path = write_recipe(tmp_path, {**TOY, "teacher": {**TOY["teacher"], "checkpoint": str(good)}}, monkeypatch)
    result = CliRunner().invoke(cli, ["run", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert f"teacher.checkpoint {good}: loads strictly" in result.output


def test_student_checkpoint_and_init_from_are_validated(tmp_path, monkeypatch):
    path = write_recipe(tmp_path, {**TOY, "student": {"model": "resnet_tiny", "checkpoint": "missing.pt"}},
                        monkeypatch)
    with pytest.raises(RecipeError, match=r"student\.checkpoint file not found, got 'missing\.pt'"):
        load_recipe(path)
    minimal = {"name": "x", "task": "examples.shapes_classifier:ShapesTask",
               "student": {"model": "resnet_tiny", "init_from": "teacher"}}
    with pytest.raises(RecipeError, match=r"x\.yaml: student\.init_from needs a teacher, got teacher: null"):
        validate_recipe(minimal, "x.yaml")
    both = {**minimal, "teacher": {"model": "resnet_student"},
            "student": {"model": "resnet_tiny", "init_from": "teacher", "checkpoint": "s.pt"}}
    with pytest.raises(RecipeError, match=r"student\.init_from cannot be combined with student\.checkpoint"):
        validate_recipe(both, "x.yaml")


def test_init_from_teacher_starts_the_student_as_the_teacher(tmp_path, monkeypatch):
    good = _teacher_file(tmp_path, "resnet_student")
    recipe = {**TOY, "teacher": {**TOY["teacher"], "checkpoint": str(good)},
              "student": {"model": "resnet_student", "init_from": "teacher"}, "distill": {"epochs": 0}}
    ctx = run(load_recipe(write_recipe(tmp_path, recipe, monkeypatch)), run_dir=tmp_path / "run", log=quiet,
              stop_after="distill")
    teacher = torch.load(tmp_path / "run" / "teacher.pt", weights_only=True)
    student = torch.load(tmp_path / "run" / "student.pt", weights_only=True)
    assert teacher.keys() == student.keys() and all(torch.equal(teacher[k], student[k]) for k in teacher)
    start = ctx.state["phases"]["distill"]["start"]
    assert start["source"] == "teacher" and start["shape_mismatches"] == 0
    assert start["inherited_params"] == sum(v.numel() for k, v in teacher.items()
                                            if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
