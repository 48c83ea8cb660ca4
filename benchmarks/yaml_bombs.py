"""How fast hostile recipes are refused (issue 13, item 5): alias bombs and deep nesting.

Before the bounded loader a 1.2 KB recipe of nested aliases took 35 s and 709 MB (issue 13). Here each
file goes through ``load_recipe`` and the time to the one-line ``RecipeError`` and its length are printed.

Usage::

    .venv/bin/python benchmarks/yaml_bombs.py
"""

from __future__ import annotations

import os
import tempfile
import time

from compresskit.config import RecipeError, load_recipe

LIST_BOMB = "".join(
    f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]\n" for n in range(1, 10)).replace("*l0", "x")
MAPPING_BOMB = "".join(
    f"m{n}: &m{n} {{{', '.join(f'k{i}: *m{n - 1}' for i in range(9))}}}\n" for n in range(1, 9)).replace("*m0", "1")
CASES = {"list alias bomb (10^9 leaves)": LIST_BOMB, "mapping alias bomb (9^8 leaves)": MAPPING_BOMB,
         "20,000-deep list": "[" * 20_000 + "]" * 20_000, "5,000-deep mapping": "{a: " * 5_000 + "1" + "}" * 5_000,
         "duplicate key": "name: a\nseed: 0\nname: b\n"}


def main() -> None:
    for name, text in CASES.items():
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
            handle.write(text)
        try:
            start = time.perf_counter()
            try:
                load_recipe(handle.name, resolve=False)
                message = "accepted"
            except RecipeError as error:
                message = str(error).split(": ", 1)[1]
            seconds = time.perf_counter() - start
        finally:
            os.unlink(handle.name)
        print(f"{name}: {len(text.encode()):,} bytes, refused in {1000 * seconds:.1f} ms: {message}")


if __name__ == "__main__":
    main()
