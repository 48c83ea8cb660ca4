"""The figures of a run's report (``plots/*.png``), drawn with matplotlib's object API on the Agg canvas.

No global backend change: each figure gets its own ``FigureCanvasAgg``; matplotlib is imported on
first use (a missing extra is one line naming ``compresskit[report]``). Files are written atomically.

* :func:`plot_comparison` -- params, MACs, latency and the headline metric of teacher, student and
  pruned student;
* :func:`plot_channels` -- output channels per conv/linear layer, before vs after;
* :func:`plot_search_trace` -- the rate-search trace (objective and predicted size), chosen trial starred;
* :func:`plot_schedule` -- the soft-pruning rate of each layer group per epoch;
* :func:`plot_training` -- the training loss per epoch of every phase and, below it, the validation
  metrics logged at each epoch (``val/...``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from compresskit.utils.atomic import atomic_path

__all__ = ["MODEL_ORDER", "chosen_trial", "plot_channels", "plot_comparison", "plot_schedule", "plot_search_trace",
           "plot_training", "short_number"]

MODEL_ORDER = ("teacher", "student", "pruned")


def _figure(width: float, height: float) -> Any:
    from compresskit.utils.optional import require

    require("matplotlib")  # a missing extra is one line naming compresskit[report]
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), constrained_layout=True)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: Path) -> None:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, format=path.suffix.lstrip(".") or "png")


def plot_comparison(evaluation: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    """Bars of params, MACs, latency and the headline metric per model."""
    names = [n for n in MODEL_ORDER if n in evaluation] + [n for n in evaluation if n not in MODEL_ORDER]
    headline = next(iter(evaluation[names[0]]["metrics"]), None)
    panels = [("params", "parameters"), ("macs", "MACs"), ("latency_ms", "latency (ms, CPU)")]
    if headline is not None:
        panels.append((headline, headline))
    figure = _figure(3.2 * len(panels), 3.2)
    axes = figure.subplots(1, len(panels))
    colours = ["#4c72b0", "#55a868", "#c44e52", "#8172b2"]
    for ax, (key, title) in zip(axes, panels):
        values = [evaluation[n].get(key, evaluation[n]["metrics"].get(key)) for n in names]
        values = [float("nan") if v is None else float(v) for v in values]
        bars = ax.bar(names, values, color=colours[: len(names)])
        ax.bar_label(bars, labels=[short_number(v) for v in values], fontsize=8)
        ax.set_title(title)
    _save(figure, path)


def plot_channels(before: Mapping[str, int], after: Mapping[str, int], path: Path) -> None:
    """Horizontal bars: output channels per layer before and after pruning."""
    layers = list(before)
    height = max(3.0, 0.22 * len(layers) + 1)
    figure = _figure(7, height)
    ax = figure.subplots()
    positions = range(len(layers))
    ax.barh([p + 0.2 for p in positions], [before[n] for n in layers], height=0.4, label="before")
    ax.barh([p - 0.2 for p in positions], [after.get(n, 0) for n in layers], height=0.4, label="after")
    ax.set_yticks(list(positions), layers, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("output channels")
    ax.legend()
    _save(figure, path)


def plot_search_trace(trials: Sequence[Mapping[str, Any]], budget: Sequence[int] | None, path: Path,
                      objective: str = "objective") -> None:
    """Objective per trial with the best so far (the chosen trial starred), and predicted parameters per trial."""
    figure = _figure(7, 5)
    top, bottom = figure.subplots(2, 1, sharex=True)
    steps = list(range(1, len(trials) + 1))
    values = [float(t["objective"]) for t in trials]
    chosen = chosen_trial(trials)
    top.scatter(steps, values, s=14, label="trial")
    top.plot(steps, [min(values[: i + 1]) for i in range(len(values))], color="k", label="best so far")
    top.scatter([chosen + 1], [values[chosen]], s=120, marker="*", color="tab:red", zorder=3,
                label=f"chosen: trial {chosen + 1}")
    top.set_ylabel(f"{objective}\n(lower is better)")
    top.legend()
    bottom.scatter(steps, [t["predicted_params"] for t in trials], s=14)
    bottom.scatter([chosen + 1], [trials[chosen]["predicted_params"]], s=120, marker="*", color="tab:red", zorder=3)
    if budget:
        for bound in budget:
            bottom.axhline(bound, color="grey", linestyle="--", linewidth=0.8)
    bottom.set_ylabel("predicted params")
    bottom.set_xlabel("trial")
    _save(figure, path)


def plot_schedule(rates: Mapping[str, Sequence[float]], path: Path) -> None:
    """Soft-pruning rate per epoch, one line per layer group (many groups, e.g. ``prune.split_groups``: the
    legend goes below the axes in two columns and the figure grows with it)."""
    many = len(rates) > 10
    figure = _figure(6, 3.5 + (0.09 * len(rates) if many else 0))
    ax = figure.subplots()
    for name, values in rates.items():
        ax.plot(range(len(values)), values, marker="o", markersize=3, label=name)
    ax.set_xlabel("epochs completed")
    ax.set_ylabel("pruning rate")
    ax.set_ylim(0, 1)
    if many:
        figure.legend(loc="outside lower center", ncol=2, fontsize=6)
    else:
        ax.legend(fontsize=8)
    _save(figure, path)


def plot_training(records: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Mean training loss per epoch, one panel per phase; below, the validation metrics of each phase."""
    phases: dict[str, dict[int, float]] = {}
    validation: dict[str, dict[str, dict[int, float]]] = {}  # phase -> metric -> epoch -> value
    for record in records:
        loss = record.get("epoch_loss", record.get("loss"))
        if loss is not None:
            phases.setdefault(record["phase"], {})[int(record["epoch"])] = float(loss)
        for key, value in record.items():
            if key.startswith("val/") and isinstance(value, (int, float)):
                validation.setdefault(record["phase"], {}).setdefault(key[4:], {})[int(record["epoch"])] = float(value)
    if not phases:
        return
    rows = 2 if validation else 1
    figure = _figure(3.2 * len(phases), 3 * rows)
    axes = figure.subplots(rows, len(phases), squeeze=False)
    for column, (phase, by_epoch) in enumerate(phases.items()):
        ax = axes[0][column]
        epochs = sorted(by_epoch)
        ax.plot(epochs, [by_epoch[e] for e in epochs], marker="o", markersize=3)
        ax.set_title(phase)
        ax.set_xlabel("epoch")
        if rows == 2:
            below = axes[1][column]
            for metric, values in validation.get(phase, {}).items():
                points = sorted(values)
                below.plot(points, [values[e] for e in points], marker="o", markersize=3, label=metric)
            if validation.get(phase):
                below.legend(fontsize=7)
            below.set_xlabel("epoch")
    axes[0][0].set_ylabel("training loss")
    if rows == 2:
        axes[1][0].set_ylabel("validation")
    _save(figure, path)


def chosen_trial(trials: Sequence[Mapping[str, Any]]) -> int:
    """Index of the trial the search returns: the lowest objective, the first of equals."""
    return min(range(len(trials)), key=lambda i: float(trials[i]["objective"]))


def short_number(value: float) -> str:
    """``value`` in a bar label: ``1.23M``, ``4.5K``, ``0.123`` or ``n/a`` for NaN."""
    if value != value:  # nan
        return "n/a"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.2f}M"
    if abs(value) >= 1e3:
        return f"{value / 1e3:.1f}K"
    return f"{value:.3g}"
