"""Statistics correction after pruning: the refit's intercept (folded into BatchNorm) restores the mean a removed
channel carried, recalibrated BatchNorm equals statistics recomputed by hand, which BatchNorm may take a fold."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from test_output_error import Duplicate  # conv_a channel 4 == -1.5 x channel 0, then BN, 1x1 conv, BN
from torch import nn

from compresskit import find_groups
from compresskit.pruning.batchnorm import following_batchnorms, recalibrate_bn
from compresskit.pruning.reconstruct import reconstruct
from compresskit.pruning.soft_fpgm import SoftFPGM


def _batches(count: int = 3, channels: int = 3, size: int = 8, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(4, channels, size, size, generator=generator) for _ in range(count)]


class ConstantChannel(nn.Module):
    """conv_a (3 -> 4, no bias) -> BN -> LeakyReLU -> conv_b (4 -> 3, 3x3, no bias) -> BN.

    conv_a's channel 3 has a zero filter: after its BatchNorm it is the constant ``relu(beta_3) = 2``, a mean
    that reaches conv_b (zero padding aside) and disappears with the channel.
    """

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv_a = nn.Conv2d(3, 4, 1, bias=False)
        self.bn_a = nn.BatchNorm2d(4)
        self.conv_b = nn.Conv2d(4, 3, 1, bias=False)
        self.bn_b = nn.BatchNorm2d(3)
        with torch.no_grad():
            self.conv_a.weight[3] = 0
            self.bn_a.bias[3] = 2.0
            self.bn_b.running_mean.uniform_(-1, 1)
            self.bn_b.running_var.uniform_(0.5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn_b(self.conv_b(F.leaky_relu(self.bn_a(self.conv_a(x)), 0.1)))


@pytest.mark.parametrize("intercept", [True, False])
def test_intercept_restores_the_mean_of_a_removed_constant_channel(intercept):
    model = ConstantChannel().eval()
    reference = copy.deepcopy(model)
    batches = _batches()
    groups = find_groups(model, (batches[0][:1],))
    pruner = SoftFPGM(groups, schedule=lambda epoch: 0.25, importance=lambda group: torch.tensor([3.0, 2, 1, 0]))
    pruner.step(0)
    assert pruner.zeroed_indices()["conv_a"] == [3]
    mean_before = reference.bn_b.running_mean.clone()
    reconstruct(model, reference, batches, on_layer_done=pruner.rezero, intercept=intercept)
    pruner.apply(verify=True)
    held_out = _batches(1, seed=7)[0]
    with torch.no_grad():
        error = float((model(held_out) - reference(held_out)).abs().max())
    if intercept:
        # conv_b's lost input was 2 * W_b[:, 3]: the intercept, subtracted from bn_b's running mean
        expected = mean_before - 2.0 * reference.conv_b.weight[:, 3, 0, 0].detach()
        assert torch.allclose(model.bn_b.running_mean, expected, atol=1e-5)
        assert error < 1e-5
    else:
        assert error > 0.1


def test_intercept_goes_into_the_bias_of_a_layer_that_has_one():
    model = ConstantChannel()
    model.conv_b = nn.Conv2d(4, 3, 1)
    model.eval()
    reference = copy.deepcopy(model)
    batches = _batches()
    pruner = SoftFPGM(find_groups(model, (batches[0][:1],)), schedule=lambda epoch: 0.25,
                      importance=lambda group: torch.tensor([3.0, 2, 1, 0]))
    pruner.step(0)
    reconstruct(model, reference, batches, on_layer_done=pruner.rezero, intercept=True)
    assert torch.equal(model.bn_b.running_mean, reference.bn_b.running_mean)
    expected = reference.conv_b.bias.detach() + 2.0 * reference.conv_b.weight[:, 3, 0, 0].detach()
    assert torch.allclose(model.conv_b.bias, expected, atol=1e-5)


class Recalibrated(nn.Module):
    """conv1 -> bn1 -> ReLU -> dropout -> conv2 -> bn2."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.conv1 = nn.Conv2d(3, 5, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(5, momentum=0.3)
        self.dropout = nn.Dropout(0.5)
        self.conv2 = nn.Conv2d(5, 4, 1)
        self.bn2 = nn.BatchNorm2d(4)
        with torch.no_grad():
            self.bn1.weight.uniform_(0.5, 1.5)
            self.bn1.bias.uniform_(-1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self.dropout(torch.relu(self.bn1(self.conv1(x))))))


