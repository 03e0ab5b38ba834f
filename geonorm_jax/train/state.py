"""The train state: one explicit pytree per seed, stacked on a leading ``[seeds]`` axis.

Everything a run needs to continue bit-for-bit lives here (and therefore in the checkpoint):
parameters, running statistics, optimizer state, the step counter, the data-order key,
explosion bookkeeping and the best-validation parameters.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["TrainState", "init_state", "init_seed_state", "seed_key"]


class TrainState(NamedTuple):
    """Per-seed train state (a pytree; stacked states carry a leading ``[seeds]`` axis).

    Attributes:
      params: model parameters (the ``"params"`` collection) as one flat float vector ``[P]``
        (``Setup.unravel`` turns it back into the Flax tree). One vector keeps the optimizer
        update and the explosion freeze to a few XLA ops, which roughly halves compile time
        and speeds up small models on CPU; Adam is element-wise, so nothing else changes.
      batch_stats: running statistics (the ``"batch_stats"`` collection; ``{}`` if none).
      opt_state: optax state.
      step: number of optimizer steps taken so far, int32 ``[]``.
      key: raw ``uint32[2]`` PRNG key; split once per epoch for that epoch's data order.
      exploded: bool ``[]``, True once a batch loss was NaN/inf/above threshold or a gradient
        was non-finite. From then on the seed's parameters and optimizer state are frozen.
      exploded_at: int32 ``[]``, the step at which it exploded (-1 if never).
      best_params: parameters (flat) at the best validation MSE so far.
      best_batch_stats: running statistics at the best validation MSE so far.
      best_val: float32 ``[]``, best validation MSE so far (inf before the first evaluation).
      best_epoch: int32 ``[]``, the epoch of ``best_val`` (-1 before the first evaluation).
    """

    params: Any
    batch_stats: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array
    exploded: jax.Array
    exploded_at: jax.Array
    best_params: Any
    best_batch_stats: Any
    best_val: jax.Array
    best_epoch: jax.Array


def seed_key(seed: int) -> jax.Array:
    """The raw ``uint32[2]`` root key of a seed.

    Raises:
      ValueError: ``seed`` outside ``0 .. 2**32 - 1`` (``PRNGKey`` keeps 32 bits, so a larger
        or negative seed would give the key of another seed, or overflow).
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or \
            not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed: expected an integer in 0..2**32-1 (larger ones would alias "
                         f"smaller seeds); received {seed!r}")
    return jax.random.PRNGKey(int(seed))


def init_seed_state(
    init_fn, optimizer: optax.GradientTransformation, key: jax.Array
) -> TrainState:
    """One seed's initial state.

    Args:
      init_fn: ``init_fn(key) -> variables`` (``{"params": flat, "batch_stats": ...}``).
      optimizer: the optax transformation.
      key: the seed's root key; split into (init, data order).
    """
    init_key, data_key = jax.random.split(key)
    variables = init_fn(init_key)
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    return TrainState(
        params=params,
        batch_stats=batch_stats,
        opt_state=optimizer.init(params),
        step=jnp.zeros((), jnp.int32),
        key=data_key,
        exploded=jnp.zeros((), bool),
        exploded_at=jnp.full((), -1, jnp.int32),
        best_params=params,
        best_batch_stats=batch_stats,
        best_val=jnp.full((), jnp.inf, jnp.float32),
        best_epoch=jnp.full((), -1, jnp.int32),
    )


def init_state(init_one, seeds) -> TrainState:
    """The stacked state ``[seeds, ...]`` (host arrays) of all ``seeds``.

    ``init_one(key) -> TrainState`` is the (jitted) :func:`init_seed_state` of one seed; it is
    called once per seed, so each seed's initialisation is exactly that of a run alone.
    """
    states = [jax.device_get(init_one(seed_key(int(s)))) for s in seeds]
    return jax.tree.map(lambda *xs: np.stack(xs), *states)

