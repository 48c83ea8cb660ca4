"""Least-squares reconstruction (compresskit.pruning.reconstruct): exact where the lost channels are linear in the
kept ones, pruned filters stay zero, removal after it stays verified, clear errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compresskit import find_groups
from compresskit.pruning import prune
from compresskit.pruning.reconstruct import reconstruct
from compresskit.pruning.soft_fpgm import SoftFPGM


def _linear_pair() -> nn.Module:
    """conv 3 -> 8 (rank 3: every output channel is linear in the 3 input channels) -> conv 8 -> 4."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 3, padding=1))


def _cnn() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 24, 1), nn.BatchNorm2d(24), nn.ReLU(),
                         nn.Conv2d(24, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 5))


def _batches(count: int = 4, size: int = 12) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return [torch.randn(4, 3, size, size, generator=generator) for _ in range(count)]


def _soft_zeroed(model: nn.Module, rate: float, protect: list[str]) -> SoftFPGM:
    groups = find_groups(model, (torch.randn(1, 3, 12, 12),), protect=protect)
    pruner = SoftFPGM(groups, schedule=lambda epoch: rate)
    pruner.step(0)
    return pruner


def test_exact_when_lost_channels_are_linear_in_kept_ones():
    model = _linear_pair()
    reference = copy.deepcopy(model)
    pruner = _soft_zeroed(model, 0.5, protect=["1"])  # 4 of 8 channels stay: still rank 3
    batches = _batches()
    with torch.no_grad():
        error_before = (model(batches[0]) - reference(batches[0])).abs().max()
    fits = reconstruct(model, reference, batches, on_layer_done=pruner.rezero, ridge=1e-12)
    with torch.no_grad():
        error_after = (model(batches[0]) - reference(batches[0])).abs().max()
    assert error_before > 0.1
    assert error_after < 1e-4 * reference(batches[0]).abs().max()
    assert [fit.name for fit in fits] == ["0", "1"]
    assert fits[1].error_before > 0.01 and fits[1].error_after < 1e-8


def test_pruned_filters_stay_zero_and_removal_stays_verified():
    model = _cnn()
    reference = copy.deepcopy(model).eval()
    batches = _batches()
    unguarded = copy.deepcopy(model)
    unguarded_pruner = _soft_zeroed(unguarded, 0.4, protect=["13"])
    reconstruct(unguarded, reference, batches)
    state = copy.deepcopy(unguarded.state_dict())
    unguarded_pruner.rezero()
    assert any(not torch.equal(state[key], value) for key, value in unguarded.state_dict().items())

    pruner = _soft_zeroed(model, 0.4, protect=["13"])
    fits = reconstruct(model, reference, batches, on_layer_done=pruner.rezero)
    state = copy.deepcopy(model.state_dict())
    pruner.rezero()  # nothing left to zero: the zeroed filters stayed zero
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())
    assert [fit.name for fit in fits] == ["0", "6", "9", "13"]  # the depthwise conv is not refit
    assert all(fit.error_after <= fit.error_before + 1e-9 for fit in fits)
    assert fits[-1].error_after < fits[-1].error_before
    soft_outputs = model.eval()(batches[0])
    pruner.apply(verify=True)  # raises if the physically pruned model differs from the soft one
    assert torch.allclose(model(batches[0]), soft_outputs, atol=1e-5)


def test_one_shot_prune_with_calibration_is_closer_to_the_unpruned_model():
    reference = _cnn().eval()
    batches = _batches(6)
    errors = {}
    for calibration in (None, batches[:5]):
        model = copy.deepcopy(reference)
        prune(model, torch.randn(1, 3, 12, 12), 0.4, protect=["13"], calibration=calibration)
        with torch.no_grad():
            errors[calibration is None] = float((model.eval()(batches[5]) - reference(batches[5])).pow(2).mean())
    assert errors[False] < 0.5 * errors[True]  # held-out batch: the refit generalises


def test_errors_name_the_problem():
    model, reference = _cnn(), _cnn()
    with pytest.raises(ValueError, match="at least one calibration batch"):
        reconstruct(model, reference, [])
    smaller = nn.Sequential(*[copy.deepcopy(m) for m in reference])
    smaller[6] = nn.Conv2d(16, 20, 1)
    with pytest.raises(ValueError, match=r"layer '6' has weight \(24, 16, 1, 1\) vs \(20, 16, 1, 1\).*before removal"):
        reconstruct(model, smaller, _batches(1))
    with pytest.raises(ValueError, match="unpruned model has no layer '13'"):
        reconstruct(model, nn.Sequential(*list(reference)[:13]), _batches(1))
