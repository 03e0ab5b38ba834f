"""Data provenance and the data check before training.

``RUN_DIR/data.json`` records what a run was trained on (``config.json`` stays the config)::

    {"task": "nbody", "sha256": "<hex>", "source": {...}, "splits": {"train": {"loc":
     {"shape": [S, N, 3], "dtype": "float32"}, ...}, ...}}

``sha256`` is :func:`data_hash` of the arrays the run actually trains and evaluates on (after
the task's split and ``train_samples``), so it changes with any byte of the data, whatever its
source; ``source`` is the task's description of where they came from (the N-body data
directory's generation parameters, or the molecular dataset's metadata; no machine paths).
:func:`check_provenance` compares a run's ``data.json`` with the data loaded now: ``eval`` and
``--resume`` refuse different data (:class:`DataMismatchError`); a run directory written
before ``data.json`` existed passes with a one-line note.

:func:`check_finite` is the data check before training: the first non-finite value is
reported with its split, field and sample index (the layers themselves stay pure and check
nothing inside ``jit``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from geonorm_jax._io import write_json_atomic

__all__ = ["DATA_JSON", "DataMismatchError", "data_hash", "describe", "check_finite",
           "write_provenance", "read_provenance", "check_provenance"]

DATA_JSON = "data.json"


class DataMismatchError(ValueError):
    """The data loaded now is not the data a run was trained on."""


def _fields(data: dict):
    """``(split, field, numpy array)`` in sorted order."""
    for split in sorted(data):
        for field in sorted(data[split]):
            yield split, field, np.asarray(data[split][field])


def data_hash(data: dict) -> str:
    """SHA-256 (hex) of ``{split: {field: array}}``: each field's name, dtype, shape and
    C-order bytes, in sorted split and field order."""
    h = hashlib.sha256()
    for split, field, a in _fields(data):
        h.update(json.dumps([split, field, a.dtype.str, list(a.shape)]).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def describe(data: dict, task: str, source: dict | None = None) -> dict:
    """The ``data.json`` record of ``data`` (module docstring)."""
    return {
        "task": task,
        "sha256": data_hash(data),
        "source": source or {},
        "splits": {split: {field: {"shape": list(a.shape), "dtype": str(a.dtype)}
                           for s2, field, a in _fields(data) if s2 == split}
                   for split in sorted(data)},
    }


def check_finite(data: dict, where: str = "data") -> None:
    """Raise ``ValueError`` at the first non-finite value of a floating field, naming the
    split, the field, the sample index (leading axis) and the count of bad samples."""
    for split, field, a in _fields(data):
        if not np.issubdtype(a.dtype, np.floating):
            continue
        bad = ~np.isfinite(a.reshape(a.shape[0], -1)).all(axis=1) if a.ndim else \
            ~np.isfinite(a.reshape(1))
        if bad.any():
            first = int(np.argmax(bad))
            value = a.reshape(a.shape[0], -1)[first] if a.ndim else a.reshape(1)
            value = value[~np.isfinite(value)][0]
            raise ValueError(
                f"{where}: split {split!r} field {field!r} has non-finite values ({value}) at "
                f"sample {first} ({int(bad.sum())} of {bad.size} samples affected); the model "
                "cannot train on it (corrupt data?)")


def write_provenance(run_dir: str | Path, record: dict) -> Path:
    """Write ``RUN_DIR/data.json`` atomically."""
    return write_json_atomic(Path(run_dir) / DATA_JSON, record, indent=2)


def read_provenance(run_dir: str | Path) -> dict | None:
    """``RUN_DIR/data.json``, or None if the run has none (older run directories)."""
    path = Path(run_dir) / DATA_JSON
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def check_provenance(run_dir: str | Path, record: dict, action: str, stream=None,
                     legacy_sha256: str | None = None) -> bool:
    """Compare ``RUN_DIR/data.json`` with ``record`` (the data loaded now).

    ``legacy_sha256``: the hash the same data had in the layout of older releases (the
    molecular task stored absolute energies in float32 before it stored float64-shifted
    residuals); a ``data.json`` holding it matches too.

    Returns True if the run has a ``data.json`` (and it matches), False if it has none (a
    one-line note goes to ``stream``).

    Raises:
      DataMismatchError: the hashes differ; the message names both hashes and sources.
    """
    saved = read_provenance(run_dir)
    if saved is None:
        if stream is not None:
            stream.write(f"note: {str(Path(run_dir))!r} has no {DATA_JSON} (written before "
                         "data provenance was recorded); the data cannot be checked\n")
        return False
    if legacy_sha256 is not None and saved.get("sha256") == legacy_sha256:
        return True
    if saved.get("sha256") != record["sha256"]:
        changes = _source_changes(saved, record)
        raise DataMismatchError(
            f"cannot {action} {str(Path(run_dir))!r}: the data differs from the data it was "
            f"trained on (sha256 {str(saved.get('sha256'))[:16]}... from "
            f"{_source(saved)}, now {record['sha256'][:16]}... from {_source(record)}"
            + (f"; trained != now: {changes}" if changes else "")
            + "); pass the run's --data-dir / data file, or start a new run")
    return True


def _source_changes(saved: dict, now: dict) -> str:
    """``"seed 43 != 44, ..."`` for the generation parameters that differ, if both record
    them."""
    a = (saved.get("source") or {}).get("config")
    b = (now.get("source") or {}).get("config")
    if not isinstance(a, dict) or not isinstance(b, dict):
        return ""
    return ", ".join(f"{k} {a.get(k)!r} != {b.get(k)!r}"
                     for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))


def _source(record: dict) -> str:
    src = record.get("source") or {}
    name = src.get("name") or src.get("source") or "?"
    return str(name)
