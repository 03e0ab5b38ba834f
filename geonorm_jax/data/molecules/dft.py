"""DFT labels at the revised MD17 level of theory: PBE/def2-SVP single points with PySCF
(Sun et al., WIREs Comput. Mol. Sci. 8, e1340 (2018); J. Chem. Phys. 153, 024109 (2020)),
in Å, eV and eV/Å.

Revised MD17 (Christensen & von Lilienfeld, Mach. Learn.: Sci. Technol. 1, 045018 (2020))
recomputed the MD17 frames with PBE (Perdew, Burke & Ernzerhof, Phys. Rev. Lett. 77, 3865
(1996)) in the def2-SVP basis (Weigend & Ahlrichs, Phys. Chem. Chem. Phys. 7, 3297 (2005)),
without a dispersion correction. :class:`PySCFDFT` computes the same Kohn-Sham energy
``E[R]`` (Hartree) and the analytic gradient (``mf.nuc_grad_method()``, Hartree/Bohr) and
returns ``E`` in eV and ``F = -dE/dR`` in eV/Å (positions ``[A, 3]`` in Å, forces ``[A, 3]``).

Differences to rMD17's ORCA settings, stated in every data set's metadata: the Coulomb and
exchange integrals use density fitting (``density_fit=True``, PySCF's default auxiliary basis:
def2-universal-jfit for PBE with def2-SVP, which needs only the Coulomb term;
:func:`auxiliary_basis`), and the quadrature is PySCF's grid level 3. ``grid_response=True``
(default) adds the response of the atom-centred grid to the gradient, so that the forces are
the exact derivative of the energy as computed (central differences agree to ~1e-6 eV/Å),
which an energy-and-force model relies on.

Every evaluation starts from PySCF's default ``minao`` guess, never from the previous frame's
density: a label depends on the positions only, so a resumed or reordered generation gives the
same numbers. :class:`DFTConfig` is the cache key of an ``md17-dft`` data set: the ``md17-xtb``
configuration whose frames are relabelled plus the electronic-structure settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any

import numpy as np

from geonorm_jax.data.molecules.config import MoleculeConfig
from geonorm_jax.data.molecules.units import BOHR_ANGSTROM, HARTREE_EV

__all__ = [
    "DFTConfig",
    "DFTError",
    "PySCFDFT",
    "DFT_FORMAT_VERSION",
    "DEFAULT_DFT_FRAMES",
    "set_pyscf_threads",
    "auxiliary_basis",
]

# Part of the cache key: bumped whenever the labelling changes what the files hold.
DFT_FORMAT_VERSION = 1

DEFAULT_DFT_FRAMES = 180
"""Default ``--frames`` of ``md17-dft``: about an hour on two free cores for uracil (38 s of
CPU per frame, two single-threaded workers; measured in
:mod:`geonorm_jax.data.molecules.dft_files`)."""

_XC = ("PBE", "PBE0", "B3LYP")


def set_pyscf_threads(threads: int) -> int:
    """Sets PySCF's OpenMP threads (``pyscf.lib.num_threads``) for this process; returns the
    number now in effect."""
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    from pyscf import lib

    return int(lib.num_threads(threads))


def auxiliary_basis(basis: str, xc: str) -> str:
    """The auxiliary basis PySCF's density fitting picks for ``basis`` and ``xc`` (e.g.
    ``"def2-universal-jfit"`` for PBE/def2-SVP), or ``"even-tempered (PySCF default)"`` when
    it generates one."""
    from pyscf import gto
    from pyscf.df.addons import predefined_auxbasis

    mol = gto.M(atom="H 0 0 0; H 0 0 0.74", basis=basis, verbose=0)
    return predefined_auxbasis(mol, basis, xc, False) or "even-tempered (PySCF default)"


class DFTError(ValueError):
    """A DFT evaluation failed (bad input, SCF not converged); one line naming the case."""


@dataclasses.dataclass(frozen=True)
class DFTConfig:
    """Everything that defines an ``md17-dft`` data set; its files are a deterministic
    function of these fields.

    Attributes:
      geometry: the ``md17-xtb`` configuration whose frames (positions ``[F, A, 3]``) are
        relabelled; the same configuration always gives the same geometries.
      xc: exchange-correlation functional (``"PBE"``, rMD17's).
      basis: orbital basis set (``"def2-SVP"``, rMD17's).
      density_fit: density fitting of the two-electron integrals (PySCF's default auxiliary
        basis for ``basis``).
      conv_tol: SCF energy convergence threshold in Hartree.
      grid_level: PySCF's DFT grid level (0-9).
      grid_response: include the grid's response in the gradient (forces exactly ``-dE/dR``).
    """

    geometry: MoleculeConfig = MoleculeConfig(frames=DEFAULT_DFT_FRAMES)
    xc: str = "PBE"
    basis: str = "def2-SVP"
    density_fit: bool = True
    conv_tol: float = 1e-9
    grid_level: int = 3
    grid_response: bool = True

    def __post_init__(self):
        if not isinstance(self.geometry, MoleculeConfig):
            raise ValueError(f"geometry must be a MoleculeConfig, got {type(self.geometry)}")
        if self.xc not in _XC:
            raise ValueError(f"xc must be one of {_XC}, got {self.xc!r}")
        if not isinstance(self.basis, str) or not self.basis:
            raise ValueError(f"basis must be a basis-set name such as 'def2-SVP', got "
                             f"{self.basis!r}")
        if not (isinstance(self.conv_tol, float) and math.isfinite(self.conv_tol)
                and 0 < self.conv_tol <= 1e-5):
            raise ValueError(f"conv_tol must be a float in (0, 1e-5] Hartree, got "
                             f"{self.conv_tol!r}")
        if not (isinstance(self.grid_level, int) and 0 <= self.grid_level <= 9):
            raise ValueError(f"grid_level must be an integer in 0..9, got {self.grid_level!r}")
        for name in ("density_fit", "grid_response"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    @property
    def molecule(self) -> str:
        return self.geometry.molecule

    @property
    def frames(self) -> int:
        return self.geometry.frames

    @property
    def method(self) -> str:
        """``"PBE/def2-SVP"`` (plus ``", density fitting"``)."""
        return f"{self.xc}/{self.basis}" + (", density fitting" if self.density_fit else "")

    def generation_dict(self) -> dict[str, Any]:
        """The fields that determine the files, as plain JSON values."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["geometry"] = self.geometry.generation_dict()
        return out

    def cache_key(self) -> str:
        """SHA-256 (hex) of the geometry's cache key, the DFT fields and
        :data:`DFT_FORMAT_VERSION`."""
        payload = {"format_version": DFT_FORMAT_VERSION, **self.generation_dict(),
                   "geometry": self.geometry.cache_key()}
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def dataset_name(self) -> str:
        """Directory name in the cache, e.g. ``md17-dft_uracil_seed0_1a2b3c4d5e6f``."""
        return f"md17-dft_{self.molecule}_seed{self.geometry.seed}_{self.cache_key()[:12]}"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DFTConfig:
        """Inverse of :meth:`generation_dict` (unknown keys ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in names}
        if isinstance(kwargs.get("geometry"), dict):
            kwargs["geometry"] = MoleculeConfig.from_dict(kwargs["geometry"])
        return cls(**kwargs)


class PySCFDFT:
    """Kohn-Sham DFT energy and forces of one molecule with PySCF.

    Args:
      atomic_numbers: int ``[A]``.
      xc, basis, density_fit, conv_tol, grid_level, grid_response: as :class:`DFTConfig`.
      charge: total charge in e (default 0); the spin is the electron count's parity
        (restricted Kohn-Sham for closed shells, unrestricted otherwise).
      threads: PySCF OpenMP threads (``pyscf.lib.num_threads``); ``None`` leaves it alone.

    Calling it with positions ``[A, 3]`` in Å returns ``(energy, forces)``: a float in eV and
    float64 ``[A, 3]`` in eV/Å. ``evaluations`` counts the calls, ``scf_cycles`` the SCF
    iterations of the last one.
    """

    def __init__(self, atomic_numbers: Any, xc: str = "PBE", basis: str = "def2-SVP",
                 density_fit: bool = True, conv_tol: float = 1e-9, grid_level: int = 3,
                 grid_response: bool = True, charge: int = 0, threads: int | None = None):
        z = np.asarray(atomic_numbers)
        if z.ndim != 1 or z.size < 1 or not np.issubdtype(z.dtype, np.integer):
            raise ValueError(
                f"atomic_numbers must be a 1-D integer array [A], got shape {z.shape} {z.dtype}")
        if z.min() < 1 or z.max() > 86:
            raise ValueError(f"atomic_numbers must lie in 1..86, got range {z.min()}..{z.max()}")
        self.atomic_numbers = z.astype(np.int64)
        self.xc, self.basis, self.density_fit = xc, basis, bool(density_fit)
        self.conv_tol, self.grid_level = float(conv_tol), int(grid_level)
        self.grid_response, self.charge = bool(grid_response), int(charge)
        self.spin = int((int(self.atomic_numbers.sum()) - self.charge) % 2)
        self.evaluations, self.scf_cycles = 0, 0
        if threads is not None:
            set_pyscf_threads(threads)

    @classmethod
    def from_config(cls, atomic_numbers: Any, config: DFTConfig, threads: int | None = None):
        """The calculator of ``config``'s electronic-structure settings."""
        return cls(atomic_numbers, xc=config.xc, basis=config.basis,
                   density_fit=config.density_fit, conv_tol=config.conv_tol,
                   grid_level=config.grid_level, grid_response=config.grid_response,
                   threads=threads)

    def _scf(self, r: np.ndarray):
        from pyscf import dft, gto

        mol = gto.M(atom=[(int(a), tuple(p)) for a, p in zip(self.atomic_numbers, r,
                                                                strict=True)],
                    basis=self.basis, unit="Angstrom", charge=self.charge, spin=self.spin,
                    verbose=0)
        mf = (dft.RKS(mol) if self.spin == 0 else dft.UKS(mol))
        mf.xc = self.xc
        mf.conv_tol = self.conv_tol
        mf.grids.level = self.grid_level
        if self.density_fit:
            mf = mf.density_fit()
        return mf

    def __call__(self, positions: Any) -> tuple[float, np.ndarray]:
        r = np.asarray(positions, dtype=np.float64)
        a = self.atomic_numbers.shape[0]
        if r.shape != (a, 3):
            raise ValueError(f"positions must have shape ({a}, 3) in Å, got {r.shape}")
        if not np.all(np.isfinite(r)):
            raise DFTError("positions are not finite; expected finite positions in Å")
        mf = self._scf(r)
        energy = mf.kernel()
        if not mf.converged:  # second-order SCF from where it stopped
            mf = mf.newton()
            energy = mf.kernel(mf.make_rdm1())
        if not mf.converged:
            raise DFTError(f"{self.xc}/{self.basis}: SCF did not converge to {self.conv_tol:g} "
                           f"Hartree on {a} atoms; expected a bound closed-shell molecule")
        grad = mf.nuc_grad_method()
        grad.grid_response = self.grid_response
        gradient = np.asarray(grad.kernel(), np.float64)
        self.evaluations += 1
        self.scf_cycles = int(getattr(mf, "cycles", 0))
        energy = float(energy) * HARTREE_EV
        forces = -gradient * (HARTREE_EV / BOHR_ANGSTROM)
        if not (np.isfinite(energy) and np.all(np.isfinite(forces))):
            raise DFTError(f"{self.xc}/{self.basis}: non-finite energy or forces on {a} atoms")
        return energy, forces
