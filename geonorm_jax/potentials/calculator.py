"""An ASE calculator serving a trained potential: ``ase.md.Langevin``, ``VelocityVerlet``,
``ase.optimize.BFGS`` and the rest of ASE run on any registered molecular model.

::

    from geonorm_jax.potentials import GeonormCalculator, load_potential

    atoms.calc = GeonormCalculator(load_potential("runs/allegro-uracil"))
    atoms.get_potential_energy(), atoms.get_forces()      # eV, eV/Å

Energies and forces come from :meth:`~geonorm_jax.potentials.trained.Potential.
energy_and_forces` (jitted, padded to size buckets: a changing number of atoms reuses
compiled code). Free space only: a periodic cell is refused, and stress is not implemented
until periodic systems are (asking for it raises ``PropertyNotImplementedError`` saying so).
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import (
    Calculator,
    PropertyNotImplementedError,
    all_changes,
)

from geonorm_jax.potentials.trained import Potential

__all__ = ["GeonormCalculator"]


class GeonormCalculator(Calculator):
    """ASE calculator of a :class:`~geonorm_jax.potentials.trained.Potential` (module
    docstring). ``implemented_properties``: ``energy``, ``free_energy``, ``forces``."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, potential: Potential, **kwargs):
        if not isinstance(potential, Potential):
            raise ValueError(f"potential: expected a geonorm_jax Potential (load_potential("
                             f"run_dir)); received {type(potential).__name__}")
        super().__init__(**kwargs)
        self.potential = potential

    def get_property(self, name, atoms=None, allow_calculation=True):
        if name in ("stress", "stresses"):
            raise PropertyNotImplementedError(
                f"{name}: not implemented; geonorm-jax potentials are free-space (molecular) "
                "models until periodic systems are supported")
        return super().get_property(name, atoms, allow_calculation)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if self.atoms.pbc.any():
            raise ValueError(f"atoms.pbc: expected a free-space molecule (pbc all False); "
                             f"received {self.atoms.pbc.tolist()}")
        e, f = self.potential.energy_and_forces(self.atoms.get_positions(),
                                                self.atoms.get_atomic_numbers())
        energy = float(e)
        self.results = {"energy": energy, "free_energy": energy,
                        "forces": np.asarray(f, np.float64)}
