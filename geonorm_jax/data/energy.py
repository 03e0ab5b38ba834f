"""Total energy of charged-particle states and its relative drift along a trajectory."""

from __future__ import annotations

import numpy as np

__all__ = ["total_energy", "energy_drift"]


def _kinetic_and_pairs(loc, vel, charges, interaction_strength):
    # loc, vel: [M, N, 3]; charges: [M, N, 1] -> kinetic [M], pair energies [M, N, N]
    loc, vel, charges = (np.asarray(a, np.float64) for a in (loc, vel, charges))
    kinetic = 0.5 * np.sum(vel * vel, axis=(-2, -1))
    diff = loc[..., :, None, :] - loc[..., None, :, :]  # [M, N, N, 3]
    dist = np.sqrt(np.sum(diff * diff, axis=-1))
    n = loc.shape[-2]
    upper = np.triu(np.ones((n, n), bool), k=1)
    qq = charges * np.swapaxes(charges, -1, -2)  # [M, N, N]
    with np.errstate(divide="ignore"):
        pair = np.where(upper, interaction_strength * qq / np.where(upper, dist, 1.0), 0.0)
    return kinetic, pair


def _blockwise(loc, vel, charges, interaction_strength, absolute, budget: int = 1 << 22):
    """Kinetic energy and summed (absolute) pair energy of each state ``[S]`` or ``[S, F]``,
    in blocks of states with about ``budget`` pair entries each (at least one state), so the
    ``[block, N, N, 3]`` float64 temporaries stay near 0.4 GB whatever S, F and N (a single
    state at N = 1000 is 1e6 pairs, 24 MB of differences)."""
    if np.ndim(loc) == 2:  # one state [N, 3], charges [N, 1]
        k, pair = _blockwise(loc[None], vel[None], charges[None], interaction_strength, absolute)
        return k[0], pair[0]
    lead = np.shape(loc)[:-2]
    n = np.shape(loc)[-2]
    count = int(np.prod(lead))
    flat_loc = np.reshape(loc, (count, n, 3))
    flat_vel = np.reshape(vel, (count, n, 3))
    frames = int(np.prod(lead[1:]))  # states per trajectory: F for [S, F, N, 3], else 1
    step = max(1, budget // max(n * n, 1))
    kinetic, pairs = np.empty(count), np.empty(count)
    for i in range(0, count, step):
        b = slice(i, min(count, i + step))
        q = np.asarray(charges)[np.arange(b.start, b.stop) // frames]  # [M, N, 1]
        k, pair = _kinetic_and_pairs(flat_loc[b], flat_vel[b], q, interaction_strength)
        kinetic[b] = k
        pairs[b] = np.sum(np.abs(pair) if absolute else pair, axis=(-2, -1))
    return kinetic.reshape(lead), pairs.reshape(lead)


def total_energy(loc, vel, charges, interaction_strength: float = 1.0) -> np.ndarray:
    """Kinetic plus Coulomb energy, :math:`E = \\tfrac12 \\sum_i |v_i|^2 +
    \\sum_{i<j} k q_i q_j / |x_i - x_j|` (unit masses, as in the reference's ``_energy``).

    Computed in blocks of states (frames of trajectories), so the temporaries stay near
    0.4 GB whatever S, F and N.

    Args:
      loc, vel: ``[S, N, 3]`` or ``[S, F, N, 3]``.
      charges: ``[S, N, 1]``.

    Returns:
      float64 energies ``[S]`` or ``[S, F]``.
    """
    kinetic, pair = _blockwise(loc, vel, charges, interaction_strength, absolute=False)
    return kinetic + pair


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
    kinetic, pair = _blockwise(loc[:, 0], vel[:, 0], charges, interaction_strength, absolute=True)
    scale = kinetic + pair
    return np.max(np.abs(energy - energy[:, :1]), axis=1) / scale
