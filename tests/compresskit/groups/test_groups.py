"""find_groups: couplings found, unsafe ones reported, specs and protect validated."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from zoo import ZOO, ZOO_PROTECT, conv_bn

import compresskit as ck
from compresskit.groups.surgery import flatten_outputs


def _find(name: str, **kwargs) -> tuple[nn.Module, Tensor, ck.ChannelGroups]:
    model, example = ZOO[name]()
    kwargs.setdefault("protect", ZOO_PROTECT[name])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ck.UnprunableWarning)
        return model, example, ck.find_groups(model, example, **kwargs)


def _item(group: ck.ChannelGroup, module: str, axis: str):
    return next(i for i in group.items if i.module == module and i.axis == axis)


def test_residual_add_couples_both_producers_and_consumers() -> None:
    _, _, groups = _find("resnet_downsample")
    group = next(g for g in groups if g.name == "layer2.conv2.0")
    modules = {(i.module, i.axis) for i in group.items if i.kind != "op"}
    assert {("layer2.conv2.0", "out"), ("layer2.conv2.1", "out"), ("layer2.downsample.0", "out"),
            ("layer2.downsample.1", "out"), ("layer3.conv1.0", "in"), ("layer3.downsample.0", "in")} <= modules
    assert group.num_channels == 32 and len(group.producer_weights()) == 2


def test_concat_offsets_and_transposed_conv() -> None:
    _, _, groups = _find("unet_concat_transposed")
    up2 = next(g for g in groups if g.name == "up2")
    skip2 = next(g for g in groups if g.name == "enc2.1.0")
    assert _item(up2, "up2", "out").kind == "conv_transpose"
    assert _item(up2, "dec2.0.0", "in").index == {r: (r,) for r in range(16)}
    assert _item(skip2, "dec2.0.0", "in").index == {r: (16 + r,) for r in range(16)}
    bottleneck = next(g for g in groups if g.name == "bottleneck.0")
    assert _item(bottleneck, "up2", "in").size == 32


def test_flatten_linear_maps_one_channel_to_many_features() -> None:
    _, _, groups = _find("conv_flatten_linear")
    group = next(g for g in groups if g.name == "conv")
    assert _item(group, "fc1", "in").index[3] == tuple(range(3 * 64, 4 * 64))


def test_depthwise_conv_is_coupled_in_and_out() -> None:
    _, _, groups = _find("mobilenetv2")
    group = next(g for g in groups if g.name == "features.2.block.0.0")
    assert _item(group, "features.2.block.1.0", "both").size == 64


def test_channel_shuffle_maps_indices_through_the_permutation() -> None:
    _, _, groups = _find("grouped_shuffle")
    group = next(g for g in groups if g.name == "stage.0.reduce.0")
    # ShuffleChannel(2) over 16: input channel a*8 + k -> output 2k + a
    expected = {a * 8 + k: (2 * k + a,) for a in range(2) for k in range(8)}
    assert _item(group, "stage.0.depthwise.0", "both").index == expected
    # grouped reduce (groups=2) and grouped expand (groups=2, after the shuffle) -> 4 cells
    assert sorted(len(c) for c in group.cells) == [4, 4, 4, 4]
    stem = next(g for g in groups if g.name == "stem.0")  # merged across a grouped conv
    assert stem.num_channels == 32 and len({len(c) for c in stem.cells}) == 1


def test_channel_shuffle_module() -> None:
    shuffle = ck.ChannelShuffle(2)
    assert shuffle(torch.arange(6.0).view(1, 6, 1, 1)).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    with pytest.raises(ValueError, match="divisible by 4"):
        ck.ChannelShuffle(4)(torch.zeros(1, 6, 1, 1))
    with pytest.raises(ValueError, match="0"):
        ck.ChannelShuffle(0)


class InlineShuffleNet(nn.Module):
    """Shuffle written inline: must be skipped (never mis-pruned)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = conv_bn(3, 8, 1)
        self.b = conv_bn(8, 8, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.a(x)
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.head(self.b(x))


def test_inline_shuffle_is_recognised_and_pruned_in_whole_slots() -> None:
    model, example = InlineShuffleNet().eval(), torch.randn(1, 3, 8, 8)
    groups = ck.find_groups(model, example)
    assert [g.name for g in groups] == ["a.0", "b.0"] and groups.skipped == []
    a = groups[0]
    # input channel k and k + 4 stay one slot of the shuffle: 4 units of 2 channels
    assert a.num_channels == 4 and _item(a, "a.0", "out").index == {k: (k, k + 4) for k in range(4)}
    assert _item(a, "b.0", "in").index == {k: (2 * k, 2 * k + 1) for k in range(4)}
    with torch.no_grad():
        reference = model(example)
    ck.prune(model, example, 0.5, groups=groups)  # verified in float64 before the model changes
    assert model.a[0].out_channels == 4 and model.b[0].in_channels == 4
    assert model(example).shape == reference.shape


class PlainDeformableConv(nn.Module):
    """A DCN-like layer with its own weight, applied with F.conv2d (as in FeatherFace's SSH)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.offset = nn.Conv2d(channels, 27, 3, padding=1)  # 2*9 offsets + 9 mask channels
        self.weight = nn.Parameter(torch.randn(channels, channels, 3, 3) * 0.1)

    def forward(self, x: Tensor) -> Tensor:
        mask = torch.sigmoid(self.offset(x)[:, 18:]).mean(dim=1, keepdim=True)
        return F.conv2d(x, self.weight, padding=1) * mask


class DeformableNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.dcn = PlainDeformableConv(8)
        self.bn = nn.BatchNorm2d(8)
        self.tail = conv_bn(8, 8)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.tail(F.relu(self.bn(self.dcn(self.stem(x))))))


def test_custom_conv_module_is_detected_and_left_alone() -> None:
    model, example = DeformableNet().eval(), torch.randn(1, 3, 8, 8)
    with pytest.warns(ck.UnprunableWarning, match="F.conv2d"):
        groups = ck.find_groups(model, example)
    # the F.conv2d couples stem -> bn; the offset conv's outputs are reshaped by custom code
    assert [s.name for s in groups.skipped] == ["stem.0", "dcn.offset"]
    assert [g.name for g in groups] == ["tail.0"]
    with torch.no_grad():
        reference = model(example)
    ck.prune(model, example, 0.5, groups=groups, verify=True)
    assert model.stem[0].out_channels == 8 and model.dcn.offset.out_channels == 27
    assert model.tail[0].out_channels == 4
    assert model(example).shape == reference.shape


def test_model_outputs_are_protected_automatically() -> None:
    _, _, groups = _find("detection_heads", protect=())
    names = {g.name for g in groups}
    assert not any(n.startswith(("class_head", "bbox_head", "landmark_head")) for n in names)
    assert "smooth.0.0" in names


def test_protect_keeps_a_layers_outputs() -> None:
    _, _, groups = _find("resnet_downsample", protect=["fc", "layer1.*"])
    names = {g.name for g in groups}
    assert "layer1.conv1.0" not in names and "stem.0" not in names  # stem couples with layer1's add
    assert "layer2.conv1.0" in names


def test_bifpn_fusion_inputs_are_one_coupled_set() -> None:
    _, _, groups = _find("bifpn_fusion")
    group = next(g for g in groups if g.name == "lateral.0.0")
    producers = {i.module for i in group.items if i.kind in ("conv", "bn") and i.axis != "in"}
    assert {"lateral.0.0", "lateral.1.0", "lateral.2.0", "p4_td.depthwise", "p4_td.bn"} <= producers


def test_find_groups_restores_training_mode_and_keeps_weights() -> None:
    model, example = ZOO["resnet_downsample"]()
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ck.find_groups(model, example, protect=["fc"])
    assert model.training
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_layer_group_specs() -> None:
    specs = [ck.LayerGroupSpec("early", patterns=("stem.*",)), ck.LayerGroupSpec("convs", types=("Linear",))]
    _, _, groups = _find("resnet_downsample", layer_groups=specs, protect=())
    assert [(g.name, g.layer_group) for g in groups] == [("stem.0", "early")]
    assert set(groups.layer_groups) == {"early", "convs"}


def test_layer_group_comes_from_the_matching_producers_with_the_most_weights() -> None:
    # the trunk set "conv.0" is produced by conv.0 (3x3, 4,608 weights), cbam.body.1.0 (residual,
    # 9,216), and the gating convs se.fc2 / cbam.channel_gate.mlp.2 (256 each)
    gates = ck.LayerGroupSpec("gates", patterns=("se.fc2", "cbam.channel_gate.mlp.2"))
    residual = ck.LayerGroupSpec("residual", patterns=("cbam.body.1.0",))
    _, _, groups = _find("se_cbam", layer_groups=[gates, residual])
    assert next(g for g in groups if g.name == "conv.0").layer_group == "residual"
    # the first producer (conv.0) matches no spec: the matching ones still decide
    _, _, groups = _find("se_cbam", layer_groups=[gates])
    assert next(g for g in groups if g.name == "conv.0").layer_group == "gates"


def test_layer_group_spec_errors() -> None:
    model, example = ZOO["resnet_downsample"]()
    with pytest.raises(ValueError, match="'backbone.\\*' matches no module"):
        ck.find_groups(model, example, layer_groups=[ck.LayerGroupSpec("a", patterns=("backbone.*",))])
    with pytest.raises(ValueError, match="'Conv3d' matches no module"):
        ck.find_groups(model, example, layer_groups=[ck.LayerGroupSpec("a", types=("Conv3d",))])
    both = [ck.LayerGroupSpec("a", patterns=("stem.*",)), ck.LayerGroupSpec("b", types=("BatchNorm2d",))]
    with pytest.raises(ValueError, match="'stem.1' is matched by layer groups 'a' and 'b'"):
        ck.find_groups(model, example, layer_groups=both)
    with pytest.raises(ValueError, match="protect pattern 'head' matches no module"):
        ck.find_groups(model, example, protect=["head"])
    with pytest.raises(ValueError, match="bounds"):
        ck.LayerGroupSpec("a", patterns=("x",), bounds=(0.5, 1.0))
    with pytest.raises(ValueError, match="needs patterns or types"):
        ck.LayerGroupSpec("a")
    with pytest.raises(TypeError, match="'stem.\\*'"):
        ck.LayerGroupSpec("a", patterns="stem.*")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("num_channels", "rate", "expected"),
    [(10, 0.3, 3), (100, 0.29, 29), (16, 0.0, 0), (4, 0.99, 3), (1, 0.5, 0), (7, 0.5, 3)],
)
def test_channels_to_remove(num_channels: int, rate: float, expected: int) -> None:
    assert ck.channels_to_remove(num_channels, rate) == expected


@pytest.mark.parametrize("rate", [1.0, -0.1, float("nan"), "0.3"])
def test_channels_to_remove_rejects_bad_rates(rate: object) -> None:
    with pytest.raises(ValueError, match="rate"):
        ck.channels_to_remove(8, rate)  # type: ignore[arg-type]


def test_select_balances_cells() -> None:
    _, _, groups = _find("grouped_shuffle")
    group = next(g for g in groups if g.name == "stage.0.reduce.0")
    removed = group.select(torch.arange(16, 0, -1.0), 0.5)  # lowest scores are the highest indices
    assert len(removed) == 8
    for cell in group.cells:
        assert sum(r in cell for r in removed) == 2
    with pytest.raises(ValueError, match="shape"):
        group.select(torch.zeros(3), 0.5)


def test_soft_zero_makes_channels_exactly_zero_downstream() -> None:
    model, example, groups = _find("se_cbam")
    group = next(g for g in groups if g.name == "se.fc1")
    group.zero_([0, 3])
    captured = {}
    model.se.fc1.register_forward_hook(lambda m, i, o: captured.update(x=o) and None)
    with torch.no_grad():
        flatten_outputs(model(example))
    assert torch.all(captured["x"][:, [0, 3]] == 0) and torch.any(captured["x"][:, 1] != 0)


class GridSampleDeformable(nn.Module):
    """Deformable sampling in plain torch: ``grid_sample`` + a broadcast ``[N, 1, H, W]`` modulator."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.offset = nn.Conv2d(channels, 2, 3, padding=1)
        self.modulator = nn.Conv2d(channels, 1, 3, padding=1)
        self.regular = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        base = torch.stack([xs, ys], dim=-1).expand(n, h, w, 2)
        grid = base + 0.1 * torch.tanh(self.offset(x)).permute(0, 2, 3, 1)  # (N, 2, H, W) -> (N, H, W, 2)
        patches = F.grid_sample(x, grid, align_corners=True)
        return self.regular(patches * torch.sigmoid(self.modulator(x)))


def test_grid_sample_deformable_input_side_is_prunable() -> None:
    model = nn.Sequential(conv_bn(3, 8), GridSampleDeformable(8), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 2, 1))
    model.eval()
    example = torch.randn(1, 3, 8, 8)
    with pytest.warns(ck.UnprunableWarning):
        groups = ck.find_groups(model, example)
    stem = next(g for g in groups if g.name == "0.0")
    assert {("1.offset", "in"), ("1.modulator", "in"), ("1.regular", "in")} <= {(i.module, i.axis) for i in stem.items}
    assert {s.name for s in groups.skipped} == {"1.offset"}  # its outputs are sampling offsets
    modulator = next(g for g in groups if g.name == "1.modulator")
    assert modulator.removal_counts(0.9) == [0]  # one channel: never removed
    with torch.no_grad():
        reference = model(example)
    ck.prune(model, example, 0.5, groups=groups, verify=True)
    assert model[0][0].out_channels == 4 and model[1].regular.in_channels == 4
    assert model(example).shape == reference.shape


