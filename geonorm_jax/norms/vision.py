"""Normalization layers from language and vision models (the survey's Table 1, left column).

The survey is Aalto, Lubana & Tanaka, *Geometric Considerations for Normalization Layers in
Equivariant Neural Networks*.

Every layer here acts on scalar node features ``x [batch, nodes, channels]`` -- the survey's
activations ``A`` of shape ``b x x v`` (b = batch, x = nodes/pixels, v = channels) -- and
returns ``y`` of the same shape and dtype. The layers differ only in the axes their
statistics reduce over:

=====================  ===============  ===========================================
layer                  reduced axes     statistics
=====================  ===============  ===========================================
batch_norm             {b, x}           mean, variance per channel (+ running)
layer_norm             {v} or {x, v}    mean, variance per node (or per graph)
instance_norm          {x}              mean, variance per sample and channel
group_norm             {x, v/g}         mean, variance per sample and channel group
filter_response_norm   {x}              mean square per sample and channel
variance_norm          {b, x}           variance per channel (+ running), no centring
=====================  ===============  ===========================================

Masking: statistics that reduce over nodes count only real nodes (``mask == True``), so
padded nodes never change the outputs of real nodes. Outputs at padded nodes are computed
with the same statistics and are finite when the inputs are.

Epsilon always sits inside the square root, next to the variance (as in Flax):
``(x - mean) / sqrt(var + epsilon)``. Statistics are computed in at least float32 and the
output is cast back to the input dtype.

The code is in two modules: :mod:`geonorm_jax.norms.vision_batch` (statistics over the batch,
with running averages: BatchNorm, VarianceNorm) and :mod:`geonorm_jax.norms.vision_sample`
(statistics inside each sample: LayerNorm, InstanceNorm, GroupNorm, FRN). This module
re-exports every layer and lists the catalogue entries in the order of the table above (each
entry states its place, ``NormInfo.order``).

Numerics and padding: squared statistics divide their inputs by a power of two first when
their magnitude is outside ``2**-50 .. 2**50`` (:func:`geonorm_jax.geometry.magnitude_scale`;
bit-for-bit unchanged otherwise), so every layer is right in float32 from 1e-30 to 1e30;
padded nodes are excluded by selection, so NaN or inf there reaches neither a real output
nor a gradient. Layers with per-graph statistics also take the flat layout ``[total_nodes,
channels]`` with ``segment_ids=``/``n_node=`` (:func:`geonorm_jax.norms.base.graph_layout`).
"""

from __future__ import annotations

from geonorm_jax.norms import vision_batch, vision_sample
from geonorm_jax.norms.base import NormInfo, family_entries
from geonorm_jax.norms.vision_batch import batch_norm, variance_norm
from geonorm_jax.norms.vision_sample import (
    filter_response_norm,
    group_norm,
    instance_norm,
    layer_norm,
)

__all__ = [
    "batch_norm",
    "layer_norm",
    "instance_norm",
    "group_norm",
    "filter_response_norm",
    "variance_norm",
    "CATALOG_ENTRIES",
]

CATALOG_ENTRIES: list[NormInfo] = family_entries(vision_batch, vision_sample)
