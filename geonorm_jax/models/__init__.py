"""Models: the velocity EGNN with pluggable normalization, and graph (edge-list) helpers."""

from geonorm_jax.models.edges import fully_connected_edges, knn_graph
from geonorm_jax.models.egnn import EGNN, PLACES, EGCLVel, count_params, make_egnn
from geonorm_jax.models.layers import TorchDense

__all__ = [
    "EGNN",
    "EGCLVel",
    "PLACES",
    "make_egnn",
    "count_params",
    "fully_connected_edges",
    "knn_graph",
    "TorchDense",
]
