"""An exclusive lock on a run directory: one training process per run at a time.

The lock is the file ``RUN_DIR/run.lock``, created with ``O_CREAT | O_EXCL`` (atomic on POSIX
file systems, including NFSv3 and later), holding JSON ``{"pid", "host", "started"}``. A
second ``geonorm-jax train --out RUN_DIR`` or ``--resume RUN_DIR`` (or
:func:`geonorm_jax.train.train` from another process) finds the file and is refused with
:class:`RunLockedError`, naming the holder; nothing in the directory is touched.

A lock left by a process that died without releasing it (``kill -9``, a power cut) is *stale*
when its host is this host and no process with its pid exists (``os.kill(pid, 0)`` raises
``ProcessLookupError``); it is taken over with a one-line warning. A lock held on another host
cannot be checked from here and is always refused (the message says how to remove it). The
takeover renames the stale file to a unique name first, so of two processes that find the same
stale lock exactly one gets it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

__all__ = ["LOCK_NAME", "RunLock", "RunLockedError", "read_lock", "check_unlocked"]

LOCK_NAME = "run.lock"


class RunLockedError(ValueError):
    """Another live process holds the lock of a run directory."""


def read_lock(run_dir: str | Path) -> dict | None:
    """The holder ``{"pid", "host", "started"}`` of ``run_dir``'s lock, or None if unlocked.

    An unreadable lock file (a writer killed between create and write) reads as
    ``{"pid": None, "host": None, "age": seconds since it was modified}``.
    """
    path = Path(run_dir) / LOCK_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        text = ""
    try:
        holder = json.loads(text)
        if isinstance(holder, dict):
            return holder
    except ValueError:
        pass
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        age = 0.0
    return {"pid": None, "host": None, "age": age}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _is_stale(holder: dict) -> bool:
    """True when the holder is a dead process on this host, or the file is unreadable and
    older than 10 s (its writer died between creating and writing it)."""
    pid, host = holder.get("pid"), holder.get("host")
    if pid is None or host is None:
        return holder.get("age", 0.0) > 10.0
    return host == socket.gethostname() and not _pid_alive(int(pid))


def _describe(run_dir: Path, holder: dict) -> str:
    started = holder.get("started")
    when = (time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(started))
            if isinstance(started, (int, float)) else "")
    return (f"run directory {str(run_dir)!r} is in use by process {holder.get('pid')} on host "
            f"{holder.get('host')!r}{when} (lock file {str(run_dir / LOCK_NAME)!r}); wait for "
            "it to finish, or stop it, or choose another --out")


def check_unlocked(run_dir: str | Path) -> None:
    """Raise :class:`RunLockedError` if a live process holds ``run_dir``'s lock (a quick check
    before expensive work; :meth:`RunLock.acquire` is the real test)."""
    run_dir = Path(run_dir)
    holder = read_lock(run_dir)
    if holder is not None and not _is_stale(holder) and holder.get("pid") != os.getpid():
        raise RunLockedError(_describe(run_dir, holder))


class RunLock:
    """The lock of one run directory (module docstring). Use as a context manager, or
    :meth:`acquire` / :meth:`release`.

    Args:
      run_dir: the run directory (must exist when :meth:`acquire` is called).
      stream: where the one-line warning of a stale-lock takeover goes (``write(str)``).
    """

    def __init__(self, run_dir: str | Path, stream=None):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.stream = stream
        self.held = False

    def acquire(self) -> RunLock:
        """Create the lock file, taking over a stale one; :class:`RunLockedError` if held."""
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = read_lock(self.run_dir)
                if holder is None:
                    continue  # released meanwhile: try again
                if not _is_stale(holder):
                    raise RunLockedError(_describe(self.run_dir, holder)) from None
                aside = self.path.with_name(f".{LOCK_NAME}.stale.{os.getpid()}")
                try:
                    os.rename(self.path, aside)  # only one of two takers succeeds
                except FileNotFoundError:
                    continue
                aside.unlink(missing_ok=True)
                if self.stream is not None:
                    self.stream.write(
                        f"warning: took over the stale lock of {str(self.run_dir)!r} (process "
                        f"{holder.get('pid')} on host {holder.get('host')!r} no longer runs)\n")
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me) + "\n")
                f.flush()
                os.fsync(f.fileno())
            self.held = True
            return self
        raise RunLockedError(f"run directory {str(self.run_dir)!r}: could not take its lock "
                             f"{str(self.path)!r} (contended)")

    def release(self) -> None:
        """Remove the lock file if this object holds it (idempotent)."""
        if self.held:
            holder = read_lock(self.run_dir)
            if holder is not None and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
