"""The ONNX Runtime latency floor of Nano-B at given pruning bounds, beside YuNet-n.

Prunes a freshly built Nano-B and times it with ONNX Runtime at 640x640 (1 intra-op thread,
median of interleaved rounds, timed by ``bench_models.measure_latency``) next to
``yunet_n_640_640.onnx``, *in one call*: every candidate and YuNet-n share the same rounds, so
the ratios are paired. Weights don't change latency, so random initialisation is fine here.

Without options it is the floor inside the seeds' bounds: every layer group at its upper bound
(the smallest model the search may return). Options reproduce the latency profile's student and
explore beyond the seeds' bounds:

* ``--bypass p3`` switches off the P3 blocks (the ``latency`` profile's list; or give block names),
* ``--channel-multiple 8`` rounds kept widths as ``prune.channel_multiple`` does,
* ``--upper GROUP=RATE`` widens (or narrows) a group's upper bound,
* ``--grid GROUP=R1,R2,...`` gives candidate rates of a group (the cartesian product is timed;
  groups without a grid sit at their upper bound),
* ``--fill GROUP --min-params N``: in every candidate, ``GROUP`` takes the highest rate (steps of
  0.01 inside its bounds) that keeps at least ``N`` parameters (exact ``ParamPredictor``), i.e. the
  parameter budget is spent on that group and the others are pruned as the grid says.

The table lists every candidate (rates, params, GMACs, median ms, paired ratios to YuNet-n and to the
unpruned student, timed in the same rounds) and names the fastest one with at least ``--min-params``
parameters. The ratio to the unpruned student is the unit of ``search.budget.max_latency_ratio``.

    .venv/bin/python benchmarks/latency_floor.py [--weights-dir ../shared/data/weights]
    .venv/bin/python benchmarks/latency_floor.py --bypass p3 --channel-multiple 8 \\
        --upper backbone_early=0.75 --grid backbone_early=0.4,0.75 --fill backbone_late --min-params 120000
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from bench_latency import P3_BLOCKS, student  # this folder is sys.path[0] when run as a script
from bench_models import BenchModel, measure_latency, paired_ratio

from compresskit import count_macs, count_params, export_onnx
from compresskit.pruning import prune
from compresskit.pruning.budget import ParamPredictor

ROOT = Path(__file__).resolve().parents[1]
SIZE = 640
FILL_STEP = 0.01
UNPRUNED = "unpruned student"


def _group_rates(items: list[str], option: str) -> dict[str, list[float]]:
    """``["g=0.1,0.2", ...]`` -> ``{"g": [0.1, 0.2]}``."""
    parsed = {}
    for item in items:
        name, _, values = item.partition("=")
        try:
            parsed[name] = [float(v) for v in values.split(",")]
        except ValueError:
            raise SystemExit(f"{option} {item!r}: expected GROUP=RATE[,RATE...]") from None
        if not values or any(not 0.0 <= v < 1.0 for v in parsed[name]):
            raise SystemExit(f"{option} {item!r}: rates must be in [0, 1)")
    return parsed


def _fill(predictor: ParamPredictor, rates: dict[str, float], group: str, bounds: tuple[float, float],
          min_params: int) -> dict[str, float] | None:
    """``rates`` with ``group`` at the highest rate in ``bounds`` keeping >= ``min_params`` (None: none does)."""
    steps = np.arange(bounds[0], bounds[1] + 1e-9, FILL_STEP)
    feasible = [rate for rate in steps if predictor({**rates, group: float(rate)}) >= min_params]
    return {**rates, group: round(float(max(feasible)), 2)} if feasible else None


def candidates(bounds: dict[str, tuple[float, float]], grid: dict[str, list[float]], predictor: ParamPredictor,
               fill: str | None, min_params: int) -> list[dict[str, float]]:
    """Rate vectors: the grid's product, other groups at their upper bound, ``fill`` spent on the parameters."""
    for name, values in grid.items():
        low, high = bounds[name]
        if any(not low <= v <= high for v in values):
            raise SystemExit(f"--grid {name}: rates {values} outside its bounds [{low}, {high}] (widen with --upper)")
    names = list(grid)
    vectors, seen = [], set()
    for values in itertools.product(*(grid[n] for n in names)):
        rates = {name: high for name, (_, high) in bounds.items()} | dict(zip(names, values))
        if fill is not None:
            rates = _fill(predictor, rates, fill, bounds[fill], min_params)
            if rates is None:
                continue
        key = tuple(rates.values())
        if key not in seen:
            seen.add(key)
            vectors.append(rates)
    return vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-dir", type=Path, default=ROOT.parent / "shared" / "data" / "weights")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--bypass", nargs="*", default=[], metavar="BLOCK",
                        help="blocks to switch off ('p3': the latency profile's P3 blocks)")
    parser.add_argument("--channel-multiple", type=int, default=1)
    parser.add_argument("--upper", action="append", default=[], metavar="GROUP=RATE",
                        help="upper bound of a layer group (default: the seeds' bound)")
    parser.add_argument("--grid", action="append", default=[], metavar="GROUP=R1,R2",
                        help="candidate rates of a layer group (default: its upper bound)")
    parser.add_argument("--fill", metavar="GROUP", help="spend the parameters down to --min-params on this group")
    parser.add_argument("--min-params", type=int, default=120_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    yunet = args.weights_dir / "yunet_n_640_640.onnx"
    if not yunet.is_file():
        raise SystemExit(f"{yunet}: not found (give --weights-dir)")
    bypass = [name for block in args.bypass for name in (P3_BLOCKS if block == "p3" else [block])]

    model, groups, bounds = student(bypass, args.channel_multiple)
    for name, values in _group_rates(args.upper, "--upper").items():
        if name not in bounds or len(values) != 1:
            raise SystemExit(f"--upper {name}={values}: expected one rate of a layer group in {list(bounds)}")
        bounds[name] = (bounds[name][0], values[0])
    grid = _group_rates(args.grid, "--grid")
    unknown = sorted(set(grid) - set(bounds)) + ([args.fill] if args.fill and args.fill not in bounds else [])
    if unknown:
        raise SystemExit(f"unknown layer group(s) {unknown}; valid: {list(bounds)}")
    predictor = ParamPredictor(model, groups)
    vectors = candidates(bounds, grid, predictor, args.fill, args.min_params)
    if not vectors:
        raise SystemExit(f"no candidate keeps {args.min_params:,} parameters")
    print(f"student: Nano-B, bypass {bypass or 'none'}, channel multiple {args.channel_multiple}, "
          f"{count_params(model):,} params unpruned; bounds {bounds}")

    x = torch.zeros(1, 3, SIZE, SIZE)
    rows: dict[str, tuple[dict[str, float], int, int]] = {}
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_models = []
        for index, rates in enumerate(vectors):
            candidate, candidate_groups = copy.deepcopy((model, groups))
            prune(candidate, torch.randn(1, 3, 128, 128), rates, groups=candidate_groups)
            name = f"candidate {index}"
            path = export_onnx(candidate, x, Path(folder) / f"{index}.onnx")
            rows[name] = (rates, count_params(candidate), count_macs(candidate, (x,)))
            assert rows[name][1] == predictor(rates), "ParamPredictor disagrees with the pruned model"
            onnx_models.append(BenchModel(name, "pruned build_model('nano_b')", onnx_path=path))
        unpruned = export_onnx(model, x, Path(folder) / "unpruned.onnx")
        onnx_models.append(BenchModel(UNPRUNED, f"build_model('nano_b', bypass={bypass})", onnx_path=unpruned))
        onnx_models.append(BenchModel("YuNet-n", str(yunet), onnx_path=yunet))
        load = os.getloadavg()[0]
        # ONNX only (no torch model): 1 thread, 3 warm-up calls, interleaved rounds
        times = measure_latency(onnx_models, SIZE, threads=[1], warmup=3, repeats=args.rounds, loads={})["ort/1t"]
    print(f"ORT 1 thread, {SIZE}x{SIZE}, {args.rounds} interleaved rounds; load average {load:.2f} -> "
          f"{os.getloadavg()[0]:.2f}")
    names = list(bounds)
    print(f"| candidate | rates ({', '.join(names)}) | params | GMACs | median ms | vs YuNet-n | vs unpruned student |")
    print("|---|---|---:|---:|---:|---:|---:|")
    order = sorted(rows, key=lambda n: np.median(times[n]))
    ratio = lambda name, reference: paired_ratio(times[name], times[reference])  # noqa: E731
    for name in order:
        rates, params, macs = rows[name]
        print(f"| {name} | {', '.join(f'{rates[n]:.2f}' for n in names)} | {params:,} | {macs / 1e9:.3f} | "
              f"{np.median(times[name]):.1f} | {ratio(name, 'YuNet-n'):.2f}x | {ratio(name, UNPRUNED):.2f} |")
    print(f"| {UNPRUNED} | all 0 | {count_params(model):,} | {count_macs(model, (x,)) / 1e9:.3f} | "
          f"{np.median(times[UNPRUNED]):.1f} | {ratio(UNPRUNED, 'YuNet-n'):.2f}x | 1.00 |")
    print(f"| YuNet-n | - | 73,840 (ONNX) | 0.542 | {np.median(times['YuNet-n']):.1f} | 1.00x | "
          f"{ratio('YuNet-n', UNPRUNED):.2f} |")
    eligible = [n for n in order if rows[n][1] >= args.min_params]
    if eligible:
        best = eligible[0]
        print(f"fastest with >= {args.min_params:,} params: {best} ({rows[best][1]:,} params, "
              f"{ratio(best, 'YuNet-n'):.2f}x YuNet-n, {ratio(best, UNPRUNED):.2f}x the unpruned student) "
              f"at rates {rows[best][0]}")
    else:
        print(f"no candidate has >= {args.min_params:,} params")


if __name__ == "__main__":
    main()
