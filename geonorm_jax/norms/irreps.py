"""Normalizations of irreps (spherical-tensor) features from today's equivariant networks.

This module re-exports the family; the code is in :mod:`~geonorm_jax.norms.irreps_layer`
(EquiformerV2), :mod:`~geonorm_jax.norms.irreps_batch` (e3nn BatchNorm),
:mod:`~geonorm_jax.norms.irreps_gate` (e3nn-jax gates, NormSE3) and the shared plumbing
:mod:`~geonorm_jax.norms.irreps_common`. The safe field norm, direction and reciprocal
(``field_norm``, ``unit``, ``stable_reciprocal``) live in :mod:`geonorm_jax.geometry` and are
re-exported here.

Layers (each a pure ``Norm(init, apply)`` of ``kind="vectors"``):

* :func:`equivariant_layer_norm`, :func:`equivariant_layer_norm_sh`,
  :func:`equivariant_rms_norm_sh`, :func:`degree_layer_scale`: EquiformerV2 (Liao, Wood, Das,
  Smidt, ICLR 2024), eSEN and UMA; original code ``fairchem``,
  ``src/fairchem/core/models/equiformer_v2/layer_norm.py`` (also
  ``src/fairchem/core/models/uma/nn/layer_norm.py``).
* :func:`e3nn_batch_norm`: e3nn's ``BatchNorm`` (Geiger & Smidt 2022, ``e3nn/nn/_batchnorm.py``;
  e3nn-jax ``e3nn_jax/_src/batchnorm.py``) with ``instance=True`` the per-graph instance norm
  SEGNN uses (Brandstetter et al., ICLR 2022).
* :func:`norm_activation`, :func:`soft_normalization`: e3nn-jax
  (``e3nn_jax/_src/activation.py``).
* :func:`norm_se3`: ``NormSE3`` of the SE(3)-Transformer (Fuchs et al., NeurIPS 2020; code
  ``se3_transformer/model/layers/norm.py`` in NVIDIA's DeepLearningExamples).

Layouts. Two node layouts, chosen by ``apply``'s keywords as for the graph layers
(:func:`geonorm_jax.norms.base.graph_layout`):

* padded, this library's: an ``e3nn.IrrepsArray`` ``[batch, nodes, irreps]`` with ``mask
  [batch, nodes]``;
* flat, e3nn-jax's and jraph's: an ``e3nn.IrrepsArray`` ``[num_nodes, irreps]`` with
  ``segment_ids [num_nodes]`` + a static ``num_graphs``, or ``n_node [num_graphs]``, and an
  optional ``mask [num_nodes]`` (jraph's ``get_node_padding_mask`` for its trailing padding
  graph; nodes past ``sum(n_node)`` or with ids outside ``[0, num_graphs)`` are padding too).

Both give the same numbers at every real node: per-graph statistics are taken over the nodes
of each graph (``jax.ops.segment_sum`` in the flat layout), batch statistics over every real
node. The irreps are chunks ``mul x (l, p)``; chunk ``k`` is ``[..., mul_k, 2l_k + 1]``
(``...`` = ``batch, nodes`` or ``num_nodes``; e3nn-jax's mul-major order), its ``mul_k``
copies are the *channels* (``v``) and its
``2l + 1`` components the ``m`` axis (``d``). EquiformerV2's array ``[N, (lmax+1)^2, C]`` is the
IrrepsArray ``Cx0e + Cx1e + Cx2e + ...`` (one chunk per degree; parity is not tracked there),
transposed to ``[..., C, 2l+1]`` per degree. A plain array ``[batch, nodes, channels, 3]``
(flat: ``[num_nodes, channels, 3]``) is accepted too and read as ``channels x 1o`` (the output
has the input's shape); the audit probes the layers in that layout. Per-irrep parameters have
one entry per channel of every chunk (``irreps.num_irreps``, chunk order), i.e. one per
``(l, channel)`` for EquiformerV2's layout. "Scalars" that are centred or get a bias are the
even ``0e`` chunks only (centring a pseudoscalar ``0o`` would break parity), as in e3nn's
``ir.is_scalar()``.

Masks: ``mask [batch, nodes]`` (flat: ``[num_nodes]``). Padded nodes are set to 0 first
(``jnp.where``), so their outputs are finite whatever they hold; the batch / instance
statistics of :func:`e3nn_batch_norm` count only real nodes. In the flat layout a padding
graph left unmarked is a graph of its own: it changes no per-node or per-graph statistic of
the real graphs, but batch statistics need it marked (the mask, or nodes past
``sum(n_node)``).

Overflow: every squared statistic is computed on the input divided by ``s = max(1, max|x|)``
(per node, or per reduction group) with the epsilon divided by ``s^2``, which is the same
number in exact arithmetic and cannot overflow.
"""

from __future__ import annotations

from geonorm_jax.geometry import field_norm, stable_reciprocal, unit
from geonorm_jax.norms import irreps_batch, irreps_gate, irreps_layer
from geonorm_jax.norms.base import NormInfo
from geonorm_jax.norms.irreps_batch import e3nn_batch_norm
from geonorm_jax.norms.irreps_common import as_irreps
from geonorm_jax.norms.irreps_gate import norm_activation, norm_se3, soft_normalization
from geonorm_jax.norms.irreps_layer import (
    degree_layer_scale,
    equivariant_layer_norm,
    equivariant_layer_norm_sh,
    equivariant_rms_norm_sh,
)

__all__ = [
    "equivariant_layer_norm",
    "equivariant_layer_norm_sh",
    "equivariant_rms_norm_sh",
    "degree_layer_scale",
    "e3nn_batch_norm",
    "norm_activation",
    "soft_normalization",
    "norm_se3",
    "as_irreps",
    "field_norm",
    "unit",
    "stable_reciprocal",
    "CATALOG_ENTRIES",
]

CATALOG_ENTRIES: list[NormInfo] = [
    *irreps_layer.CATALOG_ENTRIES,
    *irreps_batch.CATALOG_ENTRIES,
    *irreps_gate.CATALOG_ENTRIES,
]
