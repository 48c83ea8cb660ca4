from __future__ import annotations

import copy
import dataclasses
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from compresskit.config import (
    Recipe,
    RecipeError,
    apply_overrides,
    load_recipe,
    parse_override,
    recipe_to_dict,
    resolve_object,
    validate_recipe,
)

REPO = Path(__file__).resolve().parents[3]

VALID: dict[str, Any] = {
    "name": "toy",
    "seed": 1,
    "task": "examples.shapes_classifier:ShapesTask",
    "task_args": {"image_size": 16},
    "teacher": {"model": "resnet_teacher", "train": {"epochs": 2, "lr": 1e-3, "batch_size": 8}},
    "student": {"model": "resnet_student"},
    "distill": {"epochs": 1, "temperature": 4.0, "alpha": 0.7},
    "search": {"iterations": 3, "budget": {"min_params": 10, "max_params": 100}},
    "prune": {
        "groups": {
            "backbone_early": {"patterns": ["stem.*"], "bounds": [0.0, 0.4]},
            "backbone_late": {"patterns": ["stage3.*"], "bounds": [0.1, 0.6]},
        },
        "schedule": {"epochs": 4, "power": 3},
    },
    "finetune": {"epochs": 1},
    "export": {"input_size": [16, 16]},
    "profiles": {"paper": {"distill": {"epochs": 50}, "finetune.epochs": 30}},
}


