"""Total energy of charged-particle states and its relative drift along a trajectory."""

from __future__ import annotations

import numpy as np

__all__ = ["total_energy", "energy_drift"]


def _kinetic_and_pairs(loc, vel, charges, interaction_strength):
    loc, vel, charges = (np.asarray(a, np.float64) for a in (loc, vel, charges))
    kinetic = 0.5 * np.sum(vel * vel, axis=(-2, -1))
    diff = loc[..., :, None, :] - loc[..., None, :, :]  # [..., N, N, 3]
    dist = np.sqrt(np.sum(diff * diff, axis=-1))
    n = loc.shape[-2]
    upper = np.triu(np.ones((n, n), bool), k=1)
    qq = charges * np.swapaxes(charges, -1, -2)  # [S, N, N]
    if loc.ndim == 4:  # [S, F, N, 3]: charges do not depend on the frame
        qq = qq[:, None]
    with np.errstate(divide="ignore"):
        pair = np.where(upper, interaction_strength * qq / np.where(upper, dist, 1.0), 0.0)
    return kinetic, pair


def total_energy(loc, vel, charges, interaction_strength: float = 1.0) -> np.ndarray:
    """Kinetic plus Coulomb energy, :math:`E = \\tfrac12 \\sum_i |v_i|^2 +
    \\sum_{i<j} k q_i q_j / |x_i - x_j|` (unit masses, as in the reference's ``_energy``).

    Args:
      loc, vel: ``[S, N, 3]`` or ``[S, F, N, 3]``.
      charges: ``[S, N, 1]``.

    Returns:
      float64 energies ``[S]`` or ``[S, F]``.
    """
    kinetic, pair = _kinetic_and_pairs(loc, vel, charges, interaction_strength)
    return kinetic + np.sum(pair, axis=(-2, -1))


def energy_drift(loc, vel, charges, interaction_strength: float = 1.0) -> np.ndarray:
    """Relative energy drift of each trajectory over its saved frames.

    .. math::
        \\max_t |E_t - E_0| \\,/\\, \\big(K_0 + \\textstyle\\sum_{i<j} |k q_i q_j| / r_{ij,0}\\big)

    The denominator is the energy scale at frame 0 (kinetic energy plus the absolute pair
    energies) rather than :math:`|E_0|`, which can be close to 0 when attraction and repulsion
    cancel. Recorded velocities lag positions by the integrator's half step, so even an exact
    integration shows an O(dt) oscillation (about 1e-4 here), not a drift.

    Args:
      loc, vel: ``[S, F, N, 3]``.
      charges: ``[S, N, 1]``.

    Returns:
      float64 ``[S]``.
    """
    if np.ndim(loc) != 4:
        raise ValueError(f"loc must be [S, F, N, 3], got shape {np.shape(loc)}")
    kinetic, pair = _kinetic_and_pairs(loc, vel, charges, interaction_strength)
    energy = kinetic + np.sum(pair, axis=(-2, -1))
    scale = kinetic[:, 0] + np.sum(np.abs(pair[:, 0]), axis=(-2, -1))
    return np.max(np.abs(energy - energy[:, :1]), axis=1) / scale
