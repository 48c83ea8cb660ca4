"""The helpers beside this file (``zoo``, ``training_helpers``, ``user_project``, ``layout_rules``) and the
test modules other tests borrow toy models and recipes from (``test_pipeline``, ``test_bypass``) are
imported by their plain names from every sub-folder, which mirror the package's sub-packages."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for folder in [HERE, *sorted(path for path in HERE.iterdir() if path.is_dir() and path.name != "__pycache__")]:
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
