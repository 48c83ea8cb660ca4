"""The numerical guard of :func:`compresskit.find_groups`: soft-zeroing must equal removal.

For each of :data:`PROBE_SELECTIONS` random channel selections (rates 0.5, 0.25, 0.75) the
selected channels of all candidate groups are zeroed in one float64 copy of the model and
removed from another, and the outputs must agree to a relative 1e-9 (exact removal leaves
~1e-15; a wrong channel mapping keeps its size, so rounding cannot hide it). Failing groups are
found by bisection (group testing) and dropped before the next selection.

Contract: :func:`failing_candidates` never modifies the model and returns ``{candidate number:
reason}``; selections are seeded by candidate number and selection, so the verdict is
deterministic for a given model and inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from compresskit.groups.channel_group import ChannelGroup
from compresskit.groups.surgery import ChannelOp, inexact_reason

__all__ = ["PROBE_SELECTIONS", "failing_candidates", "skip_reason"]

#: Random channel selections per coupled set checked by :func:`compresskit.find_groups` (soft-zero == removal).
PROBE_SELECTIONS = 3
_PROBE_RATES = (0.5, 0.25, 0.75)


def _probe_selection(group: ChannelGroup, seed: int, selection: int) -> list[int]:
    """Random channels of ``group`` for probe ``selection`` (rates 0.5, 0.25, 0.75, ...)."""
    generator = torch.Generator().manual_seed(seed * PROBE_SELECTIONS + selection)
    scores = torch.rand(group.num_channels, generator=generator, dtype=torch.float64)
    return group.select(scores, _PROBE_RATES[selection % len(_PROBE_RATES)])


def _probe(model: nn.Module, example_inputs: Any, probes: Sequence[tuple[int, list[ChannelOp]]]) -> str | None:
    """Soft-zero vs removal on a float64 copy for all ``(seed, ops)`` probes at once; ``None`` when exact."""
    return inexact_reason(model, example_inputs, [op for _, ops in probes for op in ops])


def _failing_groups(
    model: nn.Module, example_inputs: Any, probes: list[tuple[int, list[ChannelOp]]]
) -> dict[int, str]:
    """Group testing: probe all, bisect on failure. Returns ``{seed: reason}``."""
    if not probes:
        return {}
    reason = _probe(model, example_inputs, probes)
    if reason is None:
        return {}
    if len(probes) == 1:
        return {probes[0][0]: reason}
    half = len(probes) // 2
    failing = _failing_groups(model, example_inputs, probes[:half])
    failing.update(_failing_groups(model, example_inputs, probes[half:]))
    if not failing:  # each half is exact, together they are not
        return {seed: f"fails only together with other groups: {reason}" for seed, _ in probes}
    return failing


def failing_candidates(
    model: nn.Module, example_inputs: Any, candidates: list[ChannelGroup]
) -> dict[int, str]:
    """``{candidate number: reason}`` for every set that fails any of the probe selections.

    Each selection removes random channels (rates 0.5, 0.25, 0.75) of all remaining sets at
    once from a float64 copy and compares with the soft-zeroed copy; failing sets are found by
    bisection and dropped before the next selection. Each set's selection and ops are computed
    once per selection, not again at every bisection level.
    """
    failing: dict[int, str] = {}
    for selection in range(PROBE_SELECTIONS):
        probes = []
        for seed, group in enumerate(candidates):
            if seed in failing:
                continue
            channels = _probe_selection(group, seed, selection)
            if channels:
                probes.append((seed, group.ops(channels)))
        failing.update(_failing_groups(model, example_inputs, probes))
    return failing


def skip_reason(group: ChannelGroup, reason: str) -> str:
    """The reported reason a verified group is skipped, with a hint when it permutes the channel axis."""
    if any(i.kind == "op" and ("Transpose" in i.module or "Permute" in i.module) for i in group.items):
        reason += (
            "; it permutes the channel axis (inline view/transpose channel shuffle?): "
            "write the shuffle as compresskit.ChannelShuffle"
        )
    return reason
