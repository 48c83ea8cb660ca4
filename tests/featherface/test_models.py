"""FeatherFace-family models: sizes, official checkpoints, forward contract, gradients, layer groups."""

from __future__ import annotations

import fnmatch

import pytest
import torch
from torch import nn

from featherface.backbone import MobileNetV1, load_pretrained_backbone
from featherface.models import (
    FEATHERFACE_V1_LAYER_GROUPS,
    FEATHERFACE_V1_PROTECT_PATTERNS,
    HEAD_OUTPUT_PATTERNS,
    MODEL_NAMES,
    NANO_B_LAYER_GROUPS,
    NANO_B_PROTECT_PATTERNS,
    build_model,
    load_weights,
)
from featherface.priors import num_priors


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {name: build_model(name) for name in MODEL_NAMES}


def test_model_names():
    assert set(MODEL_NAMES) == {"retinaface_mnet025", "featherface_v1", "nano_b"}


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'v2'.*featherface_v1"):
        build_model("v2")


def test_retinaface_size(models):
    assert _count(models["retinaface_mnet025"]) == 426_608


def test_featherface_v1_size_per_module(models):
    model = models["featherface_v1"]
    assert _count(model) == 592_371
    assert _count(model.body) == 213_072
    assert _count(model.bifpn) == 112_606
    assert [_count(m) for m in (model.ssh1, model.ssh2, model.ssh3)] == [77_655] * 3
    assert _count(model.backbone_cbam) + _count(model.bifpn_cbam) == 13_568
    assert [_count(m) for m in (model.ssh1_shuffle, model.ssh2_shuffle, model.ssh3_shuffle)] == [4_640] * 3
    assert sum(_count(m) for m in (model.ClassHead, model.BboxHead, model.LandmarkHead)) == 6_240


def test_nano_b_size(models):
    assert 450_000 <= _count(models["nano_b"]) <= 600_000


@pytest.mark.parametrize("name", ["retinaface_mnet025", "featherface_v1", "nano_b"])
@pytest.mark.parametrize("size", [(64, 96), (100, 75)])
def test_output_contract(models, name, size):
    model = models[name].eval()
    with torch.no_grad():
        outputs = model(torch.randn(2, 3, *size))
    priors = num_priors(size)
    assert [tuple(t.shape) for t in outputs] == [(2, priors, 4), (2, priors, 2), (2, priors, 10)]
    assert all(torch.isfinite(t).all() for t in outputs)
    # raw logits: not a softmax
    assert not torch.allclose(outputs[1].sum(-1), torch.ones(2, priors))


def test_prior_count_at_640(models):
    model = models["retinaface_mnet025"].eval()
    with torch.no_grad():
        bbox_deltas, cls_logits, landmark_deltas = model(torch.zeros(1, 3, 640, 640))
    assert bbox_deltas.shape[1] == cls_logits.shape[1] == landmark_deltas.shape[1] == 16_800


@pytest.mark.parametrize("name", ["retinaface_mnet025", "featherface_v1", "nano_b"])
def test_every_parameter_gets_a_gradient_and_train_matches_eval_format(models, name):
    torch.manual_seed(1)
    model = models[name].train()
    model.zero_grad()
    outputs = model(torch.randn(2, 3, 64, 64))
    assert [t.shape[-1] for t in outputs] == [4, 2, 10]
    sum(t.square().mean() for t in outputs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    zero = [n for n, p in model.named_parameters() if p.grad.abs().sum() == 0]
    assert not zero
    model.eval()


# ---------------------------------------------------------------- official checkpoints


def test_retinaface_official_weights_load_strictly(shared_data):
    model = build_model("retinaface_mnet025")
    state = torch.load(shared_data / "weights" / "retinaface_mnet025_official.pth",
                       map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)  # direct: same module names as biubug6
    loaded = model.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in state.items())


