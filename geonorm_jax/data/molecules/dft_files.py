"""Cached, resumable ``md17-dft`` data sets: the frames of an ``md17-xtb`` data set relabelled
with PBE/def2-SVP (:mod:`geonorm_jax.data.molecules.dft`), the revised MD17 level of theory.

The geometries are those of the ``md17-xtb`` data set of ``config.geometry`` (generated, or
found in the cache, by :func:`geonorm_jax.data.molecules.get_molecular_dataset`; the same
configuration gives the same positions); only the energies and forces are recomputed.

Layout of ``<cache>/md17-dft_<molecule>_seed<seed>_<hash12>/``::

    data.npz        positions [F, A, 3] float64 Å; energies [F] float64 eV (PBE/def2-SVP);
                    forces [F, A, 3] float64 eV/Å; atomic_numbers [A] int64; trajectory [F],
                    step [F] int64 (from the xTB data set); xtb_energies [F] float64 eV
    metadata.json   config, cache key, units, method, the xTB data set's name and SHA-256,
                    statistics, SHA-256 of data.npz (written last)
    chunks/         work in progress: fSSSSSS_EEEEEE.npz, the labels of frames [S, E)

A chunk holds its frames' positions, energies, forces, the cache key and the SHA-256 of those
three arrays; a chunk whose hash, key or positions do not match is recomputed, so a rerun after
a kill (or after a chunk was removed or altered) continues from the chunks that are intact.
Every file is written atomically; ``metadata.json`` last.

Parallelism: ``workers`` processes label chunks side by side, each with ``threads`` PySCF
OpenMP threads (``pyscf.lib.num_threads``); by default ``workers * threads`` equals the cores
available (up to 2 workers).

Generation rate (uracil, 12 atoms, 132 basis functions; PBE/def2-SVP with density fitting
(def2-universal-jfit), grid level 3, grid response on, 16 SCF cycles from the minao guess).
Measured on a shared 2-core machine (load average 11 to 16: other jobs held the cores; nice 10)
with the 4-frame xTB geometries already in the cache::

    /usr/bin/time -v nice -n 10 geonorm-jax data generate --dataset md17-dft \\
        --molecule uracil --frames 4 --cache-dir /tmp/dftE/cache --chunk-frames 1 \\
        --workers 1 --threads 1

4 frames in 517 s of wall time (0.0077 frames/s; the run got 29 % of one core), 154 s of CPU
time for the whole command (imports included): at most 38 s of CPU per frame. The same command
with two workers (``--workers 2``, the default; xTB geometries generated in the same run) took
568 s for 4 frames (0.0070 frames/s; 22 % of a core: the busy machine gave no second core) and
208 s of CPU. On two free cores, two single-threaded workers label about 190 frames an hour,
which sets the default ``--frames`` (:data:`~geonorm_jax.data.molecules.dft.DEFAULT_DFT_FRAMES`,
180 frames plus about a minute of xTB dynamics). On water (sto-3g) one evaluation with two
PySCF threads took 10.4 s against 2.0 s with one on the loaded machine (OpenMP threads waiting
on each other), so the default is one thread per worker and as many workers as cores.
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
from geonorm_jax.data.molecules.dataset import MolecularData, molecular_data
from geonorm_jax.data.molecules.dft import (
    DFT_FORMAT_VERSION,
    DFTConfig,
    PySCFDFT,
    auxiliary_basis,
)
from geonorm_jax.data.molecules.store import (
    CHUNKS_DIR,
    DATA_FILE,
    DFT_FORMAT,
    METADATA_FILE,
    MolecularDataError,
    is_complete,
    load_molecular_dataset,
    npz_bytes,
    read_npz,
)

__all__ = [
    "generate_dft_dataset",
    "get_dft_dataset",
    "dft_dataset",
    "describe_dft_dataset",
    "chunk_path",
    "valid_chunk",
]

_UNITS = {"positions": "angstrom", "energies": "eV", "forces": "eV/angstrom"}


def chunk_path(chunks: Path, start: int, stop: int) -> Path:
    """The file of frames ``[start, stop)``."""
    return chunks / f"f{start:06d}_{stop:06d}.npz"


def _labels_digest(positions, energies, forces) -> str:
    digest = hashlib.sha256()
    for a in (positions, energies, forces):
        digest.update(np.ascontiguousarray(a, np.float64).tobytes())
    return digest.hexdigest()


def valid_chunk(path: Path, key: str, positions: np.ndarray) -> dict[str, np.ndarray] | None:
    """The arrays of chunk ``path`` if it is readable, carries cache key ``key``, its labels
    match the SHA-256 it records and its positions equal ``positions`` ``[n, A, 3]``; else
    None (the chunk is recomputed)."""
    arrays = read_npz(path)
    if arrays is None or str(arrays.get("cache_key", "")) != key:
        return None
    try:
        digest = _labels_digest(arrays["positions"], arrays["energies"], arrays["forces"])
    except KeyError:
        return None
    if digest != str(arrays.get("sha256", "")):
        return None
    if arrays["positions"].shape != positions.shape or \
            not np.array_equal(arrays["positions"], positions):
        return None
    return arrays


def worker_init(threads: int) -> None:
    """Worker process initializer: ``threads`` OpenMP / BLAS threads (PySCF's too)."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)


def run_chunk(task: dict[str, Any]) -> dict[str, Any]:
    """Labels frames ``[start, stop)`` (``task["positions"]``, ``[n, A, 3]`` Å) and writes the
    chunk atomically; returns counts for the progress report."""
    began = time.perf_counter()
    config = DFTConfig.from_dict(task["config"])
    positions = np.asarray(task["positions"], np.float64)
    calc = PySCFDFT.from_config(np.asarray(task["atomic_numbers"]), config,
                                threads=task["threads"])
    n = positions.shape[0]
    energies, forces = np.empty(n), np.empty_like(positions)
    cycles = np.empty(n, np.int64)
    for k in range(n):
        energies[k], forces[k] = calc(positions[k])
        cycles[k] = calc.scf_cycles
    payload = {"positions": positions, "energies": energies, "forces": forces,
               "scf_cycles": cycles, "cache_key": np.str_(config.cache_key()),
               "sha256": np.str_(_labels_digest(positions, energies, forces))}
    atomic_write_bytes(chunk_path(Path(task["chunks"]), task["start"], task["stop"]),
                       npz_bytes(**payload))
    return {"frames": n, "seconds": time.perf_counter() - began}


def _geometry_arrays(config: DFTConfig, cache_dir, progress: bool, workers: int | None):
    """The ``md17-xtb`` data set of ``config.geometry``: its directory and arrays."""
    from geonorm_jax.data.molecules.files import get_molecular_dataset

    directory = get_molecular_dataset(config.geometry, cache_dir, progress=progress,
                                      workers=workers)
    data = load_molecular_dataset(directory)
    with np.load(directory / DATA_FILE, allow_pickle=False) as npz:
        extra = {name: npz[name] for name in ("trajectory", "step") if name in npz.files}
    return directory, data, extra


def _plan_workers(workers: int | None, threads: int | None, tasks: int) -> tuple[int, int]:
    cores = max(1, os.cpu_count() or 1)
    if workers is None:
        workers = max(1, min(2, cores, tasks))
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if threads is None:
        threads = max(1, cores // workers)
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    return workers, threads


def generate_dft_dataset(
    config: DFTConfig,
    directory: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    workers: int | None = None,
    threads: int | None = None,
    chunk_frames: int = 10,
    keep_chunks: bool = False,
) -> dict[str, Any]:
    """Labels (or resumes labelling) the frames of ``config.geometry`` in ``directory``.

    Args:
      config: the data set parameters.
      directory: target directory (created if needed).
      cache_dir: cache root of the ``md17-xtb`` geometries (generated there if missing).
      progress: tqdm progress bar (frames) on stderr.
      workers: worker processes (default ``min(2, cores, chunks)``); ``1`` runs in this
        process.
      threads: PySCF threads per worker (default ``cores // workers``).
      chunk_frames: frames per chunk file (the unit that survives a kill).
      keep_chunks: keep ``chunks/`` after assembling.

    Returns:
      A report dict: ``frames`` labelled in this run, ``resumed_frames``, ``seconds``,
      ``frames_per_second``, ``workers``, ``threads``, ``directory``.
    """
    if not isinstance(chunk_frames, int) or isinstance(chunk_frames, bool) or chunk_frames < 1:
        raise ValueError(f"chunk_frames must be a positive integer, got {chunk_frames!r}")
    directory = Path(directory)
    xtb_dir, xtb, extra = _geometry_arrays(config, cache_dir, progress, workers)
    chunks = directory / CHUNKS_DIR
    chunks.mkdir(parents=True, exist_ok=True)
    (directory / METADATA_FILE).unlink(missing_ok=True)
    key, f = config.cache_key(), xtb.num_frames
    bounds = [(s, min(f, s + chunk_frames)) for s in range(0, f, chunk_frames)]
    todo = [(s, e) for s, e in bounds
            if valid_chunk(chunk_path(chunks, s, e), key, xtb.positions[s:e]) is None]
    resumed = f - sum(e - s for s, e in todo)
    workers, threads = _plan_workers(workers, threads, len(todo))
    began = time.perf_counter()

    def task(s: int, e: int) -> dict[str, Any]:
        return {"config": config.generation_dict(), "chunks": str(chunks), "start": s,
                "stop": e, "positions": xtb.positions[s:e],
                "atomic_numbers": xtb.atomic_numbers, "threads": threads}

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=f, initial=resumed, unit="frame", desc=f"{config.molecule} DFT")
    done = 0
    try:
        if workers == 1:
            for s, e in todo:
                done += run_chunk(task(s, e))["frames"]
                if bar is not None:
                    bar.update(e - s)
        elif todo:
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(
                    workers, mp_context=context, initializer=worker_init,
                    initargs=(threads,)) as pool:
                futures = [pool.submit(run_chunk, task(s, e)) for s, e in todo]
                for future in concurrent.futures.as_completed(futures):
                    n = future.result()["frames"]
                    done += n
                    if bar is not None:
                        bar.update(n)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - began
    _assemble(config, directory, xtb_dir, xtb, extra, bounds, seconds=seconds, frames_done=done)
    if not keep_chunks:
        shutil.rmtree(chunks, ignore_errors=True)
    return {"frames": done, "resumed_frames": resumed, "seconds": seconds,
            "frames_per_second": done / seconds if seconds > 0 else 0.0,
            "workers": workers, "threads": threads, "directory": str(directory)}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("geonorm-jax", "pyscf", "tblite", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def _assemble(config: DFTConfig, directory: Path, xtb_dir: Path, xtb: MolecularData,
              extra: dict, bounds, *, seconds: float, frames_done: int) -> None:
    """Concatenates the chunks into ``data.npz``, then writes ``metadata.json`` last."""
    chunks, key = directory / CHUNKS_DIR, config.cache_key()
    energies, forces = [], []
    for s, e in bounds:
        arrays = valid_chunk(chunk_path(chunks, s, e), key, xtb.positions[s:e])
        if arrays is None:
            raise MolecularDataError(f"{chunk_path(chunks, s, e)}: missing or altered chunk "
                                     "while assembling (rerun to recompute it)")
        energies.append(arrays["energies"])
        forces.append(arrays["forces"])
    data = molecular_data(xtb.positions, np.concatenate(energies), np.concatenate(forces),
                          xtb.atomic_numbers)
    arrays = {"positions": data.positions, "energies": data.energies, "forces": data.forces,
              "atomic_numbers": data.atomic_numbers, "xtb_energies": xtb.energies, **extra}
    payload = npz_bytes(**arrays)
    atomic_write_bytes(directory / DATA_FILE, payload)
    metadata = {
        "format": DFT_FORMAT,
        "format_version": DFT_FORMAT_VERSION,
        "dataset": "md17-dft",
        "config": config.generation_dict(),
        "cache_key": key,
        "units": _UNITS,
        "method": f"{config.method} (PySCF)",
        "auxbasis": auxiliary_basis(config.basis, config.xc) if config.density_fit else None,
        "grid_level": config.grid_level,
        "grid_response": config.grid_response,
        "references": {
            "rMD17": "Christensen & von Lilienfeld, Mach. Learn.: Sci. Technol. 1, 045018 (2020)",
            "PBE": "Perdew, Burke & Ernzerhof, Phys. Rev. Lett. 77, 3865 (1996)",
            "def2-SVP": "Weigend & Ahlrichs, Phys. Chem. Chem. Phys. 7, 3297 (2005)",
            "PySCF": "Sun et al., J. Chem. Phys. 153, 024109 (2020)",
        },
        "geometries": {"dataset": "md17-xtb", "name": xtb_dir.name,
                       "cache_key": config.geometry.cache_key(),
                       "sha256": xtb.meta.get("file", {}).get("sha256")},
        "molecule": config.molecule,
        "smiles": xtb.meta.get("smiles"),
        "num_frames": data.num_frames,
        "num_atoms": data.num_atoms,
        "atomic_numbers": data.atomic_numbers.tolist(),
        "statistics": {
            "energy_mean_eV": float(data.energies.mean()),
            "energy_std_eV": float(data.energies.std()),
            "force_rms_eV_per_A": float(np.sqrt(np.mean(data.forces**2))),
            "force_max_eV_per_A": float(np.abs(data.forces).max()),
        },
        "file": {"name": DATA_FILE, "sha256": hashlib.sha256(payload).hexdigest(),
                 "bytes": len(payload)},
        "generation": {"seconds_this_run": round(seconds, 3), "frames_this_run": frames_done},
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomic(directory / METADATA_FILE, metadata, indent=2)


def get_dft_dataset(config: DFTConfig | None = None,
                    cache_dir: str | os.PathLike | None = None, **kwargs) -> Path:
    """The directory ``cache_dir / config.dataset_name()`` of ``config``'s data set, labelled
    (or resumed) if not complete; ``kwargs`` go to :func:`generate_dft_dataset`."""
    config = config or DFTConfig()
    directory = cache_root(cache_dir) / config.dataset_name()
    if not is_complete(directory, config):
        generate_dft_dataset(config, directory, cache_dir=cache_dir, **kwargs)
    return directory


def dft_dataset(config: DFTConfig | None = None, cache_dir: str | os.PathLike | None = None,
                **kwargs) -> MolecularData:
    """``load_molecular_dataset(get_dft_dataset(config, cache_dir, **kwargs))``."""
    return load_molecular_dataset(get_dft_dataset(config, cache_dir, **kwargs))


def describe_dft_dataset(directory: str | os.PathLike) -> str:
    """A few lines for ``geonorm-jax data info`` (the data file's hash is checked)."""
    data = load_molecular_dataset(directory)
    meta = data.meta
    stats, gen, geo = meta["statistics"], meta.get("generation", {}), meta["geometries"]
    return "\n".join([
        f"data set: {directory}",
        f"md17-dft: {meta['molecule']} ({meta.get('smiles')}), {meta['method']}, grid level "
        f"{meta['grid_level']}, grid response {meta['grid_response']}, auxiliary basis "
        f"{meta.get('auxbasis')}, created {meta.get('created')}",
        f"frames: {data.num_frames}, {data.num_atoms} atoms, Z = {data.atomic_numbers.tolist()}",
        f"geometries: {geo['dataset']} {geo['name']} (data.npz sha256 {geo['sha256']})",
        "units: positions Å, energies eV, forces eV/Å",
        f"energy: mean {stats['energy_mean_eV']:.6f} eV, std {stats['energy_std_eV']:.6f} eV",
        f"forces: RMS {stats['force_rms_eV_per_A']:.4f} eV/Å, "
        f"max |component| {stats['force_max_eV_per_A']:.4f} eV/Å",
        f"cache key {meta['cache_key']}",
        f"data.npz sha256 {meta['file']['sha256']} ({meta['file']['bytes']} bytes, verified)",
        f"last run: {gen.get('frames_this_run')} frames in {gen.get('seconds_this_run')} s",
    ])
