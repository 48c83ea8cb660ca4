"""Pruning: rank channels, zero them on a schedule, remove them, count what is left.

* :mod:`.soft_fpgm` -- :class:`SoftFPGM` (soft filter pruning with FPGM, a training callback),
  :func:`prune` (one shot), :func:`remove_zeroed`;
* :mod:`.importance` -- :func:`fpgm`, :func:`magnitude` (one score per channel of a group);
* :mod:`.output_error` -- ``output_error``: channels chosen from data, by the consumers' output error their
  removal causes (greedy structured OBS over the consumers' input Gram matrices), :class:`SequentialSelection`;
* :mod:`.batchnorm` -- :func:`recalibrate_bn` (statistics re-estimated on calibration inputs), intercept folding;
* :mod:`.schedules` -- :func:`polynomial`, :func:`linear`, :func:`constant`, :func:`join` (epoch -> rate);
* :mod:`.reconstruct` -- least-squares refit of a pruned model's layers on unlabeled data;
* :mod:`.budget` -- :func:`count_params`, :func:`count_macs`, :class:`ParamPredictor` (exact, no model built);
* :mod:`.inspection` -- per-layer parameters, MACs and channels (``compresskit inspect``);
* :mod:`.stale` -- :class:`StaleOptimizerWarning` for optimizers built before a removal.
"""

from compresskit.utils.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "HISTORY_ATTRIBUTE": "soft_fpgm", "PruneSummary": "soft_fpgm", "SoftFPGM": "soft_fpgm", "prune": "soft_fpgm",
    "remove_zeroed": "soft_fpgm",
    "DATA_IMPORTANCE_NAMES": "importance", "IMPORTANCES": "importance", "Importance": "importance", "fpgm": "importance", "magnitude": "importance",
    "resolve_importance": "importance",
    "SCHEDULES": "schedules", "Schedule": "schedules", "constant": "schedules", "join": "schedules",
    "linear": "schedules", "make_schedule": "schedules", "polynomial": "schedules",
    "LayerFit": "reconstruct", "reconstruct": "reconstruct",
    "StaleOptimizerWarning": "stale", "retire": "stale",
    "LayerChange": "budget", "ParamPredictor": "budget", "channel_counts": "budget", "channel_summary": "budget",
    "count_macs": "budget", "count_params": "budget", "predict_params": "budget", "rates_by_layer_group": "budget",
    "following_batchnorms": "batchnorm", "recalibrate_bn": "batchnorm", "renormalized": "batchnorm",
    "DATA_IMPORTANCES": "output_error", "Elimination": "output_error", "OutputError": "output_error", "SequentialSelection": "output_error",
})
