"""Models: the velocity EGNN with pluggable normalization, graph (edge-list) helpers and
node-axis sharding of one large system over devices (:mod:`geonorm_jax.models.sharding`)."""

from geonorm_jax.models.edges import fully_connected_edges, knn_graph
from geonorm_jax.models.egnn import EGNN, PLACES, EGCLVel, count_params, make_egnn
from geonorm_jax.models.layers import TorchDense
from geonorm_jax.models.sharding import (
    NodeSharding,
    node_mesh,
    node_sharding,
    partition_edges,
    shard_graph,
    shard_nodes,
)

__all__ = [
    "EGNN",
    "EGCLVel",
    "PLACES",
    "make_egnn",
    "count_params",
    "fully_connected_edges",
    "knn_graph",
    "TorchDense",
    "NodeSharding",
    "node_mesh",
    "node_sharding",
    "partition_edges",
    "shard_graph",
    "shard_nodes",
]
