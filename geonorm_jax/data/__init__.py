"""The data of both tasks: charged N-body systems (EGNN / GeoNorm: a float64 JAX simulator,
cached files, a loader for the reference generator's files, static-shape batching) and
molecular energies and forces (:mod:`geonorm_jax.data.molecules`).

Typical use::

    from geonorm_jax import data

    config = data.DataConfig(particles=5)
    path = data.get_dataset(config)                 # generated once, then cached
    train = data.load_split(path, "train")          # Samples(loc, vel, charges, target)
    for batch in data.iterate_batches(train, 100, key=key):
        ...

Molecular frames (MD17 style: GFN2-xTB Langevin trajectories, or the published MD17 /
revised MD17 files) live in :mod:`geonorm_jax.data.molecules`; its main names are
re-exported here (``MolecularData``, ``MoleculeConfig``, ``molecular_dataset``, ``load_md17``,
``split_data``).
"""

from geonorm_jax.data.batching import batch_indices, iterate_batches, num_batches
from geonorm_jax.data.config import SPLITS, DataConfig
from geonorm_jax.data.energy import energy_drift, total_energy
from geonorm_jax.data.files import (
    DataFileError,
    default_cache_dir,
    get_dataset,
    load_split,
    load_trajectories,
    read_metadata,
    verify_dataset,
    write_dataset,
)
from geonorm_jax.data.generate import generate_split, generation_memory
from geonorm_jax.data.molecules import (
    MolecularData,
    MoleculeConfig,
    get_molecular_dataset,
    load_md17,
    load_molecular_dataset,
    molecular_dataset,
    split_data,
)
from geonorm_jax.data.reference import (
    load_reference_split,
    load_reference_trajectories,
    reference_filename,
    simulate_numpy,
)
from geonorm_jax.data.samples import Samples, edge_attributes, select_frames
from geonorm_jax.data.simulate import (
    InitialState,
    Trajectory,
    coulomb_forces,
    reflect_walls,
    sample_initial_state,
    simulate,
    simulate_from_state,
)

__all__ = [
    "SPLITS",
    "DataConfig",
    "DataFileError",
    "InitialState",
    "MolecularData",
    "MoleculeConfig",
    "Samples",
    "Trajectory",
    "batch_indices",
    "coulomb_forces",
    "default_cache_dir",
    "edge_attributes",
    "energy_drift",
    "generate_split",
    "generation_memory",
    "get_dataset",
    "get_molecular_dataset",
    "iterate_batches",
    "load_md17",
    "load_molecular_dataset",
    "load_reference_split",
    "load_reference_trajectories",
    "load_split",
    "load_trajectories",
    "molecular_dataset",
    "num_batches",
    "read_metadata",
    "reference_filename",
    "reflect_walls",
    "sample_initial_state",
    "select_frames",
    "simulate",
    "simulate_from_state",
    "simulate_numpy",
    "split_data",
    "total_energy",
    "verify_dataset",
    "write_dataset",
]
