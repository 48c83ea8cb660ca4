"""Task metrics cached by the model's weights, so a run never scores the same model twice.

The phases score their model at the end (and a training phase every epoch), and many of those models are
equal: the teacher and a student that inherits it before any training, the soft-pruned and the physically
pruned model (removal is exact), the last epoch and the end of a fine-tune, and the evaluate phase's three
models. On a detector each scoring is a pass over the validation images at full size (tens of seconds on a
CPU), so :func:`cached_metrics` keys every result by a digest of the model's architecture and tensors in
``evaluations.json`` and returns the stored metrics for a model it has seen.

Only a phase's *final* scoring reuses a stored result (``reuse=True``): every phase is seeded at its start, so
whatever its final scoring would have drawn from the global random generators (a ``DataLoader`` draws its base
seed from torch's) is drawn by nobody after it. A scoring between training epochs (``reuse=False``) always runs
and only stores its result: skipping it would shift the random stream the next epoch trains on, and a resumed
run, which finds the scores of the epochs it repeats already stored, would no longer equal an uninterrupted one.

The digest covers ``repr(model)`` (the module tree and every layer's shapes and settings), each
state-dict entry's name, dtype, shape and bytes: any change to a weight, a buffer (BatchNorm statistics) or
the architecture is a new model. The task and its validation data are fixed for a run (a changed recipe is
refused on resume), so they are not part of the key.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn

from compresskit.run.workspace import RunDirError, Workspace
from compresskit.tasks.protocol import Task

__all__ = ["CACHE_FILE", "cached_metrics", "weights_digest"]

CACHE_FILE = "evaluations.json"


def weights_digest(model: nn.Module) -> str:
    """SHA-256 over ``repr(model)`` and every state-dict tensor (name, dtype, shape, bytes)."""
    digest = hashlib.sha256(repr(model).encode())
    for name, tensor in model.state_dict().items():
        if not isinstance(tensor, torch.Tensor):  # extra state: part of the key by its repr
            digest.update(f"{name}={tensor!r}".encode())
            continue
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def cached_metrics(workspace: Workspace, task: Task, model: nn.Module, reuse: bool = True) -> dict[str, Any]:
    """``task.evaluate(model)``, or (``reuse``) the metrics stored for a model with the same digest earlier in the
    run; the result is stored either way. Pass ``reuse=False`` between training epochs (see the module docstring)."""
    key = weights_digest(model)
    try:
        cache = workspace.read_json(CACHE_FILE) if workspace.path(CACHE_FILE).exists() else {}
    except RunDirError:  # a torn cache costs a re-evaluation, nothing else
        cache = {}
    if not isinstance(cache, dict):
        cache = {}
    if reuse and key in cache:
        return dict(cache[key])
    metrics = task.evaluate(model)
    workspace.write_json(CACHE_FILE, {**cache, key: metrics})
    return metrics
