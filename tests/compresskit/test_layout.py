"""The package's shape rules (issue 10), checked on the source itself.

- no module in ``compresskit/`` over 400 lines, no function over 60 lines;
- no private name (``_x``) of one compresskit module used by another: neither
  ``from .m import _f`` nor ``m._f`` (importing a private *module* such as ``_graph`` is fine:
  that is what private modules are for);
- ``compresskit`` never names the reference detector (``featherface``) or ``examples`` packages — by
  import, by an importable string (``"featherface.task:X"``) or in a docstring — and importing every
  compresskit module loads neither;
- issue 21's shape (rules in ``layout_rules.py``, each also tried on a planted violation): the root holds
  only ``__init__``/``__main__``; a private module is imported only inside its own package; each
  sub-package imports only from those below it in ``layout_rules.LAYERS``; no import cycle, not even under
  ``TYPE_CHECKING``; no file name used twice in the package.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import layout_rules
import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "compresskit"
SOURCES = sorted(PACKAGE.rglob("*.py"))
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved against ``module``)."""
    if node.level == 0:
        return node.module or ""
    is_package = (PACKAGE.parent / Path(*module.split("."))).is_dir()
    base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_compresskit_module(name: str) -> bool:
    path = PACKAGE.parent / Path(*name.split("."))
    return name.split(".")[0] == "compresskit" and (path.with_suffix(".py").exists() or path.is_dir())


def _private_uses(module: str, source: str, label: str) -> list[str]:
    """``from m import _f`` and ``m._f`` across compresskit modules, in the ``source`` of ``module``."""
    tree = ast.parse(source)
    found, module_aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            if not source.startswith("compresskit") or source == module:
                continue
            for alias in node.names:
                if _is_compresskit_module(f"{source}.{alias.name}"):
                    module_aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
                elif _private(alias.name):
                    found.append((node.lineno, f"{label}:{node.lineno}: from {source} import {alias.name}"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("compresskit") and alias.asname:
                    module_aliases[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in module_aliases and _private(node.attr)
                and module_aliases[node.value.id] != module):
            found.append((node.lineno, f"{label}:{node.lineno}: {node.value.id}.{node.attr}"))
    return [text for _, text in sorted(found)]


def test_the_rules_see_every_module():
    assert len(SOURCES) > 30 and PACKAGE / "groups" / "find.py" in SOURCES


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_is_small(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(PACKAGE)}: {lines} lines (> {MAX_MODULE_LINES})"


def test_no_function_is_long():
    long = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: {lines} lines")
    assert long == []


def test_no_private_name_crosses_modules():
    uses = [use for path in SOURCES
            for use in _private_uses(_module_name(path), path.read_text(), str(path.relative_to(PACKAGE)))]
    assert uses == []


def test_the_private_name_check_catches_both_forms():
    """The checker itself: both forms are reported; a private *module* import and its public names are not."""
    source = ("from compresskit.groups import _graph\nfrom .find import _owning_layer_group\n"
              "from compresskit.pruning import soft_fpgm\n"
              "x = soft_fpgm._internal(1)\ny = _graph.trace_groups\nimport compresskit.pruning.budget as b\nz = b._rates\n")
    assert _private_uses("compresskit.groups.planted", source, "planted.py") == [
        "planted.py:2: from compresskit.groups.find import _owning_layer_group",
        "planted.py:4: soft_fpgm._internal", "planted.py:7: b._rates"]


NAMES_OUTSIDE = re.compile(r"\b(featherface|reference|examples)[./:](?=[A-Za-z_])")


def test_compresskit_never_names_reference_or_examples():
    mentions = [f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
                for path in SOURCES for number, line in enumerate(path.read_text().splitlines(), 1)
                if NAMES_OUTSIDE.search(line)]
    assert mentions == []


def test_importing_every_module_loads_neither_reference_nor_examples():
    names = [_module_name(path) for path in SOURCES if path.name != "__main__.py"]
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n    importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('featherface', 'reference', 'examples')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


# --- issue 21: the tree shows the architecture ------------------------------------------------------

SOURCE_TEXTS = layout_rules.read_package(PACKAGE)


def test_the_root_holds_only_init_and_main():
    assert layout_rules.root_modules([path.name for path in PACKAGE.iterdir() if path.is_file()]) == []


def test_the_root_rule_catches_a_module():
    assert layout_rules.root_modules(["__init__.py", "__main__.py", "py.typed", "budget.py"]) == ["budget.py"]


def test_private_modules_stay_in_their_package():
    assert layout_rules.private_imports(SOURCE_TEXTS) == []


def test_the_private_module_rule_catches_an_outside_import():
    planted = {**SOURCE_TEXTS, "compresskit.pruning.planted": "from compresskit.groups._graph import trace\n"
               "def f():\n    from compresskit.groups import _sets\n"}
    assert layout_rules.private_imports(planted) == [
        "compresskit.pruning.planted:1: compresskit.groups._graph",
        "compresskit.pruning.planted:3: compresskit.groups._sets"]


def test_every_sub_package_imports_only_layers_below_it():
    assert layout_rules.layer_violations(SOURCE_TEXTS) == []


def test_every_sub_package_is_in_a_layer():
    packages = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").exists()}
    assert packages == {name for layer in layout_rules.LAYERS for name in layer}


def test_the_layer_rule_catches_an_upward_a_sideways_and_an_unknown_import():
    planted = {**SOURCE_TEXTS,
               "compresskit.groups.planted": "if True:\n    from compresskit.config import RecipeError\n",
               "compresskit.search.planted": "from ..train import fit\n",
               "compresskit.extra.planted": "import compresskit.utils.atomic\n"}
    assert layout_rules.layer_violations(planted) == [
        "compresskit.groups.planted:2: compresskit.config",
        "compresskit.search.planted:1: compresskit.train",
        "compresskit.extra.planted: sub-package 'extra' is in no layer"]


def test_no_import_cycle():
    assert layout_rules.cycles(SOURCE_TEXTS) == []


def test_the_cycle_rule_catches_a_type_checking_cycle_and_a_lazy_export():
    planted = {**SOURCE_TEXTS,
               "compresskit.groups.planted_a": "from compresskit.groups.planted_b import B\n",
               "compresskit.groups.planted_b": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                               "    from compresskit.groups.planted_a import A\n",
               "compresskit.pruning.planted": "from compresskit.pruning import SoftFPGM\n"}
    planted["compresskit.pruning"] = planted["compresskit.pruning"].replace(
        '"SoftFPGM": "soft_fpgm"', '"SoftFPGM": "planted"')
    assert sorted(layout_rules.cycles(planted)) == [
        ["compresskit.groups.planted_a", "compresskit.groups.planted_b"],
        ["compresskit.pruning", "compresskit.pruning.planted"]]


def test_no_file_name_twice():
    names: dict[str, list[str]] = {}
    for path in SOURCES:
        if path.name not in ("__init__.py", "__main__.py"):
            names.setdefault(path.stem.lstrip("_"), []).append(str(path.relative_to(PACKAGE)))
    assert {name: paths for name, paths in names.items() if len(paths) > 1} == {}