def _statistics(values: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Average over batches of the per-channel batch mean and unbiased variance of ``[N, C, H, W]`` tensors."""
    means = torch.stack([v.mean(dim=(0, 2, 3)) for v in values])
    variances = torch.stack([v.transpose(0, 1).flatten(1).var(dim=1, unbiased=True) for v in values])
    return means.mean(0), variances.mean(0)


def test_recalibrated_batchnorm_equals_statistics_recomputed_from_scratch():
    model = Recalibrated()
    model.train(False)
    model.dropout.train()  # a mode that must survive the recalibration
    batches = _batches(3)
    assert recalibrate_bn(model, batches) == 2
    with torch.no_grad():
        first = [model.conv1(x) for x in batches]
        mean1, var1 = _statistics(first)
        normalised = [F.batch_norm(h, None, None, model.bn1.weight, model.bn1.bias, training=True, eps=model.bn1.eps)
                      for h in first]  # the next layers see each batch normalised by its own statistics
        mean2, var2 = _statistics([model.conv2(torch.relu(h)) for h in normalised])  # dropout stayed in eval
    assert torch.allclose(model.bn1.running_mean, mean1, atol=1e-5)
    assert torch.allclose(model.bn1.running_var, var1, atol=1e-5)
    assert torch.allclose(model.bn2.running_mean, mean2, atol=1e-5)
    assert torch.allclose(model.bn2.running_var, var2, atol=1e-5)
    assert int(model.bn1.num_batches_tracked) == 3
    assert model.bn1.momentum == 0.3 and model.bn2.momentum == 0.1
    assert not model.training and not model.bn1.training and model.dropout.training


def test_recalibrate_bn_needs_a_batch_and_leaves_statistics_alone_without_one():
    model = Recalibrated()
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="at least one calibration batch"):
        recalibrate_bn(model, [])
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.only = nn.Conv2d(3, 4, 1, bias=False)
        self.only_bn = nn.BatchNorm2d(4)
        self.residual = nn.Conv2d(4, 4, 1, bias=False)
        self.residual_bn = nn.BatchNorm2d(4)
        self.activated = nn.Conv2d(4, 4, 1, bias=False)
        self.activated_bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.only_bn(self.only(x))
        y = self.residual(x)
        x = self.residual_bn(y) + y  # y is read twice: a shift of y cannot go into residual_bn alone
        z = self.activated(x)
        return self.activated_bn(torch.relu_(z))  # same tensor object, but changed in place


def test_following_batchnorms_only_pairs_a_sole_direct_reader():
    assert following_batchnorms(Shared(), torch.randn(1, 3, 4, 4)) == {"only": "only_bn"}


def test_post_bn_target_refits_a_model_whose_normalisation_changed():
    """A copy whose BatchNorms moved (as training after zeroing moves them) and whose zeroed channel is an affine
    copy of a kept one: fitting each layer's unpruned output after BatchNorm, through the copy's own BatchNorm,
    makes it compute the unpruned output again; fitting the pre-BatchNorm output does not."""
    reference = Duplicate().eval()
    batches = _batches(channels=6)
    held_out = _batches(1, channels=6, seed=9)[0]
    errors = {}
    for post_bn in (True, False):
        model = copy.deepcopy(reference)
        with torch.no_grad():
            for norm in (model.bn_a, model.bn_b):  # "trained": other statistics and affine parameters
                norm.running_mean.add_(0.3)
                norm.running_var.mul_(1.7)
                norm.weight.mul_(0.8)
                norm.bias.sub_(0.2)
        pruner = SoftFPGM(find_groups(model, (batches[0][:1],)), schedule=lambda epoch: 0.2,
                          importance=lambda group: torch.tensor([1.0, 2, 3, 4, 0]))
        pruner.step(0)
        reconstruct(model, reference, batches, on_layer_done=pruner.rezero, ridge=1e-9, intercept=True,
                    post_bn=post_bn)
        pruner.apply(verify=True)
        with torch.no_grad():
            errors[post_bn] = float((model(held_out) - reference(held_out)).norm() / reference(held_out).norm())
    assert errors[True] < 1e-5
    assert errors[False] > 1e-2
