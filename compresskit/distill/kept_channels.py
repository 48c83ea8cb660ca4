"""Which of the teacher's channels a pruned student kept, per module output: the map feature distillation
(:mod:`.features`) selects the teacher's channels with.

A removal keeps the surviving channels of every tensor in their order and is exact (the soft-zeroed model
and the physically pruned one compute the same outputs), so every channel of a module's output after the
removal equals one channel of that module's output before it. :func:`match_kept_channels` runs both models
in float64 on the same inputs and matches each module's channels in order: the first channel (from where
the previous match stopped) equal within ``tolerance``. This works for any module, also those whose
output is assembled from several layers (a concat of branches), with no knowledge of the graph.

Matching by value alone is ambiguous where channels are constant: a kept ReLU channel that is dead on the
probe inputs equals a removed (zeroed) one. So both runs add a marker to the output of every conv,
BatchNorm and 2-D linear layer: a random per-channel offset, positive and larger than the layer's outputs,
on each channel the removal ``ops`` keep (the same offset on that channel in both models) and none on the
removed ones, which stay exactly zero and so reach no kept channel. Every kept channel is then alive and
distinct from every other, and the match is unique.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from compresskit.groups.surgery import IN, ChannelOp

__all__ = ["match_kept_channels"]

MARKED_TYPES = (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.Linear)


def match_kept_channels(before: nn.Module, after: nn.Module, inputs: Sequence[Any], ops: Iterable[ChannelOp],
                        names: Iterable[str] | None = None, tolerance: float = 1e-6,
                        max_positions: int = 4096) -> dict[str, list[int]]:
    """Kept channel indices (axis 1) of every sub-module whose output lost channels from ``before`` to ``after``.

    Args:
        before: The model before the removal (soft-zeroed: the removed channels zeroed, all kept).
        after: The same model after the removal ``ops`` (same module names, fewer channels).
        inputs: Model inputs (``before(*inputs)``), e.g. the task's example inputs.
        ops: The removal's ops (pre-removal coordinates), e.g. ``PruneSummary.history``.
        names: The modules to match (``None``: every sub-module).
        tolerance: Channels match when they differ by at most ``tolerance`` times the output's largest magnitude.
        max_positions: Positions per channel compared (evenly spaced over batch and space).

    Returns:
        ``{module name: [kept channel indices of its output, increasing]}`` for the modules whose output
        (a tensor of at least 2 axes) has fewer channels in ``after``.

    Raises:
        ValueError: A module's channels after the removal are not an ordered subset of those before.

    Example:
        >>> before = copy.deepcopy(model)
        >>> summary = remove_zeroed(groups, zeroed)  # prunes model in place
        >>> ops = [ChannelOp.from_list(op) for op in summary.history]
        >>> kept = match_kept_channels(before, model, example_inputs, ops)  # {"ssh1": [0, 2, 3, ...], ...}
    """
    removed: dict[str, set[int]] = {}
    for op in ops:
        if op.axis != IN:
            removed.setdefault(op.module, set()).update(op.indices)
    offsets: dict[str, Tensor] = {}  # filled by the run of ``before``, read by the run of ``after``
    wanted = None if names is None else set(names)
    outputs_before = _module_outputs(before, inputs, wanted, max_positions, _marker(offsets, removed, record=True))
    outputs_after = _module_outputs(after, inputs, wanted, max_positions, _marker(offsets, removed, record=False))
    kept = {}
    for name, channels_after in outputs_after.items():
        channels_before = outputs_before.get(name)
        if channels_before is None or len(channels_after) >= len(channels_before):
            continue
        if channels_after.shape[1] != channels_before.shape[1]:
            raise ValueError(f"module {name!r}: output shapes differ beyond the channel axis")
        kept[name] = _match_in_order(name, channels_before, channels_after, tolerance)
    return kept


Marker = Callable[[str, Tensor], Tensor]


def _marker(offsets: dict[str, Tensor], removed: dict[str, set[int]], record: bool) -> Marker:
    """``mark(name, output) -> output + offset`` on the kept channels (axis 1) of a marked layer's output.

    ``record``: draw the offsets (full channel count, zero on removed channels) into ``offsets``;
    otherwise add the recorded offsets of the kept channels.
    """
    generator = torch.Generator().manual_seed(0)

    def mark(name: str, output: Tensor) -> Tensor:
        if name not in offsets:  # drawn once per layer, also for a layer that runs several times
            if not record:
                raise ValueError(f"module {name!r} ran after the removal but not before it")
            scale = max(1.0, float(output.abs().max()))
            offset = (1.0 + torch.rand(output.shape[1], generator=generator, dtype=torch.float64)) * 4 * scale
            offset[sorted(removed.get(name, ()))] = 0.0
            offsets[name] = offset
        offset = offsets[name]
        if not record:
            offset = offset[[i for i in range(len(offset)) if i not in removed.get(name, ())]]
        if len(offset) != output.shape[1]:
            raise ValueError(f"module {name!r}: {output.shape[1]} output channels, the removal ops imply {len(offset)}")
        shape = [1] * output.ndim
        shape[1] = -1
        return output + offset.to(output.device).reshape(shape)

    return mark


@torch.no_grad()
def _module_outputs(model: nn.Module, inputs: Sequence[Any], names: set[str] | None, max_positions: int,
                    mark: Marker) -> dict[str, Tensor]:
    """``{name: [C, positions]}`` float64 outputs of the sub-modules ``names`` (all: ``None``) returning a
    tensor of >= 2 axes, the outputs of every conv / BatchNorm / 2-D linear layer marked by ``mark``."""
    model = copy.deepcopy(model).double().eval()
    outputs: dict[str, Tensor] = {}

    def hook(name: str) -> Callable[[nn.Module, Any, Any], Any]:
        def record(module: nn.Module, args: Any, output: Any) -> Any:
            if not (isinstance(output, Tensor) and output.ndim >= 2 and output.is_floating_point()):
                return None
            if isinstance(module, MARKED_TYPES) and (output.ndim == 2 or not isinstance(module, nn.Linear)):
                output = mark(name, output)
            if names is not None and name not in names:
                return output
            channels = output.detach().transpose(0, 1).reshape(output.shape[1], -1)  # [N, C, ...] -> [C, N*...]
            step = max(1, channels.shape[1] // max_positions)
            outputs[name] = channels[:, ::step].clone()
            return output

        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in model.named_modules() if name]
    try:
        model(*(x.double() if isinstance(x, Tensor) and x.is_floating_point() else x for x in inputs))
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def _match_in_order(name: str, before: Tensor, after: Tensor, tolerance: float) -> list[int]:
    """Increasing indices ``i_j`` with ``before[i_j] == after[j]`` (within tolerance), earliest first."""
    limit = tolerance * max(float(before.abs().max()), float(after.abs().max()), 1e-30)
    kept: list[int] = []
    index = 0
    for channel in after:
        while index < len(before) and float((before[index] - channel).abs().max()) > limit:
            index += 1
        if index == len(before):
            raise ValueError(f"module {name!r}: channel {len(kept)} after the removal equals no remaining "
                             "channel before it (not an exact, order-keeping removal)")
        kept.append(index)
        index += 1
    return kept
