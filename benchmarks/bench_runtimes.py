"""Runtime x precision x model: ONNX Runtime and OpenVINO, FP32 / INT8 / INT8 auto-exclude, 640x640, 1 thread.

For each model (the released RetinaFace-mnet0.25 weights, YuNet-n from ``shared/data/weights`` and any
``--pruned PATH`` compresskit checkpoint, e.g. the Nano-B of ``compresskit run recipes/featherface_nano_b.yaml``):

1. FP32 ONNX: torch models exported with ``export_model(dynamic=True)`` twice, without and with the onnxslim
   simplification (node counts before / after; the simplified file passed the same ORT checks); YuNet-n is
   the released ONNX file as it is;
2. INT8 (``quantize_onnx``: QDQ, per-channel INT8 weights, UINT8 activations, minmax on the first
   ``--calibration`` WIDER *train* images at 640x640) and INT8 auto-exclude (``auto_exclude`` with
   ``--budget``: the nodes kept in FP32 are measured, not guessed);
3. every file timed in ONNX Runtime and in OpenVINO (``benchmark_models(runtimes=("ort", "openvino"))``: one
   input, interleaved rotated rounds, medians, 1 thread), speed-ups as 1 / median of per-round ratios
   against the same model's FP32 file in ONNX Runtime.

Run (from the repository root):
    .venv/bin/python benchmarks/bench_runtimes.py --pruned /tmp/before_default/final.pt --write-results
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from compresskit.deploy.benchmark import benchmark_models
from compresskit.deploy.export import Preprocessing, export_model, read_metadata, write_metadata
from compresskit.deploy.quantize import calibration_images, quantize_onnx
from compresskit.deploy.sensitivity import auto_exclude
from compresskit.deploy.simplify import count_nodes
from compresskit.models.persist import load_pruned

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from bench_models import _command, machine_notes, publish  # noqa: E402

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
SECTION_TITLE = "Runtimes: ONNX Runtime and OpenVINO, FP32 and INT8"
#: YuNet's input: BGR 0..255, no mean (opencv_zoo's own preprocessing).
YUNET_PREPROCESSING = Preprocessing("BGR", (0.0, 0.0, 0.0), 1.0, (640, 640))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder (read in place)")
    parser.add_argument("--pruned", action="append", default=[], metavar="PATH", help="compresskit checkpoint")
    parser.add_argument("--trust", action="append", default=[], metavar="MODULE",
                        help="builder module a --pruned checkpoint may import (e.g. reference.featherface.models)")
    parser.add_argument("--calibration", type=int, default=32, help="calibration images (WIDER train)")
    parser.add_argument("--budget", type=float, default=0.01, help="auto-exclude output-error budget")
    parser.add_argument("--max-nodes", type=int, default=16, help="auto-exclude: most nodes kept in FP32")
    parser.add_argument("--no-auto", action="store_true", help="skip INT8 auto-exclude (its per-node scan takes "
                        "a few CPU minutes per model)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    from featherface.models import build_model

    data = Path(args.data)
    example = torch.randn(1, 3, 640, 640, generator=torch.Generator().manual_seed(0)) * 50
    models: dict[str, torch.nn.Module | Path] = {
        "RetinaFace-mnet0.25 (released)": build_model(
            "retinaface_mnet025", weights=data / "weights" / "retinaface_mnet025_official.pth").eval(),
        "YuNet-n (released ONNX)": data / "weights" / "yunet_n_640_640.onnx"}
    for path in args.pruned:
        models[f"pruned Nano-B ({Path(path).parent.name}/{Path(path).name})"] = load_pruned(path, trust=args.trust).eval()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_runtimes_") as tmp:
        for index, (name, model) in enumerate(models.items()):
            results.append(_one_model(name, model, Path(tmp) / str(index), example, data, args))
            print(json.dumps(results[-1]["latency"]["ratio_vs_ort_fp32"]), file=sys.stderr, flush=True)
    publish(render(results, args), results, args.json, args.write_results, SECTION_TITLE)
    return 0


def _one_model(name: str, model: torch.nn.Module | Path, folder: Path, example: torch.Tensor, data: Path,
               args: argparse.Namespace) -> dict:
    folder.mkdir()
    fp32, nodes = folder / "fp32.onnx", {}
    if isinstance(model, Path):
        shutil.copy(model, fp32)
        write_metadata(fp32, YUNET_PREPROCESSING.to_metadata())
        nodes["exported"] = nodes["simplified"] = count_nodes(fp32)
    else:
        export_model(model, (example,), folder / "plain.onnx", dynamic=True, atol=1e-3, simplify=False)
        result = export_model(model, (example,), fp32, dynamic=True, atol=1e-3)
        simplified = result.simplified  # node counts of the export before and of the file now at fp32
        nodes = {"exported": simplified.nodes_before, "simplified": simplified.nodes_after, "kept": simplified.kept}
    preprocessing = Preprocessing.from_metadata(read_metadata(fp32))
    samples = calibration_images(data / "widerface" / "WIDER_train" / "images", preprocessing, args.calibration,
                                 (640, 640))
    files = {"FP32": fp32, "INT8": quantize_onnx(fp32, folder / "int8.onnx", samples)}
    start, auto = time.perf_counter(), None
    if not args.no_auto:
        auto = auto_exclude(fp32, folder / "auto.onnx", samples, budget=args.budget, max_nodes=args.max_nodes,
                            progress=lambda line: print(f"{name}: {line}", file=sys.stderr, flush=True))
        files["INT8 auto-exclude"] = auto.path
    if not isinstance(model, Path):
        files["FP32 unsimplified"] = folder / "plain.onnx"
    report = benchmark_models(files, (example,), threads=1, warmup=3, rounds=args.rounds, runtimes=("ort", "openvino"))
    print(report.table("FP32 [ort]"), file=sys.stderr, flush=True)
    return {"model": name, "nodes": nodes,
            "auto_exclude": auto and {"excluded": list(auto.excluded), "full_error": auto.full_error,
                                      "error": auto.error, "budget": auto.budget, "met": auto.met,
                                      "seconds": time.perf_counter() - start},
            "latency": {**report.to_dict(), "ratio_vs_ort_fp32": report.ratios("FP32 [ort]")}}


def render(results: list[dict], args: argparse.Namespace) -> str:
    machine = machine_notes()
    import openvino

    lines = [f"Command: `{_command()}`  ",
             f"Batch 1, 640x640, 1 thread, {args.rounds} interleaved rounds after 3 warm-up calls; median ms and, in "
             f"brackets, speed-up against the same model's ORT FP32 file (1 / median of per-round ratios). INT8: QDQ, "
             f"per-channel INT8 weights, UINT8 activations, minmax on {args.calibration} WIDER train images at 640x640; "
             f"auto-exclude: output-error budget {args.budget:g} (`compresskit quantize --auto-exclude`), at most "
             f"{args.max_nodes} nodes in FP32. OpenVINO runs the same .onnx files (CPU plugin, "
             f"INFERENCE_NUM_THREADS=1, one stream). Machine: {machine['cpu']}, nproc {machine['nproc']} (shared with "
             f"other jobs), onnxruntime {machine['onnxruntime']}, openvino {openvino.__version__.split('-')[0]}.", "",
             "| model | nodes exported -> simplified | runtime | FP32 unsimplified | FP32 | INT8 | INT8 auto-exclude |",
             "|---|---|---|---:|---:|---:|---:|"]
    for entry in results:
        ms, ratio = entry["latency"]["latency_ms"], entry["latency"]["ratio_vs_ort_fp32"]
        nodes = entry["nodes"]
        for runtime in ("ort", "openvino"):
            cells = []
            for label in ("FP32 unsimplified", "FP32", "INT8", "INT8 auto-exclude"):
                key = f"{label} [{runtime}]"
                cells.append(f"{ms[key]['median']:.1f} ({1 / ratio[key]:.2f}x)" if key in ms else "—")
            lines.append(f"| {entry['model']} | {nodes['exported']} -> {nodes['simplified']} | "
                         f"{'ONNX Runtime' if runtime == 'ort' else 'OpenVINO'} | " + " | ".join(cells) + " |")
    if not any(entry["auto_exclude"] for entry in results):
        return "\n".join(lines) + "\n"
    lines += ["", "Auto-exclude (output error = worst over outputs of sum (int8 - fp32)^2 / sum (fp32 - mean)^2 on 8 "
              "calibration images):", "", "| model | full INT8 error | kept in FP32 | error | budget met |",
              "|---|---:|---|---:|---|"]
    for entry in [entry for entry in results if entry["auto_exclude"]]:
        auto = entry["auto_exclude"]
        kept = ", ".join(f"`{n}`" for n in auto["excluded"]) or "none"
        lines.append(f"| {entry['model']} | {auto['full_error']:.3g} | {kept} | {auto['error']:.3g} | "
                     f"{'yes' if auto['met'] else 'no'} ({auto['seconds']:.0f} s) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
