"""Work in progress of an ``md17-xtb`` generation: the ``chunks/`` directory and the unit of
work that fills it (run in a worker process).

Files in ``<data set>/chunks/``::

    geometry.npz            relaxed start geometry (atomic_numbers, positions, energy, smiles,
                            cache_key)
    tTT_equil.npz           trajectory TT after equilibration (state only)
    tTT_fSSSSSS_EEEEEE.npz  frames [SSSSSS, EEEEEE) of trajectory TT: positions [n, A, 3],
                            energies [n], forces [n, A, 3], step [n], and the state after them

Each file also holds the state needed to continue (positions, velocities, forces, energy, step,
the PCG64 state as JSON, the cache key); a chunk continues from the file before it, so a
trajectory is the chain equilibration, chunk from frame 0, chunk from where that one stopped,
and so on (:func:`completed`, :func:`chain`). Files are written atomically; one with another
cache key or unreadable does not count.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from geonorm_jax._io import atomic_write_bytes
from geonorm_jax.data.molecules.config import MoleculeConfig
from geonorm_jax.data.molecules.store import MolecularDataError, npz_bytes, read_npz

__all__ = [
    "worker_init",
    "equil_path",
    "chunk_path",
    "run_task",
    "completed",
    "chain",
    "prepare_geometry",
]


def worker_init() -> None:
    """Worker process initializer: single-threaded BLAS and OpenMP (one xTB per core)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"


def equil_path(chunks: Path, t: int) -> Path:
    """The file of trajectory ``t`` after equilibration."""
    return chunks / f"t{t:02d}_equil.npz"


def chunk_path(chunks: Path, t: int, start: int, stop: int) -> Path:
    """The file of frames ``[start, stop)`` of trajectory ``t``."""
    return chunks / f"t{t:02d}_f{start:06d}_{stop:06d}.npz"


def _state_arrays(state, rng, key: str, evaluations: int) -> dict[str, Any]:
    from geonorm_jax.data.molecules.md import generator_state

    return {
        "state_positions": state.positions,
        "state_velocities": state.velocities,
        "state_forces": state.forces,
        "state_energy": np.float64(state.energy),
        "state_step": np.int64(state.step),
        "rng_state": np.str_(generator_state(rng)),
        "cache_key": np.str_(key),
        "evaluations": np.int64(evaluations),
    }


def _load_state(arrays: dict[str, np.ndarray]):
    from geonorm_jax.data.molecules.md import MDState, generator_from_state

    state = MDState(
        arrays["state_positions"],
        arrays["state_velocities"],
        float(arrays["state_energy"]),
        arrays["state_forces"],
        int(arrays["state_step"]),
    )
    return state, generator_from_state(str(arrays["rng_state"]))


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    """Runs the equilibration (``start is None``) or frames ``[start, stop)`` of trajectory
    ``t`` and writes the result atomically. Returns counts for the progress report."""
    from geonorm_jax.data.molecules.md import (
        MDState,
        atomic_masses,
        langevin_steps,
        maxwell_boltzmann,
    )
    from geonorm_jax.data.molecules.xtb import XTB

    began = time.perf_counter()
    config = MoleculeConfig.from_dict(task["config"])
    chunks, t, start, stop = Path(task["chunks"]), task["t"], task["start"], task["stop"]
    key = config.cache_key()
    geometry = read_npz(chunks / "geometry.npz")
    if geometry is None:
        raise MolecularDataError(f"{chunks / 'geometry.npz'}: missing relaxed geometry")
    z = geometry["atomic_numbers"]
    xtb, masses = XTB(z, method=config.method), atomic_masses(z)
    dt, temp, gamma = config.timestep, config.temperature, config.friction
    if start is None:
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([config.seed, t])))
        x = geometry["positions"]
        energy, forces = xtb(x)
        state = MDState(x, maxwell_boltzmann(masses, temp, rng), energy, forces, 0)
        state = langevin_steps(state, xtb, masses, config.equilibration, dt, temp, gamma, rng)
        payload = _state_arrays(state, rng, key, xtb.evaluations)
        atomic_write_bytes(equil_path(chunks, t), npz_bytes(**payload))
        return {
            "t": t,
            "frames": 0,
            "evaluations": xtb.evaluations,
            "seconds": time.perf_counter() - began,
        }
    previous = task["previous"]
    arrays = read_npz(Path(previous))
    if arrays is None:
        raise MolecularDataError(f"{previous}: missing or unreadable chunk")
    state, rng = _load_state(arrays)
    n = stop - start
    a = z.shape[0]
    out = {
        "positions": np.empty((n, a, 3)),
        "energies": np.empty(n),
        "forces": np.empty((n, a, 3)),
        "step": np.empty(n, np.int64),
    }
    for k in range(n):
        state = langevin_steps(state, xtb, masses, config.stride, dt, temp, gamma, rng)
        out["positions"][k], out["energies"][k] = state.positions, state.energy
        out["forces"][k], out["step"][k] = state.forces, state.step
    payload = {**out, **_state_arrays(state, rng, key, xtb.evaluations)}
    atomic_write_bytes(chunk_path(chunks, t, start, stop), npz_bytes(**payload))
    return {
        "t": t,
        "frames": n,
        "evaluations": xtb.evaluations,
        "seconds": time.perf_counter() - began,
    }


