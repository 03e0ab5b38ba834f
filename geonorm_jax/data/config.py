"""Parameters of the charged N-body data set and their validation.

The defaults are those of the EGNN authors' ``generate_dataset.py`` / ``ChargedParticlesSim``
(itself Kipf et al.'s NRI simulator extended to 3D by Fuchs et al.), with the EGNN "small" split
sizes (3000 train, 2000 validation, 2000 test) and seed 43.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any

__all__ = ["DataConfig", "SPLITS", "FORMAT_VERSION", "canonical_split", "check_frames"]

SPLITS = ("train", "valid", "test")

# Bumped whenever the generator or the file layout changes in a way that changes file contents;
# it is part of the cache key, so an old cache is never reused by a new generator.
# 3: the split files no longer store ``edges`` (q_i q_j, O(N^2) per trajectory).
FORMAT_VERSION = 3

# Fields that determine the generated trajectories (and so the cache key). frame_in and
# frame_out only choose which frames are sampled from the files.
_GENERATION_FIELDS = (
    "particles",
    "train",
    "valid",
    "test",
    "seed",
    "steps",
    "sample_freq",
    "dt",
    "box_size",
    "loc_std",
    "vel_norm",
    "interaction_strength",
)


def canonical_split(split: str) -> str:
    """Returns ``"train"``, ``"valid"`` or ``"test"``; ``"val"`` and ``"validation"`` give
    ``"valid"``."""
    name = {"val": "valid", "validation": "valid"}.get(split, split)
    if name not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} (or 'val'), got {split!r}")
    return name


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Everything that defines a charged N-body data set.

    Attributes:
      particles: number of particles N (>= 2).
      train, valid, test: number of trajectories in each split (>= 1).
      seed: integer seed; split ``s`` uses ``fold_in(PRNGKey(seed), s)`` and trajectory ``i``
        of it ``fold_in(split_key, i)``, so trajectory ``i`` does not depend on the split size.
      steps: simulated length T in integration steps (the reference's ``--length``).
      sample_freq: a frame is saved every ``sample_freq`` steps; ``steps / sample_freq - 1``
        frames are kept and frame k is the state after step ``sample_freq * (k + 1)``.
      dt: integration step.
      box_size: half-width of the box used once, on the initial state only.
      loc_std: initial position std before the ``(N / 5) ** (1 / 3)`` rescaling.
      vel_norm: norm of each particle's initial velocity.
      interaction_strength: Coulomb constant k.
      frame_in, frame_out: default input and target frames for :func:`load_split`
        (30 and 40 for the EGNN "small" task); not part of the cache key.
    """

    particles: int = 5
    train: int = 3000
    valid: int = 2000
    test: int = 2000
    seed: int = 43
    steps: int = 5000
    sample_freq: int = 100
    dt: float = 0.001
    box_size: float = 5.0
    loc_std: float = 1.0
    vel_norm: float = 0.5
    interaction_strength: float = 1.0
    frame_in: int = 30
    frame_out: int = 40

    def __post_init__(self):
        if not _is_int(self.particles) or self.particles < 2:
            raise ValueError(f"particles must be an integer >= 2, got {self.particles!r}")
        for name in SPLITS:
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"split size {name} must be a positive integer, got {value!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not _is_int(self.steps) or self.steps < 1:
            raise ValueError(f"steps must be a positive integer, got {self.steps!r}")
        if not _is_int(self.sample_freq) or self.sample_freq < 1:
            raise ValueError(f"sample_freq must be a positive integer, got {self.sample_freq!r}")
        if self.steps % self.sample_freq:
            raise ValueError(
                f"sample_freq={self.sample_freq} must divide steps={self.steps} "
                f"(remainder {self.steps % self.sample_freq})"
            )
        if self.num_frames < 1:
            raise ValueError(
                f"steps / sample_freq - 1 = {self.num_frames} frames; need steps >= 2 * sample_freq"
            )
        for name in ("dt", "box_size", "loc_std", "vel_norm"):
            value = getattr(self, name)
            if not _is_real(value) or value <= 0:
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if not _is_real(self.interaction_strength):
            raise ValueError(
                f"interaction_strength must be a finite number, got {self.interaction_strength!r}"
            )
        check_frames(self.frame_in, self.frame_out, self.num_frames)

    @property
    def num_frames(self) -> int:
        """Saved frames per trajectory, ``steps // sample_freq - 1`` (49 by default)."""
        return self.steps // self.sample_freq - 1

    @property
    def max_force(self) -> float:
        """Per-component force clip, ``0.1 / dt`` (100 by default)."""
        return 0.1 / self.dt

    @property
    def split_sizes(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in SPLITS}

    def generation_dict(self) -> dict[str, Any]:
        """The fields that determine the files, as plain JSON values."""
        return {name: getattr(self, name) for name in _GENERATION_FIELDS}

    def cache_key(self) -> str:
        """SHA-256 (hex) of the generation fields and :data:`FORMAT_VERSION`."""
        payload = {"format_version": FORMAT_VERSION, **self.generation_dict()}
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def dataset_name(self) -> str:
        """Directory name inside the cache, e.g. ``charged5_seed43_1a2b3c4d5e6f``."""
        return f"charged{self.particles}_seed{self.seed}_{self.cache_key()[:12]}"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DataConfig:
        """Builds a config from a dict, ignoring unknown keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


def check_frames(frame_in: int, frame_out: int, num_frames: int) -> None:
    """Raises ValueError unless ``0 <= frame_in < frame_out < num_frames``."""
    if not (_is_int(frame_in) and _is_int(frame_out)):
        raise ValueError(
            f"frames must be integers, got frame_in={frame_in!r}, frame_out={frame_out!r}"
        )
    if frame_in < 0:
        raise ValueError(f"frame_in must be >= 0, got {frame_in}")
    if frame_in >= frame_out:
        raise ValueError(
            f"the input frame must come before the target frame, got frame_in={frame_in} >= "
            f"frame_out={frame_out}"
        )
    if frame_out >= num_frames:
        raise ValueError(
            f"frame_out={frame_out} is out of range: the trajectories have {num_frames} frames "
            f"(indices 0..{num_frames - 1})"
        )
