from __future__ import annotations

import fnmatch

import pytest
import torch
from torch import nn
from zoo import ZOO, ZOO_PROTECT

from compresskit.groups.surgery import flatten_outputs


def test_zoo_and_protect_have_the_same_entries():
    assert set(ZOO) == set(ZOO_PROTECT)
    assert len(ZOO) >= 8


@pytest.mark.parametrize("name", sorted(ZOO))
def test_runs_in_eval_mode_deterministically_with_finite_outputs(name):
    model, example_input = ZOO[name]()
    assert not model.training
    with torch.no_grad():
        first = flatten_outputs(model(example_input))
        again = flatten_outputs(model(example_input))
    rebuilt_model, rebuilt_input = ZOO[name]()
    assert torch.equal(rebuilt_input, example_input)
    with torch.no_grad():
        rebuilt = flatten_outputs(rebuilt_model(rebuilt_input))
    for a, b, c in zip(first, again, rebuilt, strict=True):
        assert torch.isfinite(a).all()
        assert a.abs().sum() > 0
        assert torch.equal(a, b)
        assert torch.equal(a, c)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_batchnorm_is_randomised(name):
    model, _ = ZOO[name]()
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        if bn.num_features > 1:
            assert bn.weight.std() > 0.05
            assert bn.running_var.std() > 0.05
        assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_parameter_gets_a_gradient_in_train_mode(name):
    model, example_input = ZOO[name]()
    model.train()
    batch = torch.cat([example_input, example_input.flip(-1)])  # BN needs > 1 value per channel
    loss = sum((t.float() ** 2).mean() for t in flatten_outputs(model(batch)))
    loss.backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, param_name
        assert torch.isfinite(param.grad).all(), param_name
        assert param.grad.abs().sum() > 0, param_name


@pytest.mark.parametrize("name", sorted(ZOO))
def test_protect_globs_match_modules_with_parameters(name):
    model, _ = ZOO[name]()
    names = [n for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    for pattern in ZOO_PROTECT[name]:
        assert fnmatch.filter(names, pattern), pattern


def test_grouped_shuffle_has_groups_two_and_four():
    model, _ = ZOO["grouped_shuffle"]()
    groups = {m.groups for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)}
    assert {2, 4} <= groups


def test_detection_heads_output_shapes():
    model, example_input = ZOO["detection_heads"]()
    bbox_deltas, cls_logits, landmark_deltas = model(example_input)
    # 32x32 input: levels at strides 4 and 8 -> (8*8 + 4*4) positions * 2 anchors
    num_priors = (8 * 8 + 4 * 4) * 2
    assert bbox_deltas.shape == (1, num_priors, 4)
    assert cls_logits.shape == (1, num_priors, 2)
    assert landmark_deltas.shape == (1, num_priors, 10)


def test_channel_shuffle_interleaves_groups():
    from zoo import ChannelShuffle

    x = torch.arange(6.0).view(1, 6, 1, 1)
    shuffled = ChannelShuffle(2)(x)
    assert shuffled.flatten().tolist() == [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
