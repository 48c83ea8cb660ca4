"""The building blocks under find_groups, on hand-made inputs with hand-computed answers.

Set algebra (:mod:`compresskit.groups._sets`), derived index mappings (:mod:`compresskit.groups._routing`) and
autograd-op queries (:mod:`compresskit.groups._channel_ops`); find_groups itself is tested in
test_groups.py on whole models.
"""

from __future__ import annotations

import torch

from compresskit.groups._channel_ops import count_chunks, normalise_dims, op_reason, output_ranges
from compresskit.groups._routing import Permute, _Flatten, _Route
from compresskit.groups._sets import Item, RawGroup, channel_units, merge_overlapping, split_into_cells
from compresskit.groups._tp_internals import HybridIndex


def _pairs(idxs: list[HybridIndex]) -> list[tuple[int, int]]:
    return [(i.idx, i.root_idx) for i in idxs]


def _conv(name: str, axis: str, index: dict[int, tuple[int, ...]], size: int, groups: int = 1) -> Item:
    return Item(name, "conv", axis, size, index, groups)


def test_roots_reaching_one_channel_twice_form_one_unit() -> None:
    # a ghost module's cat([x1, cheap(x1)]) into a residual add: roots 0 and 2 land on channel 0
    items = [
        _conv("add", "in", {0: (0,), 1: (1,), 2: (0,), 3: (1,)}, 2),
        _conv("c", "out", {r: (r,) for r in range(4)}, 4),
    ]
    assert channel_units(4, items) == [[0, 2], [1, 3]]
    assert channel_units(2, [_conv("c", "out", {0: (0,), 1: (1,)}, 2)]) == [[0], [1]]


def test_sets_sharing_a_channel_are_merged_into_units_in_order() -> None:
    first = RawGroup("a", 2, [_conv("a", "out", {0: (0,), 1: (1,)}, 4)])
    second = RawGroup("b", 2, [_conv("b", "out", {0: (0,), 1: (1,)}, 2), _conv("a", "out", {0: (1,), 1: (2,)}, 4)])
    alone = RawGroup("c", 1, [_conv("c", "out", {0: (0,)}, 1)])
    merged = merge_overlapping([first, second, alone])
    assert [g.root for g in merged] == ["a", "c"] and merged[1] is alone
    group = merged[0]
    assert group.num_channels == 3 and group.reason is None  # roots 1 and 2 share channel a:1
    by_module = {item.module: item.index for item in group.items}
    assert by_module == {"a": {0: (0,), 1: (1,), 2: (2,)}, "b": {1: (0,), 2: (1,)}}


def test_a_protected_member_makes_the_merged_set_unprunable() -> None:
    first = RawGroup("a", 1, [_conv("g", "in", {0: (0,)}, 2, groups=2)])
    second = RawGroup("b", 1, [_conv("g", "in", {0: (1,)}, 2, groups=2)], protected=True)
    (group,) = merge_overlapping([first, second])
    assert group.reason == (
        "shares a grouped conv or an inline channel shuffle with b, whose channels cannot be pruned (protected)"
    )


def test_a_grouped_conv_splits_its_set_into_equal_removal_cells() -> None:
    items = [_conv("a", "out", {r: (r,) for r in range(4)}, 4), _conv("g", "in", {r: (r,) for r in range(4)}, 4, 2)]
    (group,) = split_into_cells([RawGroup("a", 4, items)])
    assert group.cells == [[0, 1], [2, 3]] and group.balanced and group.reason is None


def test_a_grouped_conv_reading_other_channels_makes_the_set_unprunable() -> None:
    items = [_conv("a", "out", {0: (0,), 1: (1,)}, 2), _conv("g", "in", {0: (0,), 1: (1,)}, 4, 2)]
    (group,) = split_into_cells([RawGroup("a", 2, items)])
    assert group.reason == "grouped conv or chunk g (groups=2) also reads channels that cannot be pruned with this set"
    assert group.cells == []


def test_routes_flattens_and_permutations_map_indices_exactly() -> None:
    idxs = [HybridIndex(idx=1, root_idx=7), HybridIndex(idx=5, root_idx=8)]
    concat_second_input = [((0, 4, 1), 2, 4)]  # source channels 0..3 land at 2..5 of the target
    assert _pairs(_Route(concat_second_input, reverse=False)(idxs)) == [(3, 7)]
    assert _pairs(_Route(concat_second_input, reverse=True)(idxs)) == [(3, 8)]
    odd_slice = [((1, 6, 2), 0, 3)]  # x[:, 1:6:2] -> channels 1, 3, 5 become 0, 1, 2
    assert _pairs(_Route(odd_slice, reverse=False)(idxs)) == [(0, 7), (2, 8)]
    assert _pairs(_Flatten(3, reverse=False)([HybridIndex(idx=2, root_idx=0)])) == [(6, 0), (7, 0), (8, 0)]
    features = [HybridIndex(idx=7, root_idx=0), HybridIndex(idx=8, root_idx=0)]
    assert _pairs(_Flatten(3, reverse=True)(features)) == [(2, 0)]
    shuffled = [HybridIndex(idx=0, root_idx=0), HybridIndex(idx=2, root_idx=1)]
    assert _pairs(Permute([2, 0, 1])(shuffled)) == [(2, 0), (1, 1)]


def test_split_chunk_and_slice_ranges_are_read_off_autograd() -> None:
    x = torch.randn(1, 6, 2, 2, requires_grad=True)
    assert output_ranges(x.split([2, 4], dim=1)[0].grad_fn) == [(0, 2, 1), (2, 6, 1)]
    assert output_ranges(x[:, 1:5:2].grad_fn) == [(1, 5, 2)]
    assert output_ranges(x.split([1, 1], dim=2)[0].grad_fn) is None  # not the channel axis
    assert count_chunks(x.chunk(3, dim=1)[0].grad_fn) == 3
    assert count_chunks(x.split([2, 4], dim=1)[0].grad_fn) == 1  # unequal parts: no balance constraint
    assert normalise_dims(2**64 - 1, 4) == {3} and normalise_dims((1, -1), 4) == {1, 3}


def test_reductions_over_channels_and_channel_mixing_ops_are_named() -> None:
    x = torch.randn(1, 4, 3, 3, requires_grad=True)
    assert "reduces over the channel axis" in op_reason(x.mean(dim=1).grad_fn)
    assert op_reason(x.mean(dim=(2, 3)).grad_fn) is None
    assert op_reason((x + 1).grad_fn) is None
    tokens = x.flatten(2)  # (N, C, L)
    assert op_reason(torch.bmm(tokens, tokens.transpose(1, 2)).grad_fn).startswith("channel-mixing op BmmBackward")