def write(tmp_path: Path, data: Any, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def with_value(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    node = data
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return data


def without(path: str) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    node = data
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]
    del node[keys[-1]]
    return data


# --- the valid recipe -----------------------------------------------------------


def test_valid_recipe_loads_into_frozen_dataclasses(tmp_path):
    recipe = load_recipe(write(tmp_path, VALID), resolve=False)
    assert isinstance(recipe, Recipe)
    assert recipe.teacher.train.epochs == 2
    assert recipe.prune.groups["backbone_late"].bounds == (0.1, 0.6)
    assert recipe.prune.groups["backbone_early"].patterns == ("stem.*",)
    assert recipe.export.input_size == (16, 16)
    assert recipe.distill.learnable_weights is True  # default
    assert recipe.search.method == "bo"
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.seed = 3  # type: ignore[misc]


def test_yaml11_exponent_strings_are_accepted_as_floats(tmp_path):
    without = {key: value for key, value in VALID.items() if key != "finetune"}  # no duplicate key
    text = yaml.safe_dump(without) + "finetune: {epochs: 1, lr: 1e-3}\n"
    recipe = load_recipe(write(tmp_path, text), resolve=False)
    assert recipe.finetune.lr == pytest.approx(1e-3)


def test_round_trip_through_recipe_to_dict(tmp_path):
    recipe = load_recipe(write(tmp_path, VALID), resolve=False)
    again = load_recipe(write(tmp_path, recipe_to_dict(recipe), "again.yaml"), resolve=False)
    assert recipe_to_dict(again) == recipe_to_dict(recipe)


# --- malformed variants: each message names the file, the key path, the value -------------

MALFORMED = [
    # (recipe, key path expected in the message, fragment of the message)
    (with_value("prune.groups.backbone_early.bounds", [0.1, 1.2]),
     "prune.groups.backbone_early.bounds", "must be within [0, 1), got 1.2"),
    (with_value("prune.groups.backbone_early.bounds", [-0.1, 0.2]),
     "prune.groups.backbone_early.bounds", "got -0.1"),
    (with_value("prune.groups.backbone_early.bounds", [0.5, 0.2]),
     "prune.groups.backbone_early.bounds", "low <= high"),
    (with_value("prune.groups.backbone_early.bounds", [0.1]),
     "prune.groups.backbone_early.bounds", "a list of 2"),
    (with_value("prune.groups.backbone_early.patternz", ["a"]),
     "prune.groups.backbone_early.patternz", "did you mean 'patterns'"),
    (with_value("prune.groups.backbone_early", {"bounds": [0, 0.3]}),
     "prune.groups.backbone_early", "needs patterns or types"),
    (with_value("distill.alpha", 1.5), "distill.alpha", "within [0, 1], got 1.5"),
    (with_value("distill.temperature", 0), "distill.temperature", "> 0, got 0"),
    (with_value("distill.epochs", 2.5), "distill.epochs", "must be an integer, got 2.5"),
    (with_value("distill.epochs", -1), "distill.epochs", ">= 0, got -1"),
    (with_value("distill.learnable_weights", "yes please"), "distill.learnable_weights",
     "true or false, got 'yes please'"),
    (with_value("distill.epochs", True), "distill.epochs", "integer, got True"),
    (with_value("teacher.train.lr", "fast"), "teacher.train.lr", "a number, got 'fast'"),
    (with_value("teacher.train.batch_size", 0), "teacher.train.batch_size", ">= 1, got 0"),
    (with_value("teacher.train.optimizer", "adam"), "teacher.train.optimizer", "one of 'adamw', 'sgd'"),
    (with_value("teacher.model", 3), "teacher.model", "non-empty string, got 3"),
    (with_value("teacher.train", [1, 2]), "teacher.train", "must be a mapping, got [1, 2]"),
    (with_value("search.method", "grid"), "search.method", "got 'grid'"),
    (with_value("search.iterations", "many"), "search.iterations", "integer, got 'many'"),
    (with_value("search.budget.min_params", 1000), "search.budget.min_params",
     "<= search.budget.max_params (100), got 1000"),
    (with_value("search.trial.subset", 0.0), "search.trial.subset", "within (0, 1], got 0.0"),
    (with_value("search.budgett", {}), "search.budgett", "did you mean 'budget'"),
    (with_value("prune.importance", "l2"), "prune.importance", "'fpgm', 'magnitude'"),
    (with_value("prune.schedule.kind", "cubic"), "prune.schedule.kind", "got 'cubic'"),
    (with_value("prune.schedule.end", 9), "prune.schedule.end", "<= prune.schedule.epochs (4), got 9"),
    (with_value("prune.rates", {"backbone_early": 1.0}), "prune.rates.backbone_early",
     "within [0, 1), got 1.0"),
    (with_value("prune.rates", {"backbone_early": 0.5}), "prune.rates.backbone_early",
     "within prune.groups.backbone_early.bounds [0.0, 0.4], got 0.5"),
    (with_value("prune.rates", {"nope": 0.1}), "prune.rates.nope", "is not a layer group"),
    (with_value("export.input_size", [0, 16]), "export.input_size", ">= 1, got 0"),
    (with_value("export.atol", "tiny"), "export.atol", "got 'tiny'"),
    (with_value("seed", -3), "seed", ">= 0, got -3"),
    (with_value("task", "not a spec"), "task", "got 'not a spec'"),
    (with_value("student.model", "pkg.mod:"), "student.model", "got 'pkg.mod:'"),
    (with_value("colour", "blue"), "colour", "is not a known key"),
    (without("student"), "student", "is required"),
    (with_value("student", None), "student", "got None"),
    (with_value("profiles.paper", {"distill": {"alpha": 3}}), "distill.alpha", "(profile paper)"),
]


@pytest.mark.parametrize(("data", "key_path", "fragment"), MALFORMED,
                         ids=[f"{i}-{case[1]}" for i, case in enumerate(MALFORMED)])
def test_malformed_recipe_names_file_key_path_and_value(tmp_path, data, key_path, fragment):
    path = write(tmp_path, data)
    with pytest.raises(RecipeError) as error:
        load_recipe(path, resolve=False)
    message = str(error.value)
    assert "x.yaml" in message
    assert f" {key_path} " in message or f": {key_path} " in message
    assert fragment in message
    assert "\n" not in message


def test_error_message_has_the_documented_shape(tmp_path):
    path = write(tmp_path, with_value("prune.groups.backbone_early.bounds", [0.0, 1.2]))
    with pytest.raises(RecipeError) as error:
        load_recipe(path, resolve=False)
    assert str(error.value).endswith(
        "x.yaml: prune.groups.backbone_early.bounds must be within [0, 1), got 1.2"
    )


@pytest.mark.parametrize("text", ["[1, 2]", "name: [unclosed", "42"])
def test_non_mapping_or_broken_yaml_is_a_recipe_error(tmp_path, text):
    with pytest.raises(RecipeError, match="x.yaml"):
        load_recipe(write(tmp_path, text), resolve=False)


def test_missing_file_is_a_recipe_error(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "absent.yaml")


# --- overrides -------------------------------------------------------------------------


def test_parse_override_parses_yaml_scalars_and_flow_lists():
    assert parse_override("distill.epochs=5") == (("distill", "epochs"), 5)
    assert parse_override("finetune.lr=1e-3") == (("finetune", "lr"), 1e-3)
    assert parse_override("teacher.checkpoint=null") == (("teacher", "checkpoint"), None)
    assert parse_override("export.input_size=[64, 48]") == (("export", "input_size"), [64, 48])
    assert parse_override("name=run-2") == (("name",), "run-2")


@pytest.mark.parametrize("bad", ["distill.epochs", "=3", "a..b=1"])
def test_malformed_override_is_rejected(bad):
    with pytest.raises(RecipeError, match="expected key.path=value"):
        parse_override(bad)


def test_overrides_apply_and_are_validated_like_the_file(tmp_path):
    path = write(tmp_path, VALID)
    recipe = load_recipe(path, ["distill.epochs=7", "prune.groups.backbone_early.bounds=[0.1, 0.3]"],
                         resolve=False)
    assert recipe.distill.epochs == 7
    assert recipe.prune.groups["backbone_early"].bounds == (0.1, 0.3)
    with pytest.raises(RecipeError) as error:
        load_recipe(path, ["distill.alpha=1.5"], resolve=False)
    assert str(error.value).endswith(
        "x.yaml (--set distill.alpha=1.5): distill.alpha must be within [0, 1], got 1.5"
    )
    with pytest.raises(RecipeError, match=r"distill.tempurature is not a known key"):
        load_recipe(path, ["distill.tempurature=2"], resolve=False)


def test_override_into_a_scalar_is_rejected(tmp_path):
    with pytest.raises(RecipeError, match=r"distill.epochs is 1, not a mapping"):
        load_recipe(write(tmp_path, VALID), ["distill.epochs.x=2"], resolve=False)


def test_apply_overrides_does_not_mutate_its_input():
    data = {"distill": {"epochs": 2}}
    assert apply_overrides(data, ["distill.epochs=5", "finetune.lr=0.1"]) == {
        "distill": {"epochs": 5}, "finetune": {"lr": 0.1}}
    assert data == {"distill": {"epochs": 2}}


# --- profiles --------------------------------------------------------------------------


def test_profile_applies_nested_and_dotted_overrides_before_set(tmp_path):
    path = write(tmp_path, VALID)
    recipe = load_recipe(path, profile="paper", resolve=False)
    assert (recipe.distill.epochs, recipe.finetune.epochs, recipe.profile) == (50, 30, "paper")
    assert recipe.distill.alpha == 0.7  # untouched keys kept by the deep merge
    recipe = load_recipe(path, ["distill.epochs=3"], profile="paper", resolve=False)
    assert recipe.distill.epochs == 3


def test_unknown_profile_lists_the_valid_ones(tmp_path):
    with pytest.raises(RecipeError, match=r"unknown profile 'fast'; valid: \['paper'\]"):
        load_recipe(write(tmp_path, VALID), profile="fast", resolve=False)


# --- extends ---------------------------------------------------------------------------


def test_extends_deep_merges_relative_to_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path, VALID, "base.yaml")
    child = write(tmp_path, textwrap.dedent("""\
        extends: ../base.yaml
        name: child
        distill: {epochs: 9}
        prune: {groups: {backbone_late: {patterns: ["stage2.*"]}}}
    """), "sub/child.yaml")
    recipe = load_recipe(child, resolve=False)
    assert recipe.name == "child"
    assert recipe.distill.epochs == 9 and recipe.distill.alpha == 0.7
    assert recipe.prune.groups["backbone_late"].patterns == ("stage2.*",)
    assert recipe.prune.groups["backbone_late"].bounds == (0.1, 0.6)  # from the base
    assert recipe.teacher.train.epochs == 2


