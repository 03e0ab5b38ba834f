"""Molecular energy-and-force data: GFN2-xTB Langevin trajectories in the MD17 style
(``md17-xtb``), loaders for the published MD17 / revised MD17 files, and rMD17-style splits.
Everything is in Å, eV and eV/Å.

Typical use::

    from geonorm_jax.data import molecules

    data = molecules.molecular_dataset(molecules.MoleculeConfig(molecule="uracil"))
    # or, with the published file: data = molecules.load_md17("rmd17_uracil.npz")
    # or, from an extended XYZ file: data = molecules.load_extxyz("uracil.xyz")
    parts = molecules.split_data(data, train=1000, valid=50, seed=0)
    parts["train"].positions   # [1000, 12, 3] Å

The xTB and RDKit parts need the optional extra ``pip install 'geonorm-jax[chem]'``
(tblite, ase, rdkit); the npz loaders and splits need only numpy, the extended XYZ reader and
writer need ase.
"""

from geonorm_jax.data.molecules.config import DEFAULT_STRIDE, MoleculeConfig
from geonorm_jax.data.molecules.dataset import MolecularData, molecular_data, select
from geonorm_jax.data.molecules.extxyz import load_extxyz, write_extxyz
from geonorm_jax.data.molecules.files import (
    MolecularDataError,
    describe_molecular_dataset,
    generate_molecular_dataset,
    get_molecular_dataset,
    is_molecular_dataset,
    load_molecular_dataset,
    molecular_dataset,
    read_molecular_metadata,
)
from geonorm_jax.data.molecules.md17 import detect_layout, load_md17
from geonorm_jax.data.molecules.splits import read_index_file, split_data, split_indices
from geonorm_jax.data.molecules.structures import MOLECULES
from geonorm_jax.data.molecules.units import HARTREE_EV, KCAL_PER_MOL_EV

__all__ = [
    "DEFAULT_STRIDE",
    "HARTREE_EV",
    "KCAL_PER_MOL_EV",
    "MOLECULES",
    "MolecularData",
    "MolecularDataError",
    "MoleculeConfig",
    "describe_molecular_dataset",
    "detect_layout",
    "generate_molecular_dataset",
    "get_molecular_dataset",
    "is_molecular_dataset",
    "load_extxyz",
    "load_md17",
    "load_molecular_dataset",
    "molecular_data",
    "molecular_dataset",
    "read_index_file",
    "read_molecular_metadata",
    "select",
    "split_data",
    "split_indices",
    "write_extxyz",
]
