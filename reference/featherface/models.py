"""Model registry of the FeatherFace family: builders, checkpoint loading, pruning layer groups.

``build_model(name, **kwargs)`` builds one of :data:`MODEL_NAMES`; :func:`load_weights` loads a
checkpoint strictly, accepting the official formats (biubug6 RetinaFace ``.pth``, the official
FeatherFace V1 key names with ``thop`` leftovers, ``{"state_dict": ...}`` wrappers, DataParallel
``module.`` prefixes). The layer-group tables are plain data (turned into
``compresskit.LayerGroupSpec`` by the task): fnmatch globs over the names of the modules that
*produce* the channels (conv / linear), with the pruning-rate bounds of the Nano-B seed design.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compresskit.models.bypass import drop_bypassed
from compresskit.models.released import resolve_weights
from compresskit.models.weights import check_state_dict

from .backbone import load_pretrained_backbone
from .featherface_v1 import FeatherFaceV1, convert_official_state_dict
from .nano_b import FeatherFaceNanoB
from .retinaface import RetinaFaceMnet

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "retinaface_mnet025": RetinaFaceMnet,
    "featherface_v1": FeatherFaceV1,
    "nano_b": FeatherFaceNanoB,
}
MODEL_NAMES: tuple[str, ...] = tuple(sorted(_BUILDERS))

# output convs of the detection heads: their channels are the model outputs, never pruned
HEAD_OUTPUT_PATTERNS: list[str] = ["ClassHead.*.conv1x1", "BboxHead.*.conv1x1", "LandmarkHead.*.conv1x1"]

# Nano-B: six groups and bounds of shared/seeds/nano_b_architecture.md.
# Gating convs whose outputs multiply / add onto a trunk tensor (``*.channel_gate.fc2``,
# ``semantic.*.inject_fc2``, ``semantic.*.guide``, ``scale_decoupling.*``) are deliberately not
# listed: their channels are the trunk's and follow the trunk producer's group.
NANO_B_LAYER_GROUPS: list[dict[str, Any]] = [
    {"name": "backbone_early", "patterns": ["body.stage1.*"], "bounds": (0.0, 0.4)},
    {"name": "backbone_late", "patterns": ["body.stage2.*", "body.stage3.*"], "bounds": (0.1, 0.6)},
    {"name": "efficient_cbam",
     "patterns": ["backbone_cbam.*.channel_gate.fc1", "fpn_cbam.*.channel_gate.fc1",
                  "assn.channel_gate.fc1", "semantic.*.inject_fc1"],
     "bounds": (0.1, 0.6)},
    {"name": "efficient_bifpn", "patterns": ["bifpn.*"], "bounds": (0.1, 0.6)},
    {"name": "grouped_ssh", "patterns": ["ssh?.conv5X5_1.0", "ssh?.conv7X7_2.0"], "bounds": (0.1, 0.6)},
    # the convs whose outputs (concatenated by SSH) feed the heads
    {"name": "detection_heads", "patterns": ["ssh?.conv3X3.0", "ssh?.conv5X5_2.0", "ssh?.conv7x7_3.0"],
     "bounds": (0.0, 0.3)},
]
# protect these outputs in Nano-B: heads, the 3-way scale softmax of ASSN, 1-channel spatial gates
NANO_B_PROTECT_PATTERNS: list[str] = HEAD_OUTPUT_PATTERNS + ["assn.scale_conv", "*.spatial_gate.conv"]

# FeatherFace V1 with the same bounds. The SSH convs are deformable: their ``regular_conv`` is
# the producer; offset / modulator convs must keep all outputs (see the protect list).
FEATHERFACE_V1_LAYER_GROUPS: list[dict[str, Any]] = [
    {"name": "backbone_early", "patterns": ["body.stage1.*"], "bounds": (0.0, 0.4)},
    {"name": "backbone_late", "patterns": ["body.stage2.*", "body.stage3.*"], "bounds": (0.1, 0.6)},
    {"name": "cbam", "patterns": ["backbone_cbam.*.channel_gate.fc1", "bifpn_cbam.*.channel_gate.fc1"],
     "bounds": (0.1, 0.6)},
    {"name": "bifpn", "patterns": ["bifpn.*"], "bounds": (0.1, 0.6)},
    {"name": "ssh", "patterns": ["ssh?.conv*.0.regular_conv", "ssh?_shuffle.reduce", "ssh?_shuffle.depthwise"], "bounds": (0.1, 0.6)},
    # the last conv before the heads: the shuffle block's expanding 1x1
    {"name": "detection_heads", "patterns": ["ssh?_shuffle.expand"], "bounds": (0.0, 0.3)},
]
FEATHERFACE_V1_PROTECT_PATTERNS: list[str] = HEAD_OUTPUT_PATTERNS + [
    "*.offset_conv", "*.modulator_conv", "*.spatial_gate.conv"]

# RetinaFace-mnet0.25 (no seed design: bounds chosen so that 35% of the parameters is reachable).
# SSH's concatenated outputs feed the heads directly; the FPN's added maps are coupled sets.
RETINAFACE_LAYER_GROUPS: list[dict[str, Any]] = [
    {"name": "backbone_early", "patterns": ["body.stage1.*"], "bounds": (0.0, 0.6)},
    {"name": "backbone_late", "patterns": ["body.stage2.*", "body.stage3.*"], "bounds": (0.0, 0.9)},
    {"name": "fpn", "patterns": ["fpn.*"], "bounds": (0.0, 0.9)},
    {"name": "ssh", "patterns": ["ssh?.conv5X5_1.0", "ssh?.conv7X7_2.0"], "bounds": (0.0, 0.9)},
    {"name": "detection_heads", "patterns": ["ssh?.conv3X3.0", "ssh?.conv5X5_2.0", "ssh?.conv7x7_3.0"],
     "bounds": (0.0, 0.9)},
]
RETINAFACE_PROTECT_PATTERNS: list[str] = list(HEAD_OUTPUT_PATTERNS)

_PROFILER_SUFFIXES = ("total_ops", "total_params")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


def build_model(name: str, pretrained_backbone: str | Path | None = None,
                weights: str | Path | None = None, **kwargs: Any) -> nn.Module:
    """Build a detector of the FeatherFace family.

    Args:
        name: one of :data:`MODEL_NAMES` (``"retinaface_mnet025"``, ``"featherface_v1"``,
            ``"nano_b"``).
        pretrained_backbone: optional ``mobilenetV1X0.25_pretrain.tar`` loaded into ``body``.
        weights: optional full-model checkpoint, loaded with :func:`load_weights`.
        **kwargs: passed to the model class (``nano_b`` accepts ``channels``).

    Returns:
        The model (train mode).

    Raises:
        ValueError: unknown name or bad checkpoint.

    Example:
        >>> model = build_model("featherface_v1")
        >>> sum(p.numel() for p in model.parameters())
        592371
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; valid: {sorted(_BUILDERS)}")
    model = _BUILDERS[name](**kwargs)
    model.onnx_metadata = deployment_metadata()  # written into exports (compresskit.deploy.export.model_metadata)
    if pretrained_backbone is not None:
        load_pretrained_backbone(model.body, pretrained_backbone)
    if weights is not None:
        load_weights(model, resolve_weights(name, weights))  # "released": fetched and hash-checked
    return model


