"""``compresskit quantize`` and ``benchmark``: deployment of exported models.

Contract: ``quantize`` reads the preprocessing from the ONNX file's metadata (options override or
supply it), calibrates on a folder of images and writes an INT8 model
(:func:`compresskit.deploy.quantize.quantize_onnx`); ``benchmark`` times models side by side
(:func:`compresskit.deploy.benchmark.benchmark_models`). Bad input fails in one line through the group's
error boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from compresskit.cli._error_boundary import UserError
from compresskit.cli._options import TRUST_HELP, load_model, parse_floats, parse_shape

__all__ = ["benchmark_command", "quantize_command"]


def _preprocessing(model: Path, mean: str | None, scale: float | None, channel_order: str | None) -> Any:
    """The file's preprocessing with the options' overrides, or the options' alone without metadata."""
    import dataclasses

    from compresskit.deploy.export import Preprocessing, read_metadata

    preprocessing = Preprocessing.from_metadata(read_metadata(model))
    overrides = {key: value for key, value in (("mean", parse_floats(mean, 3, "--mean")), ("scale", scale),
                                               ("channel_order", channel_order)) if value is not None}
    if preprocessing is not None:
        return dataclasses.replace(preprocessing, **overrides)
    if "mean" not in overrides or "scale" not in overrides:
        raise UserError(f"{model} carries no preprocessing metadata: give --mean and --scale "
                        "(and --channel-order, default RGB)")
    return Preprocessing(**overrides)


@click.command("quantize")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path), metavar="MODEL.onnx")
@click.option("--calibration-images", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="A folder of images (searched recursively) to calibrate activation ranges on.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The INT8 .onnx file.")
@click.option("--count", default=32, show_default=True, help="Calibration images used (sorted by path).")
@click.option("--method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax",
              show_default=True, help="How activation ranges are set from the calibration data.")
@click.option("--per-tensor", is_flag=True, help="One weight scale per tensor instead of per output channel.")
@click.option("--exclude", multiple=True, metavar="GLOB",
              help="Keep ONNX nodes whose names match in FP32, e.g. '/body/stage1/*'. Repeatable.")
@click.option("--auto-exclude", is_flag=True,
              help="Measure each node's INT8 sensitivity on the calibration images and keep in FP32 the fewest "
                   "nodes that bring the output error within --error-budget.")
@click.option("--error-budget", default=0.01, show_default=True,
              help="With --auto-exclude: largest normalised squared output error against FP32 "
                   "(sum (int8 - fp32)^2 / sum (fp32 - mean)^2, worst output).")
@click.option("--mean", default=None, metavar="M1,M2,M3", help="Per-channel mean (if the file has no metadata).")
@click.option("--scale", type=float, default=None, help="Multiplier after the mean (if the file has no metadata).")
@click.option("--channel-order", type=click.Choice(["BGR", "RGB"]), default=None,
              help="Channel order of the input (if the file has no metadata).")
@click.option("--input-size", default=None, metavar="H,W", help="Calibration image size (default: the file's).")
def quantize_command(model: Path, calibration_images: Path, out: Path, count: int, method: str, per_tensor: bool,
                     exclude: Sequence[str], auto_exclude: bool, error_budget: float, mean: str | None, scale: float | None, channel_order: str | None,
                     input_size: str | None) -> None:
    """INT8 post-training static quantization of MODEL.onnx (ONNX Runtime, QDQ, per-channel weights).

    The preprocessing (channel order, mean, scale, input size) comes from the file's metadata
    ('compresskit export' writes it for models that declare it); --mean/--scale/--channel-order
    override it or supply it. Prints the FP32 and INT8 ONNX Runtime latency on one calibration input.
    """
    import torch

    from compresskit.deploy.benchmark import benchmark_models
    from compresskit.deploy.quantize import calibration_images as load_images
    from compresskit.deploy.quantize import quantize_onnx

    if model.suffix != ".onnx" or not model.is_file():
        raise UserError(f"{model}: not an existing .onnx file (export one with 'compresskit export')")
    if not calibration_images.is_dir():
        raise UserError(f"{calibration_images}: not a folder of calibration images")
    preprocessing = _preprocessing(model, mean, scale, channel_order)
    size = parse_floats(input_size, 2, "--input-size")
    samples = load_images(calibration_images, preprocessing, count,
                          None if size is None else (int(size[0]), int(size[1])))
    out.parent.mkdir(parents=True, exist_ok=True)
    if auto_exclude:
        path = _auto_exclude(model, out, samples, method, per_tensor, exclude, error_budget)
    else:
        path = quantize_onnx(model, out, samples, method=method, per_channel=not per_tensor, exclude=exclude)
    report = benchmark_models({"fp32": model, "int8": path}, (torch.from_numpy(samples[0]),), threads=1,
                              warmup=2, rounds=5)
    click.echo(f"wrote {path} ({path.stat().st_size:,} bytes; FP32 {model.stat().st_size:,}); "
               f"{len(samples)} calibration images, {method}, "
               f"{'per-tensor' if per_tensor else 'per-channel'} weights")
    click.echo(report.table("fp32"))


