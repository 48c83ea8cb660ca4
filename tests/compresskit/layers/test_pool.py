"""ChannelPool: exact values, exact under channel removal, surgery, replay, ONNX, errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import compresskit as ck
from compresskit.deploy.export import check_onnx, export_onnx
from compresskit.groups.surgery import ChannelOp, remove_channels


class GatedNet(nn.Module):
    """conv -> CBAM-style spatial gate over ``ChannelPool`` -> 1x1 conv (the protected output)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        nn.init.constant_(self.conv.bias, -1.0)  # mostly negative outputs: the max floor matters
        self.pool = ck.ChannelPool(("max", "mean"))
        self.gate = nn.Conv2d(2, 1, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        return self.head(x * torch.sigmoid(self.gate(self.pool(x))))


def build() -> nn.Module:
    """Builder for the persist round trip (``test_pool:build``)."""
    return GatedNet().eval()


def test_exact_values_and_output_order() -> None:
    x = torch.tensor([1.0, -3.0, 2.0, -4.0]).view(1, 4, 1, 1)
    assert ck.ChannelPool(("max", "mean"))(x).flatten().tolist() == [2.0, -1.0]
    assert ck.ChannelPool(("mean", "max"))(x).flatten().tolist() == [-1.0, 2.0]
    assert ck.ChannelPool(("mean",))(x).shape == (1, 1, 1, 1)


def test_removed_zero_channels_leave_mean_and_max_unchanged() -> None:
    torch.manual_seed(0)
    x = -torch.randn(2, 6, 5, 5).abs() - 0.1  # all negative: the soft max is the zeros' 0
    removed = [1, 4]
    soft = x.clone()
    soft[:, removed] = 0.0
    pool = ck.ChannelPool(("max", "mean"))
    before = pool(soft)
    pool.remove_input_channels(6, removed)
    assert (pool.divisor, pool.floor, pool.num_channels) == (6, 0.0, 4)
    after = pool(soft[:, [0, 2, 3, 5]])
    assert torch.allclose(before, after, atol=1e-6, rtol=0)
    assert torch.all(before[:, 0] == 0.0)  # max over the zeroed channels
    # a second removal keeps the original divisor: still the soft model's mean
    pool.remove_input_channels(4, [0])
    assert (pool.divisor, pool.num_channels) == (6, 3)
    soft[:, 0] = 0.0
    assert torch.allclose(ck.ChannelPool(("max", "mean"))(soft), pool(soft[:, [2, 3, 5]]), atol=1e-6, rtol=0)


def test_find_groups_prunes_through_the_pool_and_removal_is_exact() -> None:
    model, x = build(), torch.randn(1, 3, 8, 8)
    groups = ck.find_groups(model, x, protect=["head", "gate"])
    assert groups.skipped == []
    trunk = next(g for g in groups if g.name == "conv")
    pool_item = next(i for i in trunk.items if i.module == "pool")
    assert (pool_item.kind, pool_item.axis, pool_item.size) == ("pool", "in", 8)
    predicted = ck.ParamPredictor(model, groups)(0.5)
    pruner = ck.SoftFPGM(groups, ck.constant(0.5))
    pruner.step(0)
    with torch.no_grad():
        soft = model(x)
    pruner.apply(verify=True)
    with torch.no_grad():
        hard = model(x)
    assert model.conv.out_channels == 4 and model.pool.num_channels == 4 and model.pool.divisor == 8
    assert float((soft - hard).abs().max()) <= 1e-6 * float(soft.abs().max())
    assert ck.count_params(model) == predicted


def test_surgery_ops_replay_on_a_fresh_model_and_add_no_state(tmp_path: Path) -> None:
    model, x = build(), torch.randn(1, 3, 8, 8)
    keys = set(model.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error", ck.UnprunableWarning)
        ck.prune(model, x, 0.3, protect=["head", "gate"])
        ck.prune(model, x, 0.5, protect=["head", "gate"])
    assert set(model.state_dict()) == keys  # no new state_dict entries
    assert any(op[0] == "pool" and op[1] == "in" for step in model.compresskit_history for op in step)
    ck.save_pruned(tmp_path / "p.pt", model, "test_pool:build")
    loaded = ck.load_pruned(tmp_path / "p.pt", trust=["test_pool"])
    assert (loaded.pool.divisor, loaded.pool.floor, loaded.pool.num_channels) == (8, 0.0, model.conv.out_channels)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_pruned_pool_exports_to_onnx(tmp_path: Path) -> None:
    model, x = build(), torch.randn(1, 3, 8, 8)
    ck.prune(model, x, 0.5, protect=["head", "gate"])
    path = export_onnx(model, x, tmp_path / "pool.onnx")
    assert check_onnx(path, model, x) <= 1e-5


def test_errors_name_the_bad_value() -> None:
    with pytest.raises(ValueError, match="'median'"):
        ck.ChannelPool(("max", "median"))
    with pytest.raises(ValueError, match="'max'"):
        ck.ChannelPool("max")
    pool = ck.ChannelPool()
    pool.remove_input_channels(8, [0])
    with pytest.raises(ValueError, match="7 input channels, pruning op expects 8"):
        remove_channels(nn.ModuleDict({"pool": pool}), [ChannelOp("pool", "in", (1,), 8)])
    with pytest.raises(ValueError, match="out of range"):
        pool.remove_input_channels(7, [7])
    with pytest.raises(ValueError, match="output maps"):
        remove_channels(nn.ModuleDict({"pool": pool}), [ChannelOp("pool", "out", (0,), 2)])
