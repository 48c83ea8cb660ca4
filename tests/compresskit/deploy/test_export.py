from __future__ import annotations

import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from zoo import ZOO

from compresskit.deploy.export import check_onnx, export_onnx


@pytest.mark.parametrize("name", ["resnet_downsample", "grouped_shuffle", "detection_heads", "unet_concat_transposed", "bifpn_fusion"])
def test_zoo_model_exports_with_onnxruntime_parity(tmp_path, name):
    model, example_input = ZOO[name]()
    path = export_onnx(model, example_input, tmp_path / f"{name}.onnx")
    assert path == (tmp_path / f"{name}.onnx").resolve()
    assert path.is_file()
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    assert check_onnx(path, model, example_input) <= 1e-4


def test_tuple_outputs_get_indexed_names(tmp_path):
    model, example_input = ZOO["detection_heads"]()
    path = export_onnx(model, example_input, tmp_path / "det.onnx")
    graph = onnx.load(str(path)).graph
    assert [o.name for o in graph.output] == ["output_0", "output_1", "output_2"]
    assert [i.name for i in graph.input] == ["input"]


def test_explicit_names_and_dynamic_batch(tmp_path):
    model, example_input = ZOO["detection_heads"]()
    names = ["bbox_deltas", "cls_logits", "landmark_deltas"]
    path = export_onnx(
        model,
        example_input,
        tmp_path / "det.onnx",
        input_names=["images"],
        output_names=names,
        dynamic_axes={"images": {0: "batch"}, **{n: {0: "batch"} for n in names}},
    )
    assert [o.name for o in onnx.load(str(path)).graph.output] == names
    batch = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    assert check_onnx(path, model, batch) <= 1e-4


class DictOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        features = self.conv(x) * y
        return {"features": features, "logits": self.fc(features.mean(dim=(2, 3)))}


def test_dict_outputs_and_two_inputs(tmp_path):
    model = DictOutput()
    inputs = (torch.randn(1, 3, 8, 8), torch.tensor(2.0))
    path = export_onnx(model, inputs, tmp_path / "dict.onnx", input_names=("x", "y"))
    assert [o.name for o in onnx.load(str(path)).graph.output] == ["features", "logits"]
    assert check_onnx(path, model, inputs) <= 1e-4


class DigitKeys(nn.Module):
    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"0": x * 2, "1": x + 1, "_aux": x - 1}


def test_dict_outputs_with_digit_keys_get_safe_names(tmp_path):
    model, x = DigitKeys(), torch.randn(1, 3)
    path = export_onnx(model, x, tmp_path / "digits.onnx")  # was: "Invalid name: '0'"
    assert [o.name for o in onnx.load(str(path)).graph.output] == ["output_0", "output_1", "_aux"]
    assert check_onnx(path, model, x) == 0.0


@pytest.mark.parametrize("name", sorted(ZOO))
def test_pruned_zoo_model_exports_with_onnxruntime_parity(tmp_path, name):
    import warnings

    from zoo import ZOO_PROTECT

    import compresskit as ck

    model, example_input = ZOO[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ck.UnprunableWarning)
        ck.prune(model, example_input, 0.5, protect=ZOO_PROTECT[name])
    path = export_onnx(model, example_input, tmp_path / f"{name}.onnx")
    assert check_onnx(path, model, example_input) <= 1e-4


def test_export_restores_training_mode(tmp_path):
    model, example_input = ZOO["conv_flatten_linear"]()
    model.train()
    export_onnx(model, example_input, tmp_path / "m.onnx")
    assert model.training


def test_check_against_a_different_model_names_the_output(tmp_path):
    model, example_input = ZOO["conv_flatten_linear"]()
    path = export_onnx(model, example_input, tmp_path / "m.onnx")
    other = ZOO["conv_flatten_linear"]()[0]
    with torch.no_grad():
        other.fc2.bias.add_(0.5)  # shifts every logit by exactly 0.5
    with pytest.raises(ValueError, match=r"output 'output': max abs diff 0\.5 > atol 0\.0001"):
        check_onnx(path, other, example_input)
    assert check_onnx(path, other, example_input, atol=0.6) == pytest.approx(0.5, abs=1e-5)


