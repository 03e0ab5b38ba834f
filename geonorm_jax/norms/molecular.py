"""Normalizations of machine-learned interatomic potentials and molecule generators.

* :func:`vec_layer_norm`: ViSNet's ``VecLayerNorm`` (``"max_min"`` and ``"rms"``).
* :func:`tensor_norm`: TensorNet's ``X / (||X||_F^2 + 1)``.
* :func:`mace_density_norm`: MACE's learned-density message normalization.
* :func:`species_neighbor_norm`: NequIP's ``AvgNumNeighborsNorm`` (global or per atom type).
* :func:`se3_coord_norm`: MiDi's ``SE3Norm`` of zero-centred coordinates.

This module re-exports the family: per-node norms in :mod:`~geonorm_jax.norms.molecular_node`
(ViSNet, TensorNet), norms with statistics over atoms in
:mod:`~geonorm_jax.norms.molecular_graph` (MACE, NequIP, MiDi).

Layouts. Vector features ``[batch, nodes, channels, 3]`` (ViSNet's ``[atoms, 3, C]``
transposed), or an ``e3nn.IrrepsArray`` ``[batch, nodes, irreps]`` where a layer says so;
Cartesian rank-2 tensors ``[batch, nodes, channels, 3, 3]`` (TensorNet's ``[atoms, C, 3, 3]``);
coordinates ``[batch, nodes, 3]``; mask ``[batch, nodes]`` (True = real atom). Statistics over
atoms exclude padding with ``jnp.where``; squared statistics are computed on inputs divided by
their largest magnitude (``max(1, max|x|)``), so they cannot overflow.
"""

from __future__ import annotations

from geonorm_jax.norms import molecular_graph, molecular_node
from geonorm_jax.norms.base import NormInfo
from geonorm_jax.norms.molecular_graph import (
    bessel_edge_features,
    mace_density_norm,
    se3_coord_norm,
    species_neighbor_norm,
)
from geonorm_jax.norms.molecular_node import tensor_norm, vec_layer_norm

__all__ = [
    "vec_layer_norm",
    "tensor_norm",
    "mace_density_norm",
    "species_neighbor_norm",
    "se3_coord_norm",
    "bessel_edge_features",
    "CATALOG_ENTRIES",
]

CATALOG_ENTRIES: list[NormInfo] = [
    *molecular_node.CATALOG_ENTRIES,
    *molecular_graph.CATALOG_ENTRIES,
]
