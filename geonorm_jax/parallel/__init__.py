"""Parallelism in one place: the batch axis (data parallelism) and the node axis (one large
system split over devices), and placing arrays on either mesh.

* :mod:`geonorm_jax.parallel.batch`: a 1-D ``"batch"`` mesh; each batch is sharded over it
  inside the jitted training step (``batch_constraint``), state and data replicated.
* :mod:`geonorm_jax.parallel.nodes`: a 1-D ``"nodes"`` mesh (:class:`NodeSharding`); node
  arrays ``[batch, N, ...]`` and per-graph edges ``[batch, E]`` split into contiguous blocks.
* :mod:`geonorm_jax.parallel.mesh`: :func:`replicate`, :func:`replicated`, :func:`place`,
  for either mesh.

One argument order everywhere: *where* first (a ``Mesh`` or a ``NodeSharding``), then *what*:
``replicate(mesh, tree)``, ``shard_nodes(sharding, *arrays)``,
``shard_graph(sharding, x, v, ...)``.

Layering: ``geometry <- norms <- linen <- parallel <- models <- train <- bench/experiments``.
This package imports only JAX and NumPy (never :mod:`geonorm_jax.models`); the node-sharded
model kernels, which need the EGNN's edge kernels, live in :mod:`geonorm_jax.models.sharding`.
"""

from geonorm_jax.parallel.batch import AXIS, batch_constraint, choose_devices, make_mesh
from geonorm_jax.parallel.mesh import as_mesh, place, replicate, replicated
from geonorm_jax.parallel.nodes import (
    NodeSharding,
    check_partition,
    gather_nodes,
    local_receivers,
    node_mesh,
    node_sharding,
    pad_nodes,
    partition_edges,
    shard_graph,
    shard_nodes,
)

__all__ = [
    "AXIS",
    "batch_constraint",
    "choose_devices",
    "make_mesh",
    "as_mesh",
    "place",
    "replicate",
    "replicated",
    "NodeSharding",
    "check_partition",
    "gather_nodes",
    "local_receivers",
    "node_mesh",
    "node_sharding",
    "pad_nodes",
    "partition_edges",
    "shard_graph",
    "shard_nodes",
]