def test_featherface_v1_thirdparty_weights_load_strictly(shared_data):
    path = shared_data / "weights" / "featherface_v1_thirdparty.pth"
    model = build_model("featherface_v1", weights=path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    weights = {k: v for k, v in state.items() if not k.endswith(("total_ops", "total_params"))}
    # every official tensor is used exactly once, with equal shape
    assert len(weights) == len(model.state_dict())
    assert torch.equal(model.backbone_cbam[0].channel_gate.fc1.weight,
                       state["bacbkbone_0_cbam.ChannelGate.mlp.1.weight"])
    assert torch.equal(model.ssh2_shuffle.expand.weight, state["ssh2_cs.5.weight"])


def test_mobilenet_pretrain_loads(shared_data):
    backbone = MobileNetV1()
    path = shared_data / "weights" / "mobilenetV1X0.25_pretrain.tar"
    load_pretrained_backbone(backbone, path)
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(backbone.stage3[1][3].weight, state["module.stage3.1.3.weight"])
    model = build_model("nano_b", pretrained_backbone=path)
    assert torch.equal(model.body.stage1[0][0].weight, state["module.stage1.0.0.weight"])


def test_released_weights_find_faces_in_a_real_image(shared_data):
    """Faithfulness beyond key names: the trained weights must still detect faces.

    For V1 this also pins the official shuffle permutation: with ``ChannelShuffle(2)`` instead of
    ``ChannelShuffle(32)`` only 1 prior of this image scores above 0.5.
    """
    cv2 = pytest.importorskip("cv2")
    image_path = sorted((shared_data / "widerface" / "WIDER_val" / "images").glob("*/*.jpg"))[2]
    image = cv2.resize(cv2.imread(str(image_path)), (640, 640)).astype("float32") - (104, 117, 123)
    images = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    for name, file in [("retinaface_mnet025", "retinaface_mnet025_official.pth"),
                       ("featherface_v1", "featherface_v1_thirdparty.pth")]:
        model = build_model(name, weights=shared_data / "weights" / file).eval()
        with torch.no_grad():
            scores = model(images)[1].softmax(-1)[0, :, 1]
        assert scores.max() > 0.9, name
        assert (scores > 0.5).sum() >= 20, name


def test_wrong_checkpoint_raises_with_file_name(shared_data):
    path = shared_data / "weights" / "retinaface_mnet025_official.pth"
    with pytest.raises(ValueError, match="retinaface_mnet025_official.pth.*FeatherFaceNanoB"):
        load_weights(build_model("nano_b"), path)


def test_non_state_dict_file_raises(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match="list.pth"):
        load_weights(build_model("retinaface_mnet025"), path)


def test_wrapped_and_prefixed_checkpoint_loads(tmp_path, models):
    source = models["nano_b"]
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    target = load_weights(build_model("nano_b"), path)
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))


# ---------------------------------------------------------------- layer groups


def _producers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@pytest.mark.parametrize("name, groups, protect", [
    ("nano_b", NANO_B_LAYER_GROUPS, NANO_B_PROTECT_PATTERNS),
    ("featherface_v1", FEATHERFACE_V1_LAYER_GROUPS, FEATHERFACE_V1_PROTECT_PATTERNS),
])
def test_layer_groups_are_well_formed(models, name, groups, protect):
    producers = _producers(models[name])
    assert [g["name"] for g in groups][:2] == ["backbone_early", "backbone_late"]
    assert groups[-1]["name"] == "detection_heads"
    owner: dict[str, str] = {}
    for group in groups:
        low, high = group["bounds"]
        assert 0.0 <= low <= high < 1.0
        for pattern in group["patterns"]:
            hits = [p for p in producers if fnmatch.fnmatchcase(p, pattern)]
            assert hits, f"{group['name']}: {pattern} matches nothing"
            for hit in hits:
                assert owner.setdefault(hit, group["name"]) == group["name"], hit
    for pattern in protect:
        assert any(fnmatch.fnmatchcase(p, pattern) for p in producers), pattern
        assert not any(fnmatch.fnmatchcase(p, pattern) for p in owner), pattern


def test_head_output_patterns_match_the_nine_heads(models):
    for model in models.values():
        heads = [p for p in _producers(model) if any(fnmatch.fnmatchcase(p, g) for g in HEAD_OUTPUT_PATTERNS)]
        assert len(heads) == 9


def test_nano_b_bounds_are_those_of_the_seed_design():
    assert {g["name"]: g["bounds"] for g in NANO_B_LAYER_GROUPS} == {
        "backbone_early": (0.0, 0.4), "backbone_late": (0.1, 0.6), "efficient_cbam": (0.1, 0.6),
        "efficient_bifpn": (0.1, 0.6), "grouped_ssh": (0.1, 0.6), "detection_heads": (0.0, 0.3)}


def test_nano_b_most_parameters_sit_in_prunable_groups(models):
    model = models["nano_b"]
    modules = dict(model.named_modules())
    grouped = {p for g in NANO_B_LAYER_GROUPS for p in _producers(model)
               if any(fnmatch.fnmatchcase(p, pat) for pat in g["patterns"])}
    in_groups = sum(modules[p].weight.numel() for p in grouped)
    assert in_groups / _count(model) > 0.9


def test_grouped_ssh_needs_balanced_shuffles():
    from featherface.ssh import SSH

    with pytest.raises(ValueError, match=r"groups\*\*2.*context=18"):
        SSH(72, 72, groups=2)  # the RetinaFace split 36 + 18 + 18: 9 channels per group
    ssh = build_model("nano_b").ssh1
    assert [ssh.conv3X3[0].out_channels, ssh.conv5X5_2[0].out_channels, ssh.conv7x7_3[0].out_channels] == [40, 16, 16]
    assert SSH(64, 64).conv5X5_1[0].out_channels == 16  # default split unchanged
