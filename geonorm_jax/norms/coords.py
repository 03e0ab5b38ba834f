"""Normalization of particle coordinates: the GeoNorm paper's Eq. 3 (LayerNorm), Eq. 4 (ScaleNorm)
and Eq. 5 (GeoNorm, in both readings of its statistics).

Paper: Meng, Zeng, Song, Xu, Zhao, King, *Towards Geometric Normalization Techniques in SE(3)
Equivariant GNNs for Physical Dynamics Simulations* (the GeoNorm paper), Section 4.

Every layer here acts on coordinates ``x [batch, nodes, 3]`` (``kind="coordinates"``) with an
optional node mask ``[batch, nodes]`` (True = real particle). Padded particles are excluded
from every statistic and are returned unchanged (``y_i = x_i``), so outputs at real particles
do not depend on padding.

What each layer preserves (tested in ``tests/test_norms_coords.py``):

=====================  ========  ===========  ===========================================
layer                  rotation  translation  permutation of particles
=====================  ========  ===========  ===========================================
``layer_norm_coords``  no        no           no (per-particle ``g_i``, ``b_i``) Lemma 1
``scale_norm``         yes       no           only with ``per_particle=False``   Lemma 2
``geo_norm``           yes (O3)  yes          only with ``params="shared"``   Theorem 1
=====================  ========  ===========  ===========================================

This module re-exports the family: Eqs. 3 and 4 in :mod:`~geonorm_jax.norms.coords_scale`,
Eq. 5 and its statistics in :mod:`~geonorm_jax.norms.coords_geo`, and the per-particle
parameter checks and the padding rule they share in :mod:`~geonorm_jax.norms.coords_common`.

Numerics and padding: squared statistics divide their inputs by a power of two first when
their magnitude is outside ``2**-50 .. 2**50`` (:func:`geonorm_jax.geometry.magnitude_scale`;
bit-for-bit unchanged otherwise), so every layer is right in float32 from 1e-30 to 1e30;
padded nodes are excluded by selection, so NaN or inf there reaches neither a real output
nor a gradient.
"""

from __future__ import annotations

from geonorm_jax.norms import coords_geo, coords_scale
from geonorm_jax.norms.base import NormInfo
from geonorm_jax.norms.coords_geo import bias_direction, geo_norm, geo_statistics
from geonorm_jax.norms.coords_scale import layer_norm_coords, scale_norm

__all__ = [
    "layer_norm_coords",
    "scale_norm",
    "geo_norm",
    "geo_statistics",
    "bias_direction",
    "CATALOG_ENTRIES",
]

CATALOG_ENTRIES: list[NormInfo] = [*coords_scale.CATALOG_ENTRIES, *coords_geo.CATALOG_ENTRIES]
