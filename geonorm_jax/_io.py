"""Atomic file writes, the one implementation the package uses for every file it writes.

A file is written under a temporary name in its own directory, flushed and ``fsync``-ed, made
readable (mode ``0o644``; ``tempfile.mkstemp`` creates ``0o600``) and renamed over the target
with ``os.replace``. A reader therefore sees the old file or the complete new one, never a
partial one, and a writer killed half-way leaves only a stray ``.NAME.*.tmp`` file (removed
when the writer raises a Python exception).

* :func:`atomic_write` — the general form: ``write_fn(f)`` streams into the open temporary file
  (``np.savez(f, **arrays)``, a JSON-lines loop, ...), so nothing is built in memory twice.
* :func:`atomic_write_bytes` / :func:`atomic_write_text` — a whole ``bytes`` / ``str`` value.
* :func:`write_json_atomic` — an object as indented JSON.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "write_json_atomic"]


def atomic_write(
    path: str | os.PathLike, write_fn: Callable[[IO], Any], *, text: bool = False
) -> Path:
    """Create or replace ``path`` atomically with what ``write_fn`` writes.

    Args:
      path: the target file; its parent directories are created if needed.
      write_fn: called once as ``write_fn(f)`` with the temporary file open for writing
        (binary, or text in UTF-8 with ``text=True``); its return value is ignored. It must
        not close ``f``.
      text: open the temporary file in text mode instead of binary.

    Returns:
      ``path`` as a ``Path``.

    Raises:
      Exception: whatever ``write_fn`` or the file system raises; the temporary file is
        removed first and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w" if text else "wb", **({"encoding": "utf-8"} if text else {})) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, data: str) -> Path:
    """Write the string ``data`` to ``path`` in UTF-8, atomically (see :func:`atomic_write`)."""
    return atomic_write_bytes(path, data.encode("utf-8"))


def write_json_atomic(
    path: str | os.PathLike, obj: Any, indent: int = 1, *, sort_keys: bool = False
) -> Path:
    """``json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\\n"``, written atomically
    (see :func:`atomic_write`)."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n"
    return atomic_write_bytes(path, text.encode())
