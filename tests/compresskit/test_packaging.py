"""`pip install compresskit` is the pruner alone: heavy parts are extras, and a missing one is one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib
from user_project import write_user_project

from compresskit.utils.optional import EXTRAS, missing_extra

REPO = Path(__file__).resolve().parents[2]
OPTIONAL = ("botorch", "gpytorch", "onnx", "onnxruntime", "onnxscript", "matplotlib", "cv2", "scipy", "PIL")

# Runs with every optional package made unimportable (None in sys.modules), as after `pip install compresskit`.
WITHOUT_EXTRAS = """
import sys
for name in {optional!r}:
    sys.modules[name] = None
from click.testing import CliRunner
from compresskit.cli import cli
from compresskit import SoftFPGM, find_groups, load_pruned, prune, fit  # the pruner API imports
for args in (["prune", "ck_pack_models:resnet_tiny:resnet_tiny.pth", "--rate", "0.3", "--input-shape", "1,3,16,16",
              "--out", "p.pt"],
             ["inspect", "p.pt", "--trust", "ck_pack_models", "--input-shape", "1,3,16,16"],
             ["export", "p.pt", "--trust", "ck_pack_models", "--input-shape", "1,3,16,16", "--out", "p.onnx"]):
    result = CliRunner().invoke(cli, args)
    print(result.exit_code, result.output.strip().splitlines()[0])
"""


def test_core_dependencies_are_the_pruner_alone_and_setup_installs_every_extra():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {d.split(">")[0].split("<")[0].split("=")[0].strip() for d in project["dependencies"]}
    assert core == {"torch", "torch-pruning", "numpy", "click", "pyyaml", "tqdm", "safetensors"}
    extras = project["optional-dependencies"]
    assert {"search", "onnx", "latency", "report", "vision", "detection", "track", "all", "test"} <= set(extras)
    assert extras["all"] == ["compresskit[search,onnx,openvino,latency,report,vision,detection,track]"]
    assert {extra for extra, _ in EXTRAS.values()} <= set(extras)
    assert 'pip install -e ".[all,test]"' in (REPO / "scripts" / "setup.sh").read_text()


def test_missing_extra_message():
    error = ModuleNotFoundError("No module named 'botorch.models'", name="botorch.models")
    assert missing_extra(error) == ("botorch is not installed; it is needed for the Bayesian rate search "
                                    "(search.method: bo): pip install 'compresskit[search]'")
    assert missing_extra(ModuleNotFoundError("x", name="my_own_module")) is None


def test_prune_and_inspect_work_without_extras_and_export_names_the_extra(tmp_path):
    write_user_project(tmp_path, "ck_pack_models")
    result = subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS.format(optional=OPTIONAL)], cwd=tmp_path,
                            capture_output=True, text=True, check=True)
    prune_line, inspect_line, export_line = result.stdout.strip().splitlines()
    assert prune_line.startswith("0 11,003 -> ") and "saved p.pt" in prune_line
    assert inspect_line == "0 p.pt (checkpoint): ResNet"
    assert export_line == ("2 Error: onnx is not installed; it is needed for ONNX export and quantization: "
                           "pip install 'compresskit[onnx]'")
