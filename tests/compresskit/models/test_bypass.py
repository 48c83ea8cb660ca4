"""Structural block bypass (compresskit.models.bypass): the reduced model computes what the model with the block
bypassed computes, and the parameter predictor stays exact on it."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compresskit import ParamPredictor, count_params, find_groups
from compresskit.groups.find import LayerGroupSpec
from compresskit.models.bypass import Bypass, bypass_blocks, fit_patterns, fit_specs, optional_blocks
from compresskit.pruning import prune


class Gate(nn.Module):
    """A CBAM-like channel gate: ``x * sigmoid(fc2(relu(fc1(gap(x)))))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // 4, 1)
        self.fc2 = nn.Conv2d(channels // 4, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))


class Fuse(nn.Module):
    """Adds a refined coarse level to the fine one: takes ``[fine, coarse]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.refine = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        fine, coarse = levels
        return fine + self.refine(nn.functional.interpolate(coarse, size=fine.shape[-2:]))


class GatedNet(nn.Module):
    bypassable = {"gate": "identity", "fuse": "first"}

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.gate = Gate(16)
        self.down = nn.Sequential(nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.fuse = Fuse(16)
        self.head = nn.Conv2d(16, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fine = self.gate(self.stem(x))
        return self.head(self.fuse([fine, self.down(fine)]))


class WithoutBlocks(nn.Module):
    """GatedNet written by hand without the gate and the fusion: what bypassing them must compute."""

    def __init__(self, source: GatedNet) -> None:
        super().__init__()
        self.stem, self.down, self.head = source.stem, source.down, source.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fine = self.stem(x)
        self.down(fine)  # computed and dropped by the bypassed fusion (no effect in eval mode)
        return self.head(fine)


def _net() -> GatedNet:
    torch.manual_seed(0)
    model = GatedNet().eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model


def test_the_reduced_model_computes_the_model_with_the_blocks_bypassed():
    x = torch.randn(2, 3, 16, 16)
    model = _net()
    expected = WithoutBlocks(copy.deepcopy(model)).eval()(x)
    reduced = bypass_blocks(model, ["gate", "fuse"], example_inputs=(x,))
    assert isinstance(reduced.gate, Bypass) and isinstance(reduced.fuse, Bypass)
    assert torch.equal(reduced(x), expected)
    assert count_params(reduced) == count_params(_net()) - count_params(_net().gate) - count_params(_net().fuse)


def test_one_block_bypassed_changes_only_that_block():
    x = torch.randn(2, 3, 16, 16)
    model = _net()
    with torch.no_grad():
        fine = model.stem(x)
        expected = model.head(model.fuse([fine, model.down(fine)]))
    assert torch.equal(bypass_blocks(model, ["gate"])(x), expected)


@pytest.mark.parametrize("rate", [0.25, 0.5, 0.7])
def test_the_parameter_predictor_stays_exact_on_the_reduced_model(rate):
    x = torch.randn(1, 3, 16, 16)
    model = bypass_blocks(_net(), ["gate"])
    groups = find_groups(model, x, protect=["head"])
    predicted = ParamPredictor(model, groups)(rate)
    reference = copy.deepcopy(model)
    prune(model, x, rate, groups=groups)  # verified against the soft-zeroed reduced model
    assert count_params(model) == predicted < count_params(reference)


def test_undeclared_or_misshapen_blocks_are_refused():
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"\['down'\] are not declared bypassable by GatedNet; declared: "):
        bypass_blocks(_net(), ["down"])
    model = _net()
    model.bypassable = {"down": "identity"}  # stride 2: its input has another shape
    with pytest.raises(ValueError, match=r"block 'down' cannot be bypassed \('identity'\): it returns shape "
                                         r"\(1, 16, 8, 8\), the bypass \(1, 16, 16, 16\)"):
        bypass_blocks(model, ["down"], example_inputs=(x,))
    assert not isinstance(model.down, Bypass)
    model.bypassable = {"gate": "skip"}
    with pytest.raises(ValueError, match="unknown mode 'skip'"):
        optional_blocks(model)


def test_specs_and_protect_globs_lose_only_what_named_removed_modules():
    model = bypass_blocks(_net(), ["gate"])
    specs = [LayerGroupSpec("gates", patterns=("gate.fc1",)), LayerGroupSpec("trunk", patterns=("stem.*", "typo.*"))]
    assert [(s.name, s.patterns) for s in fit_specs(specs, model)] == [("trunk", ("stem.*", "typo.*"))]
    assert fit_patterns(["gate.fc2", "head"], model) == ["head"]
    assert fit_patterns(["gate.fc2"], _net()) == ["gate.fc2"]


def test_a_full_models_checkpoint_loads_into_the_model_with_blocks_bypassed(tmp_path):
    """The bypassed blocks' entries are dropped and only those; the rest still loads strictly."""
    from compresskit.models.bypass import drop_bypassed
    from compresskit.models.weights import _strict_load

    full = _net()
    torch.save(full.state_dict(), tmp_path / "full.pt")
    reduced = bypass_blocks(GatedNet(), ["gate"])
    _strict_load(reduced, tmp_path / "full.pt")
    assert all(torch.equal(value, full.state_dict()[key]) for key, value in reduced.state_dict().items())
    dropped = set(full.state_dict()) - set(drop_bypassed(reduced, full.state_dict()))
    assert dropped and all(key.startswith("gate.") for key in dropped)
    assert drop_bypassed(full, full.state_dict()).keys() == full.state_dict().keys()  # nothing bypassed, nothing dropped

    broken = {key: value for key, value in full.state_dict().items() if not key.startswith("head.")}
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match=r"missing keys, e.g. \['head.bias'"):
        _strict_load(bypass_blocks(GatedNet(), ["gate"]), tmp_path / "broken.pt")
