"""The built wheel, installed into a fresh venv outside the repository, runs a shipped recipe by name.

The venv is new and holds only the wheel (installed with ``--no-deps``); its dependencies (torch,
botorch, onnx, ...) come from this project's environment through one ``.pth`` line, because installing
them from nothing takes minutes. That line adds the project venv's site-packages as a plain path, so its
``.pth`` files (the editable install's finder among them) are not run: ``compresskit`` and ``featherface``
can only come from the wheel, which the test checks, from a working directory outside the repository.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

TOY = ["threads=1", "task_args.image_size=64", "task_args.train_size=8", "task_args.val_size=4",
       "teacher.train.epochs=1", "distill.epochs=1", "search.method=random", "search.iterations=1",
       "search.initial_points=2", "search.trial.epochs=0", "search.trial.max_val_batches=1",
       "prune.schedule.epochs=1", "finetune.epochs=1", "export.input_size=[64,64]"]

WHERE = """
import importlib.metadata, compresskit, featherface
from compresskit.config import shipped_recipes
print(compresskit.__file__)
print(featherface.__file__)
print(shipped_recipes()["featherface_nano_b"])
print(importlib.metadata.distribution("compresskit").locate_file(""))
"""


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(build), str(REPO)], check=True, capture_output=True)
    wheel, = build.glob("compresskit-*.whl")
    venv = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                    str(wheel)], check=True, capture_output=True)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "project_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv


def _run(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], cwd=cwd, capture_output=True, text=True, check=False,
                          timeout=150)


@pytest.mark.slow
def test_the_wheel_runs_a_shipped_recipe_by_name_and_copies_one_out(wheel_venv, tmp_path):
    where = _run(wheel_venv, tmp_path, "python", "-c", WHERE)
    assert where.returncode == 0, where.stderr
    for line in where.stdout.splitlines():  # everything from the wheel, nothing from the repository
        assert line.startswith(str(wheel_venv)) and not line.startswith(str(REPO)), line

    copied = _run(wheel_venv, tmp_path, "compresskit", "recipes", "copy", "image_classification", ".")
    assert copied.returncode == 0, copied.stderr
    assert (tmp_path / "image_classification.yaml").read_bytes() == (
        REPO / "recipes" / "image_classification.yaml").read_bytes()

    args = ["compresskit", "run", "featherface_nano_b", "--run-dir", "run"]
    for override in TOY:
        args += ["--set", override]
    result = _run(wheel_venv, tmp_path, *args)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["completed"][-1] == "report" and (tmp_path / "run" / "final.pt").is_file()


def test_the_listed_packages_are_the_folders():
    import tomllib

    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {".".join(init.parent.relative_to(REPO).parts) for init in (REPO / "compresskit").rglob("__init__.py")}
    folders |= {"featherface." + ".".join(init.parent.relative_to(REPO / "reference" / "featherface").parts)
                for init in (REPO / "reference" / "featherface").rglob("__init__.py")}
    folders = {name.rstrip(".") for name in folders} | {"compresskit.recipes"}
    assert set(setuptools["packages"]) == folders
    assert setuptools["package-dir"] == {"compresskit.recipes": "recipes", "featherface": "reference/featherface"}
