"""Models: the velocity EGNN (Satorras et al., 2021) with pluggable normalization.

* :mod:`~geonorm_jax.models.egnn`: :class:`EGNN` and :func:`make_egnn`;
* :mod:`~geonorm_jax.models.egnn_layer`: :class:`EGCLVel`, one layer, configured by one
  :class:`LayerSettings`;
* :mod:`~geonorm_jax.models.egnn_kernels`: the pure per-edge kernels;
* :mod:`~geonorm_jax.models.edges`: edge lists, kNN/radius graphs (row-chunked for large N),
  input checks and the EGNN's edge inputs;
* :mod:`~geonorm_jax.models.placement`: where each kind of norm may go in a model
  (:data:`EGNN_PLACEMENT`), the vocabulary shared with the trainer;
* :mod:`~geonorm_jax.models.sharding`: the node-sharded EGNN kernels and kNN graph (the layout
  and placement are in :mod:`geonorm_jax.parallel`; ``NodeSharding`` and the placement helpers
  are re-exported here for older imports).
"""

from geonorm_jax.models.edges import fully_connected_edges, knn_graph
from geonorm_jax.models.egnn import (
    EGNN,
    GRAPHS,
    PLACES,
    EGCLVel,
    LayerSettings,
    count_params,
    make_egnn,
)
from geonorm_jax.models.layers import TorchDense
from geonorm_jax.models.placement import EGNN_PLACEMENT, NormPlace, NormPlacement
from geonorm_jax.parallel.nodes import (
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
    "LayerSettings",
    "GRAPHS",
    "PLACES",
    "EGNN_PLACEMENT",
    "NormPlace",
    "NormPlacement",
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
