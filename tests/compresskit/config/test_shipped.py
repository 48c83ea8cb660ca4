"""Shipped recipes: found by name (a path wins), listed, copied out with the recipes they extend."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from compresskit.cli import cli
from compresskit.config import RecipeError, copy_recipe, find_recipe, load_recipe, shipped_recipes

REPO = Path(__file__).resolve().parents[3]


def test_the_shipped_recipes_are_the_repository_folder():
    assert {path.name for path in shipped_recipes().values()} == {p.name for p in (REPO / "recipes").glob("*.yaml")}


def test_a_name_finds_the_shipped_file_and_an_existing_path_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_recipe("image_classification") == shipped_recipes()["image_classification"]
    assert find_recipe("image_classification.yaml") == shipped_recipes()["image_classification"]
    (tmp_path / "image_classification.yaml").write_text("name: mine\n")
    assert find_recipe("image_classification.yaml") == Path("image_classification.yaml")
    assert load_recipe("featherface_nano_b", resolve=False).name == "featherface_nano_b"


def test_an_unknown_name_lists_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError, match=r"nope: no such recipe file, and not a shipped recipe; shipped: \["):
        find_recipe("nope")


def test_copy_writes_the_recipe_and_its_bases_and_refuses_to_overwrite(tmp_path, monkeypatch):
    folder = tmp_path / "shipped"
    folder.mkdir()
    (folder / "base.yaml").write_text("# the base\nname: base\n")
    (folder / "child.yaml").write_text("extends: base.yaml\nname: child\n")
    monkeypatch.setattr("compresskit.config.shipped.shipped_recipes",
                        lambda: {p.stem: p for p in sorted(folder.glob("*.yaml"))})
    written = copy_recipe("child", tmp_path / "out")
    assert written == [tmp_path / "out" / "child.yaml", tmp_path / "out" / "base.yaml"]
    assert yaml.safe_load(written[0].read_text()) == {"extends": "base.yaml", "name": "child"}
    with pytest.raises(FileExistsError, match="child.yaml exists"):
        copy_recipe("child", tmp_path / "out")


def test_recipes_command_lists_and_copies(tmp_path):
    listing = CliRunner().invoke(cli, ["recipes"])
    assert listing.exit_code == 0
    assert listing.output.startswith("featherface_nano_b    FeatherFace V1 (teacher, 592K params)")
    assert "shapes_classifier" in listing.output and "[task examples.shapes_classifier:ShapesTask must be importable]" in listing.output
    copied = CliRunner().invoke(cli, ["recipes", "copy", "image_classification", str(tmp_path)])
    assert copied.exit_code == 0 and copied.output == f"wrote {tmp_path / 'image_classification.yaml'}\n"
    again = CliRunner().invoke(cli, ["recipes", "copy", "image_classification", str(tmp_path)])
    assert again.exit_code == 2 and "exists; remove it or pass --force" in again.output
