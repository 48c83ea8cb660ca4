"""``report.md`` and its plots, written from a run directory alone.

The report reads only files the run wrote (see :mod:`compresskit.run.workspace` for the layout) and
skips sections whose files are absent, so it can be regenerated at any time: ``python -c "from
compresskit.report import write_report; write_report('runs/x')"``. Each section is one function
``section(run: RunFiles, plots: Path) -> lines`` that may draw its figure (:mod:`compresskit.report.plots`);
:data:`SECTIONS` lists them in report order.

Besides ``plots/*.png`` it writes ``metrics.csv``: ``metrics.jsonl`` as one CSV table (a column per
key, blank where a phase does not log it), for spreadsheets and plotting tools.

The search section names the objective (from the recipe: what a trial trains and how it is scored)
and marks the chosen trial, in the text, in a table of every trial and in the trace plot.

Caveats:
    Latency is the median of 20 CPU forward passes of one example input after 3
    warm-up calls (``compresskit.deploy.benchmark.measure``) in this process; it is
    indicative only (thread count and machine load change it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compresskit.report.plots import (
    MODEL_ORDER,
    chosen_trial,
    plot_channels,
    plot_comparison,
    plot_schedule,
    plot_search_trace,
    plot_training,
)
from compresskit.utils.atomic import atomic_write_text

__all__ = ["SECTIONS", "RunFiles", "data_summary", "describe_objective", "write_metrics_csv", "write_report"]


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


def describe_objective(recipe: Mapping[str, Any]) -> str:
    """What a search trial is scored by, from the resolved recipe (see :mod:`compresskit.run.phases.rate_search`)."""
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


@dataclass(frozen=True)
class RunFiles:
    """What the report reads from a run directory (``None`` / empty where a file is absent)."""

    run_dir: Path
    recipe: dict[str, Any]
    state: dict[str, Any]
    evaluation: dict[str, Any] | None
    rates: dict[str, Any] | None
    channels: dict[str, Any] | None
    schedule: dict[str, Any] | None
    search: dict[str, Any] | None
    records: list[dict[str, Any]]
    onnxruntime: dict[str, Any] | None = None

    @property
    def phases(self) -> dict[str, Any]:
        """The completed phases' summaries (``state.json``)."""
        return self.state.get("phases", {})

    @classmethod
    def read(cls, run_dir: Path) -> RunFiles:
        """Read every file the report uses from ``run_dir``."""
        import yaml

        recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text()) if (run_dir / "recipe.yaml").exists() else {}
        return cls(run_dir=run_dir, recipe=recipe, state=_read_json(run_dir / "state.json") or {"phases": {}},
                   evaluation=_read_json(run_dir / "evaluation.json"), rates=_read_json(run_dir / "rates.json"),
                   channels=_read_json(run_dir / "channels.json"), schedule=_read_json(run_dir / "schedule.json"),
                   search=_read_json(run_dir / "search.json"), records=_read_jsonl(run_dir / "metrics.jsonl"),
                   onnxruntime=_read_json(run_dir / "onnxruntime_latency.json"))


def _header(run: RunFiles, plots: Path) -> list[str]:
    recipe = run.recipe
    lines = [f"# Compression report: {recipe.get('name', run.run_dir.name)}", ""]
    lines.append(f"Task `{recipe.get('task')}`, student `{(recipe.get('student') or {}).get('model')}`"
                 + (f", teacher `{recipe['teacher']['model']}`" if recipe.get("teacher") else "")
                 + (f", profile `{recipe['profile']}`" if recipe.get("profile") else "")
                 + f", seed {recipe.get('seed')}. The resolved recipe is `recipe.yaml`.")
    if run.state.get("data"):  # what the pre-flight data check counted (compresskit.run.plan.check_data)
        lines += ["", f"Data (checked before training): {data_summary(run.state['data'])}."]
    lines.append("")
    return lines


