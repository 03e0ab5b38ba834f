"""Molecular geometries from connectivity: SMILES -> RDKit (explicit hydrogens, ETKDG
embedding, seeded) -> relaxation with the same GFN2-xTB settings as the dynamics (ASE BFGS to
a maximum force of 0.01 eV/Å).

The molecules are three of MD17's (Chmiela et al., Sci. Adv. 3, e1603015 (2017)); the atom
order is RDKit's (heavy atoms in SMILES order, then hydrogens), not MD17's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["MOLECULES", "smiles_of", "embed", "relax", "build_geometry", "geometry"]

MOLECULES: dict[str, str] = {
    "uracil": "O=C1C=CNC(=O)N1",  # C4H4N2O2, 12 atoms
    "ethanol": "CCO",  # C2H6O, 9 atoms
    "aspirin": "CC(=O)Oc1ccccc1C(=O)O",  # C9H8O4, 21 atoms
    "water": "O",  # H2O, 3 atoms (tests)
}
"""Molecule name -> SMILES."""


def smiles_of(molecule: str) -> str:
    """The SMILES of a named molecule; raises ValueError listing the known names."""
    if molecule not in MOLECULES:
        raise ValueError(f"molecule must be one of {sorted(MOLECULES)}, got {molecule!r}")
    return MOLECULES[molecule]


def embed(smiles: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """3D coordinates from a SMILES string with RDKit's ETKDG (v3), hydrogens explicit.

    Returns:
      ``(atomic_numbers int64 [A], positions float64 [A, 3] in Å)``.

    Raises:
      ValueError: if the SMILES does not parse or the embedding fails.
    """
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"RDKit cannot parse the SMILES {smiles!r}")
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise ValueError(f"ETKDG embedding failed for {smiles!r} with seed {seed}")
    z = np.array([atom.GetAtomicNum() for atom in mol.GetAtoms()], np.int64)
    return z, np.asarray(mol.GetConformer().GetPositions(), np.float64)


def relax(
    atomic_numbers: Any,
    positions: Any,
    xtb: Any = None,
    fmax: float = 0.01,
    steps: int = 1000,
) -> tuple[np.ndarray, int]:
    """Relaxes a geometry with ASE's BFGS until the largest atomic force is below ``fmax``.

    Args:
      atomic_numbers: int ``[A]``.
      positions: ``[A, 3]`` in Å.
      xtb: an :class:`~geonorm_jax.data.molecules.xtb.XTB` (default GFN2-xTB).
      fmax: force threshold in eV/Å (max over atoms of |F_i|).
      steps: maximum BFGS steps.

    Returns:
      ``(positions [A, 3] in Å, BFGS steps taken)``.

    Raises:
      RuntimeError: if BFGS does not converge in ``steps``.
    """
    from ase import Atoms
    from ase.optimize import BFGS

    from geonorm_jax.data.molecules.xtb import XTB, ase_calculator

    if not fmax > 0:
        raise ValueError(f"fmax must be positive (eV/Å), got {fmax!r}")
    xtb = xtb or XTB(np.asarray(atomic_numbers))
    atoms = Atoms(numbers=np.asarray(atomic_numbers), positions=np.asarray(positions, float))
    atoms.calc = ase_calculator(xtb)
    opt = BFGS(atoms, logfile=None)
    if not opt.run(fmax=fmax, steps=steps):
        raise RuntimeError(f"BFGS did not reach fmax={fmax} eV/Å in {steps} steps")
    return np.array(atoms.positions, np.float64), int(opt.get_number_of_steps())


def build_geometry(
    molecule: str, seed: int = 0, method: str = "GFN2-xTB", fmax: float = 0.01
) -> dict[str, Any]:
    """Embeds and relaxes a named molecule.

    Returns:
      dict with ``atomic_numbers`` (int64 ``[A]``), ``positions`` (``[A, 3]`` Å, relaxed),
      ``energy`` (eV), ``max_force`` (eV/Å), ``bfgs_steps`` and ``smiles``.
    """
    from geonorm_jax.data.molecules.xtb import XTB

    smiles = smiles_of(molecule)
    z, r0 = embed(smiles, seed)
    xtb = XTB(z, method=method)
    r, steps = relax(z, r0, xtb, fmax=fmax)
    energy, forces = xtb(r)
    return {
        "atomic_numbers": z,
        "positions": r,
        "energy": energy,
        "max_force": float(np.linalg.norm(forces, axis=1).max()),
        "bfgs_steps": steps,
        "smiles": smiles,
    }


def geometry(molecule: str, relax: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(atomic_numbers [A], positions [A, 3])`` of a named molecule: relaxed with GFN2-xTB
    (:func:`build_geometry`) when ``relax``, else RDKit's seeded embedding as is."""
    if relax:
        g = build_geometry(molecule)
        return g["atomic_numbers"], g["positions"]
    return embed(smiles_of(molecule))
