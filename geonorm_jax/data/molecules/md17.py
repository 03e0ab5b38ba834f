"""Loaders for the published MD17 and revised MD17 ``.npz`` files, converted to Å, eV, eV/Å.

* MD17 (Chmiela et al., Sci. Adv. 3, e1603015 (2017); the sGDML distribution,
  ``md17_<molecule>.npz``): ``R`` ``[F, A, 3]`` Å, ``E`` ``[F, 1]`` kcal/mol, ``F``
  ``[F, A, 3]`` kcal/mol/Å, ``z`` ``[A]``; optional string members ``r_unit`` (``"Ang"``),
  ``e_unit`` (``"kcal/mol"``), ``name``, ``theory``.
* revised MD17 (Christensen & von Lilienfeld, Mach. Learn.: Sci. Technol. 1, 045018 (2020),
  ``rmd17_<molecule>.npz``): ``coords`` ``[F, A, 3]`` Å, ``energies`` ``[F]`` kcal/mol,
  ``forces`` ``[F, A, 3]`` kcal/mol/Å, ``nuclear_charges`` ``[A]`` (``old_indices``,
  ``old_energies``, ``old_forces`` are not read).

Energies and forces are multiplied by
:data:`~geonorm_jax.data.molecules.units.KCAL_PER_MOL_EV` = 4184 J / (N_A e) =
0.0433641043... eV per kcal/mol (exact given the SI 2019 constants and the thermochemical
calorie); positions are already in Å.
"""

from __future__ import annotations

import os
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from geonorm_jax.data.molecules.dataset import MolecularData, molecular_data
from geonorm_jax.data.molecules.units import KCAL_PER_MOL_EV

__all__ = ["LAYOUTS", "NPZ_READ_ERRORS", "detect_layout", "load_md17"]

#: What reading a damaged ``.npz`` raises: a truncated or altered archive (``BadZipFile``:
#: bad CRC, ``zlib.error``, ``EOFError``), a damaged ``.npy`` header (``ValueError``,
#: ``tokenize.TokenError``, ``SyntaxError``), an unreadable file (``OSError``).
NPZ_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error,
                   tokenize.TokenError, SyntaxError)

LAYOUTS: dict[str, dict[str, str]] = {
    "md17": {"positions": "R", "energies": "E", "forces": "F", "atomic_numbers": "z"},
    "rmd17": {
        "positions": "coords",
        "energies": "energies",
        "forces": "forces",
        "atomic_numbers": "nuclear_charges",
    },
}
"""Layout name -> {field: npz member}."""

_ENERGY_UNITS = {"kcal/mol": KCAL_PER_MOL_EV, "ev": 1.0}
_LENGTH_UNITS = {"ang": 1.0, "angstrom": 1.0, "å": 1.0}


def detect_layout(members: Any) -> str:
    """``"md17"`` or ``"rmd17"`` from the member names of an npz file; ValueError otherwise."""
    names = set(members)
    for layout, keys in LAYOUTS.items():
        if set(keys.values()) <= names:
            return layout
    raise ValueError(
        "not an MD17 or revised MD17 file: expected members "
        f"{sorted(LAYOUTS['md17'].values())} (MD17) or {sorted(LAYOUTS['rmd17'].values())} "
        f"(revised MD17), got {sorted(names)}"
    )


def _member(npz, member: str, path: Path) -> np.ndarray:
    """``npz[member]``, or ``ValueError`` naming the file when the archive is damaged."""
    try:
        return np.asarray(npz[member])
    except NPZ_READ_ERRORS as e:
        raise ValueError(
            f"{path}: member {member!r} is unreadable: the .npz file is truncated or corrupted "
            f"({type(e).__name__}: {e}); expected a complete MD17 file (download it again)"
        ) from None


def _unit(npz, member: str, table: dict[str, float], default: str, path: Path) -> float:
    if member not in npz.files:
        return table[default]
    text = str(_member(npz, member, path).reshape(-1)[0]).strip()
    if text.lower() not in table:
        raise ValueError(f"{path}: {member} is {text!r}, expected one of {sorted(table)}")
    return table[text.lower()]


def load_md17(path: str | os.PathLike, layout: str = "auto", indices: Any = None) -> MolecularData:
    """Loads an MD17 or revised MD17 ``.npz`` file as :class:`MolecularData` in Å, eV, eV/Å.

    Args:
      path: the ``.npz`` file.
      layout: ``"md17"``, ``"rmd17"`` or ``"auto"`` (from the member names).
      indices: optional int array ``[K]`` of frames to keep (e.g. an rMD17 split file's rows).

    Returns:
      :class:`MolecularData` with ``meta`` holding ``source``, ``layout``, ``units`` and the
      conversion factor.

    Raises:
      FileNotFoundError: if ``path`` does not exist.
      ValueError: for an unknown layout, missing members, bad units or bad shapes (naming the
        expected and the received shape).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such MD17 file")
    try:
        npz = np.load(path, allow_pickle=False)
    except NPZ_READ_ERRORS as e:
        raise ValueError(f"{path}: not a readable .npz file, truncated or corrupted "
                         f"({type(e).__name__}: {e})") from e
    with npz:
        found = detect_layout(npz.files)
        if layout == "auto":
            layout = found
        elif layout not in LAYOUTS:
            raise ValueError(f"layout must be 'auto', 'md17' or 'rmd17', got {layout!r}")
        elif layout != found:
            raise ValueError(f"{path}: requested layout {layout!r} but the file is {found!r}")
        keys = LAYOUTS[layout]
        energy_factor, length_factor = KCAL_PER_MOL_EV, 1.0
        if layout == "md17":
            energy_factor = _unit(npz, "e_unit", _ENERGY_UNITS, "kcal/mol", path)
            length_factor = _unit(npz, "r_unit", _LENGTH_UNITS, "ang", path)
        arrays = {field: _member(npz, member, path) for field, member in keys.items()}
        name = str(_member(npz, "name", path)) if "name" in npz.files else None
        theory = str(_member(npz, "theory", path)) if "theory" in npz.files else None
    if indices is not None:
        idx = np.asarray(indices)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"indices must be a 1-D integer array, got {idx.shape} {idx.dtype}")
        n = arrays["positions"].shape[0]
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"indices must lie in [0, {n}), got {idx.min()}..{idx.max()}")
        for field in ("positions", "energies", "forces"):
            arrays[field] = arrays[field][idx]
    meta = {
        "source": str(path),
        "layout": layout,
        "dataset": {"md17": "MD17", "rmd17": "revised MD17"}[layout],
        "molecule": name,
        "theory": theory,
        "units": {"positions": "angstrom", "energies": "eV", "forces": "eV/angstrom"},
        "file_units": {
            "positions": "angstrom",
            "energies": "kcal/mol",
            "forces": "kcal/mol/angstrom",
        },
        "energy_factor_eV": energy_factor,
    }
    data = molecular_data(
        arrays["positions"] * length_factor,
        np.asarray(arrays["energies"], np.float64) * energy_factor,
        np.asarray(arrays["forces"], np.float64) * (energy_factor / length_factor),
        arrays["atomic_numbers"],
        meta,
    )
    return data
