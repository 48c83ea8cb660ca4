"""The run report: ``report.md``, ``metrics.csv`` and plots read from a run directory.

:mod:`.markdown` writes the report; :mod:`.plots` draws its figures (matplotlib, optional).
"""

from compresskit.utils.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "RunFiles": "markdown", "SECTIONS": "markdown", "data_summary": "markdown", "describe_objective": "markdown",
    "write_metrics_csv": "markdown", "write_report": "markdown",
    "MODEL_ORDER": "plots", "chosen_trial": "plots", "plot_channels": "plots", "plot_comparison": "plots",
    "plot_schedule": "plots", "plot_search_trace": "plots", "plot_training": "plots", "short_number": "plots",
})
