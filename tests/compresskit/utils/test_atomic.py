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


# --- durability and refusals of the file system ----------------------------------------------

def test_the_file_and_then_its_folder_are_fsynced_around_the_rename(tmp_path, monkeypatch):
    import os

    import compresskit.utils.atomic as atomic

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        real_fsync(descriptor)

    def replace(source, destination):
        events.append(("replace", str(destination)))
        real_replace(source, destination)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    atomic_torch_save({"w": torch.ones(2)}, tmp_path / "model.pt")
    assert [kind for kind, _ in events] == ["fsync", "replace", "fsync"]
    assert events[0][1].startswith(str(tmp_path / ".model.pt."))  # the temporary file, before the rename
    assert events[2][1] == str(tmp_path)                            # the folder, after it


@pytest.mark.parametrize("errno_name", ["ENOSPC", "EDQUOT", "EROFS", "EACCES"])
def test_a_refused_write_names_the_destination_and_what_to_do(tmp_path, monkeypatch, errno_name):
    import errno
    import os

    from compresskit.utils.atomic import WriteError

    target = tmp_path / "teacher.last.pt"
    atomic_torch_save({"w": torch.ones(2)}, target)
    code = getattr(errno, errno_name)

    def refuse(obj, handle):  # as torch.save reports it: a RuntimeError over the OSError
        try:
            raise OSError(code, os.strerror(code))
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 331328 vs 331224")

    monkeypatch.setattr(torch, "save", refuse)
    with pytest.raises(WriteError) as caught:
        atomic_torch_save({"w": torch.zeros(2)}, target)
    assert caught.value.errno == code and caught.value.filename == str(target)
    assert str(caught.value).startswith(f"{os.strerror(code).lower()} while writing {target}: ")
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(2))  # the previous file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["teacher.last.pt"]


def test_other_errors_pass_unchanged(tmp_path):
    with pytest.raises(ValueError, match="a bug"):
        with atomic_path(tmp_path / "a.txt"):
            raise ValueError("a bug")


@pytest.fixture
def tiny_file_system(tmp_path):
    """A 1 MB tmpfs mounted for the test (needs root; skipped where mounting is not permitted)."""
    from tiny_fs import tiny_tmpfs

    with tiny_tmpfs(tmp_path / "tiny", "1m") as mount:
        yield mount


def test_a_full_disk_is_a_write_error_and_the_previous_file_survives(tiny_file_system):
    import errno

    from compresskit.utils.atomic import WriteError

    target = tiny_file_system / "teacher.last.pt"
    atomic_torch_save({"w": torch.ones(8)}, target)
    with pytest.raises(WriteError) as caught:
        atomic_torch_save({"w": torch.zeros(400_000)}, target)  # 1.6 MB on a 1 MB file system
    assert caught.value.errno == errno.ENOSPC
    assert str(caught.value) == f"no space left on device while writing {target}: free space on it"
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(8))
    assert sorted(p.name for p in tiny_file_system.iterdir()) == ["teacher.last.pt"]
