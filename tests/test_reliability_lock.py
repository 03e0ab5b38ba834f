"""The run-directory lock with real processes: a second trainer on a locked run directory is
refused at once, naming the holder, and touches nothing; stale locks are taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from geonorm_jax.train import config as cfg
from geonorm_jax.train import lock as lock_module
from geonorm_jax.train import loop
from geonorm_jax.train.lock import LOCK_NAME, RunLock, RunLockedError, read_lock

# lock.py imports only the standard library: the helper processes load it from its file, not
# through the package (whose import pulls in JAX and takes seconds per process).
LOAD_LOCK = textwrap.dedent(f"""
    import importlib.util, sys, time
    spec = importlib.util.spec_from_file_location("lock", {str(Path(lock_module.__file__))!r})
    lock_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock_mod)
    RunLock, RunLockedError = lock_mod.RunLock, lock_mod.RunLockedError
""")

# A process that takes the lock of argv[1] through RunLock, says so, and holds it until killed.
HOLDER = LOAD_LOCK + textwrap.dedent("""
    lock = RunLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(120)
""")


@pytest.fixture
def held(tmp_path):
    """A run directory (with a file of the first run) locked by a live second process."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"epoch": 1}\n')
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield run_dir, proc
    finally:
        proc.kill()
        proc.wait()


def _snapshot(run_dir: Path) -> dict:
    return {p.relative_to(run_dir).as_posix(): p.read_bytes()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "geonorm_jax.cli", *args]


def test_second_cli_process_is_refused_at_once_and_touches_nothing(held, tmp_path):
    run_dir, holder = held
    before = _snapshot(run_dir)
    env = dict(os.environ, GEONORM_JAX_CACHE=str(tmp_path / "cache"),
               GEONORM_JAX_NO_COMPILE_CACHE="1")
    # --out here; --resume and train() in-process below (each CLI process imports JAX)
    proc = subprocess.run(_cli("train", "--test", "--no-progress", "--out", str(run_dir)),
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert f"in use by process {holder.pid}" in line and socket.gethostname() in line, line
    assert not (tmp_path / "cache").exists()  # refused before loading or generating data
    assert _snapshot(run_dir) == before and holder.poll() is None


def test_in_process_train_and_resume_are_refused(held):
    run_dir, holder = held
    before = _snapshot(run_dir)
    config = cfg.preset("test")
    with pytest.raises(RunLockedError, match=f"process {holder.pid}"):
        loop.train(config, run_dir, progress=False)
    (run_dir / "config.json").write_text("{}")  # make it look resumable
    before["config.json"] = b"{}"
    with pytest.raises(RunLockedError, match=f"process {holder.pid}"):
        loop.train(config, run_dir, resume=True, progress=False)
    assert _snapshot(run_dir) == before


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid no longer runs
    (tmp_path / LOCK_NAME).write_text(json.dumps(
        {"pid": dead.pid, "host": socket.gethostname(), "started": time.time()}))

    class Lines(list):
        def write(self, s):
            self.append(s)

    out = Lines()
    lock = RunLock(tmp_path, stream=out).acquire()
    assert read_lock(tmp_path)["pid"] == os.getpid()
    assert len(out) == 1 and "stale" in out[0] and str(dead.pid) in out[0]
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_of_another_host_is_refused_and_kept(tmp_path):
    holder = {"pid": 1, "host": "elsewhere.example", "started": time.time()}
    (tmp_path / LOCK_NAME).write_text(json.dumps(holder))
    with pytest.raises(RunLockedError, match="elsewhere.example"):
        RunLock(tmp_path).acquire()
    assert json.loads((tmp_path / LOCK_NAME).read_text()) == holder


def test_two_processes_racing_for_one_lock_get_it_once(tmp_path):
    """Four processes start together; exactly one holds the lock, the others are refused."""
    script = LOAD_LOCK + textwrap.dedent("""
        time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
        try:
            RunLock(sys.argv[1]).acquire()
            print("got", flush=True)
            time.sleep(3)
        except RunLockedError:
            print("refused", flush=True)
    """)
    start = time.time() + 2.0
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(start)],
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sorted(results) == ["got"] + ["refused"] * 3, results
