"""The figure a user picks a model from: dev AP (hard) against measured latency for every model of one or more
``bench_real_pruning.py`` results files, with the unpruned models and YuNet-n as points and the Pareto front
(fastest model at each accuracy) drawn through them.

Latency is each file's interleaved ONNX Runtime median (640x640, 1 thread: ``bench_real_pruning.py --latency
FILE``), shown as a ratio to the unpruned RetinaFace *of the same file* (files timed at different times compare
through that ratio only). Each pruned model is drawn twice when it has both: a hollow marker after removal (no
training) and a filled one after recovery; the front uses every point.

    .venv/bin/python benchmarks/pareto_figure.py benchmarks/logs/real_pruning_data.json \\
        "benchmarks/logs/real_pruning.json=before:" --out benchmarks/real_pruning_pareto.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def points(data: dict[str, Any], tag: str = "") -> list[dict[str, Any]]:
    """Every (model, stage) of one results file with a latency ratio and an AP: label, ratio, hard AP, stage
    (``tag`` is put before every method name, to tell files apart)."""
    rows = [r for r in data["rows"] if "ort_interleaved" in r]
    unpruned = next((r["ort_interleaved"]["median_ms"] for r in rows if r["method"] == "unpruned"), None)
    if unpruned is None:
        raise SystemExit("pareto_figure: the file has no timed 'unpruned' row: run bench_real_pruning.py --latency FILE")
    found = []
    for row in rows:
        ratio = row["ort_interleaved"]["median_ms"] / unpruned
        budget = row.get("budget")
        method = f"{tag}{row['method']}"
        label = method if not isinstance(budget, float) else f"{method} {100 * budget:.0f}%"
        stages = (("removed", "ap_removed"), ("recovered", "ap_finetuned")) if row.get("ap_removed") else (
            ("released", "ap_finetuned"),)  # an unpruned model: its own AP
        for stage, key in stages:
            if row.get(key):
                found.append({"label": label, "method": method, "ratio": ratio, "hard": row[key]["hard"],
                              "stage": stage, "params": row["params"]})
    for name, peer in data.get("peers", {}).items():
        found.append({"label": name, "method": name, "ratio": peer["median_ms"] / unpruned, "hard": peer["ap"]["hard"],
                      "stage": "peer", "params": peer["params"]})
    return found


def front(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points no other point beats on both axes (faster and at least as accurate), by latency."""
    best: list[dict[str, Any]] = []
    for point in sorted(found, key=lambda p: (p["ratio"], -p["hard"])):
        if not best or point["hard"] > best[-1]["hard"]:
            best.append(point)
    return best


def draw(found: list[dict[str, Any]], out: Path) -> None:
    figure, axes = plt.subplots(figsize=(8, 5.5))
    methods = sorted({p["method"] for p in found})
    colours = {m: plt.get_cmap("tab20")(i % 20) for i, m in enumerate(methods)}
    for method in methods:
        for stage, fill in (("removed", "none"), ("recovered", None), ("released", None), ("peer", None)):
            chosen = [p for p in found if p["method"] == method and p["stage"] == stage]
            if chosen:
                star = stage in ("peer", "released")
                axes.scatter([p["ratio"] for p in chosen], [p["hard"] for p in chosen], s=120 if star else 60,
                             marker="*" if star else "o", edgecolors=colours[method],
                             facecolors=fill or colours[method],
                             label=f"{method} ({'no training' if stage == 'removed' else stage})")
    best = front(found)
    axes.plot([p["ratio"] for p in best], [p["hard"] for p in best], "k--", lw=1, label="Pareto front")
    for point in best:
        axes.annotate(f"{point['label']} ({point['params'] / 1000:.0f}K)", (point["ratio"], point["hard"]),
                      textcoords="offset points", xytext=(5, -10), fontsize=7)
    ratios = [p["ratio"] for p in found]
    if max(ratios) > 4 * min(ratios):
        axes.set_xscale("log")
    axes.set_xlabel("ONNX Runtime latency, 640x640, 1 thread (x unpruned RetinaFace-mnet0.25)")
    axes.set_ylabel("WIDER FACE dev AP, hard (%)")
    axes.set_title("RetinaFace-mnet0.25 compressed: accuracy against measured latency")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="+", help="bench_real_pruning.py results files (timed), each optionally "
                        "FILE=TAG: TAG is put before its method names")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "real_pruning_pareto.png")
    args = parser.parse_args(argv)
    found = []
    for argument in args.results:
        path, _, tag = argument.partition("=")
        found += points(json.loads(Path(path).read_text()), f"{tag} " if tag else "")
    draw(found, args.out)
    for point in front(found):
        print(f"front: {point['label']:<28} {point['stage']:<10} x{point['ratio']:.2f}  hard {point['hard']:.2f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