def deployment_metadata() -> dict[str, str]:
    """What an exported detector of this family carries in its ONNX ``metadata_props``.

    The preprocessing of the RetinaFace test script (BGR, minus ``(104, 117, 123)``, scale 1, nominal
    640x640) and the prior layout and variances needed to decode the outputs, so that
    ``compresskit quantize``, ``detect`` and ``web/`` read everything from the file.
    """
    from compresskit.deploy.export import Preprocessing

    from .box_coder import VARIANCES
    from .data.widerface import BGR_MEAN
    from .priors import DEFAULT_MIN_SIZES, DEFAULT_STEPS

    priors = {"min_sizes": [list(sizes) for sizes in DEFAULT_MIN_SIZES], "steps": list(DEFAULT_STEPS),
              "variances": list(VARIANCES), "order": "level,row,column,anchor"}
    return {**Preprocessing("BGR", BGR_MEAN, 1.0, (640, 640)).to_metadata(),
            "detector.kind": "retinaface", "detector.outputs": "bbox_deltas,cls_logits,landmark_deltas",
            "detector.priors": json.dumps(priors)}


def _extract_state_dict(checkpoint: object, path: Path) -> Mapping[str, torch.Tensor]:
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{path}: expected a state dict (or a dict holding one), got "
                         f"{type(checkpoint).__name__}; save with torch.save(model.state_dict(), path)")
    for key in _WRAPPER_KEYS:
        if isinstance(checkpoint.get(key), Mapping):
            return checkpoint[key]
    return checkpoint


def _is_onnx(path: Path) -> bool:
    """An ``.onnx`` name, or a protobuf ModelProto's first field (``ir_version``, tag 0x08) in a non-zip file."""
    if path.suffix.lower() == ".onnx":
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(2)
    except OSError:
        return False
    return len(head) == 2 and head[0] == 0x08 and head[1] < 0x20  # torch.save files start with "PK" (zip)


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a checkpoint into ``model`` strictly (every key used, every shape equal).

    Accepts a plain state dict or one wrapped under ``state_dict`` / ``model_state_dict`` /
    ``model``; strips ``module.`` prefixes and ``thop``'s ``total_ops`` / ``total_params``
    entries; for :class:`FeatherFaceV1`, renames official keys (``bacbkbone_0_cbam`` ...); for a
    model built with bypassed blocks (``bypass=[...]``), drops the file's entries of those blocks.

    Args:
        model: a model from :func:`build_model`.
        path: the checkpoint file (loaded with ``weights_only=True`` on CPU).

    Returns:
        ``model``, for chaining.

    Raises:
        ValueError: the file does not hold weights for this architecture; the message names the
            file, the first mismatching keys and what to do.
    """
    path = Path(path)
    if _is_onnx(path):
        raise ValueError(f"{path}: this is an ONNX file, not torch weights: pass it as the model "
                         f"(e.g. 'compresskit detect {path} IMAGES'), not after 'NAME:'")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unreadable / pickled objects: say which file and why, in one line
        first_line = next(iter(str(error).strip().splitlines()), type(error).__name__)
        raise ValueError(f"{path}: cannot be read as a weights-only torch checkpoint ({first_line}); "
                         "re-save it with torch.save(model.state_dict(), path)") from None
    state = {key.removeprefix("module."): value
             for key, value in _extract_state_dict(checkpoint, path).items()
             if key.rsplit(".", 1)[-1] not in _PROFILER_SUFFIXES}
    if isinstance(model, FeatherFaceV1):
        state = convert_official_state_dict(state)
    state = drop_bypassed(model, state)  # a full model's file into the same model with blocks bypassed
    check_state_dict(model, state, path, hint=f"; build the model the file was saved from (build_model names: "
                                               f"{list(MODEL_NAMES)}), or for a pruned model use compresskit's load_pruned")
    model.load_state_dict(state, strict=True)
    return model
