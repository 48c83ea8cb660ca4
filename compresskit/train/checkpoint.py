"""Epoch checkpoints of a :class:`~compresskit.train.state.TrainState`: write atomically, load and restore.

A checkpoint holds plain tensors and containers only, so it loads with
``torch.load(weights_only=True)``. Its keys: ``version`` (:data:`CHECKPOINT_VERSION`),
``model``, ``optimizer`` and ``scheduler`` (``state_dict``s or ``None``), ``epoch``,
``step``, ``metrics``, ``rng`` (torch / numpy / Python and CUDA RNG states) and
``extra`` (the caller's plain data, e.g. the hooks' ``state_dict``s). With the RNG
states restored, a run resumed from an epoch boundary in deterministic CPU mode ends
with exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from compresskit.train.state import NonFiniteLossError, TrainState
from compresskit.utils.atomic import atomic_torch_save
from compresskit.utils.finite import non_finite_entries

__all__ = ["CHECKPOINT_VERSION", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_VERSION = 1


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        # python's state: (version, tuple of 625 ints, gauss_next)
        "python": {
            "version": int(py_state[0]),
            "internal": torch.tensor(py_state[1], dtype=torch.int64),
            "gauss_next": py_state[2],
        },
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(rng: Mapping[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    np_rng = rng["numpy"]
    np.random.set_state(
        (
            np_rng["name"],
            np_rng["keys"].numpy().astype(np.uint32),
            np_rng["pos"],
            np_rng["has_gauss"],
            np_rng["cached_gaussian"],
        )
    )
    py_rng = rng["python"]
    random.setstate(
        (py_rng["version"], tuple(int(v) for v in py_rng["internal"].tolist()), py_rng["gauss_next"])
    )
    if rng.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def save_checkpoint(
    path: str | os.PathLike[str], state: TrainState, extra: Mapping[str, Any] | None = None
) -> None:
    """Write the training state atomically (temporary file + ``os.replace``).

    Stores the model, optimizer and scheduler ``state_dict``s, ``epoch``, ``step``,
    ``metrics``, the torch/numpy/python (and CUDA) RNG states and ``extra`` (plain
    data only, so that the file loads with ``weights_only=True``). Nothing is written when
    the model or optimizer state holds NaN/inf, so the file on disk is always the last good one.

    Args:
        path: Destination file.
        state: The state to save (typically from an epoch-end hook of ``fit``).
        extra: Caller data (e.g. the recipe) stored under ``"extra"``.

    Raises:
        NonFiniteLossError: The model or optimizer state is not finite (the previous file is kept).
    """
    payload = {
        "version": CHECKPOINT_VERSION,
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict() if state.optimizer is not None else None,
        "scheduler": state.scheduler.state_dict() if state.scheduler is not None else None,
        "epoch": state.epoch,
        "step": state.step,
        "metrics": dict(state.metrics),
        "rng": _rng_state(),
        "extra": dict(extra) if extra is not None else {},
    }
    for what in ("model", "optimizer"):
        count, names = non_finite_entries(payload[what])
        if count:
            raise NonFiniteLossError(
                f"{count} {what} tensors hold NaN/inf after epoch {state.epoch} (e.g. {', '.join(names)}); "
                f"{os.fspath(path)} not written, so it still holds the last good epoch")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_torch_save(payload, path)


def load_checkpoint(
    path: str | os.PathLike[str], state: TrainState | None = None, restore_rng: bool = True
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Args:
        path: Checkpoint file.
        state: If given, restore into it: ``state.model`` (strict), ``state.optimizer``
            and ``state.scheduler`` (which must be built beforehand, e.g. with the same
            factories passed to ``fit``), ``epoch``, ``step`` and ``metrics``.
        restore_rng: Also restore the torch/numpy/python RNG states (needed for a
            resumed run to match an uninterrupted one).

    Returns:
        The raw checkpoint dict (``extra`` holds the caller's data).

    Raises:
        ValueError: Unknown checkpoint version, or a missing optimizer/scheduler to
            restore into.
    """
    payload = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: unsupported checkpoint version {payload.get('version')!r}")
    if state is not None:
        state.model.load_state_dict(payload["model"])
        if payload["optimizer"] is not None:
            if state.optimizer is None:
                raise ValueError(f"{path} holds optimizer state but state.optimizer is None")
            state.optimizer.load_state_dict(payload["optimizer"])
        if payload["scheduler"] is not None:
            if state.scheduler is None:
                raise ValueError(f"{path} holds scheduler state but state.scheduler is None")
            state.scheduler.load_state_dict(payload["scheduler"])
        state.epoch = int(payload["epoch"])
        state.step = int(payload["step"])
        state.metrics = dict(payload["metrics"])
    if restore_rng:
        _set_rng_state(payload["rng"])
    return payload