_CHUNK_RE = re.compile(r"^t(\d+)_f(\d+)_(\d+)\.npz$")


def _valid_state_file(path: Path, key: str) -> bool:
    arrays = read_npz(path)
    return arrays is not None and str(arrays.get("cache_key", "")) == key


def completed(chunks: Path, t: int, key: str) -> tuple[Path | None, int]:
    """The last file of trajectory ``t``'s contiguous chain (equilibration, then chunks
    starting at frame 0) and the number of frames it reaches; ``(None, 0)`` if nothing."""
    equil = equil_path(chunks, t)
    if not _valid_state_file(equil, key):
        return None, 0
    by_start: dict[int, tuple[int, Path]] = {}
    for path in chunks.glob(f"t{t:02d}_f*.npz"):
        m = _CHUNK_RE.match(path.name)
        if m and int(m.group(3)) > int(m.group(2)):
            by_start[int(m.group(2))] = (int(m.group(3)), path)
    last, reached = equil, 0
    while reached in by_start and _valid_state_file(by_start[reached][1], key):
        reached, last = by_start[reached]
    return last, reached


def chain(chunks: Path, t: int, frames: int) -> list[Path]:
    """The chunk files of trajectory ``t`` in frame order, covering frames ``[0, frames)``
    (all must exist: called on a finished generation)."""
    paths, reached = [], 0
    by_start = {}
    for path in chunks.glob(f"t{t:02d}_f*.npz"):
        m = _CHUNK_RE.match(path.name)
        if m:
            by_start[int(m.group(2))] = (int(m.group(3)), path)
    while reached < frames:
        stop, path = by_start[reached]
        paths.append(path)
        reached = stop
    return paths


def prepare_geometry(config: MoleculeConfig, chunks: Path) -> dict[str, Any]:
    """The relaxed start geometry of ``config`` (``chunks/geometry.npz``), built with RDKit and
    relaxed with xTB unless a file with ``config``'s cache key is there already."""
    from geonorm_jax.data.molecules.structures import build_geometry

    path = chunks / "geometry.npz"
    arrays = read_npz(path)
    if arrays is not None and str(arrays.get("cache_key", "")) == config.cache_key():
        return arrays
    g = build_geometry(config.molecule, seed=config.seed, method=config.method, fmax=config.fmax)
    arrays = {
        "atomic_numbers": g["atomic_numbers"],
        "positions": g["positions"],
        "energy": np.float64(g["energy"]),
        "max_force": np.float64(g["max_force"]),
        "bfgs_steps": np.int64(g["bfgs_steps"]),
        "smiles": np.str_(g["smiles"]),
        "cache_key": np.str_(config.cache_key()),
    }
    atomic_write_bytes(path, npz_bytes(**arrays))
    return arrays
