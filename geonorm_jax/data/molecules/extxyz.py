"""Extended XYZ (extxyz) files: a trajectory format that ASE's GUI, OVITO and most ML
potential codes read, and a third source of molecular training data (beside the generated
``md17-xtb`` frames and the MD17 / revised MD17 ``.npz`` files).

* :func:`write_extxyz` writes frames of one molecule through ``ase.io.write(...,
  format="extxyz")``: energies and forces as the results of an
  ``ase.calculators.singlepoint.SinglePointCalculator`` (the ``energy=`` comment key and the
  ``forces`` column), velocities as ASE's ``momenta`` column, anything else as comment keys.
  ``ase.io.read(path, index=":")`` gives them back with ``atoms.get_potential_energy()``,
  ``atoms.get_forces()`` and ``atoms.get_velocities()``.
* :func:`load_extxyz` reads such a file (or any extxyz file of one molecule) as
  :class:`~geonorm_jax.data.molecules.dataset.MolecularData` in Å, eV, eV/Å.

Units. Positions are in Å, energies in eV, forces in eV/Å (files in kcal/mol and kcal/mol/Å
are converted on loading, ``energy_unit="kcal/mol"``). Velocities are given in Å/fs; ASE
measures time in its own unit (one fs is ``ase.units.fs`` = 0.0982... ASE time units), so a
velocity ``v`` in Å/fs is ``v / ase.units.fs`` in ASE's Å/(ASE time unit), and the file holds the
momenta ``m v / ase.units.fs`` (``m`` in Da). Read back in Å/fs as
``atoms.get_velocities() * ase.units.fs``.

Needs ``ase`` (the ``chem`` extra: ``pip install 'geonorm-jax[chem]'``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from geonorm_jax._io import atomic_write
from geonorm_jax.data.molecules.dataset import MolecularData, molecular_data
from geonorm_jax.data.molecules.units import KCAL_PER_MOL_EV

__all__ = ["ENERGY_UNITS", "load_extxyz", "write_extxyz"]

ENERGY_UNITS: dict[str, float] = {"ev": 1.0, "kcal/mol": KCAL_PER_MOL_EV}
"""Energy unit of a file (lower case) -> eV per unit; forces are in that unit per Å."""

#: comment keys the writer sets itself (or ASE reserves); ``info`` may not use them
_RESERVED_INFO = frozenset({"energy", "forces", "momenta", "Properties", "Lattice", "pbc"})


def _ase():
    try:
        import ase
        import ase.io
        import ase.units
        from ase.calculators.singlepoint import SinglePointCalculator
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "extended XYZ files need ase: pip install 'geonorm-jax[chem]' (or pip install ase)"
        ) from e
    return ase, ase.io, SinglePointCalculator


def _frame_array(name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {list(shape)}, got shape {list(arr.shape)}")
    return arr


def _per_frame_info(info: Mapping[str, Any] | None, frames: int) -> dict[str, Any]:
    """``info`` checked: key -> per-frame sequence (first axis ``frames``) or constant."""
    out: dict[str, Any] = {}
    for key, value in (info or {}).items():
        if not isinstance(key, str) or not key or any(c.isspace() for c in key) or "=" in key:
            raise ValueError(f"info: keys must be non-empty strings without spaces or '=', "
                             f"got {key!r}")
        if key in _RESERVED_INFO:
            raise ValueError(f"info: key {key!r} is reserved (the writer sets "
                             f"{sorted(_RESERVED_INFO)} itself); use another name")
        if isinstance(value, str | bytes) or np.ndim(value) == 0:
            out[key] = value.decode() if isinstance(value, bytes) else value
            continue
        arr = np.asarray(value)
        if arr.shape[0] != frames:
            raise ValueError(f"info[{key!r}]: expected a scalar, a string or a per-frame array "
                             f"with first axis {frames} (the frames), got shape "
                             f"{list(arr.shape)}")
        out[key] = arr
    return out


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def write_extxyz(
    path: str | os.PathLike,
    atomic_numbers: Any,
    positions: Any,
    *,
    energies: Any = None,
    forces: Any = None,
    velocities: Any = None,
    info: Mapping[str, Any] | None = None,
    append: bool = False,
) -> Path:
    """Writes frames of one molecule as an extended XYZ file (readable by ``ase.io.read``,
    ASE's GUI and OVITO).

    Args:
      path: the file to write (conventionally ``.xyz`` or ``.extxyz``); parent directories
        are created.
      atomic_numbers: int ``[A]`` nuclear charges Z.
      positions: float ``[F, A, 3]`` Cartesian coordinates in Å (F frames, A atoms).
      energies: float ``[F]`` potential energies in eV, or None.
      forces: float ``[F, A, 3]`` forces in eV/Å, or None.
      velocities: float ``[F, A, 3]`` velocities in Å/fs, or None; stored as ASE momenta
        (``atoms.set_velocities(v / ase.units.fs)``, see the module docstring).
      info: extra comment-line keys: key -> a per-frame array (first axis F, e.g. the
        temperature ``[F]`` in K or the time ``[F]`` in fs) or a constant (a number or a
        string, e.g. ``{"method": "GFN2-xTB"}``, written on every frame). A 1-D array whose
        length equals F is taken per frame. The keys ``energy``, ``forces``, ``momenta``,
        ``Properties``, ``Lattice`` and ``pbc`` are reserved.
      append: add the frames to the end of an existing file (plain append, not atomic)
        instead of replacing it; otherwise the file is written under a temporary name and
        renamed over ``path`` (:func:`geonorm_jax._io.atomic_write`).

    Returns:
      ``path`` as a ``Path``.

    Raises:
      ValueError: for bad shapes (naming the expected and the received shape), atomic
        numbers outside 1..118, or a bad ``info`` entry.
    """
    ase, aseio, SinglePointCalculator = _ase()

    z = np.asarray(atomic_numbers)
    if z.ndim != 1 or z.shape[0] < 1:
        raise ValueError(f"atomic_numbers must have shape [A] with A >= 1, got shape "
                         f"{list(z.shape)}")
    if not np.all(np.asarray(z, np.float64) == np.round(np.asarray(z, np.float64))):
        raise ValueError(f"atomic_numbers must be integers, got {z.tolist()}")
    z = z.astype(np.int64)
    if z.min() < 1 or z.max() > 118:
        raise ValueError(f"atomic_numbers must lie in 1..118, got range {z.min()}..{z.max()}")
    r = np.asarray(positions, dtype=np.float64)
    if r.ndim != 3 or r.shape[1:] != (z.shape[0], 3):
        raise ValueError(f"positions must have shape [F, {z.shape[0]}, 3] (F, A, 3), got shape "
                         f"{list(r.shape)}")
    frames = r.shape[0]
    e = None
    if energies is not None:
        e = np.asarray(energies, dtype=np.float64)
        e = _frame_array("energies", e[:, 0] if e.ndim == 2 and e.shape[1] == 1 else e,
                         (frames,))
    f = None if forces is None else _frame_array("forces", forces, r.shape)
    v = None if velocities is None else _frame_array("velocities", velocities, r.shape)
    extra = _per_frame_info(info, frames)

    images = []
    for i in range(frames):
        atoms = ase.Atoms(numbers=z, positions=r[i], pbc=False)
        if v is not None:
            atoms.set_velocities(v[i] / ase.units.fs)  # Å/fs -> Å/(ASE time unit)
        for key, value in extra.items():
            atoms.info[key] = _scalar(value[i] if isinstance(value, np.ndarray) else value)
        results = {}
        if e is not None:
            results["energy"] = float(e[i])
        if f is not None:
            results["forces"] = f[i].copy()
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        images.append(atoms)

    path = Path(path)
    if append:
        path.parent.mkdir(parents=True, exist_ok=True)
        aseio.write(path, images, format="extxyz", append=True)
        return path
    return atomic_write(path, lambda fh: aseio.write(fh, images, format="extxyz"), text=True)


def _lookup(atoms, key: str, where: str) -> Any:
    """``atoms.info`` / ``atoms.arrays`` entry ``key`` (``where``), else the calculator's
    result of that name; None if neither has it."""
    table = atoms.info if where == "info" else atoms.arrays
    if key in table:
        return table[key]
    calc = getattr(atoms, "calc", None)
    results = getattr(calc, "results", None) or {}
    return results.get(key)


def load_extxyz(
    path: str | os.PathLike,
    *,
    energy_key: str | None = None,
    forces_key: str | None = None,
    energy_unit: str = "eV",
) -> MolecularData:
    """Loads an extended XYZ file of one molecule as :class:`MolecularData` in Å, eV, eV/Å.

    Energies are read from the comment key ``energy_key`` (default ``energy``; ASE turns
    ``energy=`` into a calculator result, which is read as well) and forces from the column
    ``forces_key`` (default ``forces``). Velocities, cells and other keys are not read.

    Args:
      path: the ``.xyz`` / ``.extxyz`` file.
      energy_key: the per-frame comment key of the energies (e.g. ``"REF_energy"``), or None
        for ``energy``.
      forces_key: the per-atom column of the forces (e.g. ``"REF_forces"``), or None for
        ``forces``.
      energy_unit: the file's energy unit, ``"eV"`` or ``"kcal/mol"`` (forces in that unit
        per Å); converted to eV with
        :data:`~geonorm_jax.data.molecules.units.KCAL_PER_MOL_EV`.

    Returns:
      :class:`MolecularData`: positions ``[F, A, 3]`` Å, energies ``[F]`` eV, forces
      ``[F, A, 3]`` eV/Å, atomic numbers ``[A]``; ``meta`` holds ``source`` (the file name),
      ``layout`` (``"extxyz"``), ``dataset``, ``molecule`` (the file's ``molecule`` key or the
      chemical formula), ``method`` (when the file has a ``method`` key), ``frames``,
      ``units``, ``file_units``, ``energy_factor_eV`` and the keys read.

    Raises:
      FileNotFoundError: if ``path`` does not exist.
      ValueError: for an unreadable or empty file, frames whose atomic numbers differ from
        the first frame's, a frame without energy or forces, non-finite values (naming the
        frame), or an unknown ``energy_unit``.
    """
    _, aseio, _ = _ase()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such extended XYZ file")
    unit = str(energy_unit).strip().lower()
    if unit not in ENERGY_UNITS:
        raise ValueError(f"energy_unit must be one of {['eV', 'kcal/mol']}, got "
                         f"{energy_unit!r}")
    factor = ENERGY_UNITS[unit]
    e_key = energy_key or "energy"
    f_key = forces_key or "forces"
    try:
        images = aseio.read(path, index=":", format="extxyz")
    except (OSError, ValueError, IndexError, KeyError, StopIteration) as e:
        raise ValueError(f"{path}: not a readable extended XYZ file ({e})") from e
    if not images:
        raise ValueError(f"{path}: no frames")

    z = np.asarray(images[0].numbers, dtype=np.int64)
    positions, energies, forces = [], [], []
    for i, atoms in enumerate(images):
        zi = np.asarray(atoms.numbers, dtype=np.int64)
        if zi.shape != z.shape or not np.array_equal(zi, z):
            raise ValueError(
                f"{path}: frame {i} has atomic numbers {zi.tolist()}, expected {z.tolist()} "
                "(those of frame 0); an extended XYZ data file must hold one molecule with a "
                "fixed atom order")
        energy = _lookup(atoms, e_key, "info")
        if energy is None:
            raise ValueError(f"{path}: frame {i} has no energy (comment key {e_key!r}; "
                             f"found keys {sorted(atoms.info)})")
        force = _lookup(atoms, f_key, "arrays")
        if force is None:
            raise ValueError(f"{path}: frame {i} has no forces (column {f_key!r}; found "
                             f"columns {sorted(atoms.arrays)})")
        try:
            energy = float(np.asarray(energy, dtype=np.float64).reshape(()))
        except (TypeError, ValueError):
            raise ValueError(f"{path}: frame {i}: energy {e_key!r} is not one number, got "
                             f"{energy!r}") from None
        force = np.asarray(force, dtype=np.float64)
        if force.shape != (z.shape[0], 3):
            raise ValueError(f"{path}: frame {i}: forces {f_key!r} must have shape "
                             f"[{z.shape[0]}, 3], got {list(force.shape)}")
        pos = np.asarray(atoms.positions, dtype=np.float64)
        for name, value in (("positions", pos), ("energy", energy), ("forces", force)):
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{path}: frame {i}: {name} contains non-finite values")
        positions.append(pos)
        energies.append(energy)
        forces.append(force)

    first = images[0].info
    file_unit = "eV" if unit == "ev" else "kcal/mol"
    meta: dict[str, Any] = {
        "source": path.name,
        "layout": "extxyz",
        "dataset": "extended XYZ",
        "molecule": str(first.get("molecule") or images[0].get_chemical_formula()),
        "frames": len(images),
        "units": {"positions": "angstrom", "energies": "eV", "forces": "eV/angstrom"},
        "file_units": {"positions": "angstrom", "energies": file_unit,
                       "forces": f"{file_unit}/angstrom"},
        "energy_factor_eV": factor,
        "energy_key": e_key,
        "forces_key": f_key,
    }
    if first.get("method") is not None:
        meta["method"] = str(first["method"])
    return molecular_data(
        np.stack(positions),
        np.asarray(energies, np.float64) * factor,
        np.stack(forces) * factor,
        z,
        meta,
    )
