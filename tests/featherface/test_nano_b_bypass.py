"""Nano-B's declared bypassable blocks: switched off through the builder, pruned exactly, saved and rebuilt."""

from __future__ import annotations

import warnings

import torch

from compresskit import ParamPredictor, count_params, find_groups
from compresskit.models.bypass import Bypass, fit_patterns, fit_specs, optional_blocks
from compresskit.models.persist import load_pruned, save_pruned
from compresskit.pruning import prune
from featherface.models import NANO_B_PROTECT_PATTERNS, build_model
from featherface.task import layer_group_specs

P3 = ["scale_decoupling", "backbone_cbam.0", "semantic.0", "semantic.1", "semantic.2", "assn"]


def test_every_declared_block_keeps_its_shape_and_can_go():
    model = build_model("nano_b")
    assert set(P3) <= set(optional_blocks(model))
    reduced = build_model("nano_b", bypass=list(optional_blocks(model)))
    assert all(isinstance(reduced.get_submodule(name), Bypass) for name in optional_blocks(model))
    shapes = [t.shape for t in reduced(torch.zeros(1, 3, 64, 64))]
    assert shapes == [t.shape for t in model(torch.zeros(1, 3, 64, 64))]


def test_a_pruned_reduced_nano_b_is_exact_and_round_trips(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    model = build_model("nano_b", bypass=P3).eval()
    specs = fit_specs(layer_group_specs("nano_b"), model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        groups = find_groups(model, x, layer_groups=specs, protect=fit_patterns(NANO_B_PROTECT_PATTERNS, model))
    rates = {spec.name: spec.bounds[1] for spec in specs}
    predicted = ParamPredictor(model, groups)(rates)
    before = count_params(model)
    prune(model, x, rates, groups=groups)  # verified against the soft-zeroed reduced model
    assert count_params(model) == predicted < before  # exact, and something was pruned
    save_pruned(tmp_path / "reduced.pt", model, "featherface.models:build_model",
                {"name": "nano_b", "bypass": P3})
    rebuilt = load_pruned(tmp_path / "reduced.pt").eval()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(rebuilt(x), model(x)))


def test_a_trained_full_nano_b_checkpoint_loads_into_a_bypassed_student(tmp_path):
    """What `student.checkpoint` + `student.model_args.bypass` do in a recipe: every kept tensor is the file's."""
    from featherface.models import load_weights

    torch.manual_seed(0)
    full = build_model("nano_b")
    torch.save({"state_dict": full.state_dict()}, tmp_path / "nano_b.pth")
    reduced = load_weights(build_model("nano_b", bypass=P3), tmp_path / "nano_b.pth")
    kept = reduced.state_dict()
    assert len(kept) < len(full.state_dict())
    assert all(torch.equal(value, full.state_dict()[key]) for key, value in kept.items())
