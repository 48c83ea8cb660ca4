"""Invariants of soft pruning + physical removal over every zoo model.

For each architecture and rate: soft-zeroed outputs (eval mode) == pruned outputs,
shapes unchanged, ``ParamPredictor`` exact, the pruned model runs (forward and
backward on another batch size).
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import Tensor, nn
from zoo import ZOO, ZOO_PROTECT

import compresskit as ck
from compresskit.groups.surgery import flatten_outputs

RATES = (0.3, 0.6)


def _groups(name: str) -> tuple[nn.Module, Tensor, ck.ChannelGroups]:
    model, example = ZOO[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ck.UnprunableWarning)
        groups = ck.find_groups(model, example, protect=ZOO_PROTECT[name])
    return model, example, groups


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("name", sorted(ZOO))
def test_soft_zeroed_equals_removed(name: str, rate: float) -> None:
    model, example, groups = _groups(name)
    assert len(groups) > 0, f"{name}: nothing prunable"
    predicted = ck.ParamPredictor(model, groups)(rate)
    params_before = ck.count_params(model)

    pruner = ck.SoftFPGM(groups, ck.constant(rate))
    assert pruner.step(0) == {"default": rate}
    with torch.no_grad():
        soft = flatten_outputs(model(example))
    summary = pruner.apply()
    with torch.no_grad():
        hard = flatten_outputs(model(example))

    assert len(soft) == len(hard)
    for before, after in zip(soft, hard):
        assert before.shape == after.shape
        scale = float(before.abs().max())
        assert float((before - after).abs().max()) <= 1e-5 * scale
    assert ck.count_params(model) == predicted == summary.params_after
    assert summary.params_before == params_before > summary.params_after
    assert summary.changed_layers

    # the pruned model runs on another batch size and trains
    model.train()
    batch = torch.randn(2, *example.shape[1:])
    outputs = flatten_outputs(model(batch))
    sum(o.float().pow(2).mean() for o in outputs).backward()
    assert all(torch.isfinite(o).all() for o in outputs)


def _random_scores(seed: int):
    def importance(group: ck.ChannelGroup) -> Tensor:
        generator = torch.Generator().manual_seed(seed * 7919 + group.num_channels)
        return torch.rand(group.num_channels, generator=generator)

    return importance


@pytest.mark.parametrize("name", sorted(ZOO))
def test_exact_in_float64_for_three_random_selections(name: str) -> None:
    model, example = ZOO[name]()
    model, example = model.double(), example.double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ck.UnprunableWarning)
        groups = ck.find_groups(model, example, protect=ZOO_PROTECT[name])
    assert len(groups) > 0, f"{name}: nothing prunable"
    for seed, rate in zip(range(3), (0.5, 0.3, 0.7)):
        pruned, pruned_groups = copy.deepcopy((model, groups))
        predicted = ck.ParamPredictor(pruned, pruned_groups)(rate)
        pruner = ck.SoftFPGM(pruned_groups, ck.constant(rate), importance=_random_scores(seed))
        pruner.step(0)
        with torch.no_grad():
            soft = flatten_outputs(pruned(example))
        pruner.apply(verify=False)  # the check under test, not the built-in one
        with torch.no_grad():
            hard = flatten_outputs(pruned(example))
        for before, after in zip(soft, hard, strict=True):
            assert before.shape == after.shape
            assert float((before - after).abs().max()) <= 1e-12 * float(before.abs().max()), (name, seed)
        assert ck.count_params(pruned) == predicted < ck.count_params(model)


@pytest.mark.parametrize("rate", RATES)
def test_grouped_convs_and_shuffle_are_pruned(rate: float) -> None:
    model, example, groups = _groups("grouped_shuffle")
    shuffle_group = next(g for g in groups if g.name == "stage.0.reduce.0")
    assert any(item.kind == "shuffle" for item in shuffle_group.items)
    ck.prune(model, example, rate, groups=groups)
    unit = model.stage[0]
    assert unit.reduce[0].out_channels < 16 and unit.reduce[0].groups == 2
    assert unit.shuffle.index is not None and unit.shuffle.index.numel() == unit.reduce[0].out_channels
    assert unit.expand[0].in_channels == unit.reduce[0].out_channels
    assert model.stem[0].out_channels < 16  # feeds grouped convs with groups 2 and 4
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.groups > 1:
            assert module.in_channels % module.groups == 0 and module.out_channels % module.groups == 0


class InlineSpatialGate(nn.Module):
    """CBAM spatial gate with the channel mean/max written inline (not ``ChannelPool``)."""

    def __init__(self, gate: nn.Module) -> None:
        super().__init__()
        self.conv = gate.conv

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


def test_unprunable_couplings_are_reported_not_broken() -> None:
    model, example = ZOO["se_cbam"]()
    model.cbam.spatial_gate = InlineSpatialGate(model.cbam.spatial_gate)
    with pytest.warns(ck.UnprunableWarning, match="channel axis.*ChannelPool"):
        groups = ck.find_groups(model, example, protect=ZOO_PROTECT["se_cbam"])
    assert [s.name for s in groups.skipped] == ["conv.0"]
    pruner = ck.SoftFPGM(groups, ck.constant(0.5))
    pruner.step(0)
    summary = pruner.apply(verify=True)
    assert [s.name for s in summary.skipped] == ["conv.0"]
    assert model.conv[0].out_channels == 32  # the inline channel mean couples the trunk


def test_cbam_trunk_is_pruned_through_channel_pool() -> None:
    model, example, groups = _groups("se_cbam")
    assert groups.skipped == []
    trunk = next(g for g in groups if g.name == "conv.0")
    assert ("cbam.spatial_gate.pool", "pool", "in") in {(i.module, i.kind, i.axis) for i in trunk.items}
    ck.prune(model, example, 0.5, groups=groups, verify=True)
    pool = model.cbam.spatial_gate.pool
    assert model.conv[0].out_channels == 16 and pool.num_channels == 16
    assert pool.divisor == 32 and pool.floor == 0.0  # original count kept: exact mean


def test_rates_are_against_original_counts_and_apply_never_reranks() -> None:
    model, example, groups = _groups("resnet_downsample")
    stem = next(g for g in groups if g.name == "stem.0")
    pruner = ck.SoftFPGM(groups, ck.linear(0.0, 0.5, start=0, end=2))
    pruner.on_train_start(type("State", (), {"epoch": 0, "model": model})())
    assert pruner.zeroed_indices()["stem.0"] == []
    pruner.on_epoch_end(type("State", (), {"epoch": 1, "model": model})())
    assert len(pruner.zeroed_indices()["stem.0"]) == 4  # floor(0.25 * 16)
    pruner.step(2)
    zeroed = pruner.zeroed_indices()["stem.0"]
    assert len(zeroed) == 8  # floor(0.5 * 16), not compounded
    weight = model.stem[0].weight
    assert torch.all(weight[zeroed] == 0) and torch.all(model.stem[1].weight[zeroed] == 0)
    assert torch.all(model.stem[1].bias[zeroed] == 0)
    # training moves zeroed filters (SFP); apply still removes exactly the stored ones
    with torch.no_grad():
        weight.add_(1.0)
    kept = [i for i in range(16) if i not in zeroed]
    expected = weight[kept].detach().clone()
    pruner.apply()
    assert torch.equal(model.stem[0].weight, expected)
    assert stem.num_channels == 16
    with pytest.raises(ValueError, match="already"):
        pruner.apply()


def test_on_train_end_rezeroes_so_soft_equals_hard_after_training() -> None:
    model, example, groups = _groups("mobilenetv2")
    pruner = ck.SoftFPGM(groups, ck.constant(0.4), zero_every_step=False)
    pruner.step(0)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(2, 3, 32, 32)).pow(2).mean().backward()
        optimizer.step()
    pruner.on_train_end(type("State", (), {"epoch": 1, "model": model})())
    model.eval()
    with torch.no_grad():
        soft = model(example)
    pruner.apply(verify=True)
    with torch.no_grad():
        hard = model(example)
    assert float((soft - hard).abs().max()) <= 1e-5 * float(soft.abs().max())


def test_per_layer_group_schedules_and_rates() -> None:
    model, example = ZOO["resnet_downsample"]()
    specs = [
        ck.LayerGroupSpec("early", patterns=("stem.*", "layer1.*")),
        ck.LayerGroupSpec("late", patterns=("layer2.*", "layer3.*")),
    ]
    groups = ck.find_groups(model, example, layer_groups=specs, protect=["fc"])
    assert {g.layer_group for g in groups} == {"early", "late"}
    predicted = ck.ParamPredictor(model, groups)({"early": 0.25, "late": 0.5})
    pruner = ck.SoftFPGM(groups, {"early": ck.constant(0.25), "late": ck.constant(0.5)})
    assert pruner.step(0) == {"early": 0.25, "late": 0.5}
    pruner.apply()
    assert model.stem[0].out_channels == 12 and model.layer3.conv1[0].out_channels == 24
    assert ck.count_params(model) == predicted
    with pytest.raises(ValueError, match="unknown layer group"):
        ck.SoftFPGM(groups, {"early": ck.constant(0.1), "late": ck.constant(0.1), "oops": ck.constant(0.1)})
    with pytest.raises(ValueError, match="missing"):
        ck.SoftFPGM(groups, {"early": ck.constant(0.1)})


def test_prune_one_shot_validates_input() -> None:
    model, example = ZOO["conv_flatten_linear"]()
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        ck.prune(copy.deepcopy(model), example, 1.0, protect=["fc2"])
    with pytest.raises(ValueError, match="unknown layer group"):
        ck.prune(copy.deepcopy(model), example, {"nope": 0.2}, protect=["fc2"])
    with pytest.raises(ValueError, match="unknown importance 'l7'"):
        ck.prune(copy.deepcopy(model), example, 0.2, protect=["fc2"], importance="l7")
    pruned = ck.prune(model, example, 0.5, protect=["fc2"], importance="magnitude", verify=True)
    assert pruned is model and model.conv.out_channels == 4 and model.fc1.in_features == 4 * 64


def test_soft_pruner_state_round_trip_continues_without_re_ranking() -> None:
    model, example = ZOO["resnet_downsample"]()
    groups = ck.find_groups(model, example, protect=ZOO_PROTECT["resnet_downsample"])
    pruner = ck.SoftFPGM(groups, ck.constant(0.5))
    pruner.step(1)
    saved = pruner.state_dict()

    def must_not_rank(group: ck.ChannelGroup) -> Tensor:
        raise AssertionError(f"re-ranked {group.name} after restoring the pruner state")

    restored = ck.SoftFPGM(groups, ck.constant(0.5), importance=must_not_rank)
    restored.load_state_dict(saved)
    restored.on_train_start(type("State", (), {"epoch": 1, "model": model})())
    assert restored.zeroed == pruner.zeroed and restored.rates == pruner.rates
    with pytest.raises(ValueError, match="groups"):
        restored.load_state_dict({"zeroed": [[0]], "rates": {}})