def _auto_exclude(model: Path, out: Path, samples: list[Any], method: str, per_tensor: bool, exclude: Sequence[str],
                  budget: float) -> Path:
    """``quantize --auto-exclude``: the measured FP32 set, reported in a few lines."""
    from compresskit.deploy.sensitivity import auto_exclude

    if exclude or per_tensor:
        raise UserError("--auto-exclude chooses the FP32 nodes itself, with per-channel weights: "
                        "drop --exclude / --per-tensor")
    if not budget > 0:
        raise UserError(f"--error-budget must be > 0, got {budget}")
    result = auto_exclude(model, out, samples, budget=budget, method=method, progress=click.echo)
    kept = ", ".join(result.excluded) or "none"
    click.echo(f"auto-exclude: output error {result.full_error:.4g} (all INT8) -> {result.error:.4g} "
               f"(budget {budget:g}, {'met' if result.met else 'NOT met'}); kept in FP32: {kept}")
    return result.path


@click.command("benchmark")
@click.argument("models", nargs=-1, required=True, metavar="MODEL...")
@click.option("--input-shape", default="1,3,640,640", show_default=True, help="Input shape (batch first).")
@click.option("--threads", default=1, show_default=True, help="Intra-op threads (torch and ONNX Runtime).")
@click.option("--warmup", default=3, show_default=True, help="Untimed calls per model first.")
@click.option("--rounds", default=15, show_default=True, help="Interleaved timed rounds.")
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Also write every sample and the settings here.")
@click.option("--runtime", "runtimes", multiple=True, metavar="ort|openvino",
              help="Runtime(s) for .onnx files, repeatable or comma-separated: --runtime ort,openvino times every "
                   "file in both, side by side (default: ort). OpenVINO .xml IR files always run in OpenVINO.")
@click.option("--trust", multiple=True, metavar="MODULE", help=TRUST_HELP)
def benchmark_command(models: Sequence[str], input_shape: str, threads: int, warmup: int, rounds: int,
                      json_path: Path | None, runtimes: Sequence[str], trust: Sequence[str]) -> None:
    """Latency of MODEL... side by side: torch eager for checkpoints / 'module:builder', ONNX Runtime
    and / or OpenVINO for .onnx files (FP32 or INT8; node counts printed), OpenVINO for .xml IR files,
    interleaved rounds on one input; median, p90 and the ratio to the first model (median of per-round
    ratios)."""
    import json

    import torch

    from compresskit.deploy.benchmark import RUNTIMES, benchmark_models

    if threads < 1 or warmup < 0 or rounds < 1:
        raise UserError(f"need --threads >= 1, --warmup >= 0, --rounds >= 1; got {threads}, {warmup}, {rounds}")
    chosen = tuple(dict.fromkeys(name.strip() for value in runtimes or ("ort",) for name in value.split(",")))
    if any(name not in RUNTIMES for name in chosen):
        raise UserError(f"--runtime {','.join(chosen)}: valid runtimes are {', '.join(RUNTIMES)}")
    loaded: dict[str, Any] = {}
    for spec in models:
        name = Path(spec).name if Path(spec).exists() else spec
        if name in loaded:
            name = spec
        if spec.endswith((".onnx", ".xml")):
            if not Path(spec).is_file():
                raise UserError(f"file not found: {spec}")
            loaded[name] = Path(spec)
        else:
            loaded[name] = load_model(spec, trust=trust)[0].eval()
    inputs = (torch.randn(parse_shape(input_shape), generator=torch.Generator().manual_seed(0)),)
    report = benchmark_models(loaded, inputs, threads=threads, warmup=warmup, rounds=rounds, runtimes=chosen)
    for name, kind in report.notes.items():
        click.echo(f"{name}: {kind}")
    click.echo(report.table())
    if json_path is not None:
        json_path.write_text(json.dumps(report.to_dict(), indent=1) + "\n")

