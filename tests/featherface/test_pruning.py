"""compresskit on the FeatherFace models: exact pruning of every coupled set, and Nano-B's budget.

Invariants for FeatherFace V1 and Nano-B at rates 0.3 and 0.6 over all prunable groups
(soft-zeroed == physically pruned in eval mode, shapes unchanged, ``ParamPredictor`` exact),
plus the structures that used to be skipped: CBAM-gated trunks (``compresskit.ChannelPool``),
Nano-B's grouped SSH with channel shuffles, V1's post-SSH shuffle. Finally the point of it all:
Nano-B's 120K-180K real-parameter target lies inside the seed's per-group bounds.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import compresskit as ck
from compresskit.groups.surgery import flatten_outputs
from featherface.models import (
    FEATHERFACE_V1_LAYER_GROUPS,
    FEATHERFACE_V1_PROTECT_PATTERNS,
    NANO_B_LAYER_GROUPS,
    NANO_B_PROTECT_PATTERNS,
    build_model,
)

RATES = (0.3, 0.6)
TARGET = (120_000, 180_000)  # real parameters (seed design)
TABLES = {
    "nano_b": (NANO_B_LAYER_GROUPS, NANO_B_PROTECT_PATTERNS),
    "featherface_v1": (FEATHERFACE_V1_LAYER_GROUPS, FEATHERFACE_V1_PROTECT_PATTERNS),
}
# Coupled sets left unpruned, by model (name of the set: reason). Keep this list short and explained.
EXPECTED_SKIPPED: dict[str, list[str]] = {"nano_b": [], "featherface_v1": []}


def _specs(name: str) -> list[ck.LayerGroupSpec]:
    return [ck.LayerGroupSpec(g["name"], tuple(g["patterns"]), bounds=tuple(g["bounds"])) for g in TABLES[name][0]]


def _trace(name: str) -> tuple[str, nn.Module, torch.Tensor, ck.ChannelGroups]:
    torch.manual_seed(0)
    model = build_model(name).eval()
    example = torch.randn(1, 3, 64, 64) * 50.0  # roughly the scale of mean-subtracted pixels
    groups = ck.find_groups(model, example, layer_groups=_specs(name), protect=TABLES[name][1])
    return name, model, example, groups


@pytest.fixture(scope="module")
def nano_b() -> tuple[str, nn.Module, torch.Tensor, ck.ChannelGroups]:
    """``(name, model, example, groups)`` traced once at 64x64; tests prune a deep copy."""
    return _trace("nano_b")


@pytest.fixture(scope="module")
def featherface_v1() -> tuple[str, nn.Module, torch.Tensor, ck.ChannelGroups]:
    return _trace("featherface_v1")


@pytest.fixture(params=sorted(TABLES))
def traced(request) -> tuple[str, nn.Module, torch.Tensor, ck.ChannelGroups]:
    return request.getfixturevalue(request.param)


def _copy(traced) -> tuple[nn.Module, torch.Tensor, ck.ChannelGroups]:
    """A private model + groups pair (deep-copied together, so the groups point at the copy)."""
    _, model, example, groups = traced
    model, groups = copy.deepcopy((model, groups))
    assert all(g.model is model for g in groups)
    return model, example, groups


def test_nothing_unexpected_is_skipped_and_every_layer_group_has_sets(traced) -> None:
    name, _, _, groups = traced
    assert [s.name for s in groups.skipped] == EXPECTED_SKIPPED[name], groups.skipped
    assert {g.layer_group for g in groups} == {g["name"] for g in TABLES[name][0]}


@pytest.mark.parametrize("rate", RATES)
def test_soft_zeroed_equals_pruned_and_predictor_is_exact(traced, rate: float) -> None:
    model, example, groups = _copy(traced)
    predicted = ck.ParamPredictor(model, groups)(rate)
    pruner = ck.SoftFPGM(groups, ck.constant(rate))
    pruner.step(0)
    with torch.no_grad():
        soft = flatten_outputs(model(example))
    summary = pruner.apply()
    with torch.no_grad():
        hard = flatten_outputs(model(example))
    assert [t.shape for t in soft] == [t.shape for t in hard]
    for before, after in zip(soft, hard):
        assert float((before - after).abs().max()) <= 1e-5 * float(before.abs().max())
    assert ck.count_params(model) == predicted == summary.params_after < summary.params_before
    with torch.no_grad():  # still runs at another size
        assert [t.shape[-1] for t in model(torch.randn(2, 3, 96, 64))] == [4, 2, 10]


def test_cbam_gated_trunks_are_pruned(traced) -> None:
    name, *_ = traced
    model, example, groups = _copy(traced)
    owner = {g.name: g.layer_group for g in groups}  # by the trunk producer, not the gating convs
    assert owner["body.stage1.5.3"] == "backbone_early"
    assert owner["body.stage2.5.3"] == owner["body.stage3.1.3"] == "backbone_late"
    assert owner["bifpn.0.p3_down_channel.conv"] == ("efficient_bifpn" if name == "nano_b" else "bifpn")
    ck.prune(model, example, 0.5, groups=groups)
    body = model.body
    # the backbone outputs c3, c4, c5 pass through CBAM spatial gates
    assert body.stage1[5][3].out_channels == 32 and body.stage2[5][3].out_channels == 64
    assert body.stage3[1][3].out_channels == 128
    for i, channels in enumerate((64, 128, 256)):
        pool = model.backbone_cbam[i].spatial_gate.pool
        assert pool.divisor == channels and pool.num_channels == channels // 2 and pool.floor == 0.0
    width = 72 if name == "nano_b" else 64
    assert model.bifpn[0].p3_down_channel.conv.out_channels == width // 2  # the BiFPN trunk
    assert model.bifpn[2].conv5_down.pointwise.out_channels == width // 2
    if name == "nano_b":
        pools = [*model.assn.scale_pools, model.fpn_cbam["p4"].spatial_gate.pool]
    else:
        pools = [cbam.spatial_gate.pool for cbam in model.bifpn_cbam]
    assert all(pool.divisor == width and pool.num_channels == width // 2 for pool in pools)


@pytest.mark.parametrize("rate", RATES)
def test_grouped_ssh_and_its_shuffles_are_pruned(nano_b, rate: float) -> None:
    model, example, groups = _copy(nano_b)
    context = next(g for g in groups if g.name == "ssh1.conv5X5_1.0")
    assert context.layer_group == "grouped_ssh" and [len(c) for c in context.cells] == [4, 4, 4, 4]
    ck.prune(model, example, rate, groups=groups)
    kept = 16 - 4 * int(rate * 4)  # 4 balanced cells of 4 channels
    for ssh in (model.ssh1, model.ssh2, model.ssh3):
        assert ssh.conv5X5_1[0].out_channels == ssh.conv7X7_2[0].out_channels == kept
        assert ssh.conv5X5_2[0].in_channels == ssh.conv7X7_2[0].in_channels == ssh.conv7x7_3[0].in_channels == kept
        for shuffle in (ssh.shuffle5, ssh.shuffle7):
            assert shuffle.index is not None and shuffle.index.numel() == kept
        assert ssh.conv3X3[0].out_channels < 40  # detection_heads set, also grouped
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.groups == 2:
            assert module.in_channels % 2 == 0 and module.out_channels % 2 == 0


def test_v1_post_ssh_shuffle_is_pruned(featherface_v1) -> None:
    model, example, groups = _copy(featherface_v1)
    ck.prune(model, example, 0.5, groups=groups)
    for block in (model.ssh1_shuffle, model.ssh2_shuffle, model.ssh3_shuffle):
        assert block.reduce.in_channels == 32 and block.shuffle.index.numel() == 32
    assert model.ssh1.conv3X3[0].regular_conv.out_channels == 16


def test_nano_b_target_lies_inside_the_seed_bounds(nano_b) -> None:
    _, model, _, groups = nano_b
    predict = ck.ParamPredictor(model, groups)
    upper = predict({g["name"]: g["bounds"][1] for g in NANO_B_LAYER_GROUPS})
    lower = predict({g["name"]: g["bounds"][0] for g in NANO_B_LAYER_GROUPS})
    assert 450_000 <= predict.total <= 600_000
    assert upper < 0.9 * TARGET[0] and TARGET[1] < lower
    # a point in between: room to trade between groups
    middle = dict(zip([g["name"] for g in NANO_B_LAYER_GROUPS], (0.3, 0.5, 0.5, 0.5, 0.4, 0.2)))
    assert TARGET[0] < predict(middle) < TARGET[1]


def test_nano_b_pruned_at_the_upper_bounds_has_that_many_real_parameters(nano_b) -> None:
    model, example, groups = _copy(nano_b)
    rates = {g["name"]: g["bounds"][1] for g in NANO_B_LAYER_GROUPS}
    predicted = ck.ParamPredictor(model, groups)(rates)
    ck.prune(model, example, rates, groups=groups, verify=True)
    assert ck.count_params(model) == predicted < TARGET[0]
