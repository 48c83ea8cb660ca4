"""Per-group rate search under a budget: BoTorch Expected Improvement (LogEI), random search, or global allocation.

:mod:`.bayesian` holds :func:`search_rates` and :func:`random_search`; ``_space`` maps rates to the
unit cube and back, ``_proposal`` proposes candidates that meet the budget. :mod:`.global_allocation`
chooses rates from per-channel costs with no trials (:func:`allocate_rates`, greedy multiple-choice knapsack).
"""

from compresskit.utils.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "SearchResult": "bayesian", "Trial": "bayesian", "format_trial": "bayesian", "random_search": "bayesian",
    "search_rates": "bayesian",
    "Allocation": "global_allocation", "allocate_rates": "global_allocation",
    "layer_group_costs": "global_allocation", "rate_levels": "global_allocation",
})
