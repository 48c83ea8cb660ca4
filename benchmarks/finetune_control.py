"""What the real-data fine-tune alone does to the released RetinaFace-mnet0.25 (no pruning).

The control row of ``bench_real_pruning.py``, one setting at a time: the released weights go through the
``recipes/retinaface_wider.yaml`` fine-tune (2 epochs, 320 px crops, the 1,008-image train slice, 1 thread,
seeded as the pipeline's finetune phase) and are scored with the official protocol on the 194 dev images.
``--freeze-bn`` keeps every BatchNorm layer in eval mode while training (running statistics frozen; an
ablation, not a recipe option). ``--start RUN/pruned.pt`` fine-tunes a pruned model of the bench instead
of the released one (e.g. ``benchmarks/logs/real_pruning_runs/compresskit_0.5/pruned.pt``).

    .venv/bin/python benchmarks/finetune_control.py --tag adamw1e4 --set finetune.lr=1.0e-4 [--freeze-bn]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_real_pruning as bench  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tag", required=True)
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--freeze-bn", action="store_true")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--start", type=Path, help="a pruned.pt / final.pt to fine-tune (default: released)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "logs" / "finetune_control.jsonl")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.freeze_bn:
        from torch.nn.modules.batchnorm import _BatchNorm

        train = _BatchNorm.train
        _BatchNorm.train = lambda self, mode=True: train(self, False)  # type: ignore[method-assign]
    data = args.data
    overrides = [*bench.data_overrides(data), f"finetune.epochs={args.epochs}", "export.onnx=false", *args.extra]
    model = bench.released(data) if args.start is None else bench.load_pruned(args.start, trust=[bench.BUILDER])
    start = time.time()
    seconds = bench.finetune(model, overrides, Path(f"/tmp/finetune_control_{args.tag}"))
    row = {"tag": args.tag, "start": str(args.start or "released"), "freeze_bn": args.freeze_bn, "set": args.extra, "finetune_s": seconds,
           "total_s": round(time.time() - start), "ap": bench.official_ap(model, data)}
    bench.append_row(args.out, row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
