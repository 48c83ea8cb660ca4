"""Atomic writes: the destination is replaced whole, or left as it was."""

from __future__ import annotations

import pytest
import torch

from compresskit.utils.atomic import atomic_path, atomic_torch_save, atomic_write_text


def test_write_replaces_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "state.json"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "model.pt"
    atomic_torch_save({"w": torch.ones(2)}, target)
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as temporary:
            temporary.write_bytes(b"partial")
            raise RuntimeError("disk full")
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


# --- modes and orphans ---------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_get_the_mode_the_umask_gives(tmp_path, umask):
    import os
    import stat

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_torch_save({"w": torch.ones(1)}, tmp_path / "b.pt")
        with open(tmp_path / "plain.txt", "w") as handle:  # what open() gives, for comparison
            handle.write("x")
    finally:
        os.umask(old)
    for name in ("a.txt", "b.pt", "plain.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


def test_a_killed_write_leaves_an_orphan_that_the_next_start_removes(tmp_path):
    import signal
    import subprocess
    import sys
    import textwrap

    from compresskit.utils.atomic import remove_stale_temporaries

    # A writer killed (SIGKILL) inside the block: no clean-up runs, the orphan stays ...
    script = textwrap.dedent(f"""
        import os, signal
        from compresskit.utils.atomic import atomic_path
        with atomic_path({str(tmp_path / 'final.pt')!r}) as temporary:
            temporary.write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert result.returncode == -signal.SIGKILL
    orphans = [p.name for p in tmp_path.iterdir()]
    assert len(orphans) == 1 and orphans[0].startswith(".final.pt.") and orphans[0].endswith(".tmp")
    # ... and the next start removes it, leaving the user's own files alone.
    (tmp_path / "notes.tmp").write_text("mine")
    (tmp_path / ".hidden").write_text("mine")
    removed = remove_stale_temporaries(tmp_path)
    assert [p.name for p in removed] == orphans
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "notes.tmp"]
    assert remove_stale_temporaries(tmp_path / "missing") == []
