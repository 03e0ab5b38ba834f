"""EquiformerV2's normalizations of irreps features (also eSEN and UMA).

* :func:`equivariant_layer_norm`: ``EquivariantLayerNormArray``, one RMS per degree.
* :func:`equivariant_layer_norm_sh`: ``EquivariantLayerNormArraySphericalHarmonics``,
  LayerNorm on ``l = 0`` and one shared RMS for ``l > 0``.
* :func:`equivariant_rms_norm_sh`: ``EquivariantRMSNormArraySphericalHarmonicsV2``, one RMS
  over all degrees with ``l = 0`` centred (eSEN, UMA).
* :func:`degree_layer_scale`: ``EquivariantDegreeLayerScale``, a learned scale per
  ``(l, channel)``.

Paper: Liao, Wood, Das, Smidt, *EquiformerV2: Improved Equivariant Transformer for Scaling to
Higher-Degree Representations* (ICLR 2024). Code: ``fairchem``,
``src/fairchem/core/models/equiformer_v2/layer_norm.py`` and
``src/fairchem/core/models/uma/nn/layer_norm.py``.

Layouts: this library's padded IrrepsArray ``[batch, nodes, irreps]`` (EquiformerV2's ``[N,
(lmax+1)^2, C]`` is ``Cx0e + Cx1e + Cx2e + ...``, transposed to ``[..., C, 2l+1]`` per degree)
or vectors ``[batch, nodes, channels, 3]`` (read as ``channels x 1o``), and e3nn-jax's /
jraph's flat ``[num_nodes, irreps]`` with ``segment_ids=`` + ``num_graphs=`` or ``n_node=``;
see :mod:`geonorm_jax.norms.irreps_common`. Every layer is per node (the mask is checked,
padded nodes are set to 0), and every squared statistic is taken of ``x / s`` with ``s = max(1,
max|x|)`` per node and the epsilon divided by ``s^2`` (the same number in exact arithmetic).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from geonorm_jax.norms.base import Norm, NormInfo, check_choice, check_hyperparameters
from geonorm_jax.norms.irreps_common import (
    _affine_init,
    _affine_shapes,
    _assemble,
    _init_irreps,
    _is_even_scalar,
    _param_slices,
    _per_channel,
    _prepare,
    _scale_and_eps,
    _sq_stat,
)

__all__ = [
    "equivariant_layer_norm",
    "equivariant_layer_norm_sh",
    "equivariant_rms_norm_sh",
    "degree_layer_scale",
    "CATALOG_ENTRIES",
]


def _per_node_layer(name: str, epsilon: float, affine: bool, bias: bool, body) -> Norm:
    """The ``Norm`` shell of EquiformerV2's per-node norms: ``init`` makes ``scale
    [num_irreps]`` (and ``bias [n_0e]`` when ``bias``) if ``affine``; ``apply`` checks,
    takes the chunks (:func:`_prepare`), ``s, eps = _scale_and_eps(chunks, epsilon)`` and
    returns ``body(params, irreps, chunks, s, eps)`` (the normalized chunks) reassembled."""

    def init(key, x, **context):
        del key
        xi = _init_irreps(x, name, context)
        return _affine_init(xi.irreps, xi.array.dtype, affine, bias=bias), {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training
        xi, raw, dtype, blocks, _ = _prepare(x, name, mask, params, _affine_shapes, context)
        s, eps = _scale_and_eps(blocks, epsilon)  # [..., 1, 1], [..., 1]
        return _assemble(xi, body(params, xi.irreps, blocks, s, eps), raw, dtype), state

    return Norm(init, apply, kind="vectors", name=name)


def _even_scalars(irreps, chunks: list[jax.Array]) -> jax.Array | None:
    """The ``0e`` channels of a node, ``[B, N, n_0e]`` (the ``m = 0`` component of every
    ``0e`` chunk ``[B, N, mul, 1]``, concatenated), or None when there is none."""
    sc = [f[..., 0] for mi, f in zip(irreps, chunks, strict=True) if _is_even_scalar(mi)]
    return jnp.concatenate(sc, axis=-1) if sc else None


def _scale_shift(params: dict, f: jax.Array, ps: slice, pb: slice | None) -> jax.Array:
    """The affine map of one chunk ``f [..., mul, 2l+1]``: ``f * scale[ps]``, plus
    ``bias[pb]`` when ``pb`` is a slice (a ``0e`` chunk whose layer learns a bias)."""
    f = f * _per_channel(params, "scale", ps, f)
    return f if pb is None else f + _per_channel(params, "bias", pb, f)


def _degree_mean_square(chunks, normalization: str, balance: bool) -> jax.Array:
    """EquiformerV2's shared mean square ``R [B, N, 1]`` of the (scaled) chunks ``[(mul_ir,
    f [B, N, mul, 2l+1]), ...]``: with ``balance`` the mean over the chunks of ``mean_{c,m}
    f^2``; otherwise ``sum_k mean_c sum_m f^2`` divided by ``sum_k (2l_k+1)`` (component)
    or not (norm)."""
    if balance:
        return sum(jnp.mean(jnp.mean(jnp.square(f), -1), -1, keepdims=True)
                   for _, f in chunks) / len(chunks)
    tot = sum(jnp.mean(jnp.sum(jnp.square(f), -1), -1, keepdims=True) for _, f in chunks)
    return tot / sum(mi.ir.dim for mi, _ in chunks) if normalization == "component" else tot


@check_hyperparameters
def equivariant_layer_norm(
    *, normalization: str = "component", epsilon: float = 1e-5, affine: bool = True
) -> Norm:
    """EquiformerV2's ``EquivariantLayerNormArray``: one RMS per degree.

    For every chunk ``k`` (degree ``l``, channels ``c``, components ``m``) of a node:

    .. math::

        \\tilde x_{kcm} = x_{kcm} - [l_k = 0]\\,\\operatorname{mean}_{c'} x_{kc'0}, \\qquad
        y_{kcm} = \\gamma_{kc}\\,\\frac{\\tilde x_{kcm}}
        {\\sqrt{\\operatorname{mean}_c \\operatorname{mean}_m \\tilde x_{kcm}^2 + \\epsilon}}
        + [l_k = 0]\\,\\beta_c

    (``sum_m`` instead of ``mean_m`` for ``normalization="norm"``). Reduced axes: per node,
    per degree, over channels and ``m`` (``{v, d}``). Paper: Liao, Wood, Das, Smidt 2024,
    *EquiformerV2: Improved Equivariant Transformer for Scaling to Higher-Degree
    Representations* (ICLR). Code: fairchem ``EquivariantLayerNormArray``
    (``models/equiformer_v2/layer_norm.py``), eps 1e-5.

    Args:
      normalization: ``"component"`` or ``"norm"``.
      epsilon: added to the mean square.
      affine: learn ``scale`` ``[num_irreps]`` (ones; per ``(l, channel)``) and ``bias``
        ``[number of 0e channels]`` (zeros).

    Shapes: padded (this library's layout) IrrepsArray ``[batch, nodes, irreps]`` or vectors
    ``[batch, nodes, channels, 3]``, ``mask [batch, nodes]``; flat (e3nn-jax's and jraph's)
    IrrepsArray ``[num_nodes, irreps]`` or vectors ``[num_nodes, channels, 3]`` with
    ``segment_ids [num_nodes]`` + ``num_graphs``, or ``n_node [num_graphs]``, and ``mask
    [num_nodes]`` (:func:`geonorm_jax.norms.base.graph_layout`). Same shape and dtype out.
    No state; the mask is not needed (per node; padded nodes are set to 0).
    """
    check_choice(normalization, ("component", "norm"), "equivariant_layer_norm: normalization")

    def body(params, irreps, blocks, s, eps):
        out = []
        for mi, blk, (ps, pb) in zip(irreps, blocks, _param_slices(irreps), strict=True):
            f = blk / s
            if _is_even_scalar(mi):
                f = f - jnp.mean(f, axis=-2, keepdims=True)
            ms = jnp.mean(_sq_stat(f, normalization), axis=-1, keepdims=True)  # [B, N, 1]
            g = jax.lax.rsqrt(ms + eps)[..., None]
            if affine:  # the scale folded into the inverse RMS first, as fairchem does
                g = g * _per_channel(params, "scale", ps, f)
            f = f * g
            if affine and pb is not None:
                f = f + _per_channel(params, "bias", pb, f)
            out.append(f)
        return out

    return _per_node_layer("equivariant_layer_norm", epsilon, affine, True, body)


@check_hyperparameters
def equivariant_layer_norm_sh(
    *,
    normalization: str = "component",
    epsilon: float = 1e-5,
    affine: bool = True,
    std_balance_degrees: bool = True,
) -> Norm:
    """EquiformerV2's ``EquivariantLayerNormArraySphericalHarmonics``: LayerNorm on ``l = 0``,
    one shared RMS for all ``l > 0``.

    .. math::

        y^{(0)}_c = \\gamma_{0c}\\,\\frac{x^{(0)}_c - \\mu}{\\sqrt{\\sigma^2 + \\epsilon}}
        + \\beta_c, \\qquad
        y^{(k)}_{cm} = \\gamma_{kc}\\,\\frac{x^{(k)}_{cm}}{\\sqrt{R + \\epsilon}}\\ (l_k > 0),
        \\qquad R = \\frac{1}{K}\\sum_{k: l_k > 0} \\operatorname{mean}_{c,m} (x^{(k)}_{cm})^2

    ``mu``, ``sigma^2``: mean and biased variance over the ``0e`` channels (``torch.nn.LayerNorm``).
    ``R`` balances the degrees (``std_balance_degrees=True``: each degree weighs ``1/(2l+1)``
    per component and the degrees are averaged, the code's ``balance_degree_weight``);
    otherwise ``R = sum_{k,c,m} x^2 / (C * sum_k (2l_k+1))`` (``"component"``) or
    ``sum_{k,c,m} x^2 / C`` (``"norm"``). Reduced axes: per node; ``{v}`` for ``l = 0``,
    ``{v, d}`` and the degrees for ``l > 0``. Chunks other than ``0e`` (including ``0o``) form
    the ``l > 0`` group. With unequal multiplicities ``mean_c`` is taken per chunk.
    Paper: EquiformerV2 (Liao et al., ICLR 2024); code: fairchem
    ``EquivariantLayerNormArraySphericalHarmonics``.

    Args:
      normalization, epsilon, affine: as :func:`equivariant_layer_norm`.
      std_balance_degrees: balance the degrees as above (``"component"`` only).

    Shapes: as :func:`equivariant_layer_norm`. Params ``scale [num_irreps]``, ``bias [n_0e]``.
    """
    check_choice(normalization, ("component", "norm"), "equivariant_layer_norm_sh: normalization")
    balance = normalization == "component" and std_balance_degrees

    def body(params, irreps, blocks, s, eps):
        scaled = [b / s for b in blocks]
        # l = 0: LayerNorm over all 0e channels of the node
        s0 = _even_scalars(irreps, scaled)  # [B, N, n0]
        if s0 is not None:
            mu = jnp.mean(s0, axis=-1, keepdims=True)
            var = jnp.mean(jnp.square(s0 - mu), axis=-1, keepdims=True)
            inv0 = jax.lax.rsqrt(var + eps)
        # l > 0: one shared mean square
        rest = [(mi, f) for mi, f in zip(irreps, scaled, strict=True) if not _is_even_scalar(mi)]
        if rest:
            inv = jax.lax.rsqrt(_degree_mean_square(rest, normalization, balance) + eps)
        out = []
        for mi, f, (ps, pb) in zip(irreps, scaled, _param_slices(irreps), strict=True):
            if _is_even_scalar(mi):
                f = (f - mu[..., None]) * inv0[..., None]
            else:
                f = f * inv[..., None]
            out.append(_scale_shift(params, f, ps, pb) if affine else f)
        return out

    return _per_node_layer("equivariant_layer_norm_sh", epsilon, affine, True, body)


@check_hyperparameters
def equivariant_rms_norm_sh(
    *,
    normalization: str = "component",
    epsilon: float = 1e-5,
    affine: bool = True,
    centering: bool = True,
    std_balance_degrees: bool = True,
) -> Norm:
    """EquiformerV2 / eSEN / UMA ``EquivariantRMSNormArraySphericalHarmonicsV2``: one RMS over
    all degrees, ``l = 0`` centred first.

    .. math::

        \\tilde x^{(0)}_c = x^{(0)}_c - \\operatorname{mean}_{c'} x^{(0)}_{c'}, \\qquad
        R = \\frac{1}{K}\\sum_k \\operatorname{mean}_{c,m} (\\tilde x^{(k)}_{cm})^2, \\qquad
        y^{(k)}_{cm} = \\gamma_{kc}\\,\\frac{\\tilde x^{(k)}_{cm}}{\\sqrt{R + \\epsilon}}
        + [l_k = 0]\\,\\beta_c

    (degree-balanced ``R``: weight ``1/(2l+1)`` per component, averaged over the ``K`` degrees;
    without balancing ``R`` is the plain component mean, or the per-channel sum over all
    components for ``"norm"``). Reduced axes: per node, over channels, components and degrees
    (``{v, d}``). Code: fairchem ``uma/nn/layer_norm.py``
    (``EquivariantRMSNormArraySphericalHarmonicsV2``; the ``"norm"`` mode there requires
    ``std_balance_degrees=False``, as here).

    Args:
      normalization, epsilon, affine: as :func:`equivariant_layer_norm`.
      centering: subtract the mean over the ``0e`` channels (and learn ``bias``).
      std_balance_degrees: balance the degrees (``"component"`` only).

    Shapes: as :func:`equivariant_layer_norm`. Params ``scale [num_irreps]``,
    ``bias [n_0e]`` (with ``centering``).
    """
    check_choice(normalization, ("component", "norm"), "equivariant_rms_norm_sh: normalization")
    if normalization == "norm" and std_balance_degrees:
        raise ValueError("equivariant_rms_norm_sh: expected std_balance_degrees=False with "
                         "normalization='norm' (as the original code); received True")
    balance = normalization == "component" and std_balance_degrees

    def body(params, irreps, blocks, s, eps):
        scaled = [b / s for b in blocks]
        if centering:
            s0 = _even_scalars(irreps, scaled)
            if s0 is not None:
                mu = jnp.mean(s0, -1, keepdims=True)[..., None]  # [B, N, 1, 1]
                scaled = [f - mu if _is_even_scalar(mi) else f
                          for mi, f in zip(irreps, scaled, strict=True)]
        r = _degree_mean_square(list(zip(irreps, scaled, strict=True)), normalization, balance)
        inv = jax.lax.rsqrt(r + eps)[..., None]  # [B, N, 1, 1]
        out = []
        for f, (ps, pb) in zip(scaled, _param_slices(irreps), strict=True):
            f = f * inv
            out.append(_scale_shift(params, f, ps, pb if centering else None) if affine else f)
        return out

    return _per_node_layer("equivariant_rms_norm_sh", epsilon, affine, centering, body)


def degree_layer_scale(*, scale_factor: float = 2.0) -> Norm:
    """EquiformerV2's ``EquivariantDegreeLayerScale``: a learned scale per ``(l, channel)``.

    .. math:: y^{(k)}_{cm} = \\gamma_{kc}\\, x^{(k)}_{cm}, \\qquad
        \\gamma_{kc}^{\\text{init}} = 1\\ (l_k = 0),\\ 1/\\sqrt{\\text{scale\\_factor}\\cdot l_k}
        \\ (l_k > 0)

    No statistics (reduces no axis). Code: fairchem ``EquivariantDegreeLayerScale``
    (``scale_factor = 2``), used on residual branches of EquiformerV2 / eSEN.

    Shapes: as :func:`equivariant_layer_norm`; params ``scale [num_irreps]``.
    """
    if not scale_factor > 0:
        raise ValueError(
            f"degree_layer_scale: expected scale_factor > 0; received {scale_factor!r}")
    name = "degree_layer_scale"

    def init(key, x, **context):
        del key
        xi = _init_irreps(x, name, context)
        vals = []
        for mi in xi.irreps:
            v = 1.0 if mi.ir.l == 0 else 1.0 / math.sqrt(scale_factor * mi.ir.l)
            vals.append(jnp.full((mi.mul,), v, xi.array.dtype))
        scale = jnp.concatenate(vals) if vals else jnp.zeros((0,), xi.array.dtype)
        return {"scale": scale}, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training
        xi, raw, dtype, blocks, _ = _prepare(x, name, mask, params,
                                             lambda ir: {"scale": (ir.num_irreps,)}, context)
        out = [f * _per_channel(params, "scale", ps, f)
               for f, (ps, _) in zip(blocks, _param_slices(xi.irreps), strict=True)]
        return _assemble(xi, out, raw, dtype), state

    return Norm(init, apply, kind="vectors", name=name)


# --------------------------------------------------------------------------------------------
# Catalogue
# --------------------------------------------------------------------------------------------

_EQV2 = ("Liao, Wood, Das, Smidt 2024, EquiformerV2: Improved Equivariant Transformer for "
         "Scaling to Higher-Degree Representations (ICLR)")
_LAYOUT_NOTE = ("Irreps features as an e3nn-jax IrrepsArray [b, x, irreps] (one chunk per "
                "degree = EquiformerV2's [N, (lmax+1)^2, C]); the audit probes C x 1o vectors "
                "[b, x, v, 3], so only the l > 0 path is probed there (the l = 0 path is "
                "covered by the tests on mixed irreps).")

#: The fields the four entries share: per-node layers on irreps features, either layout.
_SHARED = {"kind": "vectors", "family": "equivariant models", "notes": _LAYOUT_NOTE,
           "layouts": ("padded", "flat"), "symmetries": ("SO3", "permutation", "batch")}

CATALOG_ENTRIES: list[NormInfo] = [
    NormInfo(
        name="equivariant_layer_norm", constructor=equivariant_layer_norm,
        paper=_EQV2 + "; code fairchem EquivariantLayerNormArray",
        formula="per l: (x - [l=0] mean_v x) / sqrt(mean_{v,m} x^2 + eps) * g_{l,v} + [l=0] b_v",
        reduced_axes="v,d (per node, per degree)", params=("scale", "bias"),
        **_SHARED,
    ),
    NormInfo(
        name="equivariant_layer_norm_sh", constructor=equivariant_layer_norm_sh,
        paper=_EQV2 + "; code fairchem EquivariantLayerNormArraySphericalHarmonics",
        formula="l=0: LayerNorm_v; l>0: x / sqrt(mean_l mean_{v,m} x^2 + eps) * g_{l,v}",
        reduced_axes="v (l=0); v,d,l (l>0), per node", params=("scale", "bias"),
        **_SHARED,
    ),
    NormInfo(
        name="equivariant_rms_norm_sh", constructor=equivariant_rms_norm_sh,
        paper=_EQV2 + "; also eSEN and UMA (fairchem EquivariantRMSNormArraySphericalHarmonicsV2)",
        formula="x~ = x - [l=0] mean_v x; x~ / sqrt(mean_l mean_{v,m} x~^2 + eps) * g_{l,v} "
        "+ [l=0] b_v",
        reduced_axes="v,d,l (per node)", params=("scale", "bias"),
        **_SHARED,
    ),
    NormInfo(
        name="degree_layer_scale", constructor=degree_layer_scale,
        paper=_EQV2 + "; code fairchem EquivariantDegreeLayerScale",
        formula="g_{l,v} x, g init 1 (l=0), 1/sqrt(2l) (l>0)", reduced_axes="none",
        params=("scale",), **_SHARED,
    ),
]
