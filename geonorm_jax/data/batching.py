"""Batches of N-body samples as JAX arrays with static shapes.

:func:`batch_indices` is the shuffled batch order, jittable (the trainer's jitted epoch,
:func:`geonorm_jax.train.step.train_epoch`, gathers its batches with it);
:func:`iterate_batches` yields the batches of a host-side split in that order (or in the stored
order), for use outside a jitted loop.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from geonorm_jax.data.samples import Samples

__all__ = ["batch_indices", "iterate_batches", "num_batches"]


def num_batches(num_samples: int, batch_size: int, drop_last: bool = True) -> int:
    """Number of batches :func:`iterate_batches` yields."""
    return num_samples // batch_size if drop_last else -(-num_samples // batch_size)


def batch_indices(key: jax.Array, num_samples: int, batch_size: int) -> jax.Array:
    """One epoch's shuffled batches as sample indices ``[num_samples // batch_size, batch_size]``.

    ``jax.random.permutation(key, num_samples)`` cut into full batches; the remainder is dropped
    (``drop_last=True``, as in the EGNN code). Jittable (``num_samples`` and ``batch_size`` are
    static).
    """
    count = num_samples // batch_size
    perm = jax.random.permutation(key, num_samples)
    return perm[: count * batch_size].reshape(count, batch_size)


def _check(samples: Samples, batch_size: int) -> int:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    shapes = [tuple(np.shape(a)) for a in samples]
    loc, vel, charges, target = shapes
    if len(loc) != 3 or loc[-1] != 3 or vel != loc or target != loc or charges != loc[:2] + (1,):
        raise ValueError(
            f"samples must be loc, vel, target [S, N, 3] and charges [S, N, 1], got shapes {shapes}"
        )
    return loc[0]


def iterate_batches(
    samples: Samples,
    batch_size: int,
    *,
    key: jax.Array | None = None,
    drop_last: bool = True,
) -> Iterator[Samples]:
    """Yields :class:`Samples` batches of jax arrays ``[batch_size, N, ...]``.

    Args:
      samples: the whole split (numpy or jax arrays).
      batch_size: samples per batch.
      key: if given, the order is ``jax.random.permutation(key, S)`` (fold the epoch into the
        key for a new order each epoch); with ``drop_last`` the batches are the rows of
        :func:`batch_indices`. Otherwise the stored order.
      drop_last: True for training (every batch full, one shape); False for evaluation: every
        sample is used and the last batch may be smaller (at most two shapes, so at most two
        compilations of a jitted step).

    Raises:
      ValueError: for a bad batch size or inconsistent shapes, or when ``drop_last`` leaves no
        batch (fewer samples than ``batch_size``).
    """
    total = _check(samples, batch_size)
    if drop_last and total < batch_size:
        raise ValueError(
            f"drop_last=True with {total} samples and batch_size={batch_size} yields no batch"
        )
    on_device = all(isinstance(a, jax.Array) for a in samples)
    order = None
    if key is not None:
        order = np.asarray(
            batch_indices(key, total, batch_size).reshape(-1) if drop_last
            else jax.random.permutation(key, total)
        )
    for b in range(num_batches(total, batch_size, drop_last)):
        index = slice(b * batch_size, min(total, (b + 1) * batch_size))
        if order is not None:
            index = order[index]
        if on_device:
            yield Samples(*(a[jnp.asarray(index) if order is not None else index] for a in samples))
        else:
            yield Samples(*(jnp.asarray(np.asarray(a)[index]) for a in samples))
