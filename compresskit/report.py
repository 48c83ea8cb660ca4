"""``report.md`` and its plots, written from a run directory alone.

The report reads only files the pipeline wrote (see :mod:`compresskit.pipeline`
for the layout) and skips sections whose files are absent, so it can be
regenerated at any time: ``python -c "from compresskit.report import
write_report; write_report('runs/x')"``.

Plots use matplotlib's object API on the Agg canvas (no global backend change):

* ``plots/comparison.png`` -- params, MACs, latency and the headline metric of
  teacher, student and pruned student;
* ``plots/channels.png`` -- output channels per conv/linear layer, before vs after;
* ``plots/search_trace.png`` -- the rate-search trace (objective and predicted size);
* ``plots/schedule.png`` -- the soft-pruning rate of each layer group per epoch;
* ``plots/training.png`` -- the training loss per epoch of every phase and, below it, the
  validation metrics logged at each epoch (``val/...``);
* ``metrics.csv`` -- ``metrics.jsonl`` as one CSV table (a column per key, blank where a phase
  does not log it), for spreadsheets and plotting tools.

The search section names the objective (from the recipe: what a trial trains and how it is scored)
and marks the chosen trial, in the text, in a table of every trial and in the trace plot.

Caveats:
    Latency is the median of 20 CPU forward passes of one example input after 3
    warm-up calls (``compresskit.benchmark.measure``) in this process; it is
    indicative only (thread count and machine load change it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._atomic import atomic_path, atomic_write_text

__all__ = ["describe_objective", "write_metrics_csv", "write_report"]

MODEL_ORDER = ("teacher", "student", "pruned")


def _figure(width: float, height: float) -> Any:
    from compresskit._optional import require

    require("matplotlib")  # a missing extra is one line naming compresskit[report]
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), constrained_layout=True)
    FigureCanvasAgg(figure)
    return figure


def _read_json(path: Path) -> Any | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            records.append(json.loads(line))
    return records


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
        ax.bar_label(bars, labels=[_short(v) for v in values], fontsize=8)
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
    chosen = _chosen_trial(trials)
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
    """Soft-pruning rate per epoch, one line per layer group."""
    figure = _figure(6, 3.5)
    ax = figure.subplots()
    for name, values in rates.items():
        ax.plot(range(len(values)), values, marker="o", markersize=3, label=name)
    ax.set_xlabel("epochs completed")
    ax.set_ylabel("pruning rate")
    ax.set_ylim(0, 1)
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


def _chosen_trial(trials: Sequence[Mapping[str, Any]]) -> int:
    """Index of the trial the search returns: the lowest objective, the first of equals."""
    return min(range(len(trials)), key=lambda i: float(trials[i]["objective"]))


def describe_objective(recipe: Mapping[str, Any]) -> str:
    """What a search trial is scored by, from the resolved recipe (see ``pipeline.search_problem``)."""
    trial = (recipe.get("search") or {}).get("trial") or {}
    train = (f"the candidate is pruned one-shot, trained {trial.get('epochs', '?')} epoch(s) on "
             f"{float(trial.get('subset', 1.0)):.0%} of the training data")
    if trial.get("holdout") is not None:
        return (f"{train} minus a held-out {float(trial['holdout']):.0%}, then scored by the task loss on that "
                "held-out part (validation images are never seen by the search)")
    batches = trial.get("max_val_batches")
    return (f"{train}, then scored by the task loss on "
            + (f"the first {batches} validation batches" if batches else "the validation data"))


def write_metrics_csv(records: Sequence[Mapping[str, Any]], path: Path) -> None:
    """``metrics.jsonl`` records as CSV: ``phase, epoch`` first, then every other key in first-seen order."""
    import csv
    import io

    columns = list(dict.fromkeys(["phase", "epoch", *(key for record in records for key in record)]))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    atomic_write_text(path, buffer.getvalue())


def _short(value: float) -> str:
    if value != value:  # nan
        return "n/a"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.2f}M"
    if abs(value) >= 1e3:
        return f"{value / 1e3:.1f}K"
    return f"{value:.3g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def data_summary(data: dict[str, Any]) -> str:
    """One line from a task's ``check_data`` counts, e.g. ``train_images 12,880, train_dropped_faces
    {width or height <= 0: 3}``."""
    parts = []
    for key, value in data.items():
        if isinstance(value, dict):
            value = "{" + ", ".join(f"{k}: {v:,}" if isinstance(v, int) else f"{k}: {v}" for k, v in value.items()) + "}"
        elif isinstance(value, int):
            value = f"{value:,}"
        parts.append(f"{key} {value}")
    return ", ".join(parts)


def write_report(run_dir: str | os.PathLike[str]) -> Path:
    """Write ``report.md`` and ``plots/*.png`` for a run directory.

    Args:
        run_dir: A directory written by :func:`compresskit.pipeline.run`.

    Returns:
        The path of ``report.md``.

    Example:
        >>> write_report("runs/shapes_classifier")  # doctest: +SKIP
        PosixPath('runs/shapes_classifier/report.md')
    """
    import yaml

    run_dir = Path(run_dir)
    plots = run_dir / "plots"
    plots.mkdir(exist_ok=True)
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text()) if (run_dir / "recipe.yaml").exists() else {}
    state = _read_json(run_dir / "state.json") or {"phases": {}}
    evaluation = _read_json(run_dir / "evaluation.json")
    rates = _read_json(run_dir / "rates.json")
    channels = _read_json(run_dir / "channels.json")
    schedule = _read_json(run_dir / "schedule.json")
    search = _read_json(run_dir / "search.json")
    records = _read_jsonl(run_dir / "metrics.jsonl")
    phases = state.get("phases", {})

    lines = [f"# Compression report: {recipe.get('name', run_dir.name)}", ""]
    lines.append(f"Task `{recipe.get('task')}`, student `{(recipe.get('student') or {}).get('model')}`"
                 + (f", teacher `{recipe['teacher']['model']}`" if recipe.get("teacher") else "")
                 + (f", profile `{recipe['profile']}`" if recipe.get("profile") else "")
                 + f", seed {recipe.get('seed')}. The resolved recipe is `recipe.yaml`.")
    if state.get("data"):  # what the pre-flight data check counted (compresskit.plan.check_data)
        lines += ["", f"Data (checked before training): {data_summary(state['data'])}."]
    lines.append("")

    if evaluation:
        plot_comparison(evaluation, plots / "comparison.png")
        metric_names = list(next(iter(evaluation.values()))["metrics"])
        rows = []
        for name in [n for n in MODEL_ORDER if n in evaluation]:
            item = evaluation[name]
            rows.append([name, f"{item['params']:,}",
                         f"{item['macs']:,}" if item.get("macs") is not None else "n/a",
                         f"{item['latency_ms']:.2f}",
                         *[f"{item['metrics'][m]:.4f}" for m in metric_names]])
        lines += ["## Before and after", ""]
        lines += _table(["model", "params", "MACs", "latency ms (CPU)", *metric_names], rows)
        if "student" in evaluation and "pruned" in evaluation:
            ratio = evaluation["pruned"]["params"] / max(1, evaluation["student"]["params"])
            lines += ["", f"The pruned student keeps {ratio:.1%} of the student's parameters."]
        removed = (phases.get("remove") or {}).get("metrics")
        if removed:
            lines += ["", "Right after physical removal, before fine-tuning: "
                      + ", ".join(f"{k} {float(v):.4f}" for k, v in removed.items()) + "."]
        lines += ["", "![comparison](plots/comparison.png)", ""]

    if rates:
        lines += ["## Pruning rates", "", f"Source: {rates.get('source', 'n/a')}."]
        if "predicted_params" in rates:
            lines.append(f"Predicted parameters: {rates['predicted_params']:,}; best objective "
                         f"{rates.get('objective', float('nan')):.4f} over {rates.get('trials', '?')} trials.")
        lines += [""] + _table(["layer group", "rate"], [[k, f"{v:.3f}"] for k, v in rates["rates"].items()])
        lines.append("")
    if search and search.get("trials"):
        trials = search["trials"]
        plot_search_trace(trials, search.get("budget"), plots / "search_trace.png", "task loss")
        chosen = _chosen_trial(trials)
        best = trials[chosen]
        lines += ["## Search trace", "", f"Method `{search.get('method')}`, budget {search.get('budget')}.",
                  "", f"Objective (lower is better): {describe_objective(recipe)}.",
                  "", f"Chosen: trial {chosen + 1} ({best.get('kind')}), objective {float(best['objective']):.4f}, "
                  f"{int(best['predicted_params']):,} predicted parameters (marked ★ below and in the plot).",
                  "", "![search](plots/search_trace.png)", ""]
        groups = list(best.get("rates", {}))
        lines += _table(["trial", "kind", *groups, "predicted params", "objective", "seconds", ""],
                        [[i + 1, t.get("kind", ""), *[f"{float(t['rates'].get(g, 0.0)):.3f}" for g in groups],
                          f"{int(t['predicted_params']):,}", f"{float(t['objective']):.4f}",
                          f"{float(t.get('seconds', 0.0)):.1f}", "★ chosen" if i == chosen else ""]
                         for i, t in enumerate(trials)])
        lines.append("")
    if schedule:
        plot_schedule(schedule["rates"], plots / "schedule.png")
        lines += ["## Soft-pruning schedule", "",
                  f"Filters are re-ranked and re-zeroed every {schedule.get('step_every', 1)} epoch(s).",
                  "", "![schedule](plots/schedule.png)", ""]
    if channels:
        plot_channels(channels["before"], channels["after"], plots / "channels.png")
        changed = [[n, b, channels["after"].get(n, 0)] for n, b in channels["before"].items()
                   if channels["after"].get(n) != b]
        lines += ["## Channels per layer", "", f"{len(changed)} of {len(channels['before'])} layers changed.",
                  "", "![channels](plots/channels.png)", ""]
        if changed:
            lines += _table(["layer", "before", "after"], changed) + [""]
    if records:
        plot_training(records, plots / "training.png")
        write_metrics_csv(records, run_dir / "metrics.csv")
        lines += ["## Training", "", "Training loss per epoch (top) and validation metrics (bottom); every "
                  "number is in `metrics.csv` (and `metrics.jsonl`).", "", "![training](plots/training.png)", ""]
    export = phases.get("export")
    if export and "max_abs_difference" in export:
        lines += ["## Export", "",
                  f"`{export['path']}` ({export['bytes']:,} bytes), input {export['input_shapes']}; "
                  f"largest |ONNX Runtime - PyTorch| difference {export['max_abs_difference']:.2e}.", ""]
    quantize = phases.get("quantize")
    if quantize and "int8" in quantize:
        names = list(quantize["fp32"]["metrics"])
        settings = quantize.get("latency_settings", {})
        lines += ["## INT8 quantization", "",
                  f"ONNX Runtime static QDQ, {quantize.get('weights', 'per-channel')} INT8 weights, "
                  f"calibration {quantize['calibration']}. "
                  f"Latency: ONNX Runtime CPU, {settings.get('threads', 1)} thread, input "
                  f"{settings.get('input_shape')}, median (p90) of {settings.get('rounds')} interleaved rounds; "
                  f"INT8 speed-up {quantize['speedup']:.2f}x.", ""]
        lines += _table(["model", "bytes", "latency ms", *names],
                        [[quantize[k]["path"], f"{quantize[k]['bytes']:,}",
                          f"{quantize[k]['latency_ms']:.2f} ({quantize[k]['latency_p90_ms']:.2f})",
                          *[f"{quantize[k]['metrics'][m]:.4f}" for m in names]] for k in ("fp32", "int8")])
        lines.append("")
    if phases:
        lines += ["## Phases", ""]
        rows = [[n, p.get("seconds", ""), p.get("peak_rss_mb", "n/a")] for n, p in phases.items()]
        total = sum(float(p.get("seconds", 0.0)) for p in phases.values())
        peaks = [float(p["peak_rss_mb"]) for p in phases.values() if "peak_rss_mb" in p]
        rows.append(["**total**", f"{total:.1f}", f"{max(peaks):.1f}" if peaks else "n/a"])
        lines += _table(["phase", "seconds", "peak RSS MiB (process, so far)"], rows)
        lines.append("")

    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
