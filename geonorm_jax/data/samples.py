"""The training sample of the N-body task: input frame, velocity, charges and target frame."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from geonorm_jax.data.config import check_frames

__all__ = ["Samples", "select_frames", "edge_attributes"]


class Samples(NamedTuple):
    """A set (or batch) of N-body samples, EGNN's ``(loc[t0], vel[t0], charges, loc[t1])``.

    Attributes:
      loc: positions at the input frame ``[S, N, 3]``.
      vel: velocities at the input frame ``[S, N, 3]``.
      charges: ``[S, N, 1]``; the edge attribute is ``q_i q_j`` (:func:`edge_attributes`).
      target: positions at the target frame ``[S, N, 3]``.
    """

    loc: Any
    vel: Any
    charges: Any
    target: Any


def edge_attributes(charges):
    """``q_i q_j`` as ``[..., N, N]`` from charges ``[..., N, 1]`` (the reference's ``edges``;
    its diagonal is ``q_i^2 = 1``; EGNN only reads the off-diagonal entries)."""
    return charges * charges.swapaxes(-1, -2)


def select_frames(loc, vel, charges, frame_in: int = 30, frame_out: int = 40) -> Samples:
    """Samples from full trajectories ``loc, vel [S, F, N, 3]``, charges ``[S, N, 1]``.

    Raises:
      ValueError: unless ``0 <= frame_in < frame_out < F``.
    """
    check_frames(frame_in, frame_out, loc.shape[1])
    as32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)
    return Samples(
        as32(loc[:, frame_in]), as32(vel[:, frame_in]), as32(charges), as32(loc[:, frame_out])
    )
