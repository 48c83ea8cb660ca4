from __future__ import annotations

import pytest

from compresskit.config.errors import RecipeError
from compresskit.config.validate import validate_recipe

BASE = {"name": "x", "task": "mypkg.tasks:MyTask", "student": {"model": "small"}}


def test_distill_feature_keys_default_to_output_distillation_only():
    distill = validate_recipe(BASE, "x.yaml").distill
    assert (distill.features, distill.feature_weight, distill.freeze_bn) == ((), 1.0, False)


def test_distill_features_take_one_glob_or_a_list():
    recipe = validate_recipe({**BASE, "teacher": {"model": "big"}, "distill": {"features": "ssh?"}}, "x.yaml")
    assert recipe.distill.features == ("ssh?",)


def test_distill_features_need_a_teacher():
    with pytest.raises(RecipeError, match=r"^x\.yaml: distill\.features needs a teacher, got teacher: null"):
        validate_recipe({**BASE, "distill": {"features": ["fpn.*"]}}, "x.yaml")


def test_feature_weight_must_not_be_negative():
    with pytest.raises(RecipeError, match=r"distill\.feature_weight"):
        validate_recipe({**BASE, "teacher": {"model": "big"}, "distill": {"feature_weight": -1}}, "x.yaml")
