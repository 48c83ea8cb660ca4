"""INT8 (ONNX Runtime static QDQ) vs FP32: CPU latency at 640x640 and WIDERFace AP on the real dev split.

For each model (the released RetinaFace-mnet0.25 weights — a model trained on real faces — and any
``--pruned PATH`` compresskit checkpoints, e.g. a Nano-B pruned by ``compresskit run``):

1. export a dynamic-shape FP32 ONNX file with ``compresskit.deploy.export.export_model`` (checked against torch
   at 640x640 and 2x704x672), preprocessing in its metadata;
2. quantize it with ``compresskit.deploy.quantize.quantize_onnx`` (QDQ, per-channel INT8 weights, UINT8
   activations, ``--method`` calibration on the first ``--calibration`` WIDER *train* images resized
   to 640x640 — never the val images that are scored);
3. time torch eager, ORT FP32 and ORT INT8 with ``compresskit.deploy.benchmark.benchmark_models`` (batch 1,
   640x640, interleaved rounds, median / p90, ratios as medians of per-round ratios) for each
   ``--threads``;
4. unless ``--no-ap``: AP easy / medium / hard of ORT FP32 and ORT INT8 on the 194 val images at original
   size (``featherface.detect.evaluate_widerface``, confidence 0.02, NMS 0.4; one ORT thread).

Run (from the repository root; the AP step takes a few CPU minutes per model):
    .venv/bin/python benchmarks/bench_int8.py --write-results
    .venv/bin/python benchmarks/bench_int8.py --no-ap --rounds 5      # latency only, quick
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from compresskit.deploy.benchmark import benchmark_models
from compresskit.deploy.export import Preprocessing, export_model, read_metadata
from compresskit.deploy.quantize import calibration_images, quantize_onnx
from compresskit.deploy.runtime import OrtModule
from compresskit.deploy.sensitivity import auto_exclude
from compresskit.models.persist import load_pruned

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from bench_models import _command, machine_notes, publish  # noqa: E402

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
SECTION_TITLE = "INT8 quantization (ONNX Runtime)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder (read in place)")
    parser.add_argument("--pruned", action="append", default=[], metavar="PATH", help="compresskit checkpoint")
    parser.add_argument("--calibration", type=int, default=32, help="calibration images (WIDER train)")
    parser.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"])
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                        help="also measure a partial INT8 file keeping these ONNX nodes in FP32; repeatable")
    parser.add_argument("--auto-exclude", type=float, default=None, metavar="BUDGET",
                        help="also measure INT8 auto-exclude (compresskit.deploy.sensitivity.auto_exclude) at this "
                             "output-error budget")
    parser.add_argument("--max-nodes", type=int, default=16, help="auto-exclude: most nodes kept in FP32")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--no-ap", action="store_true", help="skip the AP evaluation")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args(argv)

    from featherface.detect import evaluate_widerface
    from featherface.models import build_model

    data = Path(args.data)
    weights = data / "weights" / "retinaface_mnet025_official.pth"
    if not weights.is_file():
        sys.exit(f"bench_int8: {weights} not found (pass --data)")
    models = {"RetinaFace-mnet0.25 (released weights)": build_model("retinaface_mnet025", weights=weights).eval()}
    for path in args.pruned:
        models[f"pruned:{Path(path).stem}"] = load_pruned(path).eval()
    size = 640
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 50
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_int8_") as tmp:
        for name, model in models.items():
            fp32 = Path(tmp) / f"{len(results)}.onnx"
            int8 = Path(tmp) / f"{len(results)}.int8.onnx"
            partial = Path(tmp) / f"{len(results)}.partial.onnx"
            export = export_model(model, (example,), fp32, dynamic=True, atol=1e-3)
            preprocessing = Preprocessing.from_metadata(read_metadata(fp32))
            samples = calibration_images(data / "widerface" / "WIDER_train" / "images", preprocessing,
                                         args.calibration, (size, size))
            start = time.perf_counter()
            quantize_onnx(fp32, int8, samples, method=args.method)
            files = {"fp32": fp32, "int8": int8}
            if args.exclude:
                quantize_onnx(fp32, partial, samples, method=args.method, exclude=args.exclude)
                files["partial"] = partial
            if args.auto_exclude is not None:
                auto = auto_exclude(fp32, Path(tmp) / f"{len(results)}.auto.onnx", samples, budget=args.auto_exclude,
                                    method=args.method, max_nodes=args.max_nodes,
                                    progress=lambda line: print(line, file=sys.stderr, flush=True))
                files["auto"] = auto.path
            entry = {"model": name, "export_checks": export.checks, "quantize_seconds": time.perf_counter() - start,
                     "bytes": {k: v.stat().st_size for k, v in files.items()}, "latency": {}, "ap": {}}
            if args.auto_exclude is not None:
                entry["auto_excluded"] = list(auto.excluded)
            for threads in args.threads:
                report = benchmark_models({"torch": model, **{f"ort {k}": v for k, v in files.items()}}, (example,),
                                          threads=threads, warmup=3, rounds=args.rounds)
                entry["latency"][threads] = {**report.to_dict(), "ratio_vs_fp32": report.ratios("ort fp32")}
                print(report.table("ort fp32"), file=sys.stderr, flush=True)
            if not args.no_ap:
                torch.set_num_threads(1)
                for label, path in files.items():
                    start = time.perf_counter()
                    ap = evaluate_widerface(OrtModule(path, threads=1), data / "widerface" / "WIDER_val" / "images",
                                            data / "widerface" / "ground_truth", progress=False)
                    entry["ap"][label] = {k: float(v) for k, v in ap.items()}
                    entry["ap"][f"{label}_seconds"] = time.perf_counter() - start
                    print(f"{name} {label}: AP {ap}", file=sys.stderr, flush=True)
            results.append(entry)
    publish(render(results, args), results, args.json, args.write_results, SECTION_TITLE)
    return 0


def render(results: list[dict], args: argparse.Namespace) -> str:
    machine = machine_notes()
    auto = args.auto_exclude is not None
    kept = "; ".join(f"{entry['model']}: " + (", ".join(f"`{n}`" for n in entry["auto_excluded"]) or "none")
                     for entry in results) if auto else ""
    partial = f"INT8 except {', '.join(f'`{g}`' for g in args.exclude)} (kept FP32)" if args.exclude else None
    lines = [f"Command: `{_command()}`  ",
             f"Calibration: {args.calibration} WIDER train images resized to 640x640, {args.method}; QDQ, per-channel "
             f"INT8 weights, UINT8 activations. Latency: batch 1, 640x640, {args.rounds} interleaved rounds after 3 "
             f"warm-up calls, median (p90) ms; speed-up = 1 / median of per-round INT8/FP32 ratios. Machine: "
             f"{machine['cpu']}, nproc {machine['nproc']} (shared with other jobs), onnxruntime {machine['onnxruntime']}."
             + (f" Partial: {partial}." if partial else "")
             + (f" Auto: INT8 auto-exclude at output-error budget {args.auto_exclude:g}, kept in FP32: {kept}."
                if auto else ""), "",
             "| model | threads | torch eager | ORT FP32 | ORT INT8 | INT8 speed-up (goal >= 1.5x) |"
             + (" ORT partial | partial speed-up |" if partial else "") + (" ORT auto | auto speed-up |" if auto else ""),
             "|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if partial else "") + ("---:|---:|" if auto else "")]
    for entry in results:
        for threads, lat in entry["latency"].items():
            ms, ratio = lat["latency_ms"], lat["ratio_vs_fp32"]
            cell = {k: f"{ms[k]['median']:.1f} ({ms[k]['p90']:.1f})" for k in ms}
            row = (f"| {entry['model']} | {threads} | {cell['torch']} | {cell['ort fp32']} | {cell['ort int8']} | "
                   f"{1 / ratio['ort int8']:.2f}x |")
            if partial:
                row += f" {cell['ort partial']} | {1 / ratio['ort partial']:.2f}x |"
            if auto:
                row += f" {cell['ort auto']} | {1 / ratio['ort auto']:.2f}x |"
            lines.append(row)
    if any(entry["ap"] for entry in results):
        subsets = ("easy", "medium", "hard")
        lines += ["", "WIDERFace AP on the 194 real val images (original size, confidence 0.02, NMS 0.4), ONNX Runtime, "
                  "change against FP32 in AP points (goal: <= 0.5 lost per subset):", "",
                  "| model | file | AP easy / medium / hard | change |", "|---|---|---|---|"]
        for entry in results:
            ap = entry["ap"]
            for label in [k for k in ("fp32", "int8", "partial", "auto") if k in ap]:
                values = " / ".join(f"{100 * ap[label][s]:.2f}" for s in subsets)
                change = "—" if label == "fp32" else " / ".join(
                    f"{100 * (ap[label][s] - ap['fp32'][s]):+.2f}" for s in subsets)
                file = {"partial": partial, "auto": "INT8 auto-exclude"}.get(label, label.upper())
                lines.append(f"| {entry['model']} | {file} | {values} | {change} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
