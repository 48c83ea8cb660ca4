"""Parameter / MAC counts and the exact parameter predictor."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from zoo import ZOO, ZOO_PROTECT

import compresskit as ck


def test_count_params_counts_shared_parameters_once() -> None:
    conv = nn.Conv2d(3, 8, 3, bias=True)
    assert ck.count_params(conv) == 8 * 3 * 9 + 8
    assert ck.count_params(nn.Sequential(conv, conv)) == 8 * 3 * 9 + 8


def test_count_macs_hand_computed() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert ck.count_macs(conv, torch.randn(1, 3, 4, 4)) == 16 * 8 * 3 * 9
    grouped = nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False)
    assert ck.count_macs(grouped, torch.randn(1, 8, 4, 4)) == 16 * 8 * 2 * 9
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    assert ck.count_macs(model, torch.randn(2, 3, 2, 2)) == 2 * 12 * 5
    model.train()
    ck.count_macs(model, torch.randn(2, 3, 2, 2))
    assert model.training


def test_macs_drop_after_pruning() -> None:
    model, example = ZOO["resnet_downsample"]()
    before = ck.count_macs(model, example)
    ck.prune(model, example, 0.5, protect=["fc"])
    assert ck.count_macs(model, example) < 0.5 * before


@pytest.mark.parametrize("name", sorted(ZOO))
def test_predictor_is_exact_for_mixed_rates(name: str) -> None:
    model, example = ZOO[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ck.UnprunableWarning)
        groups = ck.find_groups(model, example, protect=ZOO_PROTECT[name])
    predictor = ck.ParamPredictor(model, groups)
    assert predictor(0.0) == ck.count_params(model)
    for rate in (0.15, 0.45, 0.8):
        pruned = copy.deepcopy(model)
        expected = predictor(rate)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ck.UnprunableWarning)
            ck.prune(pruned, example, rate, protect=ZOO_PROTECT[name])
        assert ck.count_params(pruned) == expected, (name, rate)
        assert ck.predict_params(model, groups, rate) == expected


def test_predictor_with_layer_groups() -> None:
    model, example = ZOO["mobilenetv2"]()
    specs = [
        ck.LayerGroupSpec("early", patterns=("features.0.*", "features.1.*", "features.2.*")),
        ck.LayerGroupSpec("late", patterns=("features.[3-6].*",)),
    ]
    groups = ck.find_groups(model, example, layer_groups=specs, protect=["classifier"])
    predictor = ck.ParamPredictor(model, groups)
    rates = {"early": 0.2, "late": 0.7}
    expected = predictor(rates)
    ck.prune(model, example, rates, groups=groups)
    assert ck.count_params(model) == expected
    with pytest.raises(ValueError, match="missing.*'late'"):
        predictor({"early": 0.2})
    with pytest.raises(ValueError, match="unknown layer group.*'mid'"):
        predictor({"early": 0.2, "late": 0.1, "mid": 0.3})
    with pytest.raises(ValueError, match="1.5"):
        predictor({"early": 0.2, "late": 1.5})
    with pytest.raises(TypeError, match="rates"):
        predictor("0.3")  # type: ignore[arg-type]


def test_channel_summary_lists_every_layer() -> None:
    model, example = ZOO["conv_flatten_linear"]()
    before = copy.deepcopy(model)
    ck.prune(model, example, 0.5, protect=["fc2"])
    rows = {row.name: row for row in ck.channel_summary(before, model)}
    assert set(rows) == {"conv", "bn", "fc1", "fc2"}
    assert (rows["conv"].out_before, rows["conv"].out_after) == (8, 4)
    assert (rows["fc1"].in_before, rows["fc1"].in_after, rows["fc1"].out_after) == (512, 256, 16)
    assert (rows["fc2"].in_after, rows["fc2"].out_after) == (16, 10) and rows["fc2"].changed
