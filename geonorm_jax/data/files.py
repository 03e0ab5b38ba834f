"""Data set files: one ``.npz`` per split plus ``metadata.json``, written atomically and cached.

Layout of a data set directory::

    train.npz  valid.npz  test.npz   loc, vel [S, F, N, 3] float32; charges [S, N, 1] float32;
                                     clipped [S] bool
    metadata.json                    parameters, seed, package version, SHA-256 of each file

Every stored array is linear in N (``24 F N + 4 N + 1`` bytes per trajectory, 1.18 MB at
N = 1000 with 49 frames). The edge attribute ``q_i q_j`` is not stored (format 3; format 2
stored it as ``edges [S, N, N]``, 4 MB per trajectory at N = 1000): build it from ``charges``
with :func:`geonorm_jax.data.samples.edge_attributes`. A format-2 file still loads (its
``edges`` member is not read), but its cache key differs, so a cache is regenerated.

Every file is first written under a temporary name in the same directory and then renamed, and
``metadata.json`` (which holds the hashes) is written last, so an interrupted generation never
leaves a directory that loads. Loading checks each file's SHA-256 against the metadata; the
file is hashed and parsed through one open handle, and ``np.savez`` / ``np.load`` copy in
16 MiB blocks, so writing or loading a split holds its arrays once, not twice.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import time
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from geonorm_jax._io import atomic_write, atomic_write_text
from geonorm_jax.data.config import FORMAT_VERSION, SPLITS, DataConfig, canonical_split
from geonorm_jax.data.samples import Samples, select_frames

__all__ = [
    "DataFileError",
    "CACHE_ENV",
    "METADATA",
    "default_cache_dir",
    "is_complete",
    "get_dataset",
    "write_dataset",
    "read_metadata",
    "load_trajectories",
    "load_split",
    "verify_dataset",
]

CACHE_ENV = "GEONORM_JAX_CACHE"
METADATA = "metadata.json"
_FORMAT = "geonorm-jax charged n-body"
_ARRAYS = ("loc", "vel", "charges", "clipped")


class DataFileError(ValueError):
    """A data file is missing, truncated, corrupted or does not match its metadata."""


def default_cache_dir() -> Path:
    """``$GEONORM_JAX_CACHE`` if set, else ``~/.cache/geonorm-jax``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "geonorm-jax"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache root every generated data set lives under: ``cache_dir`` (``~`` expanded) or
    :func:`default_cache_dir`."""
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def _package_version() -> str:
    """The installed ``geonorm-jax`` distribution's version (``importlib.metadata``; the same
    string as ``geonorm_jax.__version__``), recorded in ``metadata.json``. Read from the
    distribution rather than the root package, which the data layer does not import."""
    try:
        return importlib.metadata.version("geonorm-jax")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (package not installed)"


def _sha256_handle(f) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 22), b""):
        digest.update(block)
    return digest.hexdigest()


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return _sha256_handle(f)


def _progress_bar(total: int, split: str) -> tqdm:
    """Trajectories of one split: ``train [#####.....] 40/100 00:03<00:04, 12.1traj/s``
    (``tqdm.auto``: a widget in Jupyter and Colab, text on stderr otherwise)."""
    return tqdm(
        total=total,
        desc=f"{split:>5}",
        unit="traj",
        bar_format="{desc} [{bar}] {n_fmt}/{total_fmt} {elapsed}<{remaining}, {rate_fmt}",
    )


def write_dataset(
    config: DataConfig,
    directory: str | os.PathLike,
    *,
    progress: bool = False,
    chunk_size: int | None = None,
    workers: int | None = None,
) -> Path:
    """Generates every split of ``config`` into ``directory`` (created if needed).

    An existing ``metadata.json`` there is removed first, so the directory never pairs old
    metadata with new files.

    Returns:
      The directory as a ``Path``.

    Args:
      progress: show one progress bar per split (``tqdm``) while generating.
      chunk_size, workers: see :func:`geonorm_jax.data.generate.generate_split`.
    """
    from geonorm_jax.data.generate import generate_split

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / METADATA).unlink(missing_ok=True)
    started = time.perf_counter()
    splits: dict[str, Any] = {}
    for split in SPLITS:
        size = config.split_sizes[split]
        bar = _progress_bar(size, split) if progress else None
        try:
            arrays = generate_split(
                config,
                split,
                chunk_size=chunk_size,
                workers=workers,
                on_progress=bar.update if bar else None,
            )
        finally:
            if bar is not None:
                bar.close()
        path = directory / f"{split}.npz"
        atomic_write(path, lambda f, arrays=arrays: np.savez(f, **arrays))
        splits[split] = {
            "file": path.name,
            "sha256": _sha256_file(path),
            "bytes": path.stat().st_size,
            "trajectories": size,
            "clipped_fraction": float(np.mean(arrays["clipped"])),
        }
        del arrays
    metadata = {
        "format": _FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": _package_version(),
        "config": config.generation_dict(),
        "cache_key": config.cache_key(),
        "particles": config.particles,
        "num_frames": config.num_frames,
        "frame_steps": (
            f"frame k is the state after step {config.sample_freq} * (k + 1); "
            "positions and velocities are recorded right after the position update"
        ),
        "max_force": config.max_force,
        "charges": "q in {-1, +1}, probability 1/2 each",
        "integration_dtype": "float64",
        "storage_dtype": "float32",
        "splits": splits,
        "generation_seconds": round(time.perf_counter() - started, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    text = json.dumps(metadata, indent=2, sort_keys=True) + "\n"
    atomic_write_text(directory / METADATA, text)
    return directory


def read_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    """Reads and checks ``metadata.json``; raises DataFileError naming the file."""
    path = Path(directory) / METADATA
    if not path.is_file():
        raise DataFileError(
            f"{path}: no data set metadata (not a geonorm-jax data set directory, or an "
            "interrupted generation)"
        )
    try:
        metadata = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataFileError(f"{path}: unreadable metadata ({e})") from e
    if not isinstance(metadata, dict) or metadata.get("format") != _FORMAT:
        raise DataFileError(f"{path}: not a geonorm-jax charged n-body metadata file")
    if not isinstance(metadata.get("splits"), dict) or not isinstance(metadata.get("config"), dict):
        raise DataFileError(f"{path}: metadata has no 'splits' or 'config' table")
    return metadata


def is_complete(directory: str | os.PathLike, config: DataConfig) -> bool:
    """True if ``directory`` holds the complete data set of ``config``.

    A cheap check, no hashing: ``metadata.json`` is readable and records ``config``'s cache key
    and generation parameters, and every split file exists with the recorded size. Loading
    (:func:`load_trajectories`) still checks each file's SHA-256.
    """
    directory = Path(directory)
    try:
        metadata = read_metadata(directory)
    except DataFileError:
        return False
    if metadata.get("cache_key") != config.cache_key():
        return False
    if metadata.get("config") != config.generation_dict():
        return False
    for split in SPLITS:
        entry = metadata["splits"].get(split, {})
        path = directory / str(entry.get("file", ""))
        if not path.is_file() or path.stat().st_size != entry.get("bytes"):
            return False
    return True


def get_dataset(
    config: DataConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    *,
    chunk_size: int | None = None,
    workers: int | None = None,
) -> Path:
    """Returns the directory of the data set for ``config``, generating it if not cached.

    The directory is ``cache_dir / config.dataset_name()``; its name holds a hash of every
    parameter that changes the files, so a changed parameter never reuses a stale file.

    Args:
      config: data set parameters (default ``DataConfig()``).
      cache_dir: cache root; default ``$GEONORM_JAX_CACHE`` or ``~/.cache/geonorm-jax``.
      progress: show a progress bar on stderr while generating.
      chunk_size, workers: see :func:`geonorm_jax.data.generate.generate_split`.
    """
    config = config or DataConfig()
    root = cache_root(cache_dir)
    directory = root / config.dataset_name()
    if is_complete(directory, config):
        return directory
    return write_dataset(
        config, directory, progress=progress, chunk_size=chunk_size, workers=workers
    )


def _read_split_file(
    directory: Path, split: str, metadata: dict[str, Any]
) -> dict[str, np.ndarray]:
    entry = metadata["splits"].get(split)
    if not isinstance(entry, dict) or "file" not in entry or "sha256" not in entry:
        raise DataFileError(f"{directory / METADATA}: no entry for split {split!r}")
    path = directory / entry["file"]
    try:
        f = open(path, "rb")
    except OSError as e:
        raise DataFileError(f"{path}: cannot read split file ({e})") from e
    with f:
        # Hash and parse through the same handle: what is parsed is what was hashed (the
        # writer only ever replaces a file by renaming), and the bytes are not held in memory.
        digest = _sha256_handle(f)
        if digest != entry["sha256"]:
            raise DataFileError(
                f"{path}: content hash {digest[:16]}... does not match the metadata's "
                f"{str(entry['sha256'])[:16]}... (corrupted or truncated file; delete the "
                "directory to regenerate it)"
            )
        f.seek(0)
        try:
            with np.load(f, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in _ARRAYS}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error,
                tokenize.TokenError, SyntaxError) as e:
            raise DataFileError(f"{path}: unreadable split file ({e})") from e
    n, frames = metadata["config"]["particles"], metadata["num_frames"]
    s = entry["trajectories"]
    expected = {
        "loc": (s, frames, n, 3),
        "vel": (s, frames, n, 3),
        "charges": (s, n, 1),
        "clipped": (s,),
    }
    for name, shape in expected.items():
        if arrays[name].shape != shape:
            raise DataFileError(f"{path}: {name} has shape {arrays[name].shape}, expected {shape}")
    return arrays


def load_trajectories(directory: str | os.PathLike, split: str) -> dict[str, np.ndarray]:
    """All arrays of one split, after checking the file's SHA-256 against the metadata.

    Returns:
      dict with ``loc``, ``vel`` (float32 ``[S, F, N, 3]``), ``charges`` (float32
      ``[S, N, 1]``) and ``clipped`` (bool ``[S]``). There is no ``edges`` entry: use
      ``edge_attributes(arrays["charges"])`` (``q_i q_j``, ``[S, N, N]``) where it is needed.

    Raises:
      DataFileError: naming the file, if it is missing, corrupted, truncated or mismatched.
    """
    directory = Path(directory)
    return _read_split_file(directory, canonical_split(split), read_metadata(directory))


def load_split(
    path: str | os.PathLike, split: str, frame_in: int = 30, frame_out: int = 40
) -> Samples:
    """Loads one split as :class:`Samples` of float32 numpy arrays.

    Args:
      path: a data set directory (from :func:`get_dataset` or ``geonorm-jax data generate``).
      split: ``"train"``, ``"valid"`` (or ``"val"``) or ``"test"``.
      frame_in: input frame (loc and vel); 30 for EGNN's "small" task.
      frame_out: target frame (loc); 40 for EGNN's "small" task.

    Raises:
      ValueError: for a bad split name or frames.
      DataFileError: naming the file, if it is missing, corrupted or truncated.
    """
    arrays = load_trajectories(path, split)
    return select_frames(arrays["loc"], arrays["vel"], arrays["charges"], frame_in, frame_out)


def verify_dataset(directory: str | os.PathLike) -> dict[str, Any]:
    """Checks every split file's SHA-256; returns the metadata or raises DataFileError."""
    directory = Path(directory)
    metadata = read_metadata(directory)
    for split in SPLITS:
        entry = metadata["splits"].get(split)
        if entry is None:
            raise DataFileError(f"{directory / METADATA}: no entry for split {split!r}")
        path = directory / entry["file"]
        if not path.is_file():
            raise DataFileError(f"{path}: missing split file")
        if _sha256_file(path) != entry["sha256"]:
            raise DataFileError(f"{path}: content hash does not match the metadata")
    return metadata
