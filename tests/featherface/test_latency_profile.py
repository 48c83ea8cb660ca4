"""The ``latency`` profile of ``recipes/featherface_nano_b.yaml`` (issue 8).

The profile copies Nano-B's layer groups into ``prune.groups`` to widen the bounds of the
high-resolution groups; these tests keep that copy in step with ``models.NANO_B_LAYER_GROUPS`` and
check that the default profile still uses the task's groups and seed bounds. What the profile
reaches (123,350 params at 0.98-0.99x YuNet-n) is in benchmarks/RESULTS.md ("Beyond the seeds' bounds").
"""

from __future__ import annotations

from pathlib import Path

from compresskit.config import load_recipe
from featherface.models import NANO_B_LAYER_GROUPS, FeatherFaceNanoB

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "featherface_nano_b.yaml"
SEED_GROUPS = {group["name"]: group for group in NANO_B_LAYER_GROUPS}


def test_latency_profile_groups_are_nano_b_groups_with_wider_bounds(monkeypatch):
    monkeypatch.chdir(REPO)
    recipe = load_recipe(RECIPE, profile="latency", resolve=False)
    groups = recipe.prune.groups
    # efficient_cbam is left out: every block it names is bypassed
    assert list(groups) == [name for name in SEED_GROUPS if name != "efficient_cbam"]
    for name, group in groups.items():
        assert group.patterns == tuple(SEED_GROUPS[name]["patterns"])
    assert groups["backbone_late"].bounds == SEED_GROUPS["backbone_late"]["bounds"]  # the parameters' group
    for name in ("backbone_early", "efficient_bifpn", "detection_heads"):
        assert groups[name].bounds[1] > SEED_GROUPS[name]["bounds"][1]
    assert recipe.prune.channel_multiple == 8
    assert recipe.search.budget.max_latency_ratio == 0.4


def test_latency_profile_bypasses_every_cbam_pattern_of_efficient_cbam(monkeypatch):
    monkeypatch.chdir(REPO)
    bypass = load_recipe(RECIPE, profile="latency", resolve=False).student.model_args["bypass"]
    assert set(bypass) <= set(FeatherFaceNanoB.bypassable)
    model = FeatherFaceNanoB(bypass=bypass)
    names = [name for name, _ in model.named_modules()]
    assert not [name for name in names if name.endswith("channel_gate.fc1") or name.endswith("inject_fc1")]


def test_default_profile_keeps_the_task_groups(monkeypatch):
    monkeypatch.chdir(REPO)
    recipe = load_recipe(RECIPE, resolve=False)
    assert recipe.prune.groups is None and recipe.prune.channel_multiple == 1
    assert recipe.search.budget.max_latency_ratio is None and not recipe.student.model_args
