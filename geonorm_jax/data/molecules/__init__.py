"""Molecular energy-and-force data: GFN2-xTB Langevin trajectories in the MD17 style
(``md17-xtb``), their frames relabelled with PBE/def2-SVP through PySCF (``md17-dft``, the
revised MD17 level of theory), loaders for the published MD17 / revised MD17 files, and
rMD17-style splits. Everything is in Å, eV and eV/Å.

Typical use::

    from geonorm_jax.data import molecules

    data = molecules.molecular_dataset(molecules.MoleculeConfig(molecule="uracil"))
    # or, PBE/def2-SVP labels of the same frames (PySCF):
    # data = molecules.dft_dataset(molecules.DFTConfig(molecules.MoleculeConfig(frames=180)))
    # or, with the published file: data = molecules.load_md17("rmd17_uracil.npz")
    # or, from an extended XYZ file: data = molecules.load_extxyz("uracil.xyz")
    parts = molecules.split_data(data, train=1000, valid=50, seed=0)
    parts["train"].positions   # [1000, 12, 3] Å

The xTB, DFT and RDKit parts need the optional extra ``pip install 'geonorm-jax[chem]'``
(tblite, pyscf, ase, rdkit); the npz loaders and splits need only numpy, the extended XYZ reader and
writer need ase.
"""

from geonorm_jax.data.molecules.config import DEFAULT_STRIDE, MoleculeConfig
from geonorm_jax.data.molecules.dataset import MolecularData, molecular_data, select
from geonorm_jax.data.molecules.dft import DFTConfig
from geonorm_jax.data.molecules.dft_files import dft_dataset, get_dft_dataset
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
from geonorm_jax.data.molecules.sources import SOURCES
from geonorm_jax.data.molecules.splits import read_index_file, split_data, split_indices
from geonorm_jax.data.molecules.structures import MOLECULES
from geonorm_jax.data.molecules.units import HARTREE_EV, KCAL_PER_MOL_EV

__all__ = [
    "DEFAULT_STRIDE",
    "DFTConfig",
    "HARTREE_EV",
    "KCAL_PER_MOL_EV",
    "MOLECULES",
    "MolecularData",
    "MolecularDataError",
    "MoleculeConfig",
    "SOURCES",
    "describe_molecular_dataset",
    "detect_layout",
    "dft_dataset",
    "generate_molecular_dataset",
    "get_dft_dataset",
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
