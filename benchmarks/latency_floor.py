"""The ONNX Runtime latency floor of Nano-B inside the seeds' pruning bounds, beside YuNet-n.

Prunes a freshly built Nano-B with every layer group at its upper bound (the smallest model the
search may return), exports it at 640x640 and times it with ONNX Runtime (1 intra-op thread,
median of interleaved runs, timed by ``bench_models.measure_latency``) next to
``yunet_n_640_640.onnx``. Weights don't change latency, so random initialisation is fine here.

    .venv/bin/python benchmarks/latency_floor.py [--weights-dir ../shared/data/weights]
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from bench_models import BenchModel, measure_latency  # this folder is sys.path[0] when run as a script

from compresskit import count_params, export_onnx, find_groups, prune
from reference.featherface.models import NANO_B_PROTECT_PATTERNS, build_model
from reference.featherface.task import layer_group_specs

ROOT = Path(__file__).resolve().parents[1]
NANO = "Nano-B at every upper bound"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-dir", type=Path, default=ROOT.parent / "shared" / "data" / "weights")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    yunet = args.weights_dir / "yunet_n_640_640.onnx"
    if not yunet.is_file():
        raise SystemExit(f"{yunet}: not found (give --weights-dir)")

    model = build_model("nano_b").eval()
    specs = layer_group_specs("nano_b")
    trace_input = torch.randn(1, 3, 128, 128)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        groups = find_groups(model, trace_input, layer_groups=specs, protect=NANO_B_PROTECT_PATTERNS)
        prune(model, trace_input, {spec.name: spec.bounds[1] for spec in specs}, groups=groups)
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nano = export_onnx(model, torch.randn(1, 3, 640, 640), Path(folder) / "nano_b_upper.onnx")
        # ONNX only (no torch model): 1 thread, 3 warm-up calls, interleaved rounds
        onnx_models = [BenchModel(NANO, "pruned build_model('nano_b')", onnx_path=nano),
                       BenchModel("YuNet-n", str(yunet), onnx_path=yunet)]
        times = measure_latency(onnx_models, 640, threads=[1], warmup=3, repeats=args.rounds, loads={})["ort/1t"]
    print("| model | params | ORT 1 thread, 640x640 (median ms) |\n|---|---:|---:|")
    print(f"| {NANO} | {count_params(model):,} | {np.median(times[NANO]):.1f} |")
    print(f"| YuNet-n | 73,840 (ONNX) | {np.median(times['YuNet-n']):.1f} |")

if __name__ == "__main__":
    main()
