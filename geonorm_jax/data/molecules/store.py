"""A finished ``md17-xtb`` (or ``md17-dft``) data set directory: its layout,
``metadata.json``, and the verified load of ``data.npz``.

Layout (written by :func:`geonorm_jax.data.molecules.files.generate_molecular_dataset`)::

    data.npz        positions [F, A, 3] float64 Å; energies [F] float64 eV;
                    forces [F, A, 3] float64 eV/Å; atomic_numbers [A] int64;
                    trajectory [F] int64 (which trajectory); step [F] int64 (MD step)
    metadata.json   config, cache key, units, statistics, SHA-256 of data.npz (written last)
    chunks/         work in progress (:mod:`geonorm_jax.data.molecules.chunks`)

A directory is a data set only once ``metadata.json`` exists; :func:`load_molecular_dataset`
checks the data file against the hash it records. Every failure is a
:class:`MolecularDataError` naming the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from geonorm_jax.data.molecules.config import MoleculeConfig
from geonorm_jax.data.molecules.dataset import MolecularData, molecular_data
from geonorm_jax.data.molecules.md17 import NPZ_READ_ERRORS

__all__ = [
    "MOLECULE_FORMAT",
    "DFT_FORMAT",
    "FORMATS",
    "DATA_FILE",
    "METADATA_FILE",
    "CHUNKS_DIR",
    "UNITS",
    "MolecularDataError",
    "npz_bytes",
    "read_npz",
    "read_molecular_metadata",
    "is_molecular_dataset",
    "load_molecular_dataset",
    "is_complete",
    "describe_molecular_dataset",
]

MOLECULE_FORMAT = "geonorm-jax md17-xtb"
DFT_FORMAT = "geonorm-jax md17-dft"
#: the ``format`` values of the generated molecular data sets (same layout, same checks):
#: GFN2-xTB trajectories and their PBE/def2-SVP relabelling
FORMATS = (MOLECULE_FORMAT, DFT_FORMAT)
DATA_FILE, METADATA_FILE, CHUNKS_DIR = "data.npz", "metadata.json", "chunks"
UNITS = {
    "positions": "angstrom",
    "energies": "eV",
    "forces": "eV/angstrom",
    "temperature": "K",
    "timestep": "fs",
    "friction": "1/fs",
}


class MolecularDataError(ValueError):
    """A molecular data set file is missing, truncated, corrupted or does not match."""


def npz_bytes(**arrays) -> bytes:
    """The bytes of ``np.savez(file, **arrays)`` (to be written atomically)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def read_npz(path: Path) -> dict[str, np.ndarray] | None:
    """All arrays of ``path``, or None if it is missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except NPZ_READ_ERRORS:
        return None


def read_molecular_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    """Reads and checks ``metadata.json`` of an ``md17-xtb`` directory; raises
    :class:`MolecularDataError` naming the file."""
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        raise MolecularDataError(
            f"{path}: no metadata (not an md17-xtb data set, or an interrupted generation)"
        )
    try:
        metadata = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MolecularDataError(f"{path}: unreadable metadata ({e})") from e
    if not isinstance(metadata, dict) or metadata.get("format") not in FORMATS:
        raise MolecularDataError(f"{path}: not a metadata file of {' or '.join(FORMATS)}")
    return metadata


def is_molecular_dataset(directory: str | os.PathLike) -> bool:
    """True if ``directory`` holds ``md17-xtb`` metadata (no hashing)."""
    try:
        read_molecular_metadata(directory)
    except MolecularDataError:
        return False
    return True


def load_molecular_dataset(directory: str | os.PathLike) -> MolecularData:
    """Loads ``data.npz`` after checking its SHA-256 against ``metadata.json``.

    Returns:
      :class:`MolecularData` (Å, eV, eV/Å); ``meta`` is the metadata plus ``source`` (the
      file). The per-frame trajectory index and MD step are the ``trajectory`` and ``step``
      members of ``data.npz``.

    Raises:
      MolecularDataError: naming the file, if it is missing, corrupted or mismatched.
    """
    directory = Path(directory)
    metadata = read_molecular_metadata(directory)
    path = directory / metadata["file"]["name"]
    try:
        payload = path.read_bytes()
    except OSError as e:
        raise MolecularDataError(f"{path}: cannot read data file ({e})") from e
    digest = hashlib.sha256(payload).hexdigest()
    if digest != metadata["file"]["sha256"]:
        raise MolecularDataError(
            f"{path}: content hash {digest[:16]}... does not match the metadata's "
            f"{metadata['file']['sha256'][:16]}... (delete the directory to regenerate it)"
        )
    with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    meta = dict(metadata, source=str(path))
    return molecular_data(
        arrays["positions"], arrays["energies"], arrays["forces"], arrays["atomic_numbers"], meta
    )


def is_complete(directory: str | os.PathLike, config: MoleculeConfig) -> bool:
    """Whether ``directory`` holds a finished data set of ``config``: its metadata loads, names
    ``config``'s cache key, and the data file it lists exists with the recorded size and
    SHA-256 (a file altered in place, same size, is not complete: it is regenerated)."""
    directory = Path(directory)
    try:
        metadata = read_molecular_metadata(directory)
    except MolecularDataError:
        return False
    entry = metadata.get("file", {})
    path = directory / str(entry.get("name", ""))
    if not (metadata.get("cache_key") == config.cache_key() and path.is_file()
            and path.stat().st_size == entry.get("bytes")):
        return False
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return False
    return digest.hexdigest() == entry.get("sha256")



def describe_molecular_dataset(directory: str | os.PathLike) -> str:
    """A few lines for ``geonorm-jax data info``: molecule, frames, units, temperature, energy
    mean/std, force RMS, hash (the data file's hash is checked)."""
    data = load_molecular_dataset(directory)
    meta, config = data.meta, data.meta["config"]
    stats = meta["statistics"]
    gen = meta.get("generation", {})
    lines = [
        f"data set: {directory}",
        f"md17-xtb: {meta['molecule']} ({meta['smiles']}), {meta['method']}, "
        f"format {meta['format_version']}, created {meta.get('created')}",
        f"frames: {data.num_frames} over {config['trajectories']} trajectories, "
        f"{data.num_atoms} atoms, Z = {data.atomic_numbers.tolist()}",
        f"dynamics: Langevin at {config['temperature']} K, timestep {config['timestep']} fs, "
        f"stride {config['stride']} steps, friction {config['friction']} 1/fs, "
        f"equilibration {config['equilibration']} steps, seed {config['seed']}",
        "units: positions Å, energies eV, forces eV/Å",
        f"energy: mean {stats['energy_mean_eV']:.6f} eV, std {stats['energy_std_eV']:.6f} eV",
        f"forces: RMS {stats['force_rms_eV_per_A']:.4f} eV/Å, "
        f"max |component| {stats['force_max_eV_per_A']:.4f} eV/Å",
        f"cache key {meta['cache_key']}",
        f"data.npz sha256 {meta['file']['sha256']} ({meta['file']['bytes']} bytes, verified)",
        f"last run: {gen.get('frames_this_run')} frames, "
        f"{gen.get('xtb_evaluations_this_run')} xTB evaluations in "
        f"{gen.get('seconds_this_run')} s",
    ]
    return "\n".join(lines)
