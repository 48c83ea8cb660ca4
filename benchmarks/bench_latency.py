"""Latency-aware compression of Nano-B (issue 8): the latency model's error, and searched models beside YuNet-n.

Three parts, all ONNX Runtime CPU, 1 intra-op thread, 640x640, timed by ``compresskit.deploy.benchmark.measure``:

1. ``accuracy``: for Nano-B and for Nano-B with its P3 blocks bypassed (the ``latency`` profile's
   student), a :class:`compresskit.deploy.latency.LatencyModel` is calibrated (fresh cache) and its prediction
   compared with direct measurement on 20 uniform random rate vectors inside the layer-group bounds;
   and 6 of those are measured again by a second, fresh model (the direct measurement's own noise).
2. ``models``: every run directory's ``final.pt`` (and the unpruned students, and YuNet-n) exported at
   640x640 and timed in *one* interleaved call: params, MACs, median / p90 ms, paired ratio to YuNet-n,
   latency and MAC ratios to the unpruned Nano-B, and the run's final AP.
3. ``pareto``: each run's ``search.json`` (same number of evaluated candidates) as (latency ratio to the
   unpruned Nano-B, search objective) points and their non-dominated front. Trials of a run without a
   latency budget get the latency the part-1 model of their student predicts.

    .venv/bin/python benchmarks/bench_latency.py \\
        --runs runs/featherface_nano_b runs/featherface_nano_b_latency [--weights-dir ../shared/data/weights]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from compresskit import count_macs, count_params, export_onnx, find_groups
from compresskit.deploy.benchmark import benchmark_models
from compresskit.deploy.latency import LatencyModel
from compresskit.models.bypass import fit_patterns, fit_specs
from featherface.detect import load_model
from featherface.models import NANO_B_PROTECT_PATTERNS, build_model
from featherface.task import layer_group_specs

ROOT = Path(__file__).resolve().parents[1]
SIZE = 640
P3_BLOCKS = ["scale_decoupling", "backbone_cbam.0", "semantic.0", "semantic.1", "semantic.2", "assn"]


def student(bypass: list[str], channel_multiple: int = 1):
    """Nano-B with ``bypass`` switched off, its (rounded) channel groups and the groups' bounds."""
    from compresskit.groups.find import round_channels

    model = build_model("nano_b", bypass=bypass).eval()
    specs = fit_specs(layer_group_specs("nano_b"), model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        groups = find_groups(model, torch.randn(1, 3, 128, 128), layer_groups=specs,
                             protect=fit_patterns(NANO_B_PROTECT_PATTERNS, model))
    if channel_multiple > 1:
        round_channels(groups, channel_multiple)
    return model, groups, {spec.name: tuple(spec.bounds) for spec in specs}


def accuracy(cache: Path, samples: int, rounds: int) -> dict[str, LatencyModel]:
    """Part 1: prediction vs direct measurement."""
    models = {}
    for label, bypass, multiple in (("Nano-B", [], 1), ("Nano-B, P3 blocks bypassed, widths x8", P3_BLOCKS, 8)):
        model, groups, bounds = student(bypass, multiple)
        latency = LatencyModel(model, groups, (1, 3, SIZE, SIZE), threads=1, cache_dir=cache / "a", name=label)
        latency.rounds = rounds
        started = time.perf_counter()
        latency.calibrate(bounds, samples=12, seed=0)
        calibration_s, calibrated = time.perf_counter() - started, latency.measurements
        generator = np.random.default_rng(1)
        names = list(bounds)
        vectors = [dict(zip(names, generator.uniform([bounds[n][0] for n in names], [bounds[n][1] for n in names])))
                   for _ in range(samples)]
        started = time.perf_counter()
        predicted = [latency.predict(r) for r in vectors]
        predict_us = (time.perf_counter() - started) / len(vectors) * 1e6
        measured = [latency.measure(r) for r in vectors]
        errors = np.abs(np.array(predicted) / np.array(measured) - 1.0)
        again = LatencyModel(model, groups, (1, 3, SIZE, SIZE), threads=1, cache_dir=cache / "b", name=label)
        again.rounds = rounds
        again.measure(0.0)  # its own reference first, then 6 of the same vectors
        repeat = np.abs(np.array([again.measure(r) for r in vectors[:6]]) / np.array(measured[:6]) - 1.0)
        print(f"\n{label}: unpruned {latency.unpruned_ms():.2f} ms; calibration {calibrated} "
              f"direct measurements, {calibration_s:.0f} s; prediction {predict_us:.0f} us per call")
        print("| rates (" + ", ".join(names) + ") | params | measured ms | predicted ms | error |")
        print("|---|---:|---:|---:|---:|")
        for rates, m, p in zip(vectors, measured, predicted):
            print(f"| {', '.join(f'{v:.2f}' for v in rates.values())} | {latency.predictor(rates):,} | {m:.2f} | "
                  f"{p:.2f} | {100 * (p / m - 1):+.1f}% |")
        print(f"median |error| {100 * np.median(errors):.1f}%, max {100 * errors.max():.1f}% over {samples} vectors; "
              f"direct re-measurement by a fresh model: median |difference| {100 * np.median(repeat):.1f}%, "
              f"max {100 * repeat.max():.1f}% over 6")
        models[label] = latency
    return models


def _final_ap(run: Path) -> str:
    try:
        metrics = json.loads((run / "evaluation.json").read_text())["pruned"]["metrics"]
    except (OSError, KeyError, ValueError):
        return "-"
    return "/".join(f"{metrics[k]:.2f}" for k in ("ap_easy", "ap_medium", "ap_hard") if k in metrics) or "-"


def side_by_side(runs: list[Path], yunet: Path, rounds: int) -> dict[str, float]:
    """Part 2: one interleaved measurement of every model. Returns name -> median ms."""
    folder = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    x = torch.zeros(1, 3, SIZE, SIZE)
    rows: dict[str, tuple[int | None, int | None, str]] = {}
    paths: dict[str, Path] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, model, ap in [("Nano-B unpruned", build_model("nano_b").eval(), "-"),
                                ("Nano-B unpruned, P3 bypassed", build_model("nano_b", bypass=P3_BLOCKS).eval(), "-")] + [
                                   (f"{run.name} final", load_model(str(run / "final.pt")), _final_ap(run))
                                   for run in runs]:
            paths[name] = export_onnx(model, x, folder / f"{len(paths)}.onnx")
            rows[name] = (count_params(model), count_macs(model, (x,)), ap)
    paths["YuNet-n"] = yunet
    rows["YuNet-n"] = (None, None, "-")
    load = os.getloadavg()
    report = benchmark_models(paths, (x,), threads=1, warmup=3, rounds=rounds)
    ratios = report.ratios("YuNet-n")
    to_unpruned = report.ratios("Nano-B unpruned")
    base_macs = rows["Nano-B unpruned"][1]
    print(f"\n{report.table('YuNet-n').splitlines()[0]}; load average before {load[0]:.2f}, after "
          f"{os.getloadavg()[0]:.2f}")
    print("| model | params | GMACs | median ms | p90 ms | vs YuNet-n | latency / unpruned | MACs / unpruned | "
          "final AP (easy/medium/hard) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, (params, macs, ap) in rows.items():
        latency = report.latencies[name]
        mac_ratio = f"{macs / base_macs:.2f}" if macs else "-"
        print(f"| {name} | {f'{params:,}' if params else '73,840 (ONNX)'} | {f'{macs / 1e9:.2f}' if macs else '0.54'} | "
              f"{latency.median_ms:.1f} | {latency.p90_ms:.1f} | {ratios[name]:.2f}x | {to_unpruned[name]:.2f} | "
              f"{mac_ratio} | {ap} |")
    return {name: lat.median_ms for name, lat in report.latencies.items()}


def _front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    front, best = [], float("inf")
    for latency, objective in sorted(points):
        if objective < best:
            front.append((latency, objective))
            best = objective
    return front


def pareto(runs: list[Path], models: dict[str, LatencyModel], medians: dict[str, float]) -> None:
    """Part 3: (latency ratio to the unpruned Nano-B, objective) of every evaluated candidate."""
    reduced_scale = medians["Nano-B unpruned, P3 bypassed"] / medians["Nano-B unpruned"]
    for run in runs:
        history = json.loads((run / "search.json").read_text())
        rates_file = json.loads((run / "rates.json").read_text())
        points = []
        for trial in history["trials"]:
            if trial.get("predicted_latency_ms") is not None:  # a latency-budget run: its reduced student
                ratio = trial["predicted_latency_ms"] / rates_file["latency"]["unpruned_ms"] * reduced_scale
            else:
                full = models["Nano-B"]
                ratio = full.predict(trial["rates"]) / full.unpruned_ms()
            points.append((ratio, trial["objective"]))
        front = _front(points)
        print(f"\n{run.name}: {len(points)} evaluated candidates; latency ratio to unpruned Nano-B "
              f"{min(p[0] for p in points):.2f}-{max(p[0] for p in points):.2f}; front (latency ratio, objective): "
              + ", ".join(f"({lat:.2f}, {obj:.3f})" for lat, obj in front))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="*", default=[])
    parser.add_argument("--weights-dir", type=Path, default=ROOT.parent / "shared" / "data" / "weights")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds per direct measurement")
    parser.add_argument("--side-rounds", type=int, default=30, help="interleaved rounds of part 2")
    args = parser.parse_args()
    torch.set_num_threads(1)
    yunet = args.weights_dir / "yunet_n_640_640.onnx"
    if not yunet.is_file():
        raise SystemExit(f"{yunet}: not found (give --weights-dir)")
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as cache:
        models = accuracy(Path(cache), args.samples, args.rounds)
        if args.runs:
            medians = side_by_side(args.runs, yunet, args.side_rounds)
            pareto(args.runs, models, medians)


if __name__ == "__main__":
    main()
