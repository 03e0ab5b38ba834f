"""The EGNN authors' charged N-body generator (``generate_dataset.py`` in vgsatorras/egnn, used
by EGNN (Satorras et al., 2021) and the GeoNorm paper (Meng et al.)): a loader for its files
and its integration loop in NumPy.

* :func:`load_reference_trajectories` / :func:`load_reference_split` read its files.
* :func:`simulate_numpy` is its loop (``ChargedParticlesSim.sample_trajectory``) for one
  trajectory, written independently of :mod:`geonorm_jax.data.simulate` in the reference's own
  ``[3, N]`` layout with an ``N x N`` force matrix: the independent check of the JAX simulator
  (the tests compare the two) and the NumPy baseline of the generator benchmark.

The files are ``{kind}_{split}_charged{N}_initvel1{suffix}.npy`` for kind in loc, vel, edges,
charges; ``loc`` and ``vel`` are ``[S, T, 3, N]`` (coordinates before particles), ``edges`` is
``[S, N, N]`` and ``charges`` ``[S, N, 1]``. The EGNN "small" set has suffix ``"small"``
(``loc_train_charged5_initvel1small.npy``).
"""

from __future__ import annotations

import os
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

from geonorm_jax.data.config import canonical_split
from geonorm_jax.data.files import DataFileError
from geonorm_jax.data.samples import Samples, select_frames

__all__ = [
    "reference_filename",
    "load_reference_trajectories",
    "load_reference_split",
    "simulate_numpy",
]

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
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error,
            tokenize.TokenError, SyntaxError) as e:
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


def simulate_numpy(
    loc,
    vel,
    charges,
    steps: int = 5000,
    sample_freq: int = 100,
    dt: float = 0.001,
    box_size: float | None = 5.0,
    k: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """One trajectory with the reference generator's loop, in NumPy float64.

    The loop: reflect the initial state at the walls ``+-box_size`` once (unless None); then
    ``v += dt F(x)`` and, for ``i = 1 .. steps-1``: ``x += dt v``, record ``(x, v)`` when
    ``i % sample_freq == 0``, ``v += dt F(x)``. The Coulomb force
    ``F_i = sum_{j != i} k q_i q_j (x_i - x_j) / |x_i - x_j|^3`` is built from the ``[3, N, N]``
    differences and clipped per component to ``+-0.1 / dt``.

    Args:
      loc, vel: initial positions and velocities ``[N, 3]`` (before the wall reflection).
      charges: ``[N, 1]``.
      steps: T; ``steps // sample_freq - 1`` frames are recorded.
      sample_freq: steps between recorded frames.
      dt: step size.
      box_size: walls of the initial reflection; None skips it.
      k: interaction strength.

    Returns:
      ``(loc, vel)``, each float64 ``[F, N, 3]``; frame ``c`` is the state recorded at step
      ``sample_freq * (c + 1)``.

    Raises:
      ValueError: ``loc``/``vel`` not ``[N, 3]`` or ``charges`` not ``[N, 1]``.
    """
    x = np.array(loc, np.float64)
    v = np.array(vel, np.float64)
    q = np.asarray(charges, np.float64)
    if x.ndim != 2 or x.shape[1] != 3 or v.shape != x.shape:
        raise ValueError(
            f"loc and vel: expected [N, 3] each; received shapes {x.shape} and {v.shape}"
        )
    if q.shape != (x.shape[0], 1):
        raise ValueError(f"charges: expected [N, 1] = {(x.shape[0], 1)}; received {q.shape}")
    x, v = x.T.copy(), v.T.copy()  # [3, N], the reference's layout
    n = x.shape[1]
    max_f = 0.1 / dt
    if box_size is not None:
        over = x > box_size
        x[over] = 2 * box_size - x[over]
        v[over] = -np.abs(v[over])
        under = x < -box_size
        x[under] = -2 * box_size - x[under]
        v[under] = np.abs(v[under])
    edges = q @ q.T

    def force(x):
        diff = np.stack([np.subtract.outer(x[a], x[a]) for a in range(3)])  # [3, N, N]
        r2 = np.sum(diff**2, axis=0)
        np.fill_diagonal(r2, 1.0)
        size = k * edges / r2**1.5
        np.fill_diagonal(size, 0.0)
        return np.clip((size[None] * diff).sum(-1), -max_f, max_f)

    frames = steps // sample_freq - 1
    out_x, out_v = np.zeros((frames, 3, n)), np.zeros((frames, 3, n))
    v += dt * force(x)
    counter = 0
    for i in range(1, steps):
        x += dt * v
        if i % sample_freq == 0:
            out_x[counter], out_v[counter] = x, v
            counter += 1
        v += dt * force(x)
    return out_x.transpose(0, 2, 1), out_v.transpose(0, 2, 1)
