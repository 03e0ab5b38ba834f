"""Data parallelism with ``jax.sharding``: a 1-D mesh whose ``"batch"`` axis splits every batch.

How it works. The whole computation stays one *global* program: the train state and the
dataset are replicated on every device (``PartitionSpec()``,
:func:`geonorm_jax.parallel.replicate`), and inside the jitted epoch each gathered batch gets
``with_sharding_constraint(batch, P("batch"))``, so each device computes
``batch_size / devices`` samples. XLA's SPMD partitioner then inserts the collectives the
global program implies: the loss mean and the gradient sum become all-reduces over the mesh,
and so do BatchNorm-type statistics (a mean over the batch axis of a batch-sharded array is a
cross-device reduction), which is why running statistics are identical on every device and
equal to a single-device run up to floating-point summation order. No ``pmap`` or
``axis_name`` is needed.

Scaling out: on several hosts, call ``jax.distributed.initialize()`` first; ``jax.devices()``
then lists every host's devices and the same mesh spans them.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["AXIS", "make_mesh", "choose_devices", "batch_constraint"]

AXIS = "batch"


def choose_devices(requested: int | None, batch_size: int) -> int:
    """How many devices to use.

    ``requested=None``: the largest number of local devices that divides ``batch_size``.
    An explicit number must be available and divide the batch (``ValueError`` otherwise).
    """
    available = len(jax.devices())
    if requested is None:
        return max(d for d in range(1, available + 1) if batch_size % d == 0)
    if requested > available:
        raise ValueError(f"train.devices: {requested} requested, only {available} available")
    if batch_size % requested:
        raise ValueError(
            f"train.devices: batch size {batch_size} is not divisible by {requested} devices"
        )
    return requested


def make_mesh(num_devices: int) -> Mesh:
    """A 1-D mesh over the first ``num_devices`` devices, axis name ``"batch"``."""
    return Mesh(np.asarray(jax.devices()[:num_devices]), (AXIS,))


def batch_constraint(mesh: Mesh):
    """``constrain(batch)``: shard the leading (sample) axis of every leaf over ``"batch"``.

    Used inside the jitted (and seed-vmapped) functions; under ``vmap`` the seed axis is left
    unsharded.
    """
    sharding = NamedSharding(mesh, P(AXIS))

    def constrain(batch):
        return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, sharding), batch)

    return constrain
