"""The charged-particle simulator of the EGNN / GeoNorm N-body data, in JAX.

Physics (identical to ``ChargedParticlesSim.sample_trajectory`` in vgsatorras/egnn):

* charges :math:`q_i \\in \\{-1, +1\\}` with probability 1/2 each;
* initial positions :math:`x_i \\sim \\mathcal N(0, \\sigma^2 I)` with
  :math:`\\sigma = \\text{loc\\_std}\\,(N/5)^{1/3}`, initial velocities normal and rescaled to
  norm ``vel_norm`` per particle;
* one reflection of the initial state at the walls :math:`\\pm` ``box_size``
  (:math:`x > b \\mapsto 2b - x,\\ v \\mapsto -|v|`; :math:`x < -b \\mapsto -2b - x,\\
  v \\mapsto |v|`), and no walls afterwards;
* Coulomb forces :math:`F_i = \\sum_{j \\ne i} k\\, q_i q_j (x_i - x_j) / |x_i - x_j|^3`, each
  component clipped to :math:`\\pm 0.1/dt`;
* one kick :math:`v \\mathrel{+}= dt\\,F(x_0)`, then for each step ``i = 1 .. T-1``:
  :math:`x \\mathrel{+}= dt\\,v`, record ``(x, v)`` when ``i % sample_freq == 0``,
  :math:`v \\mathrel{+}= dt\\,F(x)` (kick-drift; the reference calls it leapfrog). Frame ``k``
  is the state after step ``sample_freq * (k + 1)``; the steps after the last saved frame
  cannot change any saved value and are not run.

Integration is in float64 (inside ``jax.enable_x64`` only; the global flag is left alone).

Layout: the pair kernel keeps the trajectory axis last (``[N, S]`` per coordinate) and loops
over partner particles, so XLA:CPU vectorizes along trajectories; ``jax.vmap`` over a
single-trajectory function puts the batch axis first and measured 3-7x slower on CPU.
``jax.vmap`` is used for the per-trajectory random initial states.

Memory: one force evaluation holds ``O(N S)`` values, never an ``N x N`` array: the loop over
partners ``j`` carries three ``[N, S]`` float64 accumulators, and each iteration's
temporaries (differences, ``r^2``, weights) are fused into one elementwise kernel. The
integration state is ``x, v`` (six ``[N, S]`` arrays) and the recorded frames
``[F, N, S, 3]`` twice (positions and velocities) in the output dtype, plus their transpose
to ``[S, F, N, 3]``: about ``12 * F * N * S * itemsize + 200 * N * S`` bytes in all (see
:func:`geonorm_jax.data.generate.generation_memory` for the whole generation). Tiling
several partners per iteration (``[N, T, S]`` blocks summed over ``T``) was measured at
N = 500, S = 32 on XLA:CPU: 2.0-2.6x slower than this loop for T = 4, 10, 20 (the reduction
over the middle axis vectorizes badly), so the loop is kept; unrolling it 5x (the default
for N > 10) is the same arithmetic in the same order, bit for bit, and about 2x faster than
no unrolling. At N >= 500 XLA:CPU splits each partner iteration's fusion across both cores
(CPU time about twice the wall time), about 1 ns of wall time per pair and trajectory step
on the 2-core development machine.

The physics, the memory layout above and the jitted integrator are one piece (each constrains
the others), so they stay in one module.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "InitialState",
    "Trajectory",
    "sample_initial_state",
    "reflect_walls",
    "simulate_from_state",
    "simulate",
    "coulomb_forces",
    "integrate",
    "default_unroll",
]


class InitialState(NamedTuple):
    """A batch of initial states before the wall reflection.

    Attributes:
      loc: positions ``[S, N, 3]``.
      vel: velocities ``[S, N, 3]``.
      charges: charges ``[S, N, 1]``.
    """

    loc: jax.Array
    vel: jax.Array
    charges: jax.Array


class Trajectory(NamedTuple):
    """Saved frames of a batch of trajectories (float64 unless converted).

    Attributes:
      loc: positions ``[S, F, N, 3]``; frame ``k`` is the state after step
        ``sample_freq * (k + 1)``.
      vel: velocities ``[S, F, N, 3]`` recorded right after the position update.
      charges: ``[S, N, 1]``.
      clipped: ``[S]`` bool, True where some force component exceeded the clip (``0.1/dt`` by
        default) at a force evaluation before the last saved frame.
    """

    loc: jax.Array
    vel: jax.Array
    charges: jax.Array
    clipped: jax.Array


_SAMPLE_BLOCK = 256


def _sample_one(key, particles, loc_std, vel_norm):
    # One threefry draw per trajectory (compiling several draws takes seconds): columns 0-2
    # are positions, 3-5 velocities, and the sign of column 6 the charge (+1 or -1 with
    # probability 1/2 each).
    z = jax.random.normal(key, (particles, 7), jnp.float64)
    loc = z[:, 0:3] * loc_std
    vel = z[:, 3:6]
    vel = vel * (vel_norm / jnp.sqrt(jnp.sum(vel * vel, axis=-1, keepdims=True)))
    charges = jnp.where(z[:, 6:7] >= 0, 1.0, -1.0)
    return loc, vel, charges


@functools.partial(jax.jit, static_argnames=("particles",))
def _sample_batch(key, indices, particles, loc_std, vel_norm):
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, indices)
    return jax.vmap(_sample_one, in_axes=(0, None, None, None))(keys, particles, loc_std, vel_norm)


def sample_initial_state(
    key: jax.Array,
    num_trajectories: int,
    particles: int = 5,
    *,
    loc_std: float = 1.0,
    vel_norm: float = 0.5,
    start: int = 0,
) -> InitialState:
    """Draws initial states as the reference does (before its wall reflection).

    Trajectory ``i`` uses ``fold_in(key, start + i)``, so it does not depend on how many
    trajectories are drawn together.

    Args:
      key: a JAX PRNG key.
      num_trajectories: S.
      particles: N.
      loc_std: std before the ``(N / 5) ** (1 / 3)`` rescaling.
      vel_norm: norm of each particle's initial velocity.
      start: index of the first trajectory.

    Returns:
      ``InitialState`` of float64 arrays: loc, vel ``[S, N, 3]``, charges ``[S, N, 1]`` in
      {-1, +1}.
    """
    if num_trajectories < 1 or particles < 1:
        raise ValueError(
            f"need num_trajectories >= 1 and particles >= 1, got {num_trajectories}, {particles}"
        )
    scaled_std = loc_std * (particles / 5.0) ** (1.0 / 3.0)
    parts = []
    with jax.enable_x64(True):
        # Fixed-size blocks of trajectory indices: one compilation for any number of
        # trajectories (compiling the vmapped threefry sampler takes seconds).
        for first in range(start, start + num_trajectories, _SAMPLE_BLOCK):
            count = min(_SAMPLE_BLOCK, start + num_trajectories - first)
            indices = jnp.arange(first, first + _SAMPLE_BLOCK, dtype=jnp.uint32)
            block = _sample_batch(key, indices, particles, scaled_std, vel_norm)
            parts.append([a[:count] for a in block])
        loc, vel, charges = (jnp.concatenate(a) for a in zip(*parts, strict=True))
    return InitialState(loc, vel, charges)


def reflect_walls(loc, vel, box_size):
    """The reference's one-time wall reflection (works on any matching shapes).

    Coordinates above ``box_size`` become ``2 * box_size - x`` with velocity ``-|v|``; then
    coordinates below ``-box_size`` become ``-2 * box_size - x`` with velocity ``+|v|``.
    """
    over = loc > box_size
    loc = jnp.where(over, 2 * box_size - loc, loc)
    vel = jnp.where(over, -jnp.abs(vel), vel)
    under = loc < -box_size
    loc = jnp.where(under, -2 * box_size - loc, loc)
    vel = jnp.where(under, jnp.abs(vel), vel)
    return loc, vel


def coulomb_forces(x, q, *, interaction_strength=1.0, max_force=100.0, unroll=1):
    """Clipped Coulomb forces in the batch-minor layout.

    Args:
      x: tuple of three arrays ``[N, B]`` (x, y and z coordinates of N particles in B systems).
      q: charges ``[N, B]``.
      interaction_strength: k.
      max_force: each force component is clipped to ``[-max_force, max_force]``.
      unroll: unrolling of the loop over partner particles.

    Returns:
      (forces, clipped): a tuple of three ``[N, B]`` arrays, and ``[B]`` bool telling whether
      any component was clipped. The self term is dropped (the reference zeroes it).
    """
    n = x[0].shape[0]
    rows = lax.broadcasted_iota(jnp.int32, (n, 1), 0)

    def partner(j, acc):
        d = tuple(c - lax.dynamic_index_in_dim(c, j, 0, keepdims=True) for c in x)
        r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
        r2 = jnp.where(rows == j, 1.0, r2)  # self term: d = 0 there, so it adds exactly 0
        qj = lax.dynamic_index_in_dim(q, j, 0, keepdims=True)
        w = (interaction_strength * q * qj) / (r2 * jnp.sqrt(r2))
        return tuple(a + w * di for a, di in zip(acc, d, strict=True))

    zeros = tuple(jnp.zeros_like(c) for c in x)
    forces = lax.fori_loop(0, n, partner, zeros, unroll=unroll)
    clipped = functools.reduce(
        jnp.logical_or, [jnp.any(jnp.abs(f) > max_force, axis=0) for f in forces]
    )
    forces = tuple(jnp.clip(f, -max_force, max_force) for f in forces)
    return forces, clipped


def default_unroll(particles: int) -> int:
    """Unrolling of the partner loop of :func:`coulomb_forces`: all ``N`` partners for
    ``N <= 10``, else 5 (speed only; the arithmetic and its order are the same)."""
    return particles if particles <= 10 else 5


@functools.partial(
    jax.jit,
    static_argnames=(
        "num_frames", "sample_freq", "dt", "box_size", "k", "max_force", "unroll", "out_dtype"
    ),
)
def integrate(
    loc,
    vel,
    charges,
    *,
    num_frames,
    sample_freq,
    dt,
    box_size,
    k,
    max_force,
    unroll,
    out_dtype=jnp.float64,
):
    """The jitted integrator behind :func:`simulate_from_state` and the data set generator.

    Reflects the initial state at the walls (unless ``box_size`` is None), then repeats
    ``num_frames`` times: ``sample_freq`` kick-drift steps (``v += dt F(x); x += dt v``, the
    reference's order, see the module docstring) and a record of ``(x, v)``.

    Args:
      loc, vel: initial positions and velocities ``[S, N, 3]``, already in the integration
        dtype (float64 inside ``jax.enable_x64``, as the callers do).
      charges: ``[S, N, 1]``.
      num_frames: F, frames recorded (static).
      sample_freq: steps between frames (static).
      dt: step size (static float).
      box_size: wall position for the one-time reflection, or None (static).
      k: interaction strength (static float).
      max_force: per-component force clip (static float; the reference uses ``0.1 / dt``).
      unroll: unrolling of the partner loop (static; :func:`default_unroll`).
      out_dtype: dtype of the recorded frames; each frame is cast as it is recorded, so
        float32 halves the frame buffers ``[F, N, S, 3]`` (the cast rounds to nearest, as
        NumPy's ``astype`` does). Integration stays in the input dtype.

    Returns:
      ``(loc [S, F, N, 3], vel [S, F, N, 3], clipped [S])`` with ``clipped`` True for a
      trajectory in which any force component was clipped.
    """
    # Internally the state is a tuple of three [N, S] arrays per quantity.
    if box_size is not None:
        loc, vel = reflect_walls(loc, vel, box_size)
    x = tuple(loc[..., a].T for a in range(3))
    v = tuple(vel[..., a].T for a in range(3))
    q = charges[..., 0].T
    force = functools.partial(
        coulomb_forces, q=q, interaction_strength=k, max_force=max_force, unroll=unroll
    )

    def kick_drift(_, carry):
        # The reference's sequence v += dt F(x0); then per step x += dt v, (record), v += dt F(x)
        # is the same as repeating "kick, drift" with a record after the drift; written this way
        # the force kernel is traced (and compiled) once.
        x, v, clipped = carry
        f, c = force(x)
        v = tuple(a + dt * b for a, b in zip(v, f, strict=True))
        x = tuple(a + dt * b for a, b in zip(x, v, strict=True))
        return x, v, clipped | c

    def frame(carry, _):
        carry = lax.fori_loop(0, sample_freq, kick_drift, carry)
        x, v, _ = carry
        record = lambda c: jnp.stack(c, axis=-1).astype(out_dtype)  # [N, S, 3]
        return carry, (record(x), record(v))

    clipped = jnp.zeros(q.shape[1:], bool)
    (_, _, clipped), (xs, vs) = lax.scan(frame, (x, v, clipped), None, length=num_frames)
    # xs: [F, N, S, 3] -> [S, F, N, 3]
    return xs.transpose(2, 0, 1, 3), vs.transpose(2, 0, 1, 3), clipped


def _check_state(loc, vel, charges):
    loc, vel, charges = (np.shape(a) for a in (loc, vel, charges))
    if len(loc) != 3 or loc[-1] != 3 or loc[1] < 2:
        raise ValueError(f"loc must be [S, N, 3] with N >= 2 (or [N, 3]), got shape {loc}")
    if vel != loc:
        raise ValueError(f"vel must have the shape of loc {loc}, got shape {vel}")
    if charges != loc[:2] + (1,):
        raise ValueError(f"charges must be [S, N, 1] = {loc[:2] + (1,)}, got shape {charges}")


def simulate_from_state(
    loc,
    vel,
    charges,
    *,
    steps: int = 5000,
    sample_freq: int = 100,
    dt: float = 0.001,
    box_size: float | None = 5.0,
    interaction_strength: float = 1.0,
    max_force: float | None = None,
    unroll: int | None = None,
) -> Trajectory:
    """Simulates from explicit initial states, as the reference does after sampling them.

    Use this to check a trajectory against another implementation from the same start.

    Args:
      loc: initial positions ``[S, N, 3]`` (or ``[N, 3]`` for one trajectory), before the
        wall reflection.
      vel: initial velocities, same shape.
      charges: ``[S, N, 1]`` (or ``[N, 1]``).
      steps: T; ``steps / sample_freq - 1`` frames are returned.
      sample_freq: steps between saved frames (must divide ``steps``).
      dt: integration step.
      box_size: walls for the one-time reflection of the initial state; None skips it.
      interaction_strength: k.
      max_force: per-component clip; defaults to ``0.1 / dt`` as in the reference.
      unroll: unrolling of the partner loop (speed only).

    Returns:
      ``Trajectory`` of float64 jax arrays ``[S, F, N, 3]`` (no S axis for a single
      trajectory).
    """
    single = np.ndim(loc) == 2
    if single:
        loc, vel, charges = (np.asarray(a)[None] for a in (loc, vel, charges))
    _check_state(loc, vel, charges)
    if steps < 1 or sample_freq < 1 or steps % sample_freq or steps // sample_freq < 2:
        raise ValueError(
            f"need sample_freq dividing steps and steps >= 2 * sample_freq, got steps={steps}, "
            f"sample_freq={sample_freq}"
        )
    if not dt > 0:
        raise ValueError(f"dt must be positive, got {dt}")
    particles = np.shape(loc)[1]
    with jax.enable_x64(True):
        args = (jnp.asarray(a, jnp.float64) for a in (loc, vel, charges))
        loc, vel, charges = args
        xs, vs, clipped = integrate(
            loc,
            vel,
            charges,
            num_frames=steps // sample_freq - 1,
            sample_freq=sample_freq,
            dt=float(dt),
            box_size=None if box_size is None else float(box_size),
            k=float(interaction_strength),
            max_force=float(0.1 / dt if max_force is None else max_force),
            unroll=unroll or default_unroll(particles),
        )
    out = Trajectory(xs, vs, charges, clipped)
    return Trajectory(*(a[0] for a in out)) if single else out


def simulate(
    key_or_state,
    num_trajectories: int = 1,
    *,
    particles: int = 5,
    steps: int = 5000,
    sample_freq: int = 100,
    dt: float = 0.001,
    box_size: float | None = 5.0,
    loc_std: float = 1.0,
    vel_norm: float = 0.5,
    interaction_strength: float = 1.0,
) -> Trajectory:
    """Samples initial states (or takes given ones) and simulates them.

    Args:
      key_or_state: a PRNG key, or an :class:`InitialState` (then ``num_trajectories``,
        ``particles``, ``loc_std`` and ``vel_norm`` are ignored).
      num_trajectories: S.
      particles: N.
      steps, sample_freq, dt, box_size, interaction_strength: see :func:`simulate_from_state`.
      loc_std, vel_norm: see :func:`sample_initial_state`.

    Returns:
      ``Trajectory`` with ``[S, F, N, 3]`` float64 positions and velocities.
    """
    if isinstance(key_or_state, InitialState):
        state = key_or_state
    else:
        state = sample_initial_state(
            key_or_state, num_trajectories, particles, loc_std=loc_std, vel_norm=vel_norm
        )
    return simulate_from_state(
        *state,
        steps=steps,
        sample_freq=sample_freq,
        dt=dt,
        box_size=box_size,
        interaction_strength=interaction_strength,
    )
