"""Unit conversions used by the molecular data sets (exact SI 2019 / CODATA 2018 values).

Every array this package returns is in Å (positions), eV (energies) and eV/Å (forces);
velocities inside the integrator are in Å/fs, masses in unified atomic mass units (Da) and
time in fs. tblite works in atomic units (Hartree, Bohr); MD17 and revised MD17 files store
kcal/mol and kcal/mol/Å.
"""

from __future__ import annotations

__all__ = [
    "HARTREE_EV",
    "BOHR_ANGSTROM",
    "KCAL_PER_MOL_EV",
    "BOLTZMANN_EV_PER_K",
    "EV_PER_ANGSTROM_AMU_TO_ANGSTROM_PER_FS2",
]

# CODATA 2018 (the values tblite's mctc-lib uses).
HARTREE_EV = 27.211386245988
"""1 Hartree in eV."""
BOHR_ANGSTROM = 0.529177210903
"""1 Bohr in Å."""

_ELEMENTARY_CHARGE_C = 1.602176634e-19  # exact (SI 2019)
_AVOGADRO_PER_MOL = 6.02214076e23  # exact (SI 2019)
_AMU_KG = 1.66053906660e-27  # CODATA 2018

KCAL_PER_MOL_EV = 4184.0 / (_AVOGADRO_PER_MOL * _ELEMENTARY_CHARGE_C)
"""1 kcal/mol (thermochemical calorie, 4.184 J) per molecule in eV: 0.0433641043..."""

BOLTZMANN_EV_PER_K = 1.380649e-23 / _ELEMENTARY_CHARGE_C
"""k_B in eV/K (exact, SI 2019): 8.617333262e-5."""

EV_PER_ANGSTROM_AMU_TO_ANGSTROM_PER_FS2 = _ELEMENTARY_CHARGE_C / (1e-10 * _AMU_KG) * 1e-20
"""An acceleration F / m with F in eV/Å and m in Da, expressed in Å/fs²: 9.6485e-3."""