def test_check_output_count_mismatch(tmp_path):
    model, example_input = ZOO["detection_heads"]()
    path = export_onnx(model, example_input, tmp_path / "det.onnx")
    single = ZOO["bifpn_fusion"]()[0]
    with pytest.raises(ValueError, match=r"has 3 outputs .* the model returns 1"):
        check_onnx(path, single, example_input)


def test_missing_directory_is_a_clear_error(tmp_path):
    model, example_input = ZOO["conv_flatten_linear"]()
    missing = tmp_path / "no_such_dir" / "m.onnx"
    with pytest.raises(ValueError, match=r"directory '.*no_such_dir' does not exist"):
        export_onnx(model, example_input, missing)
    assert not missing.parent.exists()


def test_missing_file_and_bad_arguments(tmp_path):
    model, example_input = ZOO["conv_flatten_linear"]()
    with pytest.raises(ValueError, match=r"ONNX file '.*absent.onnx' does not exist"):
        check_onnx(tmp_path / "absent.onnx", model, example_input)
    with pytest.raises(ValueError, match=r"input_names has 2 names"):
        export_onnx(model, example_input, tmp_path / "m.onnx", input_names=("a", "b"))
    with pytest.raises(ValueError, match=r"output_names has 2 names"):
        export_onnx(model, example_input, tmp_path / "m.onnx", output_names=("a", "b"))
    path = export_onnx(model, example_input, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match=r"atol must be a number >= 0, got -1"):
        check_onnx(path, model, example_input, atol=-1)


def test_failed_check_keeps_previous_file_and_removes_temporary(tmp_path, monkeypatch):
    def reject(model_path: str) -> None:
        raise onnx.checker.ValidationError(f"rejected {model_path}")

    monkeypatch.setattr(onnx.checker, "check_model", reject)
    model, example_input = ZOO["conv_flatten_linear"]()
    target = tmp_path / "m.onnx"
    target.write_bytes(b"previous")
    with pytest.raises(onnx.checker.ValidationError, match="rejected"):
        export_onnx(model, example_input, target)
    assert target.read_bytes() == b"previous"  # never half-overwritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


# --- export_model: dynamic axes, TorchScript, metadata (issue 9) ------------------------------

from compresskit.deploy.export import (  # noqa: E402
    Preprocessing,
    check_torchscript,
    export_model,
    read_metadata,
    second_shape,
    uneven_shape,
)


def test_second_shape_grows_batch_and_keeps_stride_divisibility():
    assert second_shape((1, 3, 640, 640)) == (2, 3, 704, 672)
    assert second_shape((1, 3, 64, 64)) == (2, 3, 128, 96)
    assert second_shape((4, 3, 12, 10)) == (5, 3, 20, 12)  # 12 -> g=4, 10 -> g=2
    assert second_shape((2, 8)) == (3, 8)


@pytest.mark.parametrize("export_format", ["onnx", "torchscript"])
def test_dynamic_export_runs_at_two_shapes(tmp_path, export_format):
    model, example_input = ZOO["detection_heads"]()
    path = tmp_path / ("det.onnx" if export_format == "onnx" else "det.pt")
    result = export_model(model, example_input, path, format=export_format, dynamic=True)
    assert result.dynamic_axes["input"] == {0: "batch", 2: "input_2", 3: "input_3"}
    assert [shapes[0] for shapes, _ in result.checks] == [[1, 3, 32, 32], [2, 3, 96, 64], [1, 3, 49, 41]]
    assert all(difference <= 1e-4 for _, difference in result.checks)
    third = torch.randn(3, 3, 64, 128, generator=torch.Generator().manual_seed(2))  # a shape never checked
    checker = check_onnx if export_format == "onnx" else check_torchscript
    assert checker(path, model, third) <= 1e-4


def test_uneven_shape_flips_parity():
    assert uneven_shape((1, 3, 640, 640)) == (1, 3, 657, 649)
    assert uneven_shape((2, 8)) == (2, 8)