class _IssueGhost(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.primary = nn.Conv2d(channels, channels // 2, 1)
        self.cheap = nn.Conv2d(channels // 2, channels // 2, 3, padding=1, groups=channels // 2)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.primary(x)
        return torch.cat([x1, self.cheap(x1)], 1)


class _IssueGhostNet(nn.Module):
    """The reproduction of issue 11: a ghost module's concat feeding a residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Sequential(*[nn.Conv2d(3 if i == 0 else 4, 4, 1) for i in range(10)])
        self.stem, self.ghost, self.head = nn.Conv2d(4, 8, 1), _IssueGhost(8), nn.Conv2d(8, 5, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = self.stem(self.pre(x))
        return self.head(self.ghost(s) + s)


def _issue_ghost() -> tuple[nn.Module, Tensor]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _IssueGhostNet().eval(), torch.randn(1, 3, 8, 8)


def test_ghost_concat_into_residual_couples_j_with_j_plus_half() -> None:
    model, example = _issue_ghost()
    groups = ck.find_groups(model, example)
    assert groups.skipped == []
    stem = next(g for g in groups if g.name == "stem")
    assert stem.num_channels == 4  # units {j, j + 4} of the stem's 8 channels
    assert _item(stem, "stem", "out").index == {j: (j, j + 4) for j in range(4)}
    assert _item(stem, "ghost.primary", "out").index == {j: (j,) for j in range(4)}
    assert _item(stem, "ghost.cheap", "both").index == {j: (j,) for j in range(4)}
    # stem: rows j and j + 4 joined (2 x 4 inputs); primary: 8 inputs; cheap: a 3x3 depthwise filter
    assert [tuple(w.shape) for w in stem.producer_weights()] == [(4, 8), (4, 8), (4, 9)]
    pruner = ck.SoftFPGM(groups, ck.constant(0.5))
    pruner.step(0)
    with torch.no_grad():
        soft = model(example)
    pruner.apply()
    with torch.no_grad():
        hard = model(example)
    assert float((soft - hard).abs().max()) <= 1e-6 * float(soft.abs().max())
    assert model.stem.out_channels == 4 and model.ghost.primary.out_channels == 2


def test_a_wrong_mapping_is_refused_at_apply_time() -> None:
    model, example = _issue_ghost()
    groups = ck.find_groups(model, example)
    stem = next(g for g in groups if g.name == "stem")
    # what the old mapping did: root j + 4 -> cheap channel j only, primary untouched
    stem.items = tuple(i for i in stem.items if i.module != "ghost.primary")
    pruner = ck.SoftFPGM(groups, ck.constant(0.5))
    pruner.step(0)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"differ.*alone not exact: stem"):
        pruner.apply()
    assert model.stem.out_channels == 8
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


def test_csp_chunk_whose_parts_are_concatenated_again_is_routed_exactly() -> None:
    _, _, groups = _find("csp_split_concat")
    assert groups.skipped == []
    reduce = next(g for g in groups if g.name == "blocks.0.reduce.0")
    # chunk(2): channels 0-7 reach the fuse conv directly and 8-15 also feed convs.0
    assert _item(reduce, "blocks.0.fuse.0", "in").index == {r: (r,) for r in range(16)}
    assert _item(reduce, "blocks.0.convs.0.0", "in").index == {r: (r - 8,) for r in range(8, 16)}
    convs1 = next(g for g in groups if g.name == "blocks.0.convs.1.0")
    assert _item(convs1, "blocks.0.fuse.0", "in").index == {r: (24 + r,) for r in range(8)}


def test_inline_shufflenetv2_trunk_is_pruned_in_balanced_proportions() -> None:
    model, example, groups = _find("shufflenetv2_inline")  # Torch-Pruning's own builder divides by zero here
    assert groups.skipped == []
    trunk = groups[0]
    # every shuffle keeps its slots whole, every chunk(2) must lose as many channels per half:
    # cells of 2, 2, 4 and 8 units lose 1, 1, 2 and 4 at rate 0.5 (the same fraction of each)
    assert trunk.name == "stem.0" and trunk.balanced and sorted(len(c) for c in trunk.cells) == [2, 2, 4, 8]
    assert sorted(trunk.removal_counts(0.5)) == [1, 1, 2, 4] and trunk.removal_counts(0.3) == [0, 0, 0, 0]
    predicted = ck.ParamPredictor(model, groups)(0.5)
    ck.prune(model, example, 0.5, groups=groups)  # raises if not exact in float64
    assert model.stem[0].out_channels == 8 and ck.count_params(model) == predicted


def test_cell_removal_counts() -> None:
    assert ck.cell_removal_counts([4, 4], 0.5, balanced=False) == [2, 2]
    assert ck.cell_removal_counts([3, 6], 0.5, balanced=False) == [1, 3]
    assert ck.cell_removal_counts([3, 6], 0.5, balanced=True) == [1, 2]  # one third of each
    assert ck.cell_removal_counts([2, 8], 0.9, balanced=True) == [1, 4]  # at least half of each remains


def test_linear_on_tokens_prunes_mlp_hidden_widths_and_layernorm_is_skipped_with_reason() -> None:
    model, example, groups = _find("vit_block")
    assert [(g.name, g.num_channels) for g in groups][:2] == [("blocks.0.fc1", 32), ("blocks.1.fc1", 24)]
    assert {(i.module, i.axis) for i in groups[0].items if i.kind == "linear"} == {
        ("blocks.0.fc1", "out"), ("blocks.0.fc2", "in")
    }
    skipped = {s.name: s.reason for s in groups.skipped}
    assert "LayerNorm blocks.0.norm1 normalises over these channels" in skipped["patch_embed"]
    assert "q @ k^T" in skipped["blocks.0.attn.q"]  # single q channels: no; whole heads: see below
    ck.prune(model, example, 0.5, groups=groups)
    assert model.blocks[0].fc1.out_features == 16 and model.blocks[0].fc2.in_features == 16
    assert model.blocks[1].fc1.out_features == 12


def test_channels_last_linear_mlp_with_layer_scale_is_pruned() -> None:
    model, example, groups = _find("convnext_block")  # Linear on (N, H, W, C)
    assert [(g.name, g.num_channels) for g in groups] == [("blocks.0.pwconv1", 64), ("blocks.1.pwconv1", 64)]
    assert [s.name for s in groups.skipped] == ["stem.0"]  # the trunk: LayerNorm over it, layer scale on it
    ck.prune(model, example, 0.25, groups=groups)
    assert model.blocks[0].pwconv2.in_features == 48 and model.blocks[0].gamma.numel() == 16


class FusedQKVAttention(nn.Module):
    """timm's ``Attention``: one fused ``qkv`` Linear, heads split with ``num_heads``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, _ = x.shape
        # (N, L, 3*H*D) -> (3, N, H, L, D)
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        attention = torch.softmax(qkv[0] @ qkv[1].transpose(-2, -1), dim=-1)
        return self.proj((attention @ qkv[2]).transpose(1, 2).reshape(batch, tokens, -1))


def test_whole_heads_of_separate_and_fused_qkv_attention_are_pruned() -> None:
    model, example, groups = _find("vit_block")
    heads = next(g for g in groups if g.name == "blocks.0.attn:heads")
    assert heads.num_channels == 2 and _item(heads, "blocks.0.attn.v", "out").index[1] == tuple(range(8, 16))
    predicted = ck.ParamPredictor(model, groups)(0.5)
    ck.prune(model, example, 0.5, groups=groups)
    attn = model.blocks[0].attn
    assert attn.num_heads == 1 and attn.q.out_features == attn.k.out_features == attn.proj.in_features == 8
    assert ck.count_params(model) == predicted

    torch.manual_seed(0)
    fused = nn.Sequential(nn.Linear(4, 12), FusedQKVAttention(12, 3), nn.Linear(12, 2)).eval()
    x = torch.randn(2, 5, 4)
    groups = ck.find_groups(fused, x)
    heads = next(g for g in groups if g.name == "1:heads")
    assert _item(heads, "1.qkv", "out").index[1] == (4, 5, 6, 7, 16, 17, 18, 19, 28, 29, 30, 31)
    with torch.no_grad():
        reference = fused(x)
    pruner = ck.SoftFPGM(groups, ck.constant(0.34))
    pruner.step(0)
    assert pruner.zeroed_indices()["1:heads"] and len(pruner.zeroed_indices()["1:heads"]) == 1
    with torch.no_grad():
        soft = fused(x)
    pruner.apply()
    assert fused[1].num_heads == 2 and fused[1].qkv.out_features == 24
    with torch.no_grad():
        hard = fused(x)
    assert float((hard - soft).abs().max()) <= 1e-6 * float(soft.abs().max()) and hard.shape == reference.shape


class _TorchAttentionNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.attn, self.head = nn.Linear(4, 8), nn.MultiheadAttention(8, 2, batch_first=True), nn.Linear(8, 2)

    def forward(self, x: Tensor) -> Tensor:
        y = self.embed(x)
        return self.head(self.attn(y, y, y, need_weights=False)[0])


def test_multihead_attention_is_skipped_with_its_reason() -> None:
    torch.manual_seed(0)
    with pytest.warns(ck.UnprunableWarning):
        groups = ck.find_groups(_TorchAttentionNet().eval(), torch.randn(2, 5, 4))
    assert list(groups) == []
    assert [s.name for s in groups.skipped] == ["embed"]
    assert "channel-mixing op MmBackward0" in groups.skipped[0].reason  # its in-projection, run inline


class _ResidualAttentionNet(nn.Module):
    """Linear -> nn.MultiheadAttention with a residual add -> Linear: the width the attention sees."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.mha, self.out = nn.Linear(8, 16), nn.MultiheadAttention(16, 4, batch_first=True), nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.inp(x)
        attended, _ = self.mha(hidden, hidden, hidden)
        return self.out(attended + hidden)


def test_multihead_attention_names_itself_when_it_blocks_a_set() -> None:
    with pytest.warns(ck.UnprunableWarning):
        groups = ck.find_groups(_ResidualAttentionNet().eval(), torch.randn(1, 5, 8))
    assert list(groups) == [] and [s.name for s in groups.skipped] == ["inp"]
    assert groups.skipped[0].reason.startswith("nn.MultiheadAttention mha: its projections must stay as wide")


def test_a_failing_graph_build_skips_the_model_with_its_reason(monkeypatch) -> None:
    import torch_pruning as tp

    def explode(self, *args, **kwargs):
        raise ZeroDivisionError("integer division or modulo by zero")

    model, example = ZOO["resnet_downsample"]()
    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", explode)
    with pytest.warns(ck.UnprunableWarning, match="graph builder failed"):
        groups = ck.find_groups(model, example, protect=["fc"])
    assert list(groups) == [] and {s.name for s in groups.skipped} == {
        n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)
    }  # every conv; the protected fc is not listed
    with pytest.raises(RuntimeError):  # a bad input is the caller's error, not a skip
        ck.find_groups(model, torch.randn(1, 5, 32, 32), protect=["fc"])
