r"""Molecular dynamics in JAX: a whole trajectory is one jitted ``lax.scan``, vmapped over
replicas.

Units are ASE's, written out: positions Å, velocities Å/fs, masses amu, energies eV, time fs,
temperature K. With ``a = F / m`` in eV/(Å amu), ``a`` in Å/fs² is ``a * ACCELERATION``
(``ACCELERATION = (ase.units.fs)^2`` = 9.6485e-3) and the kinetic energy in eV is
``sum m v^2 / (2 ACCELERATION)`` (:func:`~geonorm_jax.potentials.observables.kinetic_energy`).

Integrators (time step ``dt``):

* ``"nve"``, velocity Verlet: ``v += dt/2 a(x); x += dt v; v += dt/2 a(x)``.
* ``"langevin"``, BAOAB (Leimkuhler and Matthews, *Appl. Math. Res. Express* 2013):
  ``B: v += dt/2 a``; ``A: x += dt/2 v``; ``O: v = c1 v + c2 sqrt(k_B T / m) xi`` with
  ``c1 = exp(-gamma dt)``, ``c2 = sqrt(1 - c1^2)``, ``xi ~ N(0, 1)``; ``A``; ``B`` with the
  new forces. ``gamma`` is the friction in 1/fs.

Initial velocities are drawn from the Maxwell–Boltzmann distribution at ``temperature`` with
the centre-of-mass momentum removed. The instantaneous temperature is ``2 KE / (n_dof k_B)``
with ``n_dof = 3A - 3`` for NVE (the centre of mass is at rest and stays there) and ``3A`` for
Langevin (the thermostat acts on every degree of freedom).

:func:`simulate` takes any ``energy_forces(positions [A, 3]) -> (E, F)`` (a trained
potential's :meth:`~geonorm_jax.potentials.trained.Potential.energy_forces_fn`, or any JAX
function), records every ``record_every`` steps and returns a :class:`Trajectory`
``[replicas, frames, ...]``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from geonorm_jax import xla
from geonorm_jax.potentials.observables import (
    AMU_A2_PER_FS2_TO_EV,
    KB_EV_PER_K,
    kinetic_energy,
)
from geonorm_jax.potentials.observables import temperature as kinetic_temperature

__all__ = [
    "ACCELERATION",
    "THERMOSTATS",
    "Trajectory",
    "initial_velocities",
    "simulate",
    "masses_of",
    "ns_per_day",
]


#: eV/(Å amu) -> Å/fs² (``ase.units.fs ** 2``)
ACCELERATION = 1.0 / AMU_A2_PER_FS2_TO_EV
#: the integrators of :func:`simulate`
THERMOSTATS = ("nve", "langevin")


class Trajectory(NamedTuple):
    """Recorded frames of ``R`` replicas (``T`` frames, ``A`` atoms).

    Attributes:
      time_fs: ``[T]`` simulated time of each frame (fs; frame 0 is the start).
      positions, velocities: ``[R, T, A, 3]`` (Å, Å/fs).
      potential_energy, kinetic_energy: ``[R, T]`` (eV).
      temperature: ``[R, T]`` (K).
    """

    time_fs: jax.Array
    positions: jax.Array
    velocities: jax.Array
    potential_energy: jax.Array
    kinetic_energy: jax.Array
    temperature: jax.Array

    @property
    def total_energy(self) -> jax.Array:
        """``[R, T]`` potential plus kinetic energy (eV)."""
        return self.potential_energy + self.kinetic_energy


def masses_of(atomic_numbers) -> np.ndarray:
    """``[A]`` atomic masses (amu, ASE's table) of ``atomic_numbers [A]``."""
    from ase.data import atomic_masses

    z = np.asarray(atomic_numbers)
    if z.ndim != 1 or z.size == 0 or z.min() < 1 or z.max() > 118:
        raise ValueError(f"atomic_numbers: expected [A] values in 1..118; received {z!r}")
    return np.asarray(atomic_masses[z], np.float64)


def _dof(num_atoms: int, thermostat: str) -> int:
    return 3 * num_atoms if thermostat == "langevin" else max(3 * num_atoms - 3, 1)


def initial_velocities(key: jax.Array, masses, temperature: float, replicas: int = 1,
                       dtype=jnp.float32) -> jax.Array:
    """``[R, A, 3]`` Maxwell–Boltzmann velocities (Å/fs) at ``temperature`` (K), centre-of-mass
    momentum removed: each component ``~ N(0, k_B T ACCELERATION / m)``."""
    m = jnp.asarray(masses, dtype)
    sigma = jnp.sqrt(KB_EV_PER_K * temperature * ACCELERATION / m)  # [A]
    v = jax.random.normal(key, (replicas, m.shape[0], 3), dtype) * sigma[None, :, None]
    com = jnp.sum(m[None, :, None] * v, axis=1, keepdims=True) / jnp.sum(m)
    return v - com


def simulate(energy_forces: Callable, positions, masses, *, steps: int, dt: float = 0.5,
             record_every: int = 10, thermostat: str = "nve", temperature: float = 300.0,
             friction: float = 0.01, replicas: int | None = None, key: jax.Array | None = None,
             velocities=None) -> Trajectory:
    """Run ``steps`` MD steps of every replica in one jitted program (module docstring).

    Args:
      energy_forces: ``positions [A, 3] -> (E [], F [A, 3])`` in eV and eV/Å, traceable.
      positions: ``[A, 3]`` (every replica starts there) or ``[R, A, 3]`` (Å).
      masses: ``[A]`` (amu; :func:`masses_of`).
      steps: MD steps (a multiple of ``record_every``).
      dt: time step (fs).
      record_every: steps between recorded frames; frame 0 is the start.
      thermostat: ``"nve"`` (velocity Verlet) or ``"langevin"`` (BAOAB at ``temperature``).
      temperature: K, of the initial velocities and of the Langevin bath.
      friction: Langevin ``gamma`` (1/fs).
      replicas: ``R`` when ``positions`` is ``[A, 3]`` (default 1).
      key: PRNG key of the initial velocities and the Langevin noise (default ``key(0)``).
      velocities: ``[R, A, 3]`` initial velocities (Å/fs) instead of a Maxwell–Boltzmann draw.

    Returns:
      :class:`Trajectory` of ``steps // record_every + 1`` frames.

    Raises:
      ValueError: bad shapes, thermostat, step counts, time step or temperature (named).
    """
    if thermostat not in THERMOSTATS:
        raise ValueError(f"thermostat: expected one of {THERMOSTATS}; received {thermostat!r}")
    if not (isinstance(steps, int) and isinstance(record_every, int) and steps >= 1
            and record_every >= 1 and steps % record_every == 0):
        raise ValueError(f"steps, record_every: expected integers >= 1 with steps a multiple of "
                         f"record_every; received {steps!r}, {record_every!r}")
    if not (math.isfinite(dt) and dt > 0) or not (math.isfinite(temperature)
                                                  and temperature >= 0):
        raise ValueError(f"dt, temperature: expected dt > 0 fs and temperature >= 0 K; received "
                         f"{dt!r}, {temperature!r}")
    if not (math.isfinite(friction) and friction >= 0):
        raise ValueError(f"friction: expected >= 0 (1/fs); received {friction!r}")
    x0 = jnp.asarray(positions)
    if x0.ndim == 2:
        x0 = jnp.broadcast_to(x0, (replicas or 1, *x0.shape))
    elif replicas is not None and replicas != x0.shape[0]:
        raise ValueError(f"replicas: {replicas} given with positions of {x0.shape[0]} replicas")
    if x0.ndim != 3 or x0.shape[-1] != 3:
        raise ValueError(f"positions: expected [A, 3] or [R, A, 3] (Å); received shape "
                         f"{tuple(jnp.shape(positions))}")
    r, a, _ = x0.shape
    m = jnp.asarray(masses, x0.dtype)
    if m.shape != (a,):
        raise ValueError(f"masses: expected [{a}] (amu); received shape {m.shape}")
    key = jax.random.key(0) if key is None else key
    k_v, k_run = jax.random.split(key)
    v0 = initial_velocities(k_v, m, temperature, r, x0.dtype) if velocities is None \
        else jnp.asarray(velocities, x0.dtype)
    if v0.shape != x0.shape:
        raise ValueError(f"velocities: expected shape {x0.shape}; received {v0.shape}")
    run = _compiled(energy_forces, thermostat, steps // record_every, record_every)
    pos, vel, pe, ke = run(x0, v0, m, jax.random.split(k_run, r),
                           jnp.asarray(dt, x0.dtype), jnp.asarray(temperature, x0.dtype),
                           jnp.asarray(friction, x0.dtype))
    temp = kinetic_temperature(vel, m, dof=_dof(a, thermostat))
    time = jnp.arange(steps // record_every + 1) * (record_every * dt)
    return Trajectory(time, pos, vel, pe, ke, temp)


@functools.lru_cache(maxsize=16)
def _compiled(energy_forces, thermostat: str, frames: int, every: int):
    """The jitted ``(x0, v0, masses, keys, dt, T, gamma) -> (pos, vel, pe, ke)`` of all
    replicas (vmapped) over ``frames`` recordings of ``every`` steps."""

    def replica(x, v, m, key, dt, temp, gamma):
        acc = lambda f: f * ACCELERATION / m[:, None]  # noqa: E731
        e, f = energy_forces(x)
        c1 = jnp.exp(-gamma * dt)
        c2 = jnp.sqrt(1.0 - c1**2)
        sigma_v = jnp.sqrt(KB_EV_PER_K * temp * ACCELERATION / m)[:, None]  # [A, 1]

        def step(carry, _):
            x, v, f, e, key = carry
            v = v + 0.5 * dt * acc(f)
            if thermostat == "langevin":
                x = x + 0.5 * dt * v
                key, sub = jax.random.split(key)
                v = c1 * v + c2 * sigma_v * jax.random.normal(sub, v.shape, v.dtype)
                x = x + 0.5 * dt * v
            else:
                x = x + dt * v
            e, f = energy_forces(x)
            v = v + 0.5 * dt * acc(f)
            return (x, v, f, e, key), None

        def record(carry, _):
            carry, _ = jax.lax.scan(step, carry, None, length=every)
            x, v, _, e, _ = carry
            return carry, (x, v, e)

        carry0 = (x, v, f, e, key)
        _, (xs, vs, es) = jax.lax.scan(record, carry0, None, length=frames)
        xs = jnp.concatenate([x[None], xs])
        vs = jnp.concatenate([v[None], vs])
        es = jnp.concatenate([e[None], es])
        return xs, vs, es, kinetic_energy(vs, m)

    return xla.jit(jax.vmap(replica, in_axes=(0, 0, None, 0, None, None, None)))


def ns_per_day(steps: int, dt_fs: float, seconds: float, replicas: int = 1) -> float:
    """Simulated nanoseconds per day of wall time (all replicas counted: ``replicas`` times the
    simulated time of one)."""
    return replicas * steps * dt_fs * 1e-6 / seconds * 86400.0
