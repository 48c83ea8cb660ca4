"""Phase ``remove``: physically remove the channels the soft phase zeroed -> ``pruned.pt``, ``channels.json``,
``kept_channels.json``.

Inputs: ``soft_pruned.pt``. Outputs: ``pruned.pt`` (:mod:`compresskit.models.persist` format: the pruned
model and the builder of the student it came from), ``channels.json`` (output channels per conv /
linear layer before and after) and, when the fine-tune distils features, ``kept_channels.json``
(``{"kept": {module: [indices]}}``: for every distilled module whose output lost channels, the channels it
kept, which the fine-tune matches against the unpruned teacher's;
:func:`compresskit.distill.kept_channels.match_kept_channels`).
The removal is verified: the soft-zeroed and the physically pruned model must give the same outputs on
the example inputs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from torch import nn

from compresskit.pruning.budget import channel_counts
from compresskit.run.bypass_choice import chosen_bypass, with_bypass
from compresskit.run.context import ModelSource
from compresskit.run.evaluations import cached_metrics
from compresskit.run.layer_groups import GroupSelection
from compresskit.run.workspace import Workspace
from compresskit.tasks.protocol import Task

__all__ = ["Config", "layer_channels", "run"]


@dataclass(frozen=True)
class Config:
    """What the removal phase reads.

    Attributes:
        student: The student (rebuilt before its soft-pruned weights are loaded; its builder is persisted).
        groups: The layer groups the soft phase zeroed channels of.
        features: ``distill.features`` when the fine-tune distils (their kept channels are recorded).
    """

    student: ModelSource
    groups: GroupSelection
    features: tuple[str, ...] = ()


def layer_channels(model: nn.Module) -> dict[str, int]:
    """Output channels of every conv / linear layer, by module name."""
    return {name: out_channels for name, (_, _, out_channels) in channel_counts(model).items()
            if not isinstance(model.get_submodule(name), nn.modules.batchnorm._BatchNorm)}


def run(config: Config, workspace: Workspace, task: Task) -> dict[str, Any]:
    """Remove the zeroed channels -> ``pruned.pt``, ``channels.json``; returns params before/after and metrics.

    Raises:
        RuntimeError: The channel groups found now differ from those the soft phase zeroed.
    """
    from compresskit.distill.features import find_modules
    from compresskit.distill.kept_channels import match_kept_channels
    from compresskit.groups.surgery import ChannelOp
    from compresskit.models.persist import save_pruned
    from compresskit.pruning.soft_fpgm import remove_zeroed

    payload = workspace.load_state_dict("soft_pruned.pt")  # {"state_dict", "zeroed"}
    student = with_bypass(config.student, chosen_bypass(workspace))  # the blocks the search switched off
    model = student.build(task)
    model.load_state_dict(payload["state_dict"])
    before = layer_channels(model)
    groups = config.groups.find(model, task.example_inputs())
    zeroed = payload["zeroed"]
    names = [group.name for group in groups]
    if sorted(names) != sorted(zeroed):
        raise RuntimeError(f"channel groups changed since the soft phase: {sorted(set(names) ^ set(zeroed))}")
    soft = copy.deepcopy(model) if config.features else None
    summary = remove_zeroed(groups, [zeroed[name] for name in names], verify=True)
    if soft is not None:
        ops = [ChannelOp.from_list(op) for op in summary.history]
        kept = match_kept_channels(soft, model, task.example_inputs(), ops, find_modules(soft, config.features))
        workspace.write_json("kept_channels.json", {"kept": kept})
    builder, kwargs = student.builder(task)  # with bypass=[...]: load_pruned rebuilds the reduced model
    save_pruned(workspace.path("pruned.pt"), model, builder, kwargs)
    workspace.write_json("channels.json", {"before": before, "after": layer_channels(model)})
    return {"params_before": summary.params_before, "params_after": summary.params_after,
            "changed_layers": len(summary.changed_layers), "metrics": cached_metrics(workspace, task, model)}
