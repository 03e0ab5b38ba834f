"""Parameters of a GFN2-xTB Langevin data set (``md17-xtb``) and their validation.

Defaults follow MD17 (Chmiela et al., Sci. Adv. 3, e1603015 (2017)): 500 K, a 0.5 fs time
step, one molecule per data set; the potential is GFN2-xTB instead of DFT.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any

from geonorm_jax.data.molecules.structures import MOLECULES

__all__ = ["MoleculeConfig", "MOLECULE_FORMAT_VERSION", "DEFAULT_STRIDE", "LIMITS"]

# Part of the cache key: bumped whenever the generator changes what the files hold.
MOLECULE_FORMAT_VERSION = 1

DEFAULT_STRIDE = 200
"""Steps between kept frames (100 fs at 0.5 fs); see :class:`MoleculeConfig`."""

#: Upper bounds of the physical settings, checked before anything is written: above them
#: the molecule dissociates or the integrator diverges (tblite then fails mid-run).
#: Temperature in K (MD17: 500 K; organic molecules fall apart within picoseconds at a few
#: thousand K), time step in fs (hydrogen vibrations need <= 1 fs; 0.5 fs in MD17), friction
#: in 1/fs (10 is already a relaxation time of 0.1 fs), fmax in eV/Å.
LIMITS = {"temperature": 5000.0, "timestep": 5.0, "friction": 10.0, "fmax": 10.0}

_GENERATION_FIELDS = (
    "molecule",
    "frames",
    "seed",
    "temperature",
    "timestep",
    "stride",
    "friction",
    "equilibration",
    "trajectories",
    "method",
    "fmax",
)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class MoleculeConfig:
    """Everything that defines an ``md17-xtb`` data set; the files are a deterministic
    function of these fields.

    Attributes:
      molecule: ``"uracil"`` (default), ``"ethanol"``, ``"aspirin"`` or ``"water"``.
      frames: frames kept in total, over all trajectories (default 2000).
      seed: integer seed: ETKDG embedding seed, and trajectory ``t`` draws its velocities and
        Langevin noise from ``PCG64(SeedSequence([seed, t]))``.
      temperature: thermostat temperature in K (500, as MD17).
      timestep: integration step in fs (0.5, as MD17).
      stride: steps between kept frames. The default, 200 steps = 100 fs, is 3.5 times the
        integrated autocorrelation time of the potential energy measured for uracil at 500 K
        with the default friction (tau_int = 28.6 fs; the autocorrelation is 0.07 at 100 fs;
        see :mod:`geonorm_jax.data.molecules.files` for the command).
      friction: Langevin friction gamma in 1/fs (0.02: a 50 fs velocity relaxation time; with
        0.01 the energy decorrelates more slowly, tau_int = 44.5 fs).
      equilibration: steps run from the relaxed geometry before the first kept frame
        (2000 = 1 ps = 20 / gamma).
      trajectories: independent trajectories the frames are split over (run in parallel);
        trajectory ``t`` keeps ``frames // trajectories`` frames, plus one for
        ``t < frames % trajectories``.
      method: ``"GFN2-xTB"`` (Bannwarth, Ehlert & Grimme 2019) or ``"GFN1-xTB"``.
      fmax: force threshold (eV/Å) of the BFGS relaxation of the starting geometry.
    """

    molecule: str = "uracil"
    frames: int = 2000
    seed: int = 0
    temperature: float = 500.0
    timestep: float = 0.5
    stride: int = DEFAULT_STRIDE
    friction: float = 0.02
    equilibration: int = 2000
    trajectories: int = 4
    method: str = "GFN2-xTB"
    fmax: float = 0.01

    def __post_init__(self):
        if self.molecule not in MOLECULES:
            raise ValueError(f"molecule must be one of {sorted(MOLECULES)}, got {self.molecule!r}")
        for name, low in (("frames", 1), ("stride", 1), ("trajectories", 1), ("seed", 0)):
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not _is_int(self.equilibration) or self.equilibration < 0:
            raise ValueError(f"equilibration must be an integer >= 0, got {self.equilibration!r}")
        if self.trajectories > self.frames:
            raise ValueError(
                f"trajectories ({self.trajectories}) must not exceed frames ({self.frames})"
            )
        for name, unit in (("temperature", "K"), ("timestep", "fs"), ("fmax", "eV/Å")):
            value = getattr(self, name)
            if not _is_real(value) or not 0 < value <= LIMITS[name]:
                raise ValueError(f"{name} must be a number in (0, {LIMITS[name]:g}] {unit}, got "
                                 f"{value!r}")
        if not _is_real(self.friction) or not 0 <= self.friction <= LIMITS["friction"]:
            raise ValueError(f"friction must be a number in [0, {LIMITS['friction']:g}] 1/fs, "
                             f"got {self.friction!r}")
        if self.method not in ("GFN2-xTB", "GFN1-xTB"):
            raise ValueError(f"method must be 'GFN2-xTB' or 'GFN1-xTB', got {self.method!r}")

    def frames_per_trajectory(self) -> list[int]:
        """Frames kept by each trajectory, ``[trajectories]``, summing to ``frames``."""
        q, r = divmod(self.frames, self.trajectories)
        return [q + (t < r) for t in range(self.trajectories)]

    def generation_dict(self) -> dict[str, Any]:
        """The fields that determine the files, as plain JSON values."""
        return {name: getattr(self, name) for name in _GENERATION_FIELDS}

    def cache_key(self) -> str:
        """SHA-256 (hex) of the generation fields and :data:`MOLECULE_FORMAT_VERSION`."""
        payload = {"format_version": MOLECULE_FORMAT_VERSION, **self.generation_dict()}
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def dataset_name(self) -> str:
        """Directory name in the cache, e.g. ``md17-xtb_uracil_seed0_1a2b3c4d5e6f``."""
        return f"md17-xtb_{self.molecule}_seed{self.seed}_{self.cache_key()[:12]}"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MoleculeConfig:
        """Builds a config from a dict, ignoring unknown keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})
