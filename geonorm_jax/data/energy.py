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


def _blocks(count: int, per_item: int, budget: int = 1 << 22):
    """Slices over the first axis so that each block has about ``budget`` pair entries."""
    step = max(1, budget // max(per_item, 1))
    return [slice(i, min(count, i + step)) for i in range(0, count, step)]


def total_energy(loc, vel, charges, interaction_strength: float = 1.0) -> np.ndarray:
    """Kinetic plus Coulomb energy, :math:`E = \\tfrac12 \\sum_i |v_i|^2 +
    \\sum_{i<j} k q_i q_j / |x_i - x_j|` (unit masses, as in the reference's ``_energy``).

    Computed in blocks of trajectories, so the temporaries stay near 0.4 GB whatever S.

    Args:
      loc, vel: ``[S, N, 3]`` or ``[S, F, N, 3]``.
      charges: ``[S, N, 1]``.

    Returns:
      float64 energies ``[S]`` or ``[S, F]``.
    """
    per_item = int(np.prod(np.shape(loc)[1:-1])) * np.shape(loc)[-2]
    parts = []
    for b in _blocks(np.shape(loc)[0], per_item):
        kinetic, pair = _kinetic_and_pairs(loc[b], vel[b], charges[b], interaction_strength)
        parts.append(kinetic + np.sum(pair, axis=(-2, -1)))
    return np.concatenate(parts)


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
    energy = total_energy(loc, vel, charges, interaction_strength)  # [S, F]
    kinetic, pair = _kinetic_and_pairs(loc[:, 0], vel[:, 0], charges, interaction_strength)
    scale = kinetic + np.sum(np.abs(pair), axis=(-2, -1))
    return np.max(np.abs(energy - energy[:, :1]), axis=1) / scale
