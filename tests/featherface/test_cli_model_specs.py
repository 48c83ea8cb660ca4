"""`compresskit inspect`/`prune` take the NAME[:WEIGHTS] spec `detect` takes (through the declared
`compresskit.builders` entry point, FeatherFace's own weight loader)."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from compresskit.cli import cli
from compresskit.models.spec import build, parse_spec
from featherface import models


def test_a_bare_name_builds_through_the_declared_builder():
    model, builder, kwargs = build(parse_spec("retinaface_mnet025"))
    assert builder == "featherface.models:build_model" and kwargs == {"name": "retinaface_mnet025"}
    assert sum(p.numel() for p in model.parameters()) == 426_608


@pytest.mark.shared_data
def test_name_weights_spec_loads_the_official_weights_in_inspect_and_prune(shared_data, tmp_path):
    weights = shared_data / "weights" / "retinaface_mnet025_official.pth"
    if not weights.is_file():
        pytest.skip(f"{weights} not in the shared data")
    spec = f"retinaface_mnet025:{weights}"
    model, _, kwargs = build(parse_spec(spec))
    expected = models.load_weights(models.build_model("retinaface_mnet025"), weights)
    assert "weights" not in kwargs  # a saved checkpoint never names the weights file
    for (name, value), reference in zip(model.state_dict().items(), expected.state_dict().values()):
        assert torch.equal(value, reference), name
    runner = CliRunner()
    result = runner.invoke(cli, ["inspect", spec])
    assert result.exit_code == 0 and "parameters: 426,608" in result.output, result.output
    out = tmp_path / "rf.pt"
    result = runner.invoke(cli, ["prune", spec, "--rate", "0.2", "--input-shape", "1,3,64,64", "--out", str(out),
                                 "--protect", "ClassHead*", "--protect", "BboxHead*", "--protect", "LandmarkHead*"])
    assert result.exit_code == 0 and result.output.startswith("426,608 -> "), result.output
