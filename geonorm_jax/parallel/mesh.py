"""Placing arrays on a device mesh, shared by the batch axis and the node axis.

Every function here takes *where* first and *what* second (``replicate(mesh, tree)``), the
argument order of the whole :mod:`geonorm_jax.parallel` package. *Where* is a
``jax.sharding.Mesh`` or anything with a ``mesh`` attribute (a
:class:`~geonorm_jax.parallel.nodes.NodeSharding`).

Arrays are placed with ``jax.make_array_from_callback``: this process is asked only for the
blocks of its own (addressable) devices, so the same call works in one process and across
hosts (after ``jax.distributed.initialize()``, every process passing the same full array).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["as_mesh", "replicated", "replicate", "place"]


def as_mesh(where: Any) -> Mesh:
    """The ``Mesh`` of ``where``: a ``Mesh`` itself, or the ``mesh`` attribute of a sharding
    description such as :class:`~geonorm_jax.parallel.nodes.NodeSharding`."""
    mesh = where if isinstance(where, Mesh) else getattr(where, "mesh", None)
    if not isinstance(mesh, Mesh):
        raise ValueError(
            f"expected a jax.sharding.Mesh or a NodeSharding; received {type(where).__name__}"
        )
    return mesh


def replicated(where: Any) -> NamedSharding:
    """``NamedSharding(mesh, P())``: a full copy on every device of the mesh of ``where``."""
    return NamedSharding(as_mesh(where), P())


def place(a: Any, target: NamedSharding) -> jax.Array:
    """A global array with sharding ``target`` from a full host (or device) copy of ``a``.

    The dtype is canonicalised as ``jnp.asarray`` would (float64 becomes float32 unless x64 is
    enabled); shape ``a.shape``.
    """
    host = np.asarray(a)
    host = host.astype(jax.dtypes.canonicalize_dtype(host.dtype), copy=False)
    return jax.make_array_from_callback(host.shape, target, lambda index: host[index])


def replicate(where: Any, tree: Any) -> Any:
    """Every leaf of ``tree`` (model variables, a train state, a dataset) replicated on every
    device of the mesh of ``where``; works across hosts (see the module docstring)."""
    target = replicated(where)
    return jax.tree_util.tree_map(lambda a: place(a, target), tree)
