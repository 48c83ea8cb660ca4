"""``compresskit prune``, ``export`` and ``inspect``: one model (a model spec or a pruned checkpoint) at a time.

Contract: each command parses its options (:mod:`compresskit.cli._options`), calls the library
(:func:`compresskit.pruning.soft_fpgm.prune`, :func:`compresskit.deploy.export.export_model`,
:func:`compresskit.pruning.inspection.describe`) and prints a short summary; bad input fails in one line through
the group's error boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from compresskit.cli._error_boundary import UserError
from compresskit.cli._options import TRUST_HELP, build_spec, load_model, parse_kwargs, parse_shape, unpruned_model

__all__ = ["export_command", "inspect_command", "prune_command"]


def _parse_groups(groups: Sequence[str]) -> tuple[list[Any], dict[str, float]]:
    """``--group NAME=GLOB[,GLOB]:RATE`` options -> (layer-group specs, rate per group)."""
    from compresskit.groups.find import LayerGroupSpec

    specs, rates = [], {}
    for text in groups:
        name, sep, rest = text.partition("=")
        patterns, sep2, value = rest.rpartition(":")
        if not sep or not sep2 or not name or not patterns:
            raise click.BadParameter(f"expected NAME=GLOB[,GLOB]:RATE, got {text!r}", param_hint="--group")
        try:
            rates[name] = float(value)
        except ValueError:
            raise click.BadParameter(f"rate of {name!r} must be a number, got {value!r}") from None
        specs.append(LayerGroupSpec(name, patterns=tuple(patterns.split(","))))
    return specs, rates


@click.command("prune")
@click.argument("model_spec")
@click.option("--rate", type=float, default=None, help="One rate in [0, 1) for every prunable channel group.")
@click.option("--group", "groups", multiple=True, metavar="NAME=GLOB[,GLOB]:RATE",
              help="A layer group and its rate, e.g. stage2='stage2.*:0.5'. Repeatable.")
@click.option("--protect", multiple=True, metavar="GLOB", help="Never prune outputs of these modules.")
@click.option("--input-shape", required=True, help="Example input shape, e.g. 1,3,32,32.")
@click.option("--arg", "model_args", multiple=True, metavar="KEY=VALUE", help="Builder keyword argument.")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A state_dict to load into the built model first (or MODEL_SPEC:WEIGHTS).")
@click.option("--importance", default="fpgm", show_default=True, help="fpgm or magnitude.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to save the pruned model (compresskit.models.persist format).")
def prune_command(model_spec: str, rate: float | None, groups: Sequence[str], protect: Sequence[str],
                  input_shape: str, model_args: Sequence[str], weights: Path | None, importance: str,
                  out: Path) -> None:
    """One-shot prune MODEL_SPEC and save it.

    MODEL_SPEC: torchvision:NAME, timm:NAME, package.module:builder or a declared model NAME,
    each optionally followed by :WEIGHTS (a state_dict file), e.g. torchvision:resnet18:r18.pth.
    The result is a physically smaller model saved with its builder reference, so
    'compresskit inspect/export OUT' and compresskit.models.persist.load_pruned rebuild it.
    """
    import torch

    from compresskit.groups.find import find_groups
    from compresskit.models.persist import save_pruned
    from compresskit.pruning.budget import count_params
    from compresskit.pruning.inspection import check_forward
    from compresskit.pruning.soft_fpgm import prune

    model, builder, kwargs = build_spec(model_spec, parse_kwargs(model_args), weights)
    specs, rates = _parse_groups(groups)
    if rate is None and not specs:
        raise click.UsageError("give --rate or at least one --group")
    if rate is not None and specs:
        raise click.UsageError("give either --rate or --group, not both")
    for name, value in ([("--rate", rate)] if rate is not None else rates.items()):
        if not 0.0 <= value < 1.0:
            raise UserError(f"{name} must be in [0, 1), got {value}")
    example = torch.zeros(parse_shape(input_shape))
    check_forward(model, (example,))  # a wrong --input-shape is one line, not a trace from the tracer
    before = count_params(model)
    groups_found = find_groups(model, (example,), specs or None, protect=tuple(protect))
    pruned = prune(model, (example,), rate if rate is not None else rates, groups=groups_found,
                   importance=importance)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_pruned(out, pruned, builder, kwargs)  # the removal history travels with the model
    after = count_params(pruned)
    click.echo(f"{before:,} -> {after:,} parameters ({after / before:.1%}); saved {out}")


@click.command("export")
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The .onnx file (OpenVINO: the .xml, weights in .bin beside; TorchScript: .pt).")
@click.option("--input-shape", required=True, help="Example input shape, e.g. 1,3,320,320.")
@click.option("--format", "export_format", type=click.Choice(["onnx", "openvino", "torchscript"]), default="onnx",
              show_default=True, help="ONNX (checked in ONNX Runtime), OpenVINO IR (converted from the checked ONNX, "
                                      "checked in OpenVINO) or a TorchScript trace (checked after loading).")
@click.option("--no-simplify", is_flag=True, help="Keep the exporter's ONNX graph (default: onnxslim-simplified "
                                                  "where the simplified file passes the same checks).")
@click.option("--dynamic", is_flag=True,
              help="Free batch and height/width axes where the model allows; checked at two input shapes "
                   "and an odd-sized third.")
@click.option("--atol", default=1e-4, show_default=True, help="Exported vs PyTorch tolerance.")
@click.option("--opset", default=17, show_default=True)
@click.option("--trust", multiple=True, metavar="MODULE", help=TRUST_HELP)
def export_command(checkpoint: Path, out: Path, input_shape: str, export_format: str, no_simplify: bool,
                   dynamic: bool, atol: float, opset: int, trust: Sequence[str]) -> None:
    """Export a compresskit CHECKPOINT (pruned model) to ONNX, OpenVINO IR or TorchScript and check it
    against PyTorch.

    The file carries the model's preprocessing (channel order, mean, scale, nominal input size) in its
    metadata where the model's builder declares it, so 'quantize', 'detect' and web/ need no flags.
    """
    import torch

    from compresskit.deploy.export import export_model
    from compresskit.pruning.inspection import check_forward

    if not checkpoint.exists():
        raise UserError(f"file not found: {checkpoint}")
    model, _ = load_model(str(checkpoint), trust=trust)
    model.eval()
    example = (torch.randn(parse_shape(input_shape), generator=torch.Generator().manual_seed(0)),)
    check_forward(model, example)  # a wrong --input-shape is one line, not an exporter trace
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        result = export_model(model, example, out, format=export_format, dynamic=dynamic, atol=atol, opset=opset,
                              simplify=not no_simplify)
    except ValueError as error:
        raise UserError(f"export check failed: {error}") from None
    checks = "; ".join(f"{'x'.join(map(str, shapes[0]))}: {difference:.2e}" for shapes, difference in result.checks)
    axes = result.dynamic_axes.get("input", {})
    runtime = {"onnx": "ORT", "openvino": "OpenVINO", "torchscript": "TorchScript"}[export_format]
    click.echo(f"wrote {result.path} ({result.path.stat().st_size:,} bytes, {export_format}, "
               f"dynamic axes {sorted(axes) or 'none'}); max |{runtime} - torch| at {checks}")
    if result.simplified is not None:
        simplified = result.simplified
        click.echo(f"onnx graph: {simplified.nodes_before} -> {simplified.nodes_after} nodes (onnxslim)" if simplified.kept
                   else f"onnx graph not simplified ({simplified.reason}); {simplified.nodes_before} nodes")


@click.command("inspect")
@click.argument("model_spec", metavar="MODEL_OR_CHECKPOINT")
@click.option("--input-shape", default=None, help="Input shape for MACs, e.g. 1,3,32,32.")
@click.option("--arg", "model_args", multiple=True, metavar="KEY=VALUE", help="Builder keyword argument.")
@click.option("--trust", multiple=True, metavar="MODULE", help=TRUST_HELP)
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A state_dict to load into a model spec (or MODEL_SPEC:WEIGHTS).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
def inspect_command(model_spec: str, input_shape: str | None, model_args: Sequence[str],
                    trust: Sequence[str], weights: Path | None, as_json: bool) -> None:
    """Parameters, MACs and per-layer channels/MACs of a checkpoint or a model spec.

    MODEL_OR_CHECKPOINT: a pruned checkpoint (shown before -> after pruning: the builder's
    unpruned model against the pruned one), or a model spec as 'prune' takes it
    (torchvision:resnet18, package.module:builder, NAME:WEIGHTS).
    """
    import json

    import torch

    from compresskit.pruning.inspection import describe

    if weights is not None and Path(model_spec).is_file():
        raise UserError(f"--weights applies to a model spec, not to the checkpoint {model_spec} (it has its own)")
    if weights is not None:
        model, kind = build_spec(model_spec, parse_kwargs(model_args), weights)[0], "builder"
    else:
        model, kind = load_model(model_spec, parse_kwargs(model_args), trust)
    before = None
    if kind == "checkpoint" and getattr(model, "compresskit_history", None):
        before = unpruned_model(Path(model_spec))
    inputs = (torch.zeros(parse_shape(input_shape)),) if input_shape is not None else None
    info = {"source": model_spec, "kind": kind, "input_shape": input_shape, **describe(model, inputs, before)}
    if as_json:
        click.echo(json.dumps(info, indent=1))
    else:
        _print_inspection(model_spec, kind, input_shape, info)


def _change(info: dict[str, Any], key: str) -> str:
    """``info[key]``, with its value before pruning when ``info`` has one."""
    now = info[key]
    if now is None:
        return "-"
    if "before" not in info:
        return f"{now:,}"
    was = info["before"][key]
    return f"{now:,} (before pruning {was:,}: {now / was:.1%})" if was else f"{now:,} (before pruning 0)"


def _print_inspection(model_spec: str, kind: str, input_shape: str | None, info: dict[str, Any]) -> None:
    click.echo(f"{model_spec} ({kind}): {info['model']}")
    click.echo(f"parameters: {_change(info, 'params')}")
    if input_shape is not None:
        click.echo(f"MACs @ {input_shape}: {_change(info, 'macs')}")
    pruned = "before" in info
    click.echo(f"{'layer':<40} {'out channels':>14} {'params':>10} {'MACs':>14}")
    for name, row in info["layers"].items():
        channels = f"{row['out_before']} -> {row['out']}" if pruned and row["out_before"] != row["out"] \
            else str(row["out"])
        macs = "-" if row["macs"] is None else f"{row['macs']:,}"
        click.echo(f"{name:<40} {channels:>14} {row['params']:>10,} {macs:>14}")
