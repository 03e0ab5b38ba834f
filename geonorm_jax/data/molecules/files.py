"""Cached, resumable generation of ``md17-xtb`` data sets: Langevin MD at 500 K on GFN2-xTB
(Bannwarth, Ehlert & Grimme, J. Chem. Theory Comput. 15, 1652 (2019)), stored like MD17
(Chmiela et al. 2017): positions (Å), total potential energies (eV), forces (eV/Å), atomic
numbers.

Layout of a data set directory ``<cache>/md17-xtb_<molecule>_seed<seed>_<hash12>/``::

    data.npz        positions [F, A, 3] float64 Å; energies [F] float64 eV;
                    forces [F, A, 3] float64 eV/Å; atomic_numbers [A] int64;
                    trajectory [F] int64 (which trajectory); step [F] int64 (MD step)
    metadata.json   config, cache key, units, statistics, SHA-256 of data.npz (written last)
    chunks/         work in progress (removed once data.npz and metadata.json exist):
                    geometry.npz (relaxed start), tTT_equil.npz, tTT_fSSSSSS_EEEEEE.npz

Every file is written atomically (:mod:`geonorm_jax._io`). A chunk file holds its frames and
the state needed to continue (positions, velocities, forces, energy, step, the PCG64 state as
JSON); a rerun after a kill continues from the last complete chunk of every trajectory and
gives the same bytes as an uninterrupted run (each xTB evaluation starts from the SAD guess, so
results depend on positions only). ``metadata.json``, which holds the hash, is written last: an
interrupted generation never leaves a directory that loads.

Trajectory ``t`` starts from the relaxed geometry with Maxwell-Boltzmann velocities, runs
``equilibration`` steps, then keeps the state after every ``stride`` steps; frame ``k`` of it
is the state after ``equilibration + stride (k + 1)`` steps.

Decorrelation. Measured with::

    python -m geonorm_jax.data.molecules.decorrelation --molecule uracil --steps 20000

(uracil, GFN2-xTB, 500 K, 0.5 fs, friction 0.02/fs, 10 ps after 0.5 ps of equilibration;
272 s on one shared core): the potential energy's autocorrelation C(t) falls to 0.52 at 5 fs
(bond vibrations), then decays with the thermostat: C = 0.24 at 50 fs, 0.07 at 100 fs, 0.00
at 200 fs; it stays below 1/e after 30 fs and the integrated autocorrelation time is
tau_int = 28.6 fs. With ``--friction 0.01``: 1/e after 40.5 fs, tau_int = 44.5 fs, C = 0.15 at
100 fs. The defaults (friction 0.02/fs, stride 200 steps = 100 fs = 3.5 tau_int) keep frames
that are nearly uncorrelated in energy at 2 xTB evaluations per fs.

Generation rate (uracil, the default 2000 frames, 4 trajectories on 2 worker processes)::

    /usr/bin/time -v nice -n 10 geonorm-jax data generate --dataset md17-xtb --molecule uracil

408,004 xTB evaluations (2000 frames x 200 steps + 4 x 2000 equilibration steps + starts) in
1932 s of CPU time, 4.7 ms per evaluation: about 16 minutes of wall time on two free cores.
Measured on a shared 2-core machine (load average 7 to 9, the run got 0.49 cores at nice 10):
3889 s wall, 0.51 frames/s, 105 xTB evaluations/s. The kept frames' energies have a lag-one
autocorrelation of 0.02 to 0.12 across the four trajectories (0.07 expected from C(100 fs)).

Modules: this one plans, runs and assembles a generation (and is the import path of the whole
API); :mod:`geonorm_jax.data.molecules.chunks` holds the chunk files and the unit of work a
worker runs; :mod:`geonorm_jax.data.molecules.store` reads and verifies a finished data set
(layout, ``metadata.json``, ``data.npz``). Its names are re-exported here.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import multiprocessing
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from geonorm_jax._io import atomic_write_bytes, write_json_atomic
from geonorm_jax.data.files import cache_root
from geonorm_jax.data.molecules.chunks import (
    chain,
    chunk_path,
    completed,
    equil_path,
    prepare_geometry,
    worker_init,
)

# A module-level name, looked up at each call, so that tests can replace the unit of work.
from geonorm_jax.data.molecules.chunks import run_task as _run_task
from geonorm_jax.data.molecules.config import MOLECULE_FORMAT_VERSION, MoleculeConfig
from geonorm_jax.data.molecules.dataset import MolecularData, molecular_data
from geonorm_jax.data.molecules.store import (
    CHUNKS_DIR,
    DATA_FILE,
    METADATA_FILE,
    MOLECULE_FORMAT,
    UNITS,
    MolecularDataError,
    describe_molecular_dataset,
    is_complete,
    is_molecular_dataset,
    load_molecular_dataset,
    npz_bytes,
    read_molecular_metadata,
    read_npz,
)

__all__ = [
    "MOLECULE_FORMAT",
    "MolecularDataError",
    "generate_molecular_dataset",
    "get_molecular_dataset",
    "load_molecular_dataset",
    "molecular_dataset",
    "is_molecular_dataset",
    "is_complete",
    "read_molecular_metadata",
    "describe_molecular_dataset",
    "GenerationReport",
]


class GenerationReport(dict):
    """What :func:`generate_molecular_dataset` did: ``frames`` and ``evaluations`` computed in
    this run, ``seconds`` (wall), ``frames_per_second``, ``evaluations_per_second``,
    ``resumed_frames`` (found on disk), ``workers``."""


def generate_molecular_dataset(
    config: MoleculeConfig,
    directory: str | os.PathLike,
    *,
    progress: bool = False,
    workers: int | None = None,
    chunk_frames: int = 50,
    keep_chunks: bool = False,
) -> GenerationReport:
    """Generates (or resumes) the data set of ``config`` in ``directory``.

    Args:
      config: the data set parameters.
      directory: target directory (created if needed).
      progress: show a tqdm progress bar (frames) on stderr.
      workers: worker processes (default ``min(2, cpu count, trajectories)``); ``1`` runs in
        this process. Each worker runs single threaded (``OMP_NUM_THREADS=1``).
      chunk_frames: frames per chunk file (the unit that survives a kill; does not change the
        data).
      keep_chunks: keep ``chunks/`` after assembling (default: removed).

    Returns:
      A :class:`GenerationReport`.
    """
    if not isinstance(chunk_frames, int) or chunk_frames < 1:
        raise ValueError(f"chunk_frames must be a positive integer, got {chunk_frames!r}")
    if workers is None:
        workers = max(1, min(2, os.cpu_count() or 1, config.trajectories))
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    directory = Path(directory)
    chunks = directory / CHUNKS_DIR
    chunks.mkdir(parents=True, exist_ok=True)
    (directory / METADATA_FILE).unlink(missing_ok=True)
    began = time.perf_counter()
    key = config.cache_key()
    geometry = prepare_geometry(config, chunks)
    targets = config.frames_per_trajectory()
    status = [completed(chunks, t, key) for t in range(config.trajectories)]
    resumed = sum(reached for _, reached in status)

    def next_task(t: int) -> dict[str, Any] | None:
        last, reached = status[t]
        common = {"config": config.generation_dict(), "chunks": str(chunks), "t": t}
        if last is None:
            return {**common, "start": None, "stop": None, "previous": None}
        if reached >= targets[t]:
            return None
        stop = min(targets[t], reached + chunk_frames)
        return {**common, "start": reached, "stop": stop, "previous": str(last)}

    def done(task, result) -> None:
        t = task["t"]
        if task["start"] is None:
            status[t] = (equil_path(chunks, t), 0)
        else:
            status[t] = (chunk_path(chunks, t, task["start"], task["stop"]), task["stop"])

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.frames, initial=resumed, unit="frame", desc=config.molecule)
    counts = {"frames": 0, "evaluations": 0}

    def record(task, result) -> None:
        done(task, result)
        counts["frames"] += result["frames"]
        counts["evaluations"] += result["evaluations"]
        if bar is not None:
            bar.update(result["frames"])
            rate = counts["evaluations"] / max(time.perf_counter() - began, 1e-9)
            bar.set_postfix(xtb_per_s=f"{rate:.0f}")

    try:
        if workers == 1:
            for t in range(config.trajectories):
                while (task := next_task(t)) is not None:
                    record(task, _run_task(task))
        else:
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=context, initializer=worker_init
            ) as pool:
                running = {}
                for t in range(config.trajectories):
                    task = next_task(t)
                    if task is not None:
                        running[pool.submit(_run_task, task)] = task
                while running:
                    finished, _ = concurrent.futures.wait(
                        running, return_when=concurrent.futures.FIRST_COMPLETED
                    )
                    for future in finished:
                        task = running.pop(future)
                        record(task, future.result())
                        follow = next_task(task["t"])
                        if follow is not None:
                            running[pool.submit(_run_task, follow)] = follow
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - began
    frames_done, evaluations = counts["frames"], counts["evaluations"]
    _assemble(config, directory, geometry, targets, seconds=seconds,
              frames_done=frames_done, evaluations=evaluations)
    if not keep_chunks:
        shutil.rmtree(chunks, ignore_errors=True)
    return GenerationReport(
        frames=frames_done,
        evaluations=evaluations,
        seconds=seconds,
        frames_per_second=frames_done / seconds if seconds > 0 else 0.0,
        evaluations_per_second=evaluations / seconds if seconds > 0 else 0.0,
        resumed_frames=resumed,
        workers=workers,
        directory=str(directory),
    )


def _versions() -> dict[str, str]:
    """Installed versions of the packages that shape the data (``"unknown"`` if missing)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("geonorm-jax", "tblite", "rdkit", "ase", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def _assemble(
    config: MoleculeConfig,
    directory: Path,
    geometry: dict[str, Any],
    targets: list[int],
    *,
    seconds: float,
    frames_done: int,
    evaluations: int,
) -> None:
    """Concatenate every trajectory's chunks (``targets[t]`` frames of trajectory ``t``) into
    ``data.npz``, then write ``metadata.json`` (with its hash) last. ``seconds``,
    ``frames_done`` and ``evaluations`` describe this run (for the metadata)."""
    chunks = directory / CHUNKS_DIR
    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("positions", "energies", "forces", "step", "trajectory")
    }
    for t, target in enumerate(targets):
        for path in chain(chunks, t, target):
            arrays = read_npz(path)
            if arrays is None:
                raise MolecularDataError(f"{path}: unreadable chunk while assembling")
            for name in ("positions", "energies", "forces", "step"):
                parts[name].append(arrays[name])
            parts["trajectory"].append(np.full(arrays["energies"].shape, t, np.int64))
    arrays = {name: np.concatenate(values) for name, values in parts.items()}
    arrays["atomic_numbers"] = np.asarray(geometry["atomic_numbers"], np.int64)
    data = molecular_data(
        arrays["positions"], arrays["energies"], arrays["forces"], arrays["atomic_numbers"]
    )
    payload = npz_bytes(**arrays)
    atomic_write_bytes(directory / DATA_FILE, payload)
    metadata = {
        "format": MOLECULE_FORMAT,
        "format_version": MOLECULE_FORMAT_VERSION,
        "dataset": "md17-xtb",
        "config": config.generation_dict(),
        "cache_key": config.cache_key(),
        "units": UNITS,
        "method": f"{config.method} (tblite)",
        "references": {
            "GFN2-xTB": "Bannwarth, Ehlert & Grimme, J. Chem. Theory Comput. 15, 1652 (2019)",
            "MD17": "Chmiela et al., Sci. Adv. 3, e1603015 (2017)",
        },
        "integrator": "Langevin BAOAB, float64",
        "frame_steps": (
            "frame k of a trajectory is the state after equilibration + stride * (k + 1) steps"
        ),
        "molecule": config.molecule,
        "smiles": str(geometry["smiles"]),
        "num_frames": data.num_frames,
        "num_atoms": data.num_atoms,
        "atomic_numbers": data.atomic_numbers.tolist(),
        "relaxed_energy_eV": float(geometry["energy"]),
        "relaxed_max_force_eV_per_A": float(geometry["max_force"]),
        "statistics": _statistics(data),
        "file": {
            "name": DATA_FILE,
            "sha256": hashlib.sha256(payload).hexdigest(),
            "bytes": len(payload),
        },
        "generation": {
            "seconds_this_run": round(seconds, 3),
            "frames_this_run": frames_done,
            "xtb_evaluations_this_run": evaluations,
        },
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomic(directory / METADATA_FILE, metadata, indent=2)


def _statistics(data: MolecularData) -> dict[str, float]:
    """Energy mean and std (eV), force RMS and max |component| (eV/Å) of ``data``."""
    return {
        "energy_mean_eV": float(data.energies.mean()),
        "energy_std_eV": float(data.energies.std()),
        "force_rms_eV_per_A": float(np.sqrt(np.mean(data.forces**2))),
        "force_max_eV_per_A": float(np.abs(data.forces).max()),
    }


def get_molecular_dataset(
    config: MoleculeConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    progress: bool = False,
    workers: int | None = None,
    chunk_frames: int = 50,
) -> Path:
    """The directory of ``config``'s data set, generated (or resumed) if not complete.

    The directory is ``cache_dir / config.dataset_name()`` (default cache root
    ``$GEONORM_JAX_CACHE`` or ``~/.cache/geonorm-jax``); its name holds a hash of every field
    that changes the files.
    """
    config = config or MoleculeConfig()
    directory = cache_root(cache_dir) / config.dataset_name()
    if not is_complete(directory, config):
        generate_molecular_dataset(
            config, directory, progress=progress, workers=workers, chunk_frames=chunk_frames
        )
    return directory


def molecular_dataset(
    config: MoleculeConfig | None = None, cache_dir: str | os.PathLike | None = None, **kwargs
) -> MolecularData:
    """``load_molecular_dataset(get_molecular_dataset(config, cache_dir, **kwargs))``."""
    return load_molecular_dataset(get_molecular_dataset(config, cache_dir, **kwargs))
