"""The ``molecules`` section of a run configuration: which frames, how they are split, and
how energies and forces are weighted in the loss.

Used when ``RunConfig.task == "molecules"``
(:class:`~geonorm_jax.train.tasks.molecules.MolecularTask`). The frames come either from the
library's GFN2-xTB Langevin trajectories (``dataset="md17-xtb"``, generated and cached by
:func:`geonorm_jax.data.molecules.get_molecular_dataset`) or from a published MD17 / revised
MD17 ``.npz`` file (``data_file``, read by :func:`geonorm_jax.data.molecules.load_md17`).
Units: Å, eV, eV/Å.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

__all__ = ["MoleculesConfig"]


@dataclasses.dataclass(frozen=True)
class MoleculesConfig:
    """Molecular frames, their split and the loss weights.

    Attributes:
      dataset: ``"md17-xtb"`` (generated GFN2-xTB trajectories, cached) or ``"file"``
        (``data_file``).
      molecule: ``"uracil"`` (the survey's Figure 1), ``"ethanol"``, ``"aspirin"`` or
        ``"water"`` (``md17-xtb`` only).
      frames: frames generated in all (``md17-xtb``; the cache key includes it).
      data_seed: seed of the generated trajectories (``md17-xtb``).
      data_file: an MD17 (``R, E, F, z``) or revised MD17 (``coords, energies, forces,
        nuclear_charges``) ``.npz`` file; used when ``dataset == "file"``.
      train, valid: frames in the training and validation splits (rMD17 protocol: 1000 and
        50, drawn at random).
      test: test frames (``None``: the rest, at most 1000).
      split_seed: seed of the random split (:func:`geonorm_jax.data.molecules.split_indices`).
      energy_weight, force_weight: ``lambda_E``, ``lambda_F`` of the loss
        ``lambda_E mean_g ((E_g - E_g^ref) / A_g)^2 + lambda_F mean_{i,a} (F_ia - F_ia^ref)^2``
        (per-atom energy MSE plus force MSE, eV^2 and eV^2/Å^2, as the Allegro authors'
        configurations weight them: 1 and 1).
    """

    dataset: Literal["md17-xtb", "file"] = "md17-xtb"
    molecule: str = "uracil"
    frames: int = 2000
    data_seed: int = 0
    data_file: str | None = None
    train: int = 1000
    valid: int = 50
    test: int | None = None
    split_seed: int = 0
    energy_weight: float = 1.0
    force_weight: float = 1.0
