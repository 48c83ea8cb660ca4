"""Write one ``## `` section of ``benchmarks/RESULTS.md`` in place (the benchmarks that own a section)."""

from __future__ import annotations

import os
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = ("# Benchmark results\n\nEach section is owned by one area; the command that produced it is given in "
          "the section.\n")


def write_section(section: str, text: str, path: Path = RESULTS) -> None:
    """Replace the section whose heading line is ``section`` by ``text``, or append ``text`` if absent."""
    content = path.read_text() if path.exists() else HEADER
    if section in content:
        start = content.index(section)
        following = content.find("\n## ", start + len(section))
        end = len(content) if following == -1 else following + 1
        content = content[:start] + text + ("\n" if following != -1 else "") + content[end:]
    else:
        content = content.rstrip("\n") + "\n\n" + text
    tmp = path.with_name(f".{path.name}.tmp")  # written whole, then renamed: never half a file
    tmp.write_text(content)
    os.replace(tmp, path)
