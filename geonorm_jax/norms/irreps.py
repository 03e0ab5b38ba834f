"""Normalizations of irreps (spherical-tensor) features from today's equivariant networks.

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

Layout (e3nn-jax conventions). The input is an ``e3nn.IrrepsArray`` ``[batch, nodes, irreps]``
whose irreps are chunks ``mul x (l, p)``; chunk ``k`` is ``[batch, nodes, mul_k, 2l_k + 1]``
(e3nn-jax's mul-major order), its ``mul_k`` copies are the *channels* (``v``) and its
``2l + 1`` components the ``m`` axis (``d``). EquiformerV2's array ``[N, (lmax+1)^2, C]`` is the
IrrepsArray ``Cx0e + Cx1e + Cx2e + ...`` (one chunk per degree; parity is not tracked there),
transposed to ``[..., C, 2l+1]`` per degree. A plain array ``[batch, nodes, channels, 3]`` is
accepted too and read as ``channels x 1o`` (the output is again ``[batch, nodes, channels,
3]``); the audit probes the layers in that layout. Per-irrep parameters have one entry per
channel of every chunk (``irreps.num_irreps``, chunk order), i.e. one per ``(l, channel)`` for
EquiformerV2's layout. "Scalars" that are centred or get a bias are the even ``0e`` chunks only
(centring a pseudoscalar ``0o`` would break parity), as in e3nn's ``ir.is_scalar()``.

Masks: ``mask [batch, nodes]``. Per-node layers ignore it (padded outputs are finite); the
batch / instance statistics of :func:`e3nn_batch_norm` count only real nodes (``jnp.where``).

Overflow: every squared statistic is computed on the input divided by ``s = max(1, max|x|)``
(per node, or per reduction group) with the epsilon divided by ``s^2``, which is the same
number in exact arithmetic and cannot overflow.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp

from geonorm_jax.norms.base import Norm, NormInfo, check_choice, check_mask

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

_LAYOUT = "an IrrepsArray [batch, nodes, irreps] or vectors [batch, nodes, channels, 3]"


# --------------------------------------------------------------------------------------------
# Plumbing: layout checks, chunks, scaled statistics
# --------------------------------------------------------------------------------------------


def as_irreps(x, what: str = "x") -> tuple[e3nn.IrrepsArray, tuple | None]:
    """``(IrrepsArray, raw_shape)``: an IrrepsArray as given (``raw_shape = None``), or plain
    vectors ``[batch, nodes, channels, 3]`` as ``channels x 1o`` (``raw_shape`` their shape).

    Raises ``ValueError`` naming the expected layout and the received shape and dtype.
    """
    if isinstance(x, e3nn.IrrepsArray):
        arr = x.array
        if arr.ndim != 3 or not jnp.issubdtype(arr.dtype, jnp.floating):
            raise ValueError(f"{what}: expected {_LAYOUT} of a floating dtype; received "
                             f"IrrepsArray shape {arr.shape} with dtype {arr.dtype}")
        return x, None
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", type(x).__name__)
    if (getattr(x, "ndim", None) != 4 or shape[-1] != 3
            or not jnp.issubdtype(dtype, jnp.floating)):
        raise ValueError(f"{what}: expected {_LAYOUT} of a floating dtype; received shape "
                         f"{shape} with dtype {dtype}")
    b, n, c, _ = x.shape
    return e3nn.IrrepsArray(e3nn.Irreps(f"{c}x1o"), x.reshape(b, n, 3 * c)), tuple(x.shape)


def _blocks(x: e3nn.IrrepsArray) -> list[jax.Array]:
    """The chunks ``[batch, nodes, mul, 2l+1]`` as plain arrays (zeros included)."""
    out = []
    for mul_ir, sl in zip(x.irreps, x.irreps.slices(), strict=True):
        out.append(x.array[..., sl].reshape(x.array.shape[:-1] + (mul_ir.mul, mul_ir.ir.dim)))
    return out


def _assemble(x: e3nn.IrrepsArray, blocks: list[jax.Array], raw_shape, dtype):
    lead = x.array.shape[:-1]
    arr = jnp.concatenate([b.reshape(lead + (-1,)) for b in blocks], axis=-1) if blocks else (
        x.array)
    arr = arr.astype(dtype)
    if raw_shape is not None:
        return arr.reshape(raw_shape)
    return e3nn.IrrepsArray(x.irreps, arr)


def _is_even_scalar(mul_ir) -> bool:
    return mul_ir.ir.l == 0 and mul_ir.ir.p == 1


def _num_scalars(irreps) -> int:
    return sum(mi.mul for mi in irreps if _is_even_scalar(mi))


def _param_slices(irreps):
    """Per chunk: (slice into [num_irreps], slice into [num 0e channels] or None)."""
    out, i, j = [], 0, 0
    for mi in irreps:
        s = slice(i, i + mi.mul)
        i += mi.mul
        if _is_even_scalar(mi):
            out.append((s, slice(j, j + mi.mul)))
            j += mi.mul
        else:
            out.append((s, None))
    return out


def _node_scale(blocks: list[jax.Array]) -> jax.Array:
    """``s = max(1, max |x|)`` per node ``[batch, nodes, 1, 1]`` (no gradient; results do not
    depend on it in exact arithmetic)."""
    m = jnp.ones(blocks[0].shape[:2], blocks[0].dtype)
    for b in blocks:
        if b.size:
            m = jnp.maximum(m, jnp.max(jnp.abs(b), axis=(-2, -1)))
    return jax.lax.stop_gradient(m)[..., None, None]


def _check_param_shapes(params: dict, shapes: dict, what: str, x) -> None:
    for key, shape in shapes.items():
        if key in params and tuple(jnp.shape(params[key])) != shape:
            raise ValueError(
                f"{what}: {key!r} has shape {tuple(jnp.shape(params[key]))} but the input "
                f"needs {shape} (received input shape {getattr(x, 'shape', None)}); re-initialize")


def _sq_stat(block: jax.Array, normalization: str) -> jax.Array:
    """``mean_m`` (component) or ``sum_m`` (norm) of ``block^2``: ``[batch, nodes, mul]``."""
    sq = jnp.square(block)
    return jnp.mean(sq, axis=-1) if normalization == "component" else jnp.sum(sq, axis=-1)


def _prepare(x, name, mask=None, params=None, shapes=None):
    """Checks (the mask; ``params`` against ``shapes(irreps)`` when given), then the chunks in
    the compute dtype with padded nodes set to 0 (``jnp.where``: whatever padding holds, NaN
    included, reaches no output or gradient of a real node)."""
    xi, raw = as_irreps(x, name)
    check_mask(mask, xi.shape)
    if shapes is not None:
        _check_param_shapes(params, shapes(xi.irreps), name, x)
    dtype = xi.array.dtype
    cdt = jnp.promote_types(dtype, jnp.float32)
    blocks = [b.astype(cdt) for b in _blocks(xi)]
    if mask is not None:
        m = mask.astype(bool)[:, :, None, None]
        blocks = [jnp.where(m, b, 0.0) for b in blocks]
    return xi, raw, dtype, blocks


def _affine_init(irreps, dtype, affine: bool, bias: bool = True) -> dict:
    if not affine:
        return {}
    p = {"scale": jnp.ones((irreps.num_irreps,), dtype)}
    if bias:
        p["bias"] = jnp.zeros((_num_scalars(irreps),), dtype)
    return p


def _scale_and_eps(blocks: list[jax.Array], epsilon: float):
    """:func:`_node_scale` ``s [B, N, 1, 1]`` and ``epsilon / s^2`` ``[B, N, 1]``: the epsilon
    of a mean square of ``x / s``, so that ``ms(x/s) + eps/s^2 = (ms(x) + eps) / s^2``."""
    s = _node_scale(blocks)
    return s, epsilon / jnp.square(s[..., 0, 0])[..., None]


def _affine_shapes(irreps) -> dict:
    return {"scale": (irreps.num_irreps,), "bias": (_num_scalars(irreps),)}


# --------------------------------------------------------------------------------------------
# EquiformerV2
# --------------------------------------------------------------------------------------------


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

    Shapes: IrrepsArray ``[batch, nodes, irreps]`` or vectors ``[batch, nodes, channels, 3]``;
    same shape and dtype out. No state, no context; the mask is not needed (per node).
    """
    check_choice(normalization, ("component", "norm"), "equivariant_layer_norm: normalization")
    name = "equivariant_layer_norm"

    def init(key, x, **context):
        del key, context
        xi, _ = as_irreps(x, name)
        return _affine_init(xi.irreps, xi.array.dtype, affine), {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training, context
        xi, raw, dtype, blocks = _prepare(x, name, mask, params, _affine_shapes)
        s, eps = _scale_and_eps(blocks, epsilon)  # [B, N, 1, 1], [B, N, 1]
        out = []
        for mi, blk, (ps, pb) in zip(xi.irreps, blocks, _param_slices(xi.irreps), strict=True):
            f = blk / s
            if _is_even_scalar(mi):
                f = f - jnp.mean(f, axis=-2, keepdims=True)
            ms = jnp.mean(_sq_stat(f, normalization), axis=-1, keepdims=True)  # [B, N, 1]
            g = jax.lax.rsqrt(ms + eps)[..., None]
            if affine:
                g = g * params["scale"][ps].astype(f.dtype)[:, None]
            f = f * g
            if affine and pb is not None:
                f = f + params["bias"][pb].astype(f.dtype)[:, None]
            out.append(f)
        return _assemble(xi, out, raw, dtype), state

    return Norm(init, apply, kind="vectors", name=name)


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
    name = "equivariant_layer_norm_sh"

    def init(key, x, **context):
        del key, context
        xi, _ = as_irreps(x, name)
        return _affine_init(xi.irreps, xi.array.dtype, affine), {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training, context
        xi, raw, dtype, blocks = _prepare(x, name, mask, params, _affine_shapes)
        s, eps = _scale_and_eps(blocks, epsilon)  # [B, N, 1, 1], [B, N, 1]
        scaled = [b / s for b in blocks]
        # l = 0: LayerNorm over all 0e channels of the node
        sc = [f[..., 0] for mi, f in zip(xi.irreps, scaled, strict=True) if _is_even_scalar(mi)]
        if sc:
            s0 = jnp.concatenate(sc, axis=-1)  # [B, N, n0]
            mu = jnp.mean(s0, axis=-1, keepdims=True)
            var = jnp.mean(jnp.square(s0 - mu), axis=-1, keepdims=True)
            inv0 = jax.lax.rsqrt(var + eps)
        # l > 0: one shared mean square
        rest = [(mi, f) for mi, f in zip(xi.irreps, scaled, strict=True)
                if not _is_even_scalar(mi)]
        if rest:
            if normalization == "component" and std_balance_degrees:
                r = sum(jnp.mean(jnp.mean(jnp.square(f), -1), -1, keepdims=True)
                        for _, f in rest) / len(rest)
            else:
                tot = sum(jnp.mean(jnp.sum(jnp.square(f), -1), -1, keepdims=True)
                          for _, f in rest)
                r = tot / sum(mi.ir.dim for mi, _ in rest) if normalization == "component" else tot
            inv = jax.lax.rsqrt(r + eps)  # [B, N, 1]
        out = []
        for mi, f, (ps, pb) in zip(xi.irreps, scaled, _param_slices(xi.irreps), strict=True):
            if _is_even_scalar(mi):
                f = (f - mu[..., None]) * inv0[..., None]
                if affine:
                    f = f * params["scale"][ps].astype(f.dtype)[:, None]
                    f = f + params["bias"][pb].astype(f.dtype)[:, None]
            else:
                f = f * inv[..., None]
                if affine:
                    f = f * params["scale"][ps].astype(f.dtype)[:, None]
            out.append(f)
        return _assemble(xi, out, raw, dtype), state

    return Norm(init, apply, kind="vectors", name=name)


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
    name = "equivariant_rms_norm_sh"

    def init(key, x, **context):
        del key, context
        xi, _ = as_irreps(x, name)
        return _affine_init(xi.irreps, xi.array.dtype, affine, bias=centering), {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training, context
        xi, raw, dtype, blocks = _prepare(x, name, mask, params, _affine_shapes)
        s, eps = _scale_and_eps(blocks, epsilon)  # [B, N, 1, 1], [B, N, 1]
        scaled = [b / s for b in blocks]
        if centering:
            sc = [f[..., 0] for mi, f in zip(xi.irreps, scaled, strict=True)
                  if _is_even_scalar(mi)]
            if sc:
                mu = jnp.mean(jnp.concatenate(sc, -1), -1, keepdims=True)[..., None]  # [B,N,1,1]
                scaled = [f - mu if _is_even_scalar(mi) else f
                          for mi, f in zip(xi.irreps, scaled, strict=True)]
        if normalization == "component" and std_balance_degrees:
            r = sum(jnp.mean(jnp.mean(jnp.square(f), -1), -1, keepdims=True)
                    for f in scaled) / len(scaled)
        else:
            tot = sum(jnp.mean(jnp.sum(jnp.square(f), -1), -1, keepdims=True) for f in scaled)
            r = tot / sum(mi.ir.dim for mi in xi.irreps) if normalization == "component" else tot
        inv = jax.lax.rsqrt(r + eps)[..., None]  # [B, N, 1, 1]
        out = []
        for f, (ps, pb) in zip(scaled, _param_slices(xi.irreps), strict=True):
            f = f * inv
            if affine:
                f = f * params["scale"][ps].astype(f.dtype)[:, None]
                if centering and pb is not None:
                    f = f + params["bias"][pb].astype(f.dtype)[:, None]
            out.append(f)
        return _assemble(xi, out, raw, dtype), state

    return Norm(init, apply, kind="vectors", name=name)


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
        del key, context
        xi, _ = as_irreps(x, name)
        vals = []
        for mi in xi.irreps:
            v = 1.0 if mi.ir.l == 0 else 1.0 / math.sqrt(scale_factor * mi.ir.l)
            vals.append(jnp.full((mi.mul,), v, xi.array.dtype))
        scale = jnp.concatenate(vals) if vals else jnp.zeros((0,), xi.array.dtype)
        return {"scale": scale}, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training, context
        xi, raw, dtype, blocks = _prepare(x, name, mask, params,
                                          lambda ir: {"scale": (ir.num_irreps,)})
        out = [f * params["scale"][ps].astype(f.dtype)[:, None]
               for f, (ps, _) in zip(blocks, _param_slices(xi.irreps), strict=True)]
        return _assemble(xi, out, raw, dtype), state

    return Norm(init, apply, kind="vectors", name=name)


# --------------------------------------------------------------------------------------------
# e3nn BatchNorm / instance norm
# --------------------------------------------------------------------------------------------


def e3nn_batch_norm(
    *,
    instance: bool = False,
    normalization: str = "component",
    momentum: float = 0.1,
    epsilon: float = 1e-5,
    affine: bool = True,
) -> Norm:
    """e3nn's ``BatchNorm`` on irreps, and with ``instance=True`` its per-graph instance norm.

    For every chunk (``mul x ir``), per channel ``c``, with statistics over the real nodes of
    the whole batch (``{b, x}``) or, with ``instance=True``, of each graph (``{x}``):

    .. math::

        \\tilde x_{cm} = x_{cm} - [\\text{ir} = 0e]\\,\\mu_c, \\qquad
        \\sigma^2_c = \\operatorname{mean}_{b,x}\\ \\operatorname{mean}_m \\tilde x_{cm}^2, \\qquad
        y_{cm} = \\gamma_c \\tilde x_{cm} / \\sqrt{\\sigma^2_c + \\epsilon} + [0e]\\,\\beta_c

    (``sum_m`` for ``normalization="norm"``). ``mu_c`` is the mean of the ``0e`` channel
    (only even scalars are centred, e3nn's ``ir.is_scalar()``). Batch mode keeps running
    averages ``r <- (1 - momentum) r + momentum * batch`` (e3nn's convention, momentum 0.1)
    updated when ``training=True`` and used otherwise; instance mode has no running state and
    uses the graph's own statistics always (as e3nn with ``instance=True``). e3nn pools the
    batch statistics as a mean over nodes then over graphs; here the pooled mean over all real
    nodes (the same for graphs of equal size). Only ``reduce="mean"`` is implemented.

    Papers: Geiger & Smidt 2022, *e3nn: Euclidean Neural Networks*; instance mode as in
    SEGNN (Brandstetter, Hesselink, van der Pol, Bekkers, Welling, ICLR 2022). Code:
    ``e3nn/nn/_batchnorm.py``, ``e3nn_jax/_src/batchnorm.py``.

    Shapes: as :func:`equivariant_layer_norm`. Params ``scale [num_irreps]``,
    ``bias [n_0e]``; state (batch mode) ``mean [n_0e]`` (zeros; absent when the input has no
    ``0e`` channel, since checkpoints cannot hold zero-size arrays), ``var [num_irreps]``
    (ones).
    """
    check_choice(normalization, ("component", "norm"), "e3nn_batch_norm: normalization")
    name = "e3nn_instance_norm" if instance else "e3nn_batch_norm"
    axes = (1,) if instance else (0, 1)

    def init(key, x, **context):
        del key, context
        xi, _ = as_irreps(x, name)
        dt = xi.array.dtype
        n0 = _num_scalars(xi.irreps)
        state = {} if instance else {"var": jnp.ones((xi.irreps.num_irreps,), dt)}
        if not instance and n0:
            state["mean"] = jnp.zeros((n0,), dt)
        return _affine_init(xi.irreps, dt, affine), state

    def apply(params, state, x, *, mask=None, training=False, **context):
        del context
        xi, raw, dtype, blocks = _prepare(x, name, mask, params, _affine_shapes)
        if not instance:
            n0 = _num_scalars(xi.irreps)
            _check_param_shapes(state, {"var": (xi.irreps.num_irreps,),
                                        **({"mean": (n0,)} if n0 else {})}, name, x)
        b, n = xi.shape[:2]
        m = jnp.ones((b, n), bool) if mask is None else mask.astype(bool)
        m4 = m[:, :, None, None]
        count = jnp.maximum(jnp.sum(m, axis=axes, keepdims=True), 1)[..., None].astype(
            blocks[0].dtype if blocks else jnp.float32)  # [B|1, 1, 1]
        use_batch = training or instance
        new_mean, new_var, out = [], [], []
        for mi, blk, (ps, pb) in zip(xi.irreps, blocks, _param_slices(xi.irreps), strict=True):
            f = jnp.where(m4, blk, 0.0)
            # s: max(1, max |x|) over the reduction group, per channel
            s = jnp.maximum(jnp.max(jnp.abs(f), axis=axes + (3,), keepdims=True), 1.0)
            s = jax.lax.stop_gradient(s)  # [B|1, 1, mul, 1]
            g = f / s
            if _is_even_scalar(mi):
                if use_batch:
                    mu = jnp.sum(g, axis=axes, keepdims=True) / count[..., None]
                    if not instance:
                        new_mean.append((mu * s)[0, 0, :, 0])
                else:
                    mu = state["mean"][pb].astype(g.dtype)[:, None] / s
                g = g - mu
            if use_batch:
                sq = _sq_stat(jnp.where(m4, g, 0.0), normalization)  # [B, N, mul]
                var = (jnp.sum(sq, axis=axes, keepdims=True) / count)[..., None]  # scaled by s^2
                if not instance:
                    new_var.append((var * jnp.square(s))[0, 0, :, 0])
            else:
                var = state["var"][ps].astype(g.dtype)[:, None] / jnp.square(s)
            y = g * jax.lax.rsqrt(var + epsilon / jnp.square(s))
            if affine:
                y = y * params["scale"][ps].astype(y.dtype)[:, None]
                if pb is not None:
                    y = y + params["bias"][pb].astype(y.dtype)[:, None]
            out.append(y)
        new_state = state
        if training and not instance:
            cat = lambda v, ref: (jnp.concatenate(v) if v else ref).astype(ref.dtype)
            new_state = {
                "var": ((1 - momentum) * state["var"]
                        + momentum * cat(new_var, state["var"])).astype(state["var"].dtype),
            }
            if "mean" in state:
                new_state["mean"] = ((1 - momentum) * state["mean"] + momentum * cat(
                    new_mean, state["mean"])).astype(state["mean"].dtype)
        return _assemble(xi, out, raw, dtype), new_state

    return Norm(init, apply, kind="vectors", name=name)


# --------------------------------------------------------------------------------------------
# e3nn-jax norm_activation / soft_normalization, SE(3)-Transformer NormSE3
# --------------------------------------------------------------------------------------------

_ACTIVATIONS: dict[str, Callable] = {
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "softplus": jax.nn.softplus,
}


@jax.custom_jvp
def field_norm(f: jax.Array) -> jax.Array:
    """``||f||_2`` over the last axis (keepdims), overflow- and underflow-safe: computed as
    ``s sqrt(sum (f/s)^2)`` with ``s = max|f|``; 0 for a zero field. Its derivative is the unit
    vector ``f / ||f||`` (0 at 0), formed directly so that no ``s^2`` or ``||f||^2`` appears in
    a gradient (float32 keeps ``d/df`` right from 1e-30 to 1e30)."""
    s = jnp.max(jnp.abs(f), axis=-1, keepdims=True)
    s_safe = jnp.where(s > 0, s, 1.0)
    q = jnp.sum(jnp.square(f / s_safe), axis=-1, keepdims=True)
    return jnp.where(q > 0, s_safe * jnp.sqrt(jnp.where(q > 0, q, 1.0)), 0.0)


@field_norm.defjvp
def _field_norm_jvp(primals, tangents):
    (f,), (t,) = primals, tangents
    n = field_norm(f)
    return n, jnp.sum(unit(f, n) * t, axis=-1, keepdims=True)


def unit(f: jax.Array, n: jax.Array | None = None) -> jax.Array:
    """``f / ||f||`` over the last axis (0 for a zero field), as ``(f/s) / (||f||/s)`` with
    ``s = max|f|`` held constant, so its derivative never squares a large or tiny norm."""
    s = jax.lax.stop_gradient(jnp.max(jnp.abs(f), axis=-1, keepdims=True))
    s_safe = jnp.where(s > 0, s, 1.0)
    n = field_norm(f) if n is None else n
    ns = n / s_safe
    pos = ns > 0
    return jnp.where(pos, (f / s_safe) / jnp.where(pos, ns, 1.0), 0.0)


@jax.custom_jvp
def stable_reciprocal(d: jax.Array) -> jax.Array:
    """``1 / d`` whose derivative is ``-(r (r t))`` rather than ``-t / d^2``: ``d^2`` overflows
    float32 for ``d > 2e19`` although the gradient it scales is representable."""
    return 1.0 / d


@stable_reciprocal.defjvp
def _stable_reciprocal_jvp(primals, tangents):
    (d,), (t,) = primals, tangents
    r = 1.0 / d
    return r, -(r * (r * t))


def _chunk_norm(f: jax.Array, normalization: str) -> jax.Array:
    """``sqrt(mean_m f^2)`` (component) or ``||f||`` (norm) ``[..., mul, 1]`` via
    :func:`field_norm`."""
    n = field_norm(f)
    return n / jnp.sqrt(f.shape[-1]) if normalization == "component" else n


def _sus(t: jax.Array) -> jax.Array:
    """e3nn's soft unit step ``exp(-1/t)`` (``t > 0``), else 0. Below ``t = 0.02`` it is
    taken as 0 (``exp(-50) = 2e-22``, invisible next to 1 in ``1 + t sus(t)`` even in
    float64), which keeps ``exp(-1/t) / t^2`` out of the gradient (it overflows float32)."""
    pos = t > 0.02
    return jnp.where(pos, jnp.exp(-1.0 / jnp.where(pos, t, 1.0)), 0.0)


def _norm_act_layer(name: str, phi: Callable, normalization: str, scalars: str) -> Norm:
    check_choice(normalization, ("component", "norm"), f"{name}: normalization")
    check_choice(scalars, ("same", "identity"), f"{name}: scalars")

    def init(key, x, **context):
        del key, context
        as_irreps(x, name)
        return {}, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del params, training, context
        xi, raw, dtype, blocks = _prepare(x, name, mask)
        out = []
        for mi, f in zip(xi.irreps, blocks, strict=True):
            if scalars == "identity" and _is_even_scalar(mi):
                out.append(f)
            else:
                out.append(f * phi(_chunk_norm(f, normalization)))
        return _assemble(xi, out, raw, dtype), state

    return Norm(init, apply, kind="vectors", name=name)


def norm_activation(
    *, activation: str | Callable = "tanh", normalization: str = "component",
    scalars: str = "same",
) -> Norm:
    """e3nn-jax's ``norm_activation``: every irrep field times a function of its norm.

    .. math:: y_{cm} = x_{cm}\\,\\phi(n_c), \\qquad
        n_c = \\sqrt{\\operatorname{mean}_m x_{cm}^2}\\ (\\text{component})\\ \\text{or}\\
        \\|x_c\\|_2\\ (\\text{norm})

    Per field (node, chunk, channel); reduces ``{d}`` only. ``n = 0`` gives ``y = 0``
    (e3nn-jax substitutes 1 for the norm of a zero field; the product is 0 either way).
    Code: ``e3nn_jax/_src/activation.py`` (``norm_activation``), Geiger & Smidt 2022.

    Args:
      activation: ``phi``: a name (``tanh``, ``sigmoid``, ``relu``, ``silu``, ``softplus``) or
        a callable.
      normalization: ``"component"`` or ``"norm"``.
      scalars: ``"identity"`` leaves ``0e`` chunks untouched (e3nn-jax's ``acts=[None, ...]``).

    Shapes: as :func:`equivariant_layer_norm`. No params or state.
    """
    if isinstance(activation, str):
        check_choice(activation, tuple(_ACTIVATIONS), "norm_activation: activation")
        activation = _ACTIVATIONS[activation]
    return _norm_act_layer("norm_activation", activation, normalization, scalars)


def soft_normalization(*, max_component: float = 1.0) -> Norm:
    """e3nn-jax's ``soft_normalization``: fields shrunk smoothly towards a maximal norm.

    .. math:: y = x\\,\\phi(n / M), \\qquad \\phi(t) = \\frac{1}{1 + t\\,\\mathrm{sus}(t)},
        \\qquad \\mathrm{sus}(t) = e^{-1/t}\\ (t > 0),\\ 0\\ (t \\le 0)

    ``n`` the component-normalized norm of each field (``sqrt(mean_m x^2)``), ``M =
    max_component``: fields well below ``M`` pass unchanged, large ones end near norm ``M``.
    Per field; reduces ``{d}``. Code: ``e3nn_jax/_src/activation.py`` (``soft_normalization``).

    Shapes: as :func:`equivariant_layer_norm`. No params or state.
    """
    if not max_component > 0:
        raise ValueError(f"soft_normalization: expected max_component > 0; received "
                         f"{max_component!r}")

    def phi(n):
        t = n / max_component
        return stable_reciprocal(1.0 + t * _sus(t))

    return _norm_act_layer("soft_normalization", phi, "component", "same")


def norm_se3(*, epsilon: float = 1e-5, norm_clamp: float = 2.0 ** -24,
             nonlinearity: str | Callable = "relu") -> Norm:
    """``NormSE3`` of the SE(3)-Transformer: a LayerNorm of each degree's norms, through a
    nonlinearity, times the direction.

    .. math::

        n_c = \\max(\\|x_c\\|_2, \\kappa), \\qquad
        y_{cm} = \\mathrm{ReLU}\\Big(\\gamma_c \\frac{n_c - \\operatorname{mean}_{c'} n_{c'}}
        {\\sqrt{\\operatorname{var}_{c'} n_{c'} + \\epsilon}} + \\beta_c\\Big)\\,
        \\frac{x_{cm}}{n_c}

    per node and chunk (degree); the LayerNorm reduces the chunk's channels (``{v}``; ``d`` for
    the norm). ``kappa = 2^-24`` (the code's ``NORM_CLAMP``). Paper: Fuchs, Worrall, Fischer,
    Welling 2020, *SE(3)-Transformers* (NeurIPS). Code: NVIDIA DeepLearningExamples
    ``DGLPyTorch/DrugDiscovery/SE3Transformer/se3_transformer/model/layers/norm.py``
    (``NormSE3``; a GroupNorm with one group per degree when all degrees have the same channel
    count, which is the same per-degree LayerNorm).

    Args:
      epsilon: LayerNorm epsilon. norm_clamp: ``kappa``. nonlinearity: name or callable.

    Shapes: as :func:`equivariant_layer_norm`; params ``scale``, ``bias`` ``[num_irreps]``.
    """
    if isinstance(nonlinearity, str):
        check_choice(nonlinearity, tuple(_ACTIVATIONS), "norm_se3: nonlinearity")
        nonlinearity = _ACTIVATIONS[nonlinearity]
    name = "norm_se3"

    def init(key, x, **context):
        del key, context
        xi, _ = as_irreps(x, name)
        k, dt = xi.irreps.num_irreps, xi.array.dtype
        return {"scale": jnp.ones((k,), dt), "bias": jnp.zeros((k,), dt)}, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training, context
        xi, raw, dtype, blocks = _prepare(x, name, mask)
        k = xi.irreps.num_irreps
        _check_param_shapes(params, {"scale": (k,), "bias": (k,)}, name, x)
        out = []
        for f, (ps, _) in zip(blocks, _param_slices(xi.irreps), strict=True):
            n = jnp.maximum(_chunk_norm(f, "norm"), norm_clamp)  # [B, N, mul, 1]
            s = jax.lax.stop_gradient(jnp.maximum(jnp.max(n, axis=-2, keepdims=True), 1.0))
            ns = n / s
            mu = jnp.mean(ns, axis=-2, keepdims=True)
            var = jnp.mean(jnp.square(ns - mu), axis=-2, keepdims=True)
            ln = (ns - mu) * jax.lax.rsqrt(var + epsilon / jnp.square(s))
            ln = ln * params["scale"][ps].astype(f.dtype)[:, None] + params["bias"][ps].astype(
                f.dtype)[:, None]
            out.append(nonlinearity(ln) * unit(f, jnp.maximum(field_norm(f), norm_clamp)))
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

CATALOG_ENTRIES: list[NormInfo] = [
    NormInfo(
        name="equivariant_layer_norm", constructor=equivariant_layer_norm, kind="vectors",
        paper=_EQV2 + "; code fairchem EquivariantLayerNormArray",
        formula="per l: (x - [l=0] mean_v x) / sqrt(mean_{v,m} x^2 + eps) * g_{l,v} + [l=0] b_v",
        reduced_axes="v,d (per node, per degree)", params=("scale", "bias"),
        family="equivariant models", notes=_LAYOUT_NOTE,
    ),
    NormInfo(
        name="equivariant_layer_norm_sh", constructor=equivariant_layer_norm_sh, kind="vectors",
        paper=_EQV2 + "; code fairchem EquivariantLayerNormArraySphericalHarmonics",
        formula="l=0: LayerNorm_v; l>0: x / sqrt(mean_l mean_{v,m} x^2 + eps) * g_{l,v}",
        reduced_axes="v (l=0); v,d,l (l>0), per node", params=("scale", "bias"),
        family="equivariant models", notes=_LAYOUT_NOTE,
    ),
    NormInfo(
        name="equivariant_rms_norm_sh", constructor=equivariant_rms_norm_sh, kind="vectors",
        paper=_EQV2 + "; also eSEN and UMA (fairchem EquivariantRMSNormArraySphericalHarmonicsV2)",
        formula="x~ = x - [l=0] mean_v x; x~ / sqrt(mean_l mean_{v,m} x~^2 + eps) * g_{l,v} "
        "+ [l=0] b_v",
        reduced_axes="v,d,l (per node)", params=("scale", "bias"),
        family="equivariant models", notes=_LAYOUT_NOTE,
    ),
    NormInfo(
        name="degree_layer_scale", constructor=degree_layer_scale, kind="vectors",
        paper=_EQV2 + "; code fairchem EquivariantDegreeLayerScale",
        formula="g_{l,v} x, g init 1 (l=0), 1/sqrt(2l) (l>0)", reduced_axes="none",
        params=("scale",), family="equivariant models", notes=_LAYOUT_NOTE,
    ),
    NormInfo(
        name="e3nn_batch_norm", constructor=e3nn_batch_norm, kind="vectors",
        paper="Geiger, Smidt 2022, e3nn: Euclidean Neural Networks (arXiv:2207.09453); code "
        "e3nn BatchNorm / e3nn-jax BatchNorm",
        formula="(x - [0e] mu_{b,x}) / sqrt(mean_{b,x} mean_m x^2 + eps) * g + [0e] b",
        reduced_axes="b,x per channel (d for the field norm)", params=("scale", "bias"),
        running_state=("mean", "var"), family="equivariant models",
        notes="Pooled mean over the real nodes of the batch (e3nn: mean over nodes then "
        "graphs, equal for equal sizes). Running averages with e3nn's momentum 0.1.",
    ),
    NormInfo(
        name="e3nn_instance_norm", constructor=e3nn_batch_norm, kind="vectors",
        paper="Geiger, Smidt 2022 (e3nn BatchNorm(instance=True)); used by SEGNN, "
        "Brandstetter et al. 2022 (ICLR)",
        formula="(x - [0e] mu_{x}) / sqrt(mean_{x} mean_m x^2 + eps) * g + [0e] b",
        reduced_axes="x per graph and channel (d for the field norm)", params=("scale", "bias"),
        family="equivariant models", kwargs={"instance": True},
        notes="Per-graph statistics over its real nodes; no running state.",
    ),
    NormInfo(
        name="norm_activation", constructor=norm_activation, kind="vectors",
        paper="Geiger, Smidt 2022; code e3nn-jax norm_activation",
        formula="x * phi(sqrt(mean_m x^2)), phi = tanh", reduced_axes="d (per field)",
        family="equivariant models",
    ),
    NormInfo(
        name="soft_normalization", constructor=soft_normalization, kind="vectors",
        paper="Geiger, Smidt 2022; code e3nn-jax soft_normalization",
        formula="x / (1 + t sus(t)), t = sqrt(mean_m x^2) / M, sus(t) = exp(-1/t)",
        reduced_axes="d (per field)", family="equivariant models",
    ),
    NormInfo(
        name="norm_se3", constructor=norm_se3, kind="vectors",
        paper="Fuchs, Worrall, Fischer, Welling 2020, SE(3)-Transformers: 3D Roto-Translation "
        "Equivariant Attention Networks (NeurIPS); code NVIDIA SE3Transformer NormSE3",
        formula="ReLU(LayerNorm_v(||x||)) * x / ||x||",
        reduced_axes="v per node and degree (d for the norm)", params=("scale", "bias"),
        family="equivariant models",
    ),
]
