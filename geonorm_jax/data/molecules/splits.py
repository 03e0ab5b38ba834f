"""Seeded train / validation / test splits of a molecular data set, following the revised
MD17 protocol (Christensen & von Lilienfeld 2020): 1000 training frames drawn at random, and
1000 test frames from the rest.

Defaults: ``train=1000``; ``valid=50`` (taken, as NequIP and Allegro do on rMD17, as a small
held-out set for early stopping and learning-rate schedules, disjoint from the training frames);
``test=None``: every remaining frame, at most 1000 (950 for the default 2000-frame
``md17-xtb`` set; 1000 for MD17 / rMD17 files).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from geonorm_jax.data.molecules.dataset import MolecularData, select

__all__ = ["split_indices", "split_data", "read_index_file", "TEST_CAP"]

TEST_CAP = 1000
"""Largest default test set (the rMD17 split files hold 1000 test frames)."""


def split_indices(
    num_frames: int,
    train: int = 1000,
    valid: int = 50,
    test: int | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Disjoint random frame indices ``{"train", "valid", "test"}`` (int64, sorted).

    One permutation of ``range(num_frames)`` from ``numpy.random.default_rng(seed)``: the
    first ``train`` entries are the training set, the next ``valid`` the validation set, the
    next ``test`` (default ``min(1000, the rest)``) the test set.

    Raises:
      ValueError: if a size is negative, ``train < 1``, or the sizes exceed ``num_frames``.
    """
    for name, value in (
        ("num_frames", num_frames),
        ("train", train),
        ("valid", valid),
        ("seed", seed),
    ):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if train < 1:
        raise ValueError(f"train must be >= 1, got {train}")
    rest = num_frames - train - valid
    if rest < 0:
        raise ValueError(
            f"train ({train}) + valid ({valid}) = {train + valid} exceeds the {num_frames} frames"
        )
    if test is None:
        test = min(TEST_CAP, rest)
    elif not isinstance(test, int | np.integer) or isinstance(test, bool) or test < 0:
        raise ValueError(f"test must be a non-negative integer or None, got {test!r}")
    elif test > rest:
        raise ValueError(
            f"train ({train}) + valid ({valid}) + test ({test}) = {train + valid + test} "
            f"exceeds the {num_frames} frames"
        )
    order = np.random.default_rng(seed).permutation(num_frames)
    bounds = np.cumsum([0, train, valid, test])
    return {
        name: np.sort(order[bounds[i] : bounds[i + 1]]).astype(np.int64)
        for i, name in enumerate(("train", "valid", "test"))
    }


def split_data(data: MolecularData, **kwargs: Any) -> dict[str, MolecularData]:
    """``{"train", "valid", "test"}`` subsets of ``data`` from :func:`split_indices`
    (keyword arguments ``train``, ``valid``, ``test``, ``seed``)."""
    indices = split_indices(data.num_frames, **kwargs)
    return {
        name: select(data, idx)._replace(meta=dict(data.meta, split=name, frames=int(idx.size)))
        for name, idx in indices.items()
    }


def read_index_file(path: str | os.PathLike) -> np.ndarray:
    """Frame indices (int64 ``[K]``) from a revised MD17 split file (``index_train_01.csv``,
    ``index_test_01.csv``, ...: one integer per line). Pass them to
    :func:`~geonorm_jax.data.molecules.md17.load_md17` (``indices=``) or
    :func:`~geonorm_jax.data.molecules.dataset.select` to use the published splits.

    Raises:
      ValueError: naming the file and line, for a line that is not a non-negative integer.
    """
    path = Path(path)
    indices = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip().strip(",")
        if not text:
            continue
        if not text.isdigit():
            raise ValueError(f"{path}:{number}: expected a non-negative integer, got {line!r}")
        indices.append(int(text))
    return np.asarray(indices, np.int64)
