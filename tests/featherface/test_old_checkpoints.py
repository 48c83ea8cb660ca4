"""A pruned FeatherFace checkpoint saved by compresskit 0.1 names its builder by the reference package's old
import path (``reference.featherface.models:build_model``); the package declares the move
(``compresskit.renamed_builders`` in pyproject.toml), so such a file still loads, trusted, into the same model."""

from __future__ import annotations

import torch

from compresskit import count_params, find_groups, load_pruned, prune, save_pruned
from compresskit.models.persist import current_builder
from featherface import models

OLD_BUILDER = "reference.featherface.models:build_model"


def test_the_old_builder_name_maps_to_the_package_of_today():
    assert current_builder(OLD_BUILDER) == "featherface.models:build_model"
    assert current_builder("my_pkg.models:build") == "my_pkg.models:build"


def test_a_checkpoint_naming_the_old_builder_loads_into_the_same_model(tmp_path):
    torch.manual_seed(0)
    model = models.build_model("nano_b").eval()
    example = torch.randn(1, 3, 64, 64)
    groups = find_groups(model, (example,), protect=models.NANO_B_PROTECT_PATTERNS)
    prune(model, (example,), 0.3, groups=groups)
    save_pruned(tmp_path / "new.pt", model, "featherface.models:build_model", {"name": "nano_b"})
    payload = torch.load(tmp_path / "new.pt", weights_only=True)
    payload["builder"] = OLD_BUILDER
    torch.save(payload, tmp_path / "old.pt")
    loaded = load_pruned(tmp_path / "old.pt").eval()
    assert count_params(loaded) == count_params(model)
    with torch.no_grad():
        assert torch.equal(loaded(example)[1], model(example)[1])