def test_error_in_a_base_file_names_the_base_file(tmp_path):
    write(tmp_path, with_value("distill.alpha", 2), "base.yaml")
    child = write(tmp_path, "extends: base.yaml\nname: child\n", "child.yaml")
    with pytest.raises(RecipeError) as error:
        load_recipe(child, resolve=False)
    assert "base.yaml: distill.alpha must be within [0, 1], got 2" in str(error.value)


def test_extends_cycle_is_detected(tmp_path):
    write(tmp_path, "extends: b.yaml\nname: a\n", "a.yaml")
    write(tmp_path, "extends: c.yaml\n", "b.yaml")
    write(tmp_path, "extends: a.yaml\n", "c.yaml")
    with pytest.raises(RecipeError, match=r"extends cycle: .*a.yaml -> .*b.yaml -> .*c.yaml -> .*a.yaml"):
        load_recipe(tmp_path / "a.yaml", resolve=False)


def test_extends_missing_base_names_it(tmp_path):
    child = write(tmp_path, "extends: nowhere.yaml\n", "child.yaml")
    with pytest.raises(RecipeError, match=r"child.yaml: extends 'nowhere.yaml': file not found"):
        load_recipe(child, resolve=False)


# --- module:callable resolution ----------------------------------------------------------


def test_resolve_object_imports_module_callable(monkeypatch):
    monkeypatch.chdir(REPO)
    task_class = resolve_object("examples.shapes_classifier:ShapesTask", "task")
    assert task_class.__name__ == "ShapesTask"


