"""Knowledge distillation as a loss term: :class:`WeightedDistillation` (:mod:`.losses`).
"""

from compresskit.utils.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "KINDS": "losses", "REGRESSION_LOSSES": "losses", "WeightedDistillation": "losses",
})