class _FrozenSamePadPool(nn.Module):
    """TF-"same" 3x3/2 max-pool whose padding is Python arithmetic on the size (frozen by tracing),
    added to a stride-2 conv's map of the same ``ceil(size / 2)``: right at every size in torch,
    wrong in a traced file at sizes of the other parity."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = int(x.shape[-2]), int(x.shape[-1])
        extra_h, extra_w = (2 if height % 2 else 1), (2 if width % 2 else 1)
        top, left = extra_h // 2, extra_w // 2
        pooled = F.max_pool2d(F.pad(x, [left, extra_w - left, top, extra_h - top]), 3, 2)
        return self.conv(x) + pooled.mean(1, keepdim=True)


def test_frozen_padding_is_caught_at_the_uneven_shape_and_spatial_axes_stay_fixed(tmp_path):
    """Even example sizes: the second shape (kept divisible) passes; only the odd one exposes the
    frozen padding, and the export falls back to a dynamic batch instead of writing a broken file."""
    model = _FrozenSamePadPool().eval()
    example = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match=r"height/width stay fixed.*\[\[1, 3, 49, 41\]\]"):
        result = export_model(model, example, tmp_path / "m.onnx", dynamic=True)
    assert result.dynamic_axes["input"] == {0: "batch"}
    assert [shapes[0] for shapes, _ in result.checks] == [[1, 3, 32, 32], [2, 3, 32, 32]]


def test_fixed_export_rejects_another_shape(tmp_path):
    model, example_input = ZOO["detection_heads"]()
    result = export_model(model, example_input, tmp_path / "det.onnx")
    assert result.dynamic_axes == {} and len(result.checks) == 1
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        check_onnx(result.path, model, torch.randn(2, 3, 32, 32))


def test_flatten_linear_keeps_spatial_fixed_and_batch_dynamic(tmp_path):
    model, example_input = ZOO["conv_flatten_linear"]()
    with pytest.warns(UserWarning, match="height/width stay fixed"):
        result = export_model(model, example_input, tmp_path / "m.onnx", dynamic=True)
    assert result.dynamic_axes["input"] == {0: "batch"}
    assert [shapes[0][0] for shapes, _ in result.checks] == [1, 2]


def test_preprocessing_metadata_round_trips_in_onnx_and_torchscript(tmp_path):
    model, example_input = ZOO["detection_heads"]()
    preprocessing = Preprocessing("BGR", (104.0, 117.0, 123.0), 1.0, (640, 640))
    model.onnx_metadata = {"detector.kind": "toy"}
    for name, export_format in (("m.onnx", "onnx"), ("m.pt", "torchscript")):
        export_model(model, example_input, tmp_path / name, format=export_format,
                     metadata=preprocessing.to_metadata())
        metadata = read_metadata(tmp_path / name)
        assert metadata["detector.kind"] == "toy"
        assert Preprocessing.from_metadata(metadata) == preprocessing


def test_preprocessing_rejects_bad_values():
    with pytest.raises(ValueError, match="channel_order must be 'BGR' or 'RGB', got 'BRG'"):
        Preprocessing("BRG")
    with pytest.raises(ValueError, match="scale must be a finite number > 0, got 0"):
        Preprocessing("RGB", (0, 0, 0), 0)
    with pytest.raises(ValueError, match=r"missing \['preprocessing.scale'\]"):
        metadata = Preprocessing().to_metadata()
        del metadata["preprocessing.scale"]
        Preprocessing.from_metadata(metadata)
    with pytest.raises(ValueError, match="unknown export format 'tflite'"):
        export_model(nn.Conv2d(3, 3, 1), torch.randn(1, 3, 4, 4), "x.tflite", format="tflite")


@pytest.mark.parametrize("export_format", ["onnx", "torchscript"])
def test_pruned_nano_b_exports_dynamic(tmp_path, export_format):
    """A pruned Nano-B at toy scale (64 px): both formats, checked at 64x64, 2x128x96 and the odd
    81x73 (where the BiFPN's "same" pooling padding once came out frozen at 64 px), metadata kept."""
    import compresskit as ck
    from featherface.models import NANO_B_PROTECT_PATTERNS, build_model

    torch.manual_seed(0)
    model = build_model("nano_b").eval()
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 50
    ck.prune(model, images, 0.5, protect=NANO_B_PROTECT_PATTERNS)
    path = tmp_path / ("nano_b.onnx" if export_format == "onnx" else "nano_b.pt")
    result = export_model(model, images, path, format=export_format, dynamic=True)
    assert [shapes[0] for shapes, _ in result.checks] == [[1, 3, 64, 64], [2, 3, 128, 96], [1, 3, 81, 73]]
    assert max(difference for _, difference in result.checks) <= 1e-4
    assert Preprocessing.from_metadata(read_metadata(path)).mean == (104.0, 117.0, 123.0)