@pytest.mark.parametrize(("spec", "fragment"), [
    ("no_such_module_xyz:Task", "cannot import module 'no_such_module_xyz'"),
    ("examples.shapes_classifier:NoSuchTask", "has no attribute 'NoSuchTask'"),
    ("examples.shapes_classifier:SHAPES", "is not callable"),
    ("justaname", "must be 'package.module:callable'"),
])
def test_resolve_object_errors_name_the_string(monkeypatch, spec, fragment):
    monkeypatch.chdir(REPO)
    with pytest.raises(RecipeError) as error:
        resolve_object(spec, "task", "x.yaml")
    assert fragment in str(error.value)
    assert str(error.value).startswith("x.yaml: task")


def test_load_recipe_resolves_the_task_and_reports_bad_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    assert load_recipe(write(tmp_path, VALID)).task.endswith(":ShapesTask")
    path = write(tmp_path, with_value("task", "examples.shapes_classifier:Missing"))
    with pytest.raises(RecipeError, match=r"x.yaml: task 'examples.shapes_classifier:Missing'"):
        load_recipe(path)


def test_missing_teacher_checkpoint_is_reported(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    path = write(tmp_path, with_value("teacher.checkpoint", "nope.pt"))
    with pytest.raises(RecipeError, match=r"teacher.checkpoint file not found, got 'nope.pt'"):
        load_recipe(path)


def test_validate_recipe_accepts_a_dict_directly():
    recipe = validate_recipe(VALID, "inline")
    assert recipe.source == "inline"
    with pytest.raises(RecipeError, match=r"^inline: seed must be >= 0, got -1$"):
        validate_recipe(with_value("seed", -1), "inline")


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "recipes").glob("*.yaml")))
def test_shipped_recipes_validate_with_every_profile(name, monkeypatch):
    monkeypatch.chdir(REPO)
    recipe = load_recipe(REPO / "recipes" / name, resolve=False)
    for profile in recipe.profiles:
        assert load_recipe(REPO / "recipes" / name, profile=profile, resolve=False).profile == profile
