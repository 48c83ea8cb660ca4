"""compresskit: structured pruning that never breaks a model.

Public API (see docs/DESIGN.md for the contracts between modules):

* groups: :func:`find_groups`, :class:`LayerGroupSpec`, :class:`ChannelGroup`, :class:`ChannelShuffle`,
  :class:`ChannelPool`
* importance: :func:`fpgm`, :func:`magnitude`, :data:`IMPORTANCES`
* pruning: :class:`SoftFPGM`, :func:`prune`, :func:`remove_zeroed`, :class:`PruneSummary`
* budget: :func:`count_params`, :func:`count_macs`, :class:`ParamPredictor`, :func:`predict_params`,
  :func:`channel_summary`
* persistence: :func:`save_pruned`, :func:`load_pruned`
* schedules: :func:`polynomial`, :func:`linear`, :func:`constant`, :func:`join`, :data:`SCHEDULES`
* export: :func:`export_onnx`, :func:`check_onnx`, :func:`export_model` (ONNX / TorchScript, dynamic axes,
  :class:`Preprocessing` metadata); deployment: ``compresskit.quantize`` (INT8), ``compresskit.benchmark``
  (latency), ``compresskit.runtime`` (ONNX Runtime sessions) are imported on use
"""

from .budget import ParamPredictor, channel_summary, count_macs, count_params, predict_params
from .export import Preprocessing, check_onnx, export_model, export_onnx
from .groups import (
    ChannelGroup,
    ChannelGroups,
    LayerGroupSpec,
    SkippedCoupling,
    UnprunableWarning,
    cell_removal_counts,
    channels_to_remove,
    find_groups,
)
from .importance import IMPORTANCES, fpgm, magnitude
from .persist import UntrustedBuilderError, load_pruned, save_pruned, trust_builder
from .prune import PruneSummary, SoftFPGM, prune, remove_zeroed
from .schedules import SCHEDULES, constant, join, linear, polynomial
from .pool import ChannelPool
from .shuffle import ChannelShuffle

__all__ = [
    "IMPORTANCES",
    "SCHEDULES",
    "ChannelGroup",
    "ChannelGroups",
    "ChannelPool",
    "ChannelShuffle",
    "LayerGroupSpec",
    "ParamPredictor",
    "Preprocessing",
    "PruneSummary",
    "SkippedCoupling",
    "SoftFPGM",
    "UnprunableWarning",
    "UntrustedBuilderError",
    "channel_summary",
    "cell_removal_counts",
    "channels_to_remove",
    "check_onnx",
    "constant",
    "count_macs",
    "count_params",
    "export_model",
    "export_onnx",
    "find_groups",
    "fpgm",
    "join",
    "linear",
    "load_pruned",
    "magnitude",
    "polynomial",
    "predict_params",
    "prune",
    "remove_zeroed",
    "save_pruned",
    "trust_builder",
]
