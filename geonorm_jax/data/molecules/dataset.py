"""One in-memory structure for a molecular energy-and-force data set.

Both the GFN2-xTB trajectories of :mod:`geonorm_jax.data.molecules.files` and the published
MD17 / revised MD17 files (:mod:`geonorm_jax.data.molecules.md17`) are returned as a
:class:`MolecularData`, always in Å, eV and eV/Å.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["MolecularData", "molecular_data", "select"]


class MolecularData(NamedTuple):
    """Frames of one molecule (fixed atom order), in Å, eV and eV/Å.

    Attributes:
      positions: float64 ``[F, A, 3]`` Cartesian coordinates in Å (F frames, A atoms).
      energies: float64 ``[F]`` total potential energies in eV.
      forces: float64 ``[F, A, 3]`` forces ``-dE/dR`` in eV/Å.
      atomic_numbers: int64 ``[A]`` nuclear charges Z.
      meta: dict of JSON values (source, method, units, temperature, ...).
    """

    positions: np.ndarray
    energies: np.ndarray
    forces: np.ndarray
    atomic_numbers: np.ndarray
    meta: dict[str, Any]

    @property
    def num_frames(self) -> int:
        return int(self.energies.shape[0])

    @property
    def num_atoms(self) -> int:
        return int(self.atomic_numbers.shape[0])


def molecular_data(
    positions: Any,
    energies: Any,
    forces: Any,
    atomic_numbers: Any,
    meta: dict[str, Any] | None = None,
) -> MolecularData:
    """Checks shapes and values and builds a :class:`MolecularData` (float64 / int64 copies).

    Args:
      positions: ``[F, A, 3]`` in Å.
      energies: ``[F]`` (or ``[F, 1]``, as MD17 stores it) in eV.
      forces: ``[F, A, 3]`` in eV/Å.
      atomic_numbers: ``[A]`` integers in 1..118.
      meta: optional metadata dict.

    Raises:
      ValueError: naming the expected and the received shape, or the bad value.
    """
    z = np.asarray(atomic_numbers)
    if z.ndim != 1 or z.shape[0] < 1:
        raise ValueError(f"atomic_numbers must have shape [A] with A >= 1, got shape {z.shape}")
    if not np.issubdtype(z.dtype, np.integer):
        if not np.all(np.asarray(z, np.float64) == np.round(np.asarray(z, np.float64))):
            raise ValueError(f"atomic_numbers must be integers, got dtype {z.dtype}")
    z = z.astype(np.int64)
    if z.min() < 1 or z.max() > 118:
        raise ValueError(f"atomic_numbers must lie in 1..118, got range {z.min()}..{z.max()}")
    a = z.shape[0]
    r = np.array(positions, dtype=np.float64)
    if r.ndim != 3 or r.shape[1:] != (a, 3):
        raise ValueError(f"positions must have shape [F, {a}, 3] (F, A, 3), got shape {r.shape}")
    f_frames = r.shape[0]
    e = np.array(energies, dtype=np.float64)
    if e.ndim == 2 and e.shape[1] == 1:
        e = e[:, 0]
    if e.shape != (f_frames,):
        raise ValueError(
            f"energies must have shape [{f_frames}] (or [{f_frames}, 1]), got shape {e.shape}"
        )
    f = np.array(forces, dtype=np.float64)
    if f.shape != r.shape:
        raise ValueError(f"forces must have shape {list(r.shape)} like positions, got {f.shape}")
    for name, arr in (("positions", r), ("energies", e), ("forces", f)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains non-finite values")
    return MolecularData(r, e, f, z, dict(meta or {}))


def select(data: MolecularData, indices: Any) -> MolecularData:
    """The frames ``indices`` (int array ``[K]``) of ``data``, as a new :class:`MolecularData`."""
    idx = np.asarray(indices)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"indices must be a 1-D integer array, got shape {idx.shape} {idx.dtype}")
    if idx.size and (idx.min() < -data.num_frames or idx.max() >= data.num_frames):
        raise ValueError(
            f"indices must lie in [0, {data.num_frames}), got range {idx.min()}..{idx.max()}"
        )
    return MolecularData(
        data.positions[idx],
        data.energies[idx],
        data.forces[idx],
        data.atomic_numbers,
        dict(data.meta, frames=int(idx.size)),
    )
