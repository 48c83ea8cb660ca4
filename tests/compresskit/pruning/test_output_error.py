"""Data-driven channel selection (compresskit.pruning.output_error): the greedy order equals brute-force least squares,
a planted duplicate that FPGM and magnitude keep is the channel it removes, at ~zero error after the refit,
removal stays verified, clear errors without data."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compresskit import find_groups
from compresskit.pruning import prune
from compresskit.pruning.importance import fpgm, magnitude
from compresskit.pruning.output_error import OutputError, SequentialSelection
from compresskit.pruning.reconstruct import reconstruct
from compresskit.pruning.soft_fpgm import SoftFPGM, remove_zeroed


def _batches(count: int = 3, channels: int = 6, size: int = 8, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(4, channels, size, size, generator=generator) for _ in range(count)]


class Duplicate(nn.Module):
    """conv_a (6 -> 5, no bias) -> BN -> conv_b (5 -> 3, no bias) -> BN; channel 4 of conv_a is -1.5x channel 0."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv_a = nn.Conv2d(6, 5, 1, bias=False)
        self.bn_a = nn.BatchNorm2d(5)
        self.conv_b = nn.Conv2d(5, 3, 1, bias=False)  # 1x1: zero padding would break the affine copy
        self.bn_b = nn.BatchNorm2d(3)
        with torch.no_grad():
            self.conv_a.weight[0] *= 4
            self.conv_a.weight[4] = -1.5 * self.conv_a.weight[0]  # the two largest filters, far from the rest
            for norm in (self.bn_a, self.bn_b):
                norm.running_mean.uniform_(-1, 1)
                norm.running_var.uniform_(0.5, 2)
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.uniform_(-1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn_b(self.conv_b(self.bn_a(self.conv_a(x))))


def test_planted_duplicate_is_removed_by_data_and_kept_by_fpgm_and_magnitude():
    model = Duplicate().eval()
    batches = _batches()
    groups = find_groups(model, (batches[0][:1],))
    (group,) = [g for g in groups if g.name == "conv_a"]
    assert group.select(fpgm(group), 0.2) not in ([0], [4])  # weights alone cannot see the copy
    assert group.select(magnitude(group), 0.2) not in ([0], [4])
    # damping 1e-6: the default 1e-2 * mean(diag G) is large next to the small channels of this toy
    removed = group.select(OutputError(batches, damping=1e-6)(group), 0.2)
    assert removed in ([0], [4])  # one of the pair: the other (affine after BN) replaces it

    errors = {}
    for name in ("output_error", "fpgm", "magnitude"):
        pruned, reference = copy.deepcopy(model), copy.deepcopy(model)
        pruned_groups = find_groups(pruned, (batches[0][:1],))
        importance = OutputError(batches, damping=1e-6) if name == "output_error" else name
        pruner = SoftFPGM(pruned_groups, schedule=lambda epoch: 0.2, importance=importance)
        pruner.step(0)
        reconstruct(pruned, reference, batches, on_layer_done=pruner.rezero, ridge=1e-9, intercept=True)
        pruner.apply(verify=True)
        held_out = _batches(1, seed=5)[0]
        with torch.no_grad():
            errors[name] = float((pruned(held_out) - reference(held_out)).norm() / reference(held_out).norm())
    assert errors["output_error"] < 1e-5
    assert errors["fpgm"] > 1e-2 and errors["magnitude"] > 1e-2


class Branchy(nn.Module):
    """conv_a (4 -> 5) -> LeakyReLU -> conv_b (5 -> 3, 3x3, bias): no BN, so the raw output error is scored."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv_a = nn.Conv2d(4, 5, 1)
        self.conv_b = nn.Conv2d(5, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(F.leaky_relu(self.conv_a(x), 0.1))


def _brute_force_order(model: Branchy, batches: list[torch.Tensor]) -> list[int]:
    """Greedy backward elimination by explicit least squares: each step drops the channel (its 9 columns) whose
    removal, with the rest and an intercept refit to ``X W^T``, leaves the smallest residual."""
    with torch.no_grad():
        patches = torch.cat([F.unfold(F.leaky_relu(model.conv_a(x), 0.1), 3, padding=1).transpose(1, 2).reshape(-1, 45)
                             for x in batches]).double()
    target = patches @ model.conv_b.weight.detach().flatten(1).double().T
    alive, order = list(range(5)), []
    while alive:
        def residual(channel: int) -> float:
            kept = [c for c in alive if c != channel]
            columns = [patches[:, 9 * c:9 * c + 9] for c in kept] + [torch.ones(len(patches), 1, dtype=torch.float64)]
            design = torch.cat(columns, dim=1)
            solution = torch.linalg.lstsq(design, target).solution
            return float((design @ solution - target).pow(2).sum())

        channel = min(alive, key=residual)
        order.append(channel)
        alive.remove(channel)
    return order


def test_greedy_order_equals_brute_force_least_squares():
    model = Branchy().eval()
    batches = _batches(2, channels=4, size=6)
    groups = find_groups(model, (batches[0][:1],))
    (group,) = [g for g in groups if g.name == "conv_a"]
    scores = OutputError(batches, positions=10_000, damping=0.0)(group)  # every position: the exact Gram
    assert sorted(scores.tolist()) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert torch.argsort(scores).tolist() == _brute_force_order(model, batches)


def _cnn() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 24, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU(),
                         nn.Conv2d(24, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 5))


def test_prune_with_output_error_is_verified_and_closer_than_fpgm():
    reference = _cnn().eval()
    batches = _batches(6, channels=3, size=12)
    errors = {}
    for importance in ("output_error", "fpgm"):
        model = copy.deepcopy(reference)
        prune(model, torch.randn(1, 3, 12, 12), 0.5, protect=["13"], importance=importance,
              calibration=batches[:5], verify=True)  # raises if removal is not exact
        assert model[0].out_channels == 8 and model[6].out_channels == 12
        with torch.no_grad():
            errors[importance] = float((model(batches[5]) - reference(batches[5])).pow(2).mean())
    assert errors["output_error"] < errors["fpgm"]


def test_data_importance_needs_calibration():
    model = _cnn()
    with pytest.raises(ValueError, match="'output_error' is computed from data: pass calibration="):
        prune(model, torch.randn(1, 3, 12, 12), 0.3, protect=["13"], importance="output_error")
    groups = find_groups(model, (torch.randn(1, 3, 12, 12),), protect=["13"])
    with pytest.raises(ValueError, match=r"'output_error' is computed from calibration data.*OutputError\(batches\)"):
        SoftFPGM(groups, schedule=lambda epoch: 0.3, importance="output_error")
    with pytest.raises(ValueError, match="at least one calibration batch"):
        OutputError([])


def test_group_without_dense_consumer_falls_back_to_fpgm():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 6, 1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1, groups=6),
                          nn.Conv2d(6, 4, 1, groups=2))  # consumers: depthwise, then grouped: none dense
    groups = find_groups(model, (torch.randn(1, 3, 8, 8),), protect=["3"])
    (group,) = [g for g in groups if g.name == "0"]
    assert torch.equal(OutputError(_batches(1, channels=3))(group), fpgm(group))


def test_sequential_selection_removes_the_duplicate_and_stays_verified():
    model, reference = Duplicate().eval(), Duplicate().eval()
    batches = _batches()
    groups = find_groups(model, (batches[0][:1],))
    selection = SequentialSelection(groups, 0.2, batches, damping=1e-6)
    reconstruct(model, reference, batches, before_layer=selection.before_layer, on_layer_done=selection.rezero,
                ridge=1e-9, intercept=True)
    removed = selection.finish()
    assert removed in ([[0]], [[4]])
    remove_zeroed(groups, removed, verify=True)
    held_out = _batches(1, seed=5)[0]
    with torch.no_grad():
        assert float((model(held_out) - reference(held_out)).norm() / reference(held_out).norm()) < 1e-5


def test_sequential_selection_on_a_cnn_keeps_the_rate_and_selects_groups_without_dense_consumers_at_the_end():
    reference = _cnn().eval()
    model = copy.deepcopy(reference)
    batches = _batches(4, channels=3, size=12)
    groups = find_groups(model, (batches[0][:1],), protect=["13"])
    selection = SequentialSelection(groups, 0.5, batches)
    reconstruct(model, reference, batches, before_layer=selection.before_layer, on_layer_done=selection.rezero,
                intercept=True)
    removed = selection.finish()
    assert [len(r) for r in removed] == [group.num_channels // 2 for group in groups]
    remove_zeroed(groups, removed, verify=True)
    assert model[0].out_channels == 8 and model[6].out_channels == 12


def test_the_data_importances_are_named_where_plain_lookups_refuse_them():
    from compresskit.pruning.importance import DATA_IMPORTANCE_NAMES, resolve_importance
    from compresskit.pruning.output_error import DATA_IMPORTANCES

    assert set(DATA_IMPORTANCE_NAMES) == set(DATA_IMPORTANCES)
    with pytest.raises(ValueError, match="computed from calibration data: pass calibration="):
        resolve_importance("output_error")
