"""Langevin molecular dynamics (BAOAB splitting, Leimkuhler & Matthews, Appl. Math. Res.
Express 2013, 34) on a GFN2-xTB potential, in Å, fs, Da, eV and K.

One step of length ``dt`` (fs) with friction ``gamma`` (1/fs) at temperature ``T`` (K)::

    B  v <- v + (dt/2) F(x) / m
    A  x <- x + (dt/2) v
    O  v <- c1 v + sqrt((1 - c1^2) k_B T / m) xi,   c1 = exp(-gamma dt),  xi ~ N(0, 1)
    A  x <- x + (dt/2) v
    B  v <- v + (dt/2) F(x) / m

one force evaluation per step (the force at the new positions is kept for the next step). With
``gamma = 0`` the O step is the identity and BAOAB is velocity Verlet (energy conserving). The
noise comes from a numpy ``PCG64`` generator whose state is saved with every chunk, so a
trajectory can be stopped after any chunk and continued bit for bit.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import numpy as np

from geonorm_jax.data.molecules.units import (
    BOLTZMANN_EV_PER_K,
    EV_PER_ANGSTROM_AMU_TO_ANGSTROM_PER_FS2,
)

__all__ = [
    "MDState",
    "atomic_masses",
    "kinetic_energy",
    "maxwell_boltzmann",
    "langevin_steps",
    "generator_from_state",
    "generator_state",
    "autocorrelation",
    "decorrelation_time",
]

_ACC = EV_PER_ANGSTROM_AMU_TO_ANGSTROM_PER_FS2


class MDState(NamedTuple):
    """Everything needed to continue a trajectory.

    Attributes:
      positions: ``[A, 3]`` Å.  velocities: ``[A, 3]`` Å/fs.
      energy: potential energy (eV) at ``positions``.  forces: ``[A, 3]`` eV/Å at ``positions``.
      step: integration steps taken so far.
    """

    positions: np.ndarray
    velocities: np.ndarray
    energy: float
    forces: np.ndarray
    step: int


def atomic_masses(atomic_numbers: Any) -> np.ndarray:
    """Standard atomic masses (Da) ``[A]`` from ASE's table (IUPAC 2016)."""
    from ase.data import atomic_masses as table

    z = np.asarray(atomic_numbers, np.int64)
    return np.asarray(table[z], np.float64)


def kinetic_energy(velocities: np.ndarray, masses: np.ndarray) -> float:
    """``sum_i m_i |v_i|^2 / 2`` in eV, for velocities ``[A, 3]`` Å/fs and masses ``[A]`` Da."""
    return float(0.5 * np.sum(masses[:, None] * velocities**2) / _ACC)


def maxwell_boltzmann(
    masses: np.ndarray, temperature: float, rng: np.random.Generator
) -> np.ndarray:
    """Velocities ``[A, 3]`` (Å/fs) drawn at ``temperature`` K, centre-of-mass motion removed."""
    sigma = np.sqrt(BOLTZMANN_EV_PER_K * temperature * _ACC / masses)
    v = rng.standard_normal((masses.shape[0], 3)) * sigma[:, None]
    return v - np.sum(masses[:, None] * v, axis=0) / masses.sum()


def generator_state(rng: np.random.Generator) -> str:
    """The generator's bit-generator state as a JSON string (saved with each chunk)."""
    return json.dumps(rng.bit_generator.state, sort_keys=True)


def generator_from_state(text: str) -> np.random.Generator:
    """Rebuilds the generator saved by :func:`generator_state`."""
    state = json.loads(text)
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


def langevin_steps(
    state: MDState,
    potential,
    masses: np.ndarray,
    steps: int,
    dt: float,
    temperature: float,
    friction: float,
    rng: np.random.Generator,
    on_step=None,
) -> MDState:
    """Advances ``state`` by ``steps`` BAOAB steps.

    Args:
      state: the current :class:`MDState` (its ``forces`` are those at its ``positions``).
      potential: ``positions [A, 3] Å -> (energy eV, forces [A, 3] eV/Å)``.
      masses: ``[A]`` Da.
      steps: number of steps (>= 0).
      dt: time step in fs.  temperature: K.  friction: gamma in 1/fs (0: velocity Verlet).
      rng: the noise generator (advanced in place; not used when ``friction == 0``).
      on_step: optional ``callback(state)`` after every step.

    Returns:
      The new :class:`MDState`.
    """
    if not dt > 0:
        raise ValueError(f"dt must be positive (fs), got {dt!r}")
    if friction < 0:
        raise ValueError(f"friction must be >= 0 (1/fs), got {friction!r}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (K), got {temperature!r}")
    x, v = np.array(state.positions, np.float64), np.array(state.velocities, np.float64)
    energy, f = state.energy, np.array(state.forces, np.float64)
    inv_m = (_ACC / masses)[:, None]
    c1 = float(np.exp(-friction * dt))
    noise = np.sqrt((1.0 - c1 * c1) * BOLTZMANN_EV_PER_K * temperature * inv_m)
    step = state.step
    for _ in range(steps):
        v += 0.5 * dt * f * inv_m
        x += 0.5 * dt * v
        if friction > 0:
            v = c1 * v + noise * rng.standard_normal(v.shape)
        x += 0.5 * dt * v
        energy, f = potential(x)
        v += 0.5 * dt * f * inv_m
        step += 1
        if on_step is not None:
            on_step(MDState(x, v, energy, f, step))
    return MDState(x, v, energy, f, step)


def autocorrelation(series: Any) -> np.ndarray:
    """Normalised autocorrelation ``C(k) = <dE_t dE_{t+k}> / <dE^2>`` of a 1-D series
    (``dE = E - mean(E)``), for lags ``k = 0 .. n-1`` (FFT, zero padded)."""
    e = np.asarray(series, np.float64)
    if e.ndim != 1 or e.size < 2:
        raise ValueError(f"series must be 1-D with at least 2 values, got shape {e.shape}")
    d = e - e.mean()
    n = d.size
    spectrum = np.fft.rfft(d, 2 * n)
    acf = np.fft.irfft(spectrum * np.conj(spectrum))[:n] / np.arange(n, 0, -1)
    return acf / acf[0] if acf[0] > 0 else np.ones(n)


def decorrelation_time(series: Any, dt: float = 1.0, threshold: float = float(np.exp(-1))):
    """Time (in units of ``dt``) after which the autocorrelation of ``series`` stays below
    ``threshold`` (default 1/e), and the integrated autocorrelation time
    ``tau_int = dt (1/2 + sum_{k>=1} C(k))`` summed up to the first zero crossing. Lags
    beyond half the series are not used.

    Returns:
      ``(t_decorrelated, tau_int)`` in the units of ``dt``.
    """
    c = autocorrelation(series)
    c = c[: max(2, c.size // 2)]  # the estimate is noisy beyond half the series
    above = np.nonzero(c >= threshold)[0]
    t_dec = float(above[-1] + 1) * dt if above.size < c.size else float("inf")
    zero = np.nonzero(c <= 0)[0]
    cut = zero[0] if zero.size else c.size
    tau_int = dt * (0.5 + float(np.sum(c[1:cut])))
    return t_dec, tau_int
