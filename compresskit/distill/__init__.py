"""Knowledge distillation as loss terms: :class:`WeightedDistillation` over model outputs (:mod:`.losses`),
:func:`feature_loss` over named intermediate outputs recorded by :class:`FeatureRecorder` (:mod:`.features`),
and :func:`match_kept_channels`, which teacher channels a pruned student kept (:mod:`.kept_channels`).
"""

from compresskit.utils.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "KINDS": "losses", "REGRESSION_LOSSES": "losses", "WeightedDistillation": "losses",
    "FeatureRecorder": "features", "feature_loss": "features", "find_modules": "features",
    "match_kept_channels": "kept_channels",
})
