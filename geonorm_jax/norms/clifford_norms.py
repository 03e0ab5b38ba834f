"""Normalizations of multivector features: CGENN and the Geometric Algebra Transformer (GATr).

Layout: multivectors ``[batch, nodes, channels, 2^n]`` with the blades in the order of
:class:`~geonorm_jax.norms.clifford.CliffordAlgebra` (grade, then lexicographic), or plain
vectors ``[batch, nodes, channels, 3]`` read as the grade-1 part (``e1, e2, e3``) of a
multivector whose other components are zero (the output is again ``[..., 3]``; every layer
here only rescales, so grade 1 maps to grade 1). The audit probes the layers in that vector
layout; the tests check the full multivector layout under the outermorphism of random
orthogonal maps.

Overflow: the quadratic forms are computed on the input divided by ``s = max(1, max|x|)``
with epsilons rescaled to match, which is the same number in exact arithmetic.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from geonorm_jax.geometry import stable_reciprocal
from geonorm_jax.norms.base import Norm, NormInfo, check_hyperparameters, check_mask
from geonorm_jax.norms.clifford import CliffordAlgebra

__all__ = ["mv_layer_norm", "grade_norm", "gatr_layer_norm", "CATALOG_ENTRIES"]

_SMOOTH = 1e-16  # CGENN's _smooth_abs_sqrt: (q^2 + 1e-16)^(1/4)


def _layout(x, alg: CliffordAlgebra, vec_index: np.ndarray, name: str, mask=None):
    """``(multivectors [B, N, C, 2^n], raw_shape or None)``, padded nodes set to 0 with
    ``jnp.where``; raises naming both layouts."""
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", type(x).__name__)
    ok = getattr(x, "ndim", None) == 4 and shape[-1] in (alg.size, 3) and jnp.issubdtype(
        dtype, jnp.floating)
    if not ok:
        raise ValueError(f"{name}: expected multivectors [batch, nodes, channels, {alg.size}] or "
                         f"vectors [batch, nodes, channels, 3] of a floating dtype; received "
                         f"shape {shape} with dtype {dtype}")
    check_mask(mask, shape)
    xc = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    if mask is not None:
        xc = jnp.where(mask.astype(bool)[:, :, None, None], xc, 0.0)
    if shape[-1] == alg.size:
        return xc, None
    mv = jnp.zeros(shape[:-1] + (alg.size,), xc.dtype).at[..., vec_index].set(xc)
    return mv, tuple(shape)


def _out(y, raw, vec_index, dtype):
    return (y[..., vec_index] if raw is not None else y).astype(dtype)


def _smooth_norm(q: jax.Array, s: jax.Array) -> jax.Array:
    """CGENN's ``(q^2 + 1e-16)^(1/4)`` of the unscaled form, divided by ``s``, given the
    scaled form ``q = q_true / s^2`` (``s >= 1``). Where the floor ``1e-16 / s^4`` underflows
    (float32, ``s > 1e5``) and ``q = 0`` (an empty grade), the norm is 0 with a zero gradient
    instead of ``0 * inf``."""
    a = jnp.square(q) + _SMOOTH / s**4
    pos = a > 0
    return jnp.where(pos, jnp.power(jnp.where(pos, a, 1.0), 0.25), 0.0)


@check_hyperparameters
def mv_layer_norm(*, metric=(1.0, 1.0, 1.0), epsilon: float = 1e-6) -> Norm:
    """CGENN's ``MVLayerNorm``: multivectors divided by the mean quadratic-form norm over the
    channels.

    .. math:: y_{c} = a_c\\, \\frac{x_c}{\\operatorname{mean}_{c'} \\|x_{c'}\\|_q + \\epsilon},
        \\qquad \\|x\\|_q = (q(x)^2 + 10^{-16})^{1/4} \\approx \\sqrt{|q(x)|}

    per node; reduces ``{v}`` and the blades. ``q`` the algebra's quadratic form. Paper: Ruhe,
    Brandstetter, Forré 2023, *Clifford Group Equivariant Neural Networks* (NeurIPS). Code:
    ``DavidRuhe/clifford-group-equivariant-neural-networks``, ``models/modules/mvlayernorm.py``
    (``EPS = 1e-6``) and ``algebra/cliffordalgebra.py`` (``norm``, ``_smooth_abs_sqrt``).

    Args:
      metric: the algebra's diagonal metric (default Euclidean ``G(3, 0, 0)``, 8 blades).
      epsilon: added to the mean norm.

    Shapes: ``[batch, nodes, channels, 2^n]`` or vectors ``[..., 3]`` (grade 1; needs ``n =
    3``); params ``a [C]`` (ones).
    """
    alg = CliffordAlgebra(tuple(metric))
    vec = alg.grade_indices(1)
    name = "mv_layer_norm"

    def init(key, x, **context):
        del key, context
        _layout(x, alg, vec, name)
        return {"a": jnp.ones((x.shape[2],), x.dtype)}, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training, context
        mv, raw = _layout(x, alg, vec, name, mask)
        if tuple(params["a"].shape) != (x.shape[2],):
            raise ValueError(f"{name}: 'a' has shape {tuple(params['a'].shape)} but the input "
                             f"has {x.shape[2]} channels; re-initialize")
        s = jax.lax.stop_gradient(
            jnp.maximum(jnp.max(jnp.abs(mv), axis=(-2, -1), keepdims=True, initial=0.0),
                        1.0))  # [B,N,1,1]
        xs = mv / s
        n = _smooth_norm(alg.quadratic_form(xs), s[..., 0])  # [B, N, C]
        mean = jnp.mean(n, axis=-1, keepdims=True)[..., None]  # [B, N, 1, 1]
        y = params["a"].astype(xs.dtype)[:, None] * xs / (mean + epsilon / s)
        return _out(y, raw, vec, x.dtype), state

    return Norm(init, apply, kind="vectors", name=name)


@check_hyperparameters
def grade_norm(*, metric=(1.0, 1.0, 1.0), init_value: float = 0.0,
               epsilon: float = 1e-6) -> Norm:
    """CGENN's ``NormalizationLayer``: each grade divided by a learned blend of 1 and its norm.

    .. math:: y^{(k)}_c = \\frac{x^{(k)}_c}{\\sigma(a_{ck}) (\\|x^{(k)}_c\\|_q - 1) + 1
        + \\epsilon}

    per node, channel ``c`` and grade ``k`` (``x^{(k)}`` the grade-``k`` part); reduces the
    blades of each grade. ``sigma(a) -> 0`` is the identity, ``-> 1`` unit norm per grade.
    Paper: Ruhe, Brandstetter, Forré 2023 (CGENN, NeurIPS). Code:
    ``models/modules/normalization.py`` (``NormalizationLayer``, ``a`` init 0, ``EPS = 1e-6``).

    Shapes: as :func:`mv_layer_norm`; params ``a [C, n + 1]`` (``init_value``).
    """
    alg = CliffordAlgebra(tuple(metric))
    vec = alg.grade_indices(1)
    onehot = np.eye(alg.num_grades)[alg.grades]  # [2^n, K]
    name = "grade_norm"

    def init(key, x, **context):
        del key, context
        _layout(x, alg, vec, name)
        return {"a": jnp.full((x.shape[2], alg.num_grades), init_value, x.dtype)}, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training, context
        mv, raw = _layout(x, alg, vec, name, mask)
        if tuple(params["a"].shape) != (x.shape[2], alg.num_grades):
            raise ValueError(f"{name}: 'a' has shape {tuple(params['a'].shape)}; expected "
                             f"{(x.shape[2], alg.num_grades)} for the input's channels")
        s = jax.lax.stop_gradient(
            jnp.maximum(jnp.max(jnp.abs(mv), axis=-1, keepdims=True, initial=0.0),
                        1.0))  # [B,N,C,1]
        xs = mv / s
        oh = jnp.asarray(onehot, xs.dtype)
        q = jnp.einsum("...a,ak->...k", jnp.asarray(alg.eta, xs.dtype) * jnp.square(xs), oh)
        n = s * _smooth_norm(q, s)  # [B, N, C, K], unscaled norms per grade
        sa = jax.nn.sigmoid(params["a"].astype(xs.dtype))  # [C, K]
        factor = sa * (n - 1.0) + 1.0
        per_blade = jnp.einsum("...k,ak->...a", factor, oh)  # [B, N, C, 2^n]
        y = mv * stable_reciprocal(per_blade + epsilon)
        return _out(y, raw, vec, x.dtype), state

    return Norm(init, apply, kind="vectors", name=name)


@check_hyperparameters
def gatr_layer_norm(*, epsilon: float = 0.01) -> Norm:
    """GATr's ``equi_layer_norm``: projective-GA multivectors divided by the RMS invariant
    inner product over channels, the ``e_0`` components excluded.

    .. math:: y_c = \\frac{x_c}{\\sqrt{\\max(\\operatorname{mean}_{c'} \\langle x_{c'},
        x_{c'}\\rangle, \\epsilon)}}, \\qquad \\langle x, x\\rangle = \\sum_{A \\not\\ni 0}
        x_A^2

    per node over channels and blades (``{v, d}``). ``<x, x>`` is the quadratic form of
    ``G(3, 0, 1)`` (``e_0^2 = 0``), which drops the 8 blades containing ``e_0``. Paper:
    Brehmer, de Haan, Behrends, Cohen 2023, *Geometric Algebra Transformer* (NeurIPS). Code:
    ``Qualcomm-AI-research/geometric-algebra-transformer``, ``gatr/primitives/normalization.py``
    (``equi_layer_norm``, ``epsilon = 0.01`` clamping the mean squared norm, ``gamma = 1``).

    Shapes: multivectors ``[batch, nodes, channels, 16]`` (GATr's blade order ``1, e0, e1, e2,
    e3, e01, ...``) or vectors ``[..., 3]`` read as ``e1, e2, e3``. No params.
    """
    alg = CliffordAlgebra((0.0, 1.0, 1.0, 1.0))
    vec = alg.grade_indices(1)[1:]  # e1, e2, e3
    name = "gatr_layer_norm"

    def init(key, x, **context):
        del key, context
        _layout(x, alg, vec, name)
        return {}, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del params, training, context
        mv, raw = _layout(x, alg, vec, name, mask)
        s = jax.lax.stop_gradient(
            jnp.maximum(jnp.max(jnp.abs(mv), axis=(-2, -1), keepdims=True, initial=0.0), 1.0))
        xs = mv / s
        ms = jnp.mean(alg.quadratic_form(xs), axis=-1, keepdims=True)[..., None]
        y = xs * jax.lax.rsqrt(jnp.maximum(ms, epsilon / jnp.square(s)))
        return _out(y, raw, vec, x.dtype), state

    return Norm(init, apply, kind="vectors", name=name)


_CGENN = ("Ruhe, Brandstetter, Forre 2023, Clifford Group Equivariant Neural Networks "
          "(NeurIPS); code clifford-group-equivariant-neural-networks")
_MV_NOTE = ("Multivectors [b, x, v, 2^n]; the audit probes vectors [b, x, v, 3] as their "
            "grade-1 part.")

CATALOG_ENTRIES: list[NormInfo] = [
    NormInfo(
        name="mv_layer_norm", constructor=mv_layer_norm, kind="vectors", paper=_CGENN,
        formula="a_v x / (mean_v sqrt|q(x)| + eps)", reduced_axes="v and blades (per node)",
        params=("a",), family="equivariant models", notes=_MV_NOTE,
        symmetries=("SO3", "O3", "permutation", "batch"),
    ),
    NormInfo(
        name="grade_norm", constructor=grade_norm, kind="vectors", paper=_CGENN,
        formula="x_k / (sigmoid(a_{v,k}) (sqrt|q(x_k)| - 1) + 1 + eps)",
        reduced_axes="blades of each grade (per node and channel)", params=("a",),
        family="equivariant models", notes=_MV_NOTE,
        symmetries=("SO3", "O3", "permutation", "batch"),
    ),
    NormInfo(
        name="gatr_layer_norm", constructor=gatr_layer_norm, kind="vectors",
        paper="Brehmer, de Haan, Behrends, Cohen 2023, Geometric Algebra Transformer "
        "(NeurIPS); code gatr equi_layer_norm",
        formula="x / sqrt(max(mean_v <x, x>, 0.01)), e0 components excluded",
        reduced_axes="v and blades (per node)", family="equivariant models",
        notes="Multivectors of G(3,0,1) [b, x, v, 16]; the audit probes vectors [b, x, v, 3] "
        "as e1, e2, e3.",
        symmetries=("SO3", "O3", "permutation", "batch"),
    ),
]
