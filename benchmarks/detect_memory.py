"""Peak RSS of `featherface.detect detect` over a folder of many images and on one huge JPEG (issue 23, item 3).

Bounded memory means the peak does not grow with the number of images, and a 12000x12000 JPEG (a small
file that decodes to 144 megapixels) is decoded at 1/8 and downscaled to ``--max-size`` instead of being
turned into a 1.7 GB float tensor. Each measurement is a fresh process (``ru_maxrss`` of the child).

Usage::

    .venv/bin/python benchmarks/detect_memory.py --images 2000
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _peak_rss_mb(arguments: list[str]) -> tuple[float, float]:
    """``(peak RSS MiB, seconds)`` of one ``featherface.detect`` process (children's ru_maxrss is a running max,
    so each measurement runs under its own ``python -c`` parent)."""
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "featherface.detect", *arguments],
                            capture_output=True, text=True, check=True)
    return int(result.stdout.strip()) / 1024, time.perf_counter() - start


def _make_images(folder: Path, count: int) -> None:
    import cv2
    import numpy as np

    folder.mkdir(parents=True)
    generator = np.random.default_rng(0)
    for index in range(count):
        image = generator.integers(0, 255, (96, 128, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"img{index:05d}.jpg"), image)


def _make_huge_jpeg(path: Path, side: int) -> None:
    """A smooth side x side JPEG (a few MB) written in a separate process: the array itself is side^2 * 3 bytes."""
    code = (f"import cv2, numpy as np; ramp = np.linspace(0, 255, {side}, dtype=np.float32).astype(np.uint8); "
            f"image = np.empty(({side}, {side}, 3), np.uint8); image[:] = ramp[None, :, None]; "
            f"cv2.imwrite({str(path)!r}, image, [cv2.IMWRITE_JPEG_QUALITY, 50])")
    subprocess.run([sys.executable, "-c", code], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--huge", type=int, default=12000, help="side of the huge JPEG (0: skip)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="detect_memory_") as scratch:
        scratch = Path(scratch)
        small, many = scratch / "small", scratch / "many"
        _make_images(many, args.images)
        small.mkdir()
        for path in sorted(many.iterdir())[: max(1, args.images // 10)]:
            (small / path.name).symlink_to(path)
        rows = []
        for label, folder in ((f"{len(list(small.iterdir()))} images", small), (f"{args.images} images", many)):
            peak, seconds = _peak_rss_mb(["detect", "nano_b", str(folder), "--out", str(scratch / "out"),
                                          "--threads", "1"])
            rows.append((label, peak, seconds))
        if args.huge:
            huge = scratch / "huge" / "big.jpg"
            huge.parent.mkdir()
            _make_huge_jpeg(huge, args.huge)
            size_mb = huge.stat().st_size / 2**20
            peak, seconds = _peak_rss_mb(["detect", "nano_b", str(huge.parent), "--out", str(scratch / "out"),
                                          "--threads", "1"])
            rows.append((f"one {args.huge}x{args.huge} JPEG ({size_mb:.1f} MB file), default --max-size", peak,
                         seconds))
    for label, peak, seconds in rows:
        print(f"{label}: peak RSS {peak:.0f} MiB, {seconds:.1f} s")


if __name__ == "__main__":
    main()
