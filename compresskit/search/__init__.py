"""Per-group rate search under a budget: BoTorch Expected Improvement (LogEI) or random search.

:mod:`.bayesian` holds :func:`search_rates` and :func:`random_search`; ``_space`` maps rates to the
unit cube and back, ``_proposal`` proposes candidates that meet the budget.
"""

from compresskit.utils.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "SearchResult": "bayesian", "Trial": "bayesian", "format_trial": "bayesian", "random_search": "bayesian",
    "search_rates": "bayesian",
})
