from __future__ import annotations

import onnx
import pytest
import torch
from torch import Tensor, nn

from compresskit.export import check_onnx, export_onnx
from zoo import ZOO


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
