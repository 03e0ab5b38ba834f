"""Graph normalization layers of the survey's Table 1, as pure ``Norm(init, apply)`` pairs.

The survey is Aalto, Lubana & Tanaka, *Geometric Considerations for Normalization Layers in
Equivariant Neural Networks*.

Every layer here acts on scalar node features ``x [batch, nodes, channels]`` (the survey's
activations A of shape b x x x v) with an optional node mask ``[batch, nodes]`` (True = real
node). Padded nodes never enter a statistic or a count; their outputs are finite but
unspecified.

Each layer follows its *original* paper. Where the survey's Table 1 writes a different
formula (a different set of reduced axes, or a different power), the docstring names both,
and where cheap the survey's reading is offered as an option (``reading="survey"``).

=========================  =========================  ========================================
layer                      reduced axes (paper)       survey's formula
=========================  =========================  ========================================
:func:`graph_norm`         x (per graph, channel)     (A - alpha mu_x) / sigma_x
:func:`pair_norm`          x, then x,v (per graph)    s (A - mu_{x,v}) / sigma_{x,v}
:func:`mean_subtraction_   x (per graph, channel)     A - mu_{b,v}
norm`
:func:`message_norm`       v (per node)               MLP(A + s ||A||_2 m / ||m||_2)
:func:`diff_group_norm`    b,x (BatchNorm per group)  A + s sum_g BN(softmax_g(A Gamma) * A)
:func:`set_norm`           x,v (per set)              (A - mu_{b,v}) / sigma_{b,v}
:func:`graph_size_norm`    x (node count)             A / |X|
:func:`schnet_neighbor_    per node (neighbour count) A / N_v
norm`
:func:`avg_num_neighbors_  b,x over the dataset       A / N_{b,x,v}
norm`
=========================  =========================  ========================================

The code is in two modules: :mod:`geonorm_jax.norms.graph_stats` (standardization with
statistics over the nodes: GraphNorm, PairNorm, MeanSubtractionNorm, DiffGroupNorm, SetNorm)
and :mod:`geonorm_jax.norms.graph_scaling` (rescaling by a message norm or a count:
MessageNorm, GraphSizeNorm, SchNet, average number of neighbours). This module re-exports
every layer and lists the catalogue entries in the order of the table above (each entry states
its place, ``NormInfo.order``).

Numerics and padding: squared statistics divide their inputs by a power of two first when
their magnitude is outside ``2**-50 .. 2**50`` (:func:`geonorm_jax.geometry.magnitude_scale`;
bit-for-bit unchanged otherwise), so every layer is right in float32 from 1e-30 to 1e30;
padded nodes are excluded by selection, so NaN or inf there reaches neither a real output
nor a gradient. Layers with per-graph statistics also take the flat layout ``[total_nodes,
channels]`` with ``segment_ids=``/``n_node=`` (:func:`geonorm_jax.norms.base.graph_layout`).
"""

from __future__ import annotations

from geonorm_jax.norms import graph_scaling, graph_stats
from geonorm_jax.norms.base import NormInfo, family_entries
from geonorm_jax.norms.graph_scaling import (
    avg_num_neighbors_norm,
    graph_size_norm,
    message_norm,
    neighbor_counts,
    schnet_neighbor_norm,
)
from geonorm_jax.norms.graph_stats import (
    diff_group_norm,
    graph_norm,
    mean_subtraction_norm,
    pair_norm,
    set_norm,
)

__all__ = [
    "graph_norm",
    "pair_norm",
    "mean_subtraction_norm",
    "message_norm",
    "diff_group_norm",
    "set_norm",
    "graph_size_norm",
    "schnet_neighbor_norm",
    "avg_num_neighbors_norm",
    "neighbor_counts",
    "CATALOG_ENTRIES",
]

CATALOG_ENTRIES: list[NormInfo] = family_entries(graph_stats, graph_scaling)
