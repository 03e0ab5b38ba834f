"""Using a trained potential: three ways in, one model.

* :func:`load_potential` (:mod:`~geonorm_jax.potentials.trained`): a run directory becomes a
  :class:`Potential`, a jitted energy-and-forces function of positions and atomic numbers
  (padded to size buckets so that sizes do not recompile), and ``energy_fn`` for ``jax_md``;
* :class:`GeonormCalculator` (:mod:`~geonorm_jax.potentials.calculator`): an ASE calculator,
  so that ``ase.md`` and ``ase.optimize`` run on it;
* :func:`simulate` (:mod:`~geonorm_jax.potentials.md`): JAX molecular dynamics, the whole
  trajectory one jitted ``lax.scan`` vmapped over replicas (NVE velocity Verlet, Langevin
  BAOAB);

and the observables of MD stability (:mod:`~geonorm_jax.potentials.observables`).
The package needs ASE (the ``chem`` extra): atomic masses, covalent radii, the calculator.
"""

from geonorm_jax.potentials.md import (
    THERMOSTATS,
    Trajectory,
    initial_velocities,
    masses_of,
    ns_per_day,
    simulate,
)
from geonorm_jax.potentials.observables import kinetic_energy, temperature
from geonorm_jax.potentials.trained import Potential, atom_bucket, frame_bucket, load_potential

__all__ = [
    "Potential",
    "load_potential",
    "atom_bucket",
    "frame_bucket",
    "GeonormCalculator",
    "THERMOSTATS",
    "Trajectory",
    "initial_velocities",
    "kinetic_energy",
    "temperature",
    "masses_of",
    "ns_per_day",
    "simulate",
]


def __getattr__(name: str):
    if name == "GeonormCalculator":  # ASE is imported only when the calculator is used
        from geonorm_jax.potentials.calculator import GeonormCalculator

        return GeonormCalculator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
