"""Checks of molecular data against a model, on the host, before training.

What a model cannot tell under ``jit`` is checked here on the frames themselves (NumPy, in
blocks of frames, so memory stays ``O(chunk A^2)``), each raising one ``ValueError`` that
names the frame, the atoms and what would be valid:

* :func:`check_frames`: coincident (or nearly coincident) atoms, and frames in which no two
  atoms are within the cutoff (the model would see no edge: a ``0.1`` Å cutoff, Bohr read as
  Å);
* :func:`check_triplet_capacity`: GemNet-T's static triplet budget ``max_neighbors``
  against the largest number of neighbours within its cutoff (under ``jit`` an overflow
  makes its energies NaN, see :class:`~geonorm_jax.models.gemnet.GemNetT`).

Frames: ``positions [F, A, 3]`` (Å) and ``atomic_numbers [A]`` or ``[F, A]`` (0 = padding);
a single frame ``[A, 3]`` is accepted too. The trainer calls both before training; any
other caller may.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["MIN_DISTANCE", "check_frames", "check_triplet_capacity", "max_neighbor_count"]

#: Atoms of one frame closer than this (Å) are reported as coincident: no molecular structure
#: has two nuclei within 0.01 Å (the shortest bond, H2, is 0.74 Å).
MIN_DISTANCE = 0.01


def _frames(positions, atomic_numbers) -> tuple[np.ndarray, np.ndarray]:
    pos = np.asarray(positions, np.float64)
    if pos.ndim == 2:
        pos = pos[None]
    if pos.ndim != 3 or pos.shape[-1] != 3:
        raise ValueError(f"positions: expected frames [F, A, 3] (Å); received shape "
                         f"{np.shape(positions)}")
    z = np.asarray(atomic_numbers)
    if z.ndim == 1 and z.shape[0] == pos.shape[1]:
        z = np.broadcast_to(z, pos.shape[:2])
    if z.shape != pos.shape[:2]:
        raise ValueError(f"atomic_numbers: expected [A] = ({pos.shape[1]},) or [F, A] = "
                         f"{pos.shape[:2]}; received shape {np.shape(atomic_numbers)}")
    return pos, z > 0


def _blocks(pos, mask, chunk: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(first frame, d2 [f, A, A], pair [f, A, A])`` per block: squared distances and the
    real pairs ``i != j``."""
    a = pos.shape[1]
    off = ~np.eye(a, dtype=bool)
    for start in range(0, pos.shape[0], chunk):
        p, m = pos[start:start + chunk], mask[start:start + chunk]
        d2 = np.sum(np.square(p[:, :, None, :] - p[:, None, :, :]), axis=-1)
        yield start, d2, off & m[:, :, None] & m[:, None, :]


def check_frames(positions, atomic_numbers, cutoff: float, *,
                 min_distance: float = MIN_DISTANCE, chunk: int = 256,
                 where: str = "molecular data") -> None:
    """Raise ``ValueError`` when the frames cannot be trained on with ``cutoff`` (Å).

    * two real atoms of a frame closer than ``min_distance`` (default :data:`MIN_DISTANCE`;
      coincident atoms have no direction between them);
    * a frame of two or more real atoms with no pair closer than ``cutoff``: the model would
      see no edge (all its outputs would be the per-species shift).

    Non-finite positions are :func:`geonorm_jax.train.provenance.check_finite`'s to report;
    ``where`` names the data in the message.
    """
    if not (isinstance(cutoff, int | float) and np.isfinite(cutoff) and cutoff > 0):
        raise ValueError(f"cutoff: expected a positive number of Å; received {cutoff!r}")
    pos, mask = _frames(positions, atomic_numbers)
    lonely = []
    for start, d2, pair in _blocks(pos, mask, chunk):
        close = pair & (d2 < min_distance**2)
        if close.any():
            f, i, j = (int(v) for v in np.argwhere(close)[0])
            d = float(np.sqrt(d2[f, i, j]))
            raise ValueError(
                f"{where}: frame {start + f} has atoms {i} and {j} at {d:.3g} Å; expected "
                f"atoms at least {min_distance:g} Å apart (coincident atoms have no direction "
                f"between them)")
        none = (mask[start:start + d2.shape[0]].sum(axis=1) >= 2) & ~(
            pair & (d2 < cutoff**2)).any(axis=(1, 2))
        lonely.extend(int(start + f) for f in np.flatnonzero(none))
    if lonely:
        nearest = _nearest_pair(pos, mask, lonely[0])
        raise ValueError(
            f"{where}: {len(lonely)} of {pos.shape[0]} frames (first: frame {lonely[0]}, "
            f"closest pair {nearest:.3g} Å) have no two atoms within the cutoff {cutoff:g} Å; "
            f"the model would see no edge. Expected a cutoff above the interatomic distances "
            f"(molecular models use 4-6 Å)")


def _nearest_pair(pos, mask, frame: int) -> float:
    p, m = pos[frame], mask[frame]
    d2 = np.sum(np.square(p[:, None] - p[None]), axis=-1)
    ok = ~np.eye(len(p), dtype=bool) & m[:, None] & m[None, :]
    return float(np.sqrt(d2[ok].min())) if ok.any() else float("inf")


def max_neighbor_count(positions, atomic_numbers, cutoff: float,
                       chunk: int = 256) -> tuple[int, int, int]:
    """``(count, frame, atom)``: the largest number of real neighbours within ``cutoff`` of
    one atom over all frames, and where it occurs (``(0, 0, 0)`` for no atom)."""
    pos, mask = _frames(positions, atomic_numbers)
    best = (0, 0, 0)
    for start, d2, pair in _blocks(pos, mask, chunk):
        counts = np.sum(pair & (d2 < cutoff**2), axis=-1)  # [f, A]
        if counts.size and int(counts.max()) > best[0]:
            f, i = np.unravel_index(int(np.argmax(counts)), counts.shape)
            best = (int(counts.max()), int(start + f), int(i))
    return best


def check_triplet_capacity(model, positions, atomic_numbers, *, chunk: int = 256) -> int | None:
    """Raise ``ValueError`` when ``model``'s static triplet budget is too small for the frames.

    For a model with a ``max_neighbors`` attribute (GemNet-T): the largest number of
    neighbours of one atom within ``model.cutoff`` must not exceed ``max_neighbors``, or
    the triplet table would be truncated (eagerly ``ValueError``, under ``jit`` NaN
    energies). ``max_neighbors=None`` takes ``A - 1`` on the trainer's block-padded batches,
    which is never exceeded.

    Returns the largest neighbour count, or None for a model without a triplet budget (any
    other model: nothing to check).
    """
    if not hasattr(model, "max_neighbors"):
        return None
    budget = model.max_neighbors
    count, frame, atom = max_neighbor_count(positions, atomic_numbers, model.cutoff, chunk)
    if budget is not None and count > budget:
        raise ValueError(
            f"{type(model).__name__}.max_neighbors: frame {frame}, atom {atom} has {count} "
            f"neighbours within the cutoff {model.cutoff:g} Å; expected max_neighbors >= "
            f"{count} (or None: atoms per molecule - 1); received {budget}")
    return count
