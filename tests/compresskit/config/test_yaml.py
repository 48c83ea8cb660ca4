"""Recipes from anyone: bounded YAML (duplicates, alias bombs, nesting, encodings) -> one line, exit 2."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from compresskit.cli import cli
from compresskit.config import RecipeError, load_recipe
from compresskit.utils.safe_yaml import MAX_DEPTH, MAX_NODES, YamlInputError, decode_yaml_bytes, load_yaml

BOMB = textwrap.dedent("""\
    a: &a [x, x, x, x, x, x, x, x, x, x]
    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
    f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
    g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
    h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
    i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
    """)
MAPPING_BOMB = "".join(f"l{n}: &l{n} {{{', '.join(f'k{i}: *l{n - 1}' for i in range(9))}}}\n"
                       for n in range(1, 9)).replace("*l0", "1")

# (text, fragment of the one-line message): every class of refused input
REFUSED = [
    ("name: a\nseed: 1\nname: b\n", "line 3: duplicate key 'name' (first at line 1)"),
    ("distill:\n  epochs: 1\n  lr: 0.1\n  epochs: 2\n", "line 4: duplicate key 'epochs' (first at line 2)"),
    ("distill: {epochs: 1}\nseed: 0\ndistill: {lr: 0.1}\n", "line 3: duplicate key 'distill' (first at line 1)"),
    ("x: {a: 1, b: 2, a: 3}\n", "duplicate key 'a'"),
    (BOMB, f"aliases expand to more than {MAX_NODES:,} nodes"),
    (MAPPING_BOMB, f"aliases expand to more than {MAX_NODES:,} nodes"),
    ("a: &a [1, *a]\n", "recursive alias"),
    ("[" * 20_000 + "]" * 20_000, f"nested deeper than {MAX_DEPTH} levels"),
    ("a:\n" + "".join("  " * i + "- \n" for i in range(1, 200)), f"nested deeper than {MAX_DEPTH} levels"),
    ("{a: " * 5_000 + "1" + "}" * 5_000, f"nested deeper than {MAX_DEPTH} levels"),
]


@pytest.mark.parametrize(("text", "fragment"), REFUSED)
def test_refused_yaml_names_the_line(text, fragment):
    with pytest.raises(YamlInputError) as raised:
        load_yaml(text)
    message = str(raised.value)
    assert fragment in message and message.startswith("line ") and "\n" not in message


def test_what_plain_yaml_means_is_kept():
    text = "base: &base {lr: 0.1, epochs: 2}\ndistill:\n  <<: *base\n  epochs: 5\nlist: [*base, *base]\n"
    data = load_yaml(text)
    assert data["distill"] == {"lr": 0.1, "epochs": 5}  # merge keys: explicit keys override
    assert data["list"] == [{"lr": 0.1, "epochs": 2}] * 2  # small alias use is fine
    assert load_yaml("") is None
    assert load_yaml("[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)) is not None
    with pytest.raises(Exception, match="could not determine a constructor"):
        load_yaml("!!python/object/apply:os.system ['true']")  # still the safe loader


@pytest.mark.parametrize(("data", "fragment"), [
    (b"name: a\n\x00\x01\x02", "line 2: binary file (NUL byte at offset 8)"),
    (b"name: caf\xe9\n", "line 1: not UTF-8 text (byte 0xe9 at offset 9)"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "binary file"),
    (b"a: 1\n" * (2**20), "recipes are at most"),
])
def test_binary_non_utf8_and_huge_files(data, fragment):
    with pytest.raises(YamlInputError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        decode_yaml_bytes(data)
    assert decode_yaml_bytes("name: café\n".encode()) == "name: café\n"


@pytest.mark.parametrize(("content", "fragment"), [
    ("name: a\nname: b\n", "x.yaml: line 2: duplicate key 'name' (first at line 1)"),
    (BOMB, "aliases expand to more than"),
    ("[" * 20_000, "x.yaml: line 1: nested deeper"),
    (b"\xff\xfe\x00n\x00a", "x.yaml: line 1: binary file"),
    (b"name: \xc3\x28\n", "x.yaml: line 1: not UTF-8 text"),
])
def test_load_recipe_and_cli_give_one_line_and_exit_2(tmp_path: Path, content, fragment):
    path = tmp_path / "x.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(RecipeError, match="x.yaml: line"):
        load_recipe(path, resolve=False)
    result = CliRunner().invoke(cli, ["run", str(path), "--dry-run"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and fragment in lines[0]


def test_a_huge_quoted_value_gives_a_short_message(tmp_path: Path):
    path = tmp_path / "x.yaml"
    path.write_text(f"name: n\ntask: t\nseed: '{'9' * 2_000_000}'\nstudent: {{model: m}}\n")
    with pytest.raises(RecipeError) as raised:
        load_recipe(path, resolve=False)
    assert "seed" in str(raised.value) and len(str(raised.value)) < 1100


def test_set_values_are_bounded_too():
    from compresskit.config import parse_override

    with pytest.raises(RecipeError, match="duplicate key"):
        parse_override("distill={epochs: 1, epochs: 2}")
