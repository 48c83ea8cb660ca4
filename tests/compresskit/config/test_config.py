"""The config package's own contracts: named tasks (built-ins + entry points), resolution, ranges."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from compresskit.config import resolve, validate_recipe
from compresskit.config.constraints import within
from compresskit.config.errors import Provenance, RecipeError
from compresskit.config.resolve import (
    BUILTIN_TASKS,
    TASK_ENTRY_POINTS,
    TASKS,
    MissingAttributeError,
    import_attribute,
    resolve_task,
)

REPO = Path(__file__).resolve().parents[3]
MINIMAL = {"name": "x", "student": {"model": "small"}}


def _declare(monkeypatch: pytest.MonkeyPatch, **tasks: str) -> None:
    """Make the installed packages declare exactly ``tasks`` in the task entry-point group."""
    points = metadata.EntryPoints(
        metadata.EntryPoint(name, value, TASK_ENTRY_POINTS) for name, value in tasks.items())
    monkeypatch.setattr(resolve.metadata, "entry_points",
                        lambda group: points if group == TASK_ENTRY_POINTS else metadata.EntryPoints(()))


def test_tasks_are_the_builtins_plus_what_packages_declare(monkeypatch):
    _declare(monkeypatch, mytask="mypkg.tasks:MyTask")
    assert dict(TASKS) == {"mytask": "mypkg.tasks:MyTask", **BUILTIN_TASKS}
    assert "mytask" in TASKS and len(TASKS) == len(BUILTIN_TASKS) + 1


def test_a_package_cannot_take_over_a_builtin_name(monkeypatch):
    _declare(monkeypatch, image_classification="mypkg.tasks:Other")
    assert TASKS["image_classification"] == "compresskit.tasks.classification:image_folders"


def test_this_project_declares_featherface_through_its_entry_point():
    assert TASKS["featherface"] == "featherface.task:FeatherFaceTask"
    assert "featherface" not in BUILTIN_TASKS


def test_unknown_task_name_lists_every_name_and_the_module_callable_form(monkeypatch):
    _declare(monkeypatch, mytask="mypkg.tasks:MyTask")
    with pytest.raises(RecipeError) as error:
        validate_recipe({**MINIMAL, "task": "shapes"}, "x.yaml")
    assert str(error.value) == ("x.yaml: task must be one of ['image_classification', 'mytask'] or "
                                "'package.module:callable', got 'shapes'")


def test_a_declared_task_is_imported_only_when_resolved(monkeypatch):
    _declare(monkeypatch, mytask="no_such_package_xyz.tasks:MyTask")
    assert validate_recipe({**MINIMAL, "task": "mytask"}, "x.yaml").task == "mytask"  # nothing imported
    with pytest.raises(RecipeError, match=r"^x\.yaml: task 'no_such_package_xyz\.tasks:MyTask': cannot import"):
        resolve_task("mytask", "x.yaml")


def test_resolve_task_takes_a_name_or_a_module_callable(monkeypatch):
    monkeypatch.chdir(REPO)
    assert resolve_task("image_classification").__name__ == "image_folders"
    assert resolve_task("examples.shapes_classifier:ShapesTask").__name__ == "ShapesTask"


def test_import_attribute_walks_dotted_names_and_names_the_missing_one():
    assert import_attribute("os", "path.join") is __import__("os").path.join
    with pytest.raises(MissingAttributeError, match="has no attribute 'nope'"):
        import_attribute("os", "path.nope")
    with pytest.raises(ModuleNotFoundError):
        import_attribute("no_such_module_xyz", "f")


@pytest.mark.parametrize(("metadata_", "text"), [
    (within(0.0, 1.0, high_inclusive=False), "within [0, 1)"),
    (within(0.0, 1.0, low_inclusive=False), "within (0, 1]"),
    (within(1), ">= 1"),
    (within(0.0, low_inclusive=False), "> 0"),
    (within(high=2.5), "<= 2.5"),
])
def test_ranges_describe_themselves_as_messages_print_them(metadata_, text):
    assert metadata_["range"].describe() == text


def test_provenance_names_the_longest_marked_prefix():
    provenance = Provenance("x.yaml")
    provenance.mark({"alpha": 1.5}, "x.yaml (--set distill.alpha=1.5)", ("distill",))
    assert provenance.label(("distill", "alpha")) == "x.yaml (--set distill.alpha=1.5)"
    assert provenance.label(("seed",)) == "x.yaml"
