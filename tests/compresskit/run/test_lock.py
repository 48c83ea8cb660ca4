"""The run-directory lock: a second run on a directory in use is refused; a killed run's lock is taken over."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_pipeline import TOY, write_recipe

from compresskit.cli import cli
from compresskit.config import load_recipe
from compresskit.run import run
from compresskit.run.lock import LOCK_FILE, RunLockedError, lock_run_dir


def _holder(run_dir: Path) -> subprocess.Popen:
    """Another process that locks ``run_dir`` as a run does and keeps it until killed."""
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from compresskit.run.lock import lock_run_dir
        lock = lock_run_dir(Path({str(run_dir)!r}))
        print("locked", flush=True)
        time.sleep(120)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


def _snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir()}


def test_a_second_lock_in_one_process_is_refused_naming_the_holder(tmp_path):
    lock = lock_run_dir(tmp_path)
    with pytest.raises(RunLockedError) as caught:
        lock_run_dir(tmp_path)
    message = str(caught.value)
    assert f"PID {os.getpid()} on {socket.gethostname()} since " in message
    assert message.startswith(f"{tmp_path} is in use by ") and f"--resume {tmp_path}" in message
    lock.release()
    lock_run_dir(tmp_path).release()  # free again once released
    assert [p.name for p in tmp_path.iterdir()] == [LOCK_FILE]


def test_a_resume_while_the_run_is_going_is_refused_and_writes_nothing(tmp_path, monkeypatch):
    recipe = write_recipe(tmp_path, TOY, monkeypatch)
    run_dir = tmp_path / "run"
    run(load_recipe(recipe), run_dir=run_dir, log=lambda message: None, stop_after="teacher")
    holder = _holder(run_dir)
    try:
        before = _snapshot(run_dir)
        for arguments in (["--resume", str(run_dir)], [str(recipe), "--run-dir", str(run_dir), "--replace"]):
            result = CliRunner().invoke(cli, ["run", *arguments])
            assert result.exit_code == 2, result.output
            lines = result.output.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"Error: {run_dir} is in use by PID {holder.pid} on "
                                                           f"{socket.gethostname()} since ")
            assert _snapshot(run_dir) == before  # nothing written, the holder's lock content included
    finally:
        holder.kill()
        holder.wait()


def test_a_fresh_run_on_a_new_directory_taken_meanwhile_is_refused(tmp_path, monkeypatch):
    recipe = write_recipe(tmp_path, TOY, monkeypatch)
    run_dir = tmp_path / "run"
    import compresskit.run.driver as driver

    original = driver.build_task
    holders = []

    def build_task_while_another_run_starts(loaded):  # the other run makes and locks the directory now
        run_dir.mkdir()
        holders.append(_holder(run_dir))
        return original(loaded)

    monkeypatch.setattr(driver, "build_task", build_task_while_another_run_starts)
    try:
        with pytest.raises(RunLockedError, match=r" is in use by PID \d+ on "):
            run(load_recipe(recipe), run_dir=run_dir, log=lambda message: None, stop_after="teacher")
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE]
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path, monkeypatch):
    recipe = write_recipe(tmp_path, TOY, monkeypatch)
    run_dir = tmp_path / "run"
    run(load_recipe(recipe), run_dir=run_dir, log=lambda message: None, stop_after="teacher")
    holder = _holder(run_dir)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert f'"pid": {holder.pid}' in (run_dir / LOCK_FILE).read_text()  # the dead holder's record stays
    ctx = run(load_recipe(recipe), run_dir=run_dir, resume=True, log=lambda message: None, stop_after="distill")
    assert "distill" in ctx.state["completed"]
    assert f'"pid": {os.getpid()}' in (run_dir / LOCK_FILE).read_text()
    lock_run_dir(run_dir).release()  # and run() released it at its end


def test_the_holders_record_is_written_only_under_the_lock(tmp_path):
    holder = _holder(tmp_path)
    try:
        record = (tmp_path / LOCK_FILE).read_text()
        time.sleep(0.01)
        with pytest.raises(RunLockedError):
            lock_run_dir(tmp_path)
        assert (tmp_path / LOCK_FILE).read_text() == record
    finally:
        holder.kill()
        holder.wait()