def _comparison(run: RunFiles, plots: Path) -> list[str]:
    evaluation = run.evaluation
    if not evaluation:
        return []
    plot_comparison(evaluation, plots / "comparison.png")
    metric_names = list(next(iter(evaluation.values()))["metrics"])
    rows = []
    for name in [n for n in MODEL_ORDER if n in evaluation]:
        item = evaluation[name]
        rows.append([name, f"{item['params']:,}", f"{item['macs']:,}" if item.get("macs") is not None else "n/a",
                     f"{item['latency_ms']:.2f}", *[f"{item['metrics'][m]:.4f}" for m in metric_names]])
    lines = ["## Before and after", ""]
    lines += _table(["model", "params", "MACs", "latency ms (CPU)", *metric_names], rows)
    if "student" in evaluation and "pruned" in evaluation:
        ratio = evaluation["pruned"]["params"] / max(1, evaluation["student"]["params"])
        lines += ["", f"The pruned student keeps {ratio:.1%} of the student's parameters."]
    lines += _onnxruntime_line(run.onnxruntime)
    removed = (run.phases.get("remove") or {}).get("metrics")
    if removed:
        lines += ["", "Right after physical removal, before fine-tuning: "
                  + ", ".join(f"{k} {float(v):.4f}" for k, v in removed.items()) + "."]
    return lines + ["", "![comparison](plots/comparison.png)", ""]


def _onnxruntime_line(timing: dict[str, Any] | None) -> list[str]:
    """The deployment speed-up: the models timed with ONNX Runtime side by side (``onnxruntime_latency.json``)."""
    if not timing:
        return []
    if "skipped" in timing:
        return ["", f"ONNX Runtime latency not measured: {timing['skipped']}."]
    shape = "x".join(str(d) for d in timing["input_shapes"][0])
    times = ", ".join(f"{name} {ms:.2f} ms ({timing['ratio'][name]:.2f}x)" for name, ms in timing["median_ms"].items())
    return ["", f"ONNX Runtime, input {shape}, {timing['threads']} thread(s), the models interleaved over "
                f"{timing['rounds']} rounds (median; ratio: median of per-round ratios to the unpruned student): "
                f"{times}. The latency column above is eager PyTorch at the task's example input."]


def _rates(run: RunFiles, plots: Path) -> list[str]:
    rates = run.rates
    if not rates:
        return []
    lines = ["## Pruning rates", "", f"Source: {rates.get('source', 'n/a')}."]
    if "predicted_params" in rates:
        lines.append(f"Predicted parameters: {rates['predicted_params']:,}; best objective "
                     f"{rates.get('objective', float('nan')):.4f} over {rates.get('trials', '?')} trials.")
    if "bypass" in rates:  # search.bypass: the blocks the search switched off
        lines.append(f"Bypassed blocks: {', '.join(rates['bypass']) or 'none'}.")
    lines += [""] + _table(["layer group", "rate"], [[k, f"{v:.3f}"] for k, v in rates["rates"].items()])
    return lines + [""]


def _search(run: RunFiles, plots: Path) -> list[str]:
    search = run.search
    if not search or not search.get("trials"):
        return []
    trials = search["trials"]
    plot_search_trace(trials, search.get("budget"), plots / "search_trace.png", "task loss")
    chosen = chosen_trial(trials)
    best = trials[chosen]
    lines = ["## Search trace", "", f"Method `{search.get('method')}`, budget {search.get('budget')}.",
             "", f"Objective (lower is better): {describe_objective(run.recipe)}.",
             "", f"Chosen: trial {chosen + 1} ({best.get('kind')}), objective {float(best['objective']):.4f}, "
             f"{int(best['predicted_params']):,} predicted parameters (marked ★ below and in the plot).",
             "", "![search](plots/search_trace.png)", ""]
    groups = list(best.get("rates", {}))
    lines += _table(["trial", "kind", *groups, "predicted params", "objective", "seconds", ""],
                    [[i + 1, t.get("kind", ""), *[f"{float(t['rates'].get(g, 0.0)):.3f}" for g in groups],
                      f"{int(t['predicted_params']):,}", f"{float(t['objective']):.4f}",
                      f"{float(t.get('seconds', 0.0)):.1f}", "★ chosen" if i == chosen else ""]
                     for i, t in enumerate(trials)])
    return lines + [""]


def _schedule(run: RunFiles, plots: Path) -> list[str]:
    if not run.schedule:
        return []
    plot_schedule(run.schedule["rates"], plots / "schedule.png")
    return ["## Soft-pruning schedule", "",
            f"Filters are re-ranked and re-zeroed every {run.schedule.get('step_every', 1)} epoch(s).",
            "", "![schedule](plots/schedule.png)", ""]


