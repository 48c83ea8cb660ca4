"""Fixtures shared by the FeatherFace tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to the shared real data (``repo_root/../shared/data``; env ``COMPRESSKIT_SHARED_DATA`` overrides).

    Skips the test with the reason when the folder is absent.
    """
    path = Path(os.environ.get("COMPRESSKIT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set COMPRESSKIT_SHARED_DATA)")
    return path
