"""Loader for the files written by the EGNN authors' ``generate_dataset.py``.

They are ``{kind}_{split}_charged{N}_initvel1{suffix}.npy`` for kind in loc, vel, edges,
charges; ``loc`` and ``vel`` are ``[S, T, 3, N]`` (coordinates before particles), ``edges`` is
``[S, N, N]`` and ``charges`` ``[S, N, 1]``. The EGNN "small" set has suffix ``"small"``
(``loc_train_charged5_initvel1small.npy``).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from geonorm_jax.data.config import canonical_split
from geonorm_jax.data.files import DataFileError
from geonorm_jax.data.samples import Samples, select_frames

__all__ = ["reference_filename", "load_reference_trajectories", "load_reference_split"]

_KINDS = ("loc", "vel", "edges", "charges")


def reference_filename(
    kind: str, split: str, particles: int = 5, suffix: str = "", initial_vel: int = 1
) -> str:
    """E.g. ``reference_filename("loc", "train", 5, "small")`` is
    ``"loc_train_charged5_initvel1small.npy"``."""
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    return f"{kind}_{canonical_split(split)}_charged{particles}_initvel{initial_vel}{suffix}.npy"


def _load(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataFileError(f"{path}: reference file not found")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataFileError(f"{path}: unreadable or truncated .npy file ({e})") from e


def load_reference_trajectories(
    directory: str | os.PathLike,
    split: str,
    *,
    particles: int = 5,
    suffix: str = "",
    initial_vel: int = 1,
    max_samples: int | None = None,
) -> dict[str, np.ndarray]:
    """Reads one reference split and converts it to this package's layout.

    Returns:
      dict with ``loc``, ``vel`` float32 ``[S, T, N, 3]`` (transposed from ``[S, T, 3, N]``),
      ``charges`` float32 ``[S, N, 1]`` and ``edges`` float32 ``[S, N, N]``; the first
      ``max_samples`` trajectories if given (the EGNN script uses 3000 for training).

    Raises:
      DataFileError: naming the file, if it is missing, unreadable or of the wrong shape.
    """
    directory = Path(directory)
    paths = {
        kind: directory / reference_filename(kind, split, particles, suffix, initial_vel)
        for kind in _KINDS
    }
    arrays = {kind: _load(path) for kind, path in paths.items()}
    loc = arrays["loc"]
    if loc.ndim != 4 or loc.shape[2] != 3 or loc.shape[3] != particles:
        raise DataFileError(
            f"{paths['loc']}: expected [S, T, 3, {particles}], got shape {loc.shape}"
        )
    s, t = loc.shape[:2]
    expected = {
        "vel": (s, t, 3, particles),
        "edges": (s, particles, particles),
        "charges": (s, particles, 1),
    }
    for kind, shape in expected.items():
        if arrays[kind].shape != shape:
            raise DataFileError(f"{paths[kind]}: expected shape {shape}, got {arrays[kind].shape}")
    stop = s if max_samples is None else int(max_samples)
    if stop < 1:
        raise ValueError(f"max_samples must be positive, got {max_samples}")
    as32 = lambda a: np.ascontiguousarray(a[:stop], dtype=np.float32)
    return {
        "loc": as32(np.swapaxes(loc, 2, 3)),
        "vel": as32(np.swapaxes(arrays["vel"], 2, 3)),
        "charges": as32(arrays["charges"]),
        "edges": as32(arrays["edges"]),
    }


def load_reference_split(
    directory: str | os.PathLike,
    split: str,
    frame_in: int = 30,
    frame_out: int = 40,
    *,
    particles: int = 5,
    suffix: str = "",
    initial_vel: int = 1,
    max_samples: int | None = None,
) -> Samples:
    """Samples ``(loc[frame_in], vel[frame_in], charges, loc[frame_out])`` from reference files,
    as EGNN's ``NBodyDataset`` does (``frame_in=30, frame_out=40, suffix="small"`` for
    ``nbody_small``)."""
    arrays = load_reference_trajectories(
        directory,
        split,
        particles=particles,
        suffix=suffix,
        initial_vel=initial_vel,
        max_samples=max_samples,
    )
    return select_frames(arrays["loc"], arrays["vel"], arrays["charges"], frame_in, frame_out)