def _channels(run: RunFiles, plots: Path) -> list[str]:
    channels = run.channels
    if not channels:
        return []
    plot_channels(channels["before"], channels["after"], plots / "channels.png")
    changed = [[n, b, channels["after"].get(n, 0)] for n, b in channels["before"].items()
               if channels["after"].get(n) != b]
    lines = ["## Channels per layer", "", f"{len(changed)} of {len(channels['before'])} layers changed.",
             "", "![channels](plots/channels.png)", ""]
    return lines + (_table(["layer", "before", "after"], changed) + [""] if changed else [])


def _training(run: RunFiles, plots: Path) -> list[str]:
    if not run.records:
        return []
    plot_training(run.records, plots / "training.png")
    write_metrics_csv(run.records, run.run_dir / "metrics.csv")
    return ["## Training", "", "Training loss per epoch (top) and validation metrics (bottom); every "
            "number is in `metrics.csv` (and `metrics.jsonl`).", "", "![training](plots/training.png)", ""]


def _export(run: RunFiles, plots: Path) -> list[str]:
    export = run.phases.get("export")
    if not export or "max_abs_difference" not in export:
        return []
    return ["## Export", "",
            f"`{export['path']}` ({export['bytes']:,} bytes), input {export['input_shapes']}; "
            f"largest |ONNX Runtime - PyTorch| difference {export['max_abs_difference']:.2e}.", ""]


def _quantize(run: RunFiles, plots: Path) -> list[str]:
    quantize = run.phases.get("quantize")
    if not quantize or "int8" not in quantize:
        return []
    names = list(quantize["fp32"]["metrics"])
    settings = quantize.get("latency_settings", {})
    lines = ["## INT8 quantization", "",
             f"ONNX Runtime static QDQ, {quantize.get('weights', 'per-channel')} INT8 weights, "
             f"calibration {quantize['calibration']}. "
             f"Latency: ONNX Runtime CPU, {settings.get('threads', 1)} thread, input "
             f"{settings.get('input_shape')}, median (p90) of {settings.get('rounds')} interleaved rounds; "
             f"INT8 speed-up {quantize['speedup']:.2f}x.", ""]
    lines += _table(["model", "bytes", "latency ms", *names],
                    [[quantize[k]["path"], f"{quantize[k]['bytes']:,}",
                      f"{quantize[k]['latency_ms']:.2f} ({quantize[k]['latency_p90_ms']:.2f})",
                      *[f"{quantize[k]['metrics'][m]:.4f}" for m in names]] for k in ("fp32", "int8")])
    return lines + [""]


def _phases(run: RunFiles, plots: Path) -> list[str]:
    phases = run.phases
    if not phases:
        return []
    rows = [[n, p.get("seconds", ""), p.get("peak_rss_mb", "n/a")] for n, p in phases.items()]
    total = sum(float(p.get("seconds", 0.0)) for p in phases.values())
    peaks = [float(p["peak_rss_mb"]) for p in phases.values() if "peak_rss_mb" in p]
    rows.append(["**total**", f"{total:.1f}", f"{max(peaks):.1f}" if peaks else "n/a"])
    return ["## Phases", ""] + _table(["phase", "seconds", "peak RSS MiB (process, so far)"], rows) + [""]


#: The report's sections, in order; each returns its Markdown lines (none when its files are absent).
SECTIONS: tuple[Callable[[RunFiles, Path], list[str]], ...] = (
    _header, _comparison, _rates, _search, _schedule, _channels, _training, _export, _quantize, _phases)


def write_report(run_dir: str | os.PathLike[str]) -> Path:
    """Write ``report.md`` and ``plots/*.png`` for a run directory.

    Args:
        run_dir: A directory written by :func:`compresskit.run.driver.run`.

    Returns:
        The path of ``report.md``.

    Example:
        >>> write_report("runs/shapes_classifier")  # doctest: +SKIP
        PosixPath('runs/shapes_classifier/report.md')
    """
    run_dir = Path(run_dir)
    plots = run_dir / "plots"
    plots.mkdir(exist_ok=True)
    run = RunFiles.read(run_dir)
    lines = [line for section in SECTIONS for line in section(run, plots)]
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
