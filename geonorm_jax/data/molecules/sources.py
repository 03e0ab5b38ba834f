"""The generated molecular data sets, in one table: ``geonorm-jax data generate --dataset`` and
the training task's ``molecules.dataset`` both read :data:`SOURCES`.

* ``md17-xtb``: GFN2-xTB Langevin trajectories (:mod:`geonorm_jax.data.molecules.files`);
* ``md17-dft``: their frames relabelled with PBE/def2-SVP, the revised MD17 level of theory
  (:mod:`geonorm_jax.data.molecules.dft_files`).

A source turns ``(molecule, frames, seed)`` into its configuration (the cache key) and a
configuration into a cached data set directory (generated or resumed when incomplete). Adding a
data set is one entry here (plus its command-line options in
:mod:`geonorm_jax.data.molecules.cli`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["MolecularSource", "SOURCES", "source", "generated_config", "generated_directory"]


def _xtb_config(molecule: str, frames: int, seed: int, **extra):
    from geonorm_jax.data.molecules.config import MoleculeConfig

    return MoleculeConfig(molecule=molecule, frames=frames, seed=seed, **extra)


def _xtb_directory(config, cache_dir, *, progress=False, workers=None, **kwargs) -> Path:
    from geonorm_jax.data.molecules.files import get_molecular_dataset

    return get_molecular_dataset(config, cache_dir, progress=progress, workers=workers, **kwargs)


def _dft_config(molecule: str, frames: int, seed: int, **extra):
    from geonorm_jax.data.molecules.dft import DFTConfig

    geometry = {k: extra.pop(k) for k in list(extra) if k not in _DFT_FIELDS}
    return DFTConfig(geometry=_xtb_config(molecule, frames, seed, **geometry), **extra)


def _dft_directory(config, cache_dir, *, progress=False, workers=None, **kwargs) -> Path:
    from geonorm_jax.data.molecules.dft_files import get_dft_dataset

    return get_dft_dataset(config, cache_dir, progress=progress, workers=workers, **kwargs)


_DFT_FIELDS = ("xc", "basis", "density_fit", "conv_tol", "grid_level", "grid_response")


@dataclasses.dataclass(frozen=True)
class MolecularSource:
    """One generated molecular data set.

    Attributes:
      name: the ``--dataset`` / ``molecules.dataset`` value.
      summary: one line for help texts.
      default_frames: default ``--frames``.
      config: ``config(molecule, frames, seed, **fields) -> configuration`` (its
        ``cache_key()`` and ``dataset_name()`` name the cache directory).
      directory: ``directory(config, cache_dir, progress=, workers=, **kwargs) -> Path``: the
        complete data set, generated or resumed if needed.
    """

    name: str
    summary: str
    default_frames: int
    config: Callable[..., Any]
    directory: Callable[..., Path]


def _sources() -> dict[str, MolecularSource]:
    from geonorm_jax.data.molecules.config import MoleculeConfig
    from geonorm_jax.data.molecules.dft import DEFAULT_DFT_FRAMES

    return {
        "md17-xtb": MolecularSource("md17-xtb", "GFN2-xTB Langevin MD of a molecule",
                                    MoleculeConfig.frames, _xtb_config, _xtb_directory),
        "md17-dft": MolecularSource("md17-dft", "md17-xtb frames relabelled with PBE/def2-SVP "
                                    "(PySCF; the revised MD17 level of theory)",
                                    DEFAULT_DFT_FRAMES, _dft_config, _dft_directory),
    }


SOURCES: dict[str, MolecularSource] = _sources()
"""The generated molecular data sets by name."""


def source(name: str) -> MolecularSource:
    """The entry of ``name``; a ValueError naming the known ones otherwise."""
    if name not in SOURCES:
        raise ValueError(f"dataset must be one of {sorted(SOURCES)}, got {name!r}")
    return SOURCES[name]


def generated_config(name: str, molecule: str, frames: int, seed: int, **fields):
    """The configuration of data set ``name`` for ``molecule``, ``frames`` and ``seed``."""
    return source(name).config(molecule, frames, seed, **fields)


def generated_directory(name: str, config, cache_dir: str | os.PathLike | None = None,
                        **kwargs) -> Path:
    """The complete directory of ``config`` (data set ``name``) under ``cache_dir``."""
    return source(name).directory(config, cache_dir, **kwargs)
