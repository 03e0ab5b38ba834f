"""GFN2-xTB energies and forces through ``tblite`` (Bannwarth, Ehlert & Grimme, J. Chem. Theory
Comput. 15, 1652 (2019)), in Å, eV and eV/Å.

``tblite.interface.Calculator`` works in atomic units: positions are converted Å -> Bohr with
:data:`~geonorm_jax.data.molecules.units.BOHR_ANGSTROM`, the energy Hartree -> eV with
:data:`~geonorm_jax.data.molecules.units.HARTREE_EV`, and the gradient (Hartree/Bohr) to forces
``F = -dE/dR`` in eV/Å. Every evaluation starts from tblite's default SAD guess (no restart
from the previous wavefunction): a result depends only on the positions, never on the history,
which is what makes a resumed trajectory identical to an uninterrupted one. Running single
threaded the results are bitwise reproducible; with several OpenMP threads the reduction order
varies and results differ in the last bits from call to call. :class:`XTB` therefore limits
OpenMP to one thread by default (``omp_set_num_threads(1)`` in the OpenMP runtime tblite
loaded; the generator's worker processes also set ``OMP_NUM_THREADS=1``) and runs
trajectories in parallel instead.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

import numpy as np

from geonorm_jax.data.molecules.units import BOHR_ANGSTROM, HARTREE_EV

__all__ = ["XTB", "XTBError", "METHODS", "ase_calculator", "set_openmp_threads", "tblite_version"]

METHODS = ("GFN2-xTB", "GFN1-xTB")


def _require_tblite():
    try:
        from tblite.interface import Calculator
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "GFN2-xTB needs the 'tblite' package: pip install 'geonorm-jax[chem]'"
        ) from e
    return Calculator


_OPENMP_LIBRARIES = ("libgomp.so.1", "libiomp5.so", "libomp.so", "libomp.dylib", "libgomp.1.dylib")


def set_openmp_threads(threads: int) -> bool:
    """Calls ``omp_set_num_threads(threads)`` in every OpenMP runtime already loaded in this
    process (tblite's); returns False if none was found. Affects later calls from this
    thread."""
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    found = False
    mode = getattr(os, "RTLD_NOLOAD", 0) | getattr(os, "RTLD_GLOBAL", 0)
    for name in _OPENMP_LIBRARIES:
        try:
            lib = ctypes.CDLL(name, mode=mode)
        except OSError:
            continue
        setter = getattr(lib, "omp_set_num_threads", None)
        if setter is not None:
            setter(ctypes.c_int(threads))
            found = True
    return found


def tblite_version() -> str:
    """The installed tblite version (``"unknown"`` if it does not say)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tblite")
    except PackageNotFoundError:
        return "unknown"


class XTBError(ValueError):
    """A tight-binding evaluation failed (SCF not converged, atoms flown apart or collapsed);
    a ``ValueError``, so the command line prints it as one line."""


def _closest(r: np.ndarray) -> float:
    if len(r) < 2:
        return float("inf")
    d = np.sqrt(np.sum(np.square(r[:, None] - r[None]), axis=-1))
    return float(np.min(d[~np.eye(len(r), dtype=bool)]))


class XTB:
    """Energy and forces of one molecule with a tblite tight-binding method.

    Args:
      atomic_numbers: int ``[A]``.
      method: ``"GFN2-xTB"`` (default) or ``"GFN1-xTB"``.
      charge: total charge in e (default 0).
      accuracy: tblite's SCC accuracy factor (1.0 default; smaller is tighter).
      threads: OpenMP threads for tblite (default 1: bitwise reproducible results); ``None``
        leaves the runtime's setting alone.

    Calling it with positions ``[A, 3]`` in Å returns ``(energy, forces)``: a float in eV and
    float64 ``[A, 3]`` in eV/Å. ``evaluations`` counts the calls.
    """

    def __init__(
        self,
        atomic_numbers: Any,
        method: str = "GFN2-xTB",
        charge: float = 0.0,
        accuracy: float = 1.0,
        threads: int | None = 1,
    ):
        z = np.asarray(atomic_numbers)
        if z.ndim != 1 or z.size < 1 or not np.issubdtype(z.dtype, np.integer):
            raise ValueError(
                f"atomic_numbers must be a 1-D integer array [A], got shape {z.shape} {z.dtype}"
            )
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if not accuracy > 0:
            raise ValueError(f"accuracy must be positive, got {accuracy!r}")
        self.atomic_numbers = z.astype(np.int64)
        self.method, self.charge, self.accuracy = method, float(charge), float(accuracy)
        self.evaluations = 0
        self._calculator_cls = _require_tblite()
        if threads is not None:
            set_openmp_threads(threads)

    def __call__(self, positions: Any) -> tuple[float, np.ndarray]:
        r = np.asarray(positions, dtype=np.float64)
        a = self.atomic_numbers.shape[0]
        if r.shape != (a, 3):
            raise ValueError(f"positions must have shape ({a}, 3) in Å, got {r.shape}")
        if not np.all(np.isfinite(r)):
            raise XTBError(f"{self.method}: positions are not finite (the dynamics diverged); "
                           "expected finite positions in Å (lower the temperature or time step)")
        try:
            calc = self._calculator_cls(
                self.method, self.atomic_numbers, r / BOHR_ANGSTROM, charge=self.charge
            )
            calc.set("verbosity", 0)
            calc.set("accuracy", self.accuracy)
            result = calc.singlepoint()
        except Exception as e:  # noqa: BLE001 (tblite raises its own RuntimeError types)
            raise XTBError(
                f"{self.method} failed on {a} atoms ({type(e).__name__}: "
                f"{str(e).strip().splitlines()[0] if str(e).strip() else 'no message'}); "
                f"expected a bound molecule (atoms closest at "
                f"{_closest(r):.3g} Å: lower the temperature or time step)") from None
        self.evaluations += 1
        energy = float(result.get("energy")) * HARTREE_EV
        forces = -np.asarray(result.get("gradient"), np.float64) * (HARTREE_EV / BOHR_ANGSTROM)
        if not (np.isfinite(energy) and np.all(np.isfinite(forces))):
            raise XTBError(f"{self.method}: non-finite energy or forces on {a} atoms; expected a "
                           "bound molecule (lower the temperature or time step)")
        return energy, forces


def ase_calculator(xtb: XTB):
    """An ASE calculator (``energy`` in eV, ``forces`` in eV/Å) that calls ``xtb``; used for
    the geometry relaxation so that relaxation and dynamics use the same settings."""
    from ase.calculators.calculator import Calculator, all_changes

    class _XTBAse(Calculator):
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            if not np.array_equal(self.atoms.numbers, xtb.atomic_numbers):
                raise ValueError(
                    f"atoms have atomic numbers {self.atoms.numbers.tolist()}, the calculator "
                    f"was built for {xtb.atomic_numbers.tolist()}"
                )
            energy, forces = xtb(self.atoms.positions)
            self.results = {"energy": energy, "forces": forces}

    return _XTBAse()
