"""Geometry helpers: safe vector norms and divisions, centroids and random group elements.

The safe math every norm family shares lives here: :func:`magnitude_scale` (the power of two
to divide by before squaring), :func:`safe_norm` / :func:`safe_normalize` (any axis, gradient
``x / ||x||``), :func:`field_norm` / :func:`unit` (last axis, keepdims, gradient formed as
``(f/s) / (||f||/s)``) and :func:`stable_reciprocal` (``1/d`` whose derivative never squares
``d``). All of them are finite in value and gradient at 0 and right in float32 from 1e-30 to
1e30.

Every random transform acts on the package's array layouts: coordinates ``[batch, nodes, 3]``,
vectors ``[batch, nodes, channels, 3]`` (or ``e3nn.IrrepsArray``), node-indexed arrays with
the node axis at position 1 (the layouts of :mod:`geonorm_jax.testing`'s kinds).
"""

from __future__ import annotations

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp

__all__ = [
    "magnitude_scale",
    "safe_norm",
    "safe_normalize",
    "field_norm",
    "unit",
    "stable_reciprocal",
    "centroid",
    "random_rotation",
    "random_reflection",
    "random_orthogonal",
    "random_translation",
    "random_permutation",
    "rotate",
    "permute_nodes",
]


#: Inputs whose magnitude lies within ``2**-SAFE_EXPONENT .. 2**SAFE_EXPONENT`` are squared as
#: they are (their squares, and sums of up to ~1e8 of them, stay normal in float32); outside
#: it :func:`magnitude_scale` rescales them by a power of two first.
SAFE_EXPONENT = 50


def magnitude_scale(maxabs: jax.Array, floor: jax.Array | float = 0.0) -> jax.Array:
    """A power of two ``s`` to divide by before squaring, so squares neither overflow nor
    underflow; no gradient flows through it.

    ``m = max(maxabs, floor)``; ``s = 1`` while ``2**-50 <= m < 2**50`` (then dividing by
    ``s`` changes no bit, so results at ordinary magnitudes are those of the unscaled
    formula), else ``s = 2**(e - 1)`` with ``m = f 2**e``, ``f`` in ``[1/2, 1)``, so that
    ``m / s`` lies in ``[1, 2)``. Division by a power of two is exact, so ``s`` adds no
    rounding. ``m = 0`` and non-finite ``m`` give ``s = 1``. ``floor`` is where an epsilon
    enters: a standardization ``x / sqrt(var + eps)`` passes ``sqrt(eps)``, so that
    ``eps / s**2`` never overflows for tiny inputs (their variance is then negligible
    against ``eps`` anyway). The exponent is clipped to ``[-126, 125]`` in float32
    (``[-1022, 1021]`` in float64), so ``s`` and ``1 / s`` are normal numbers (XLA may
    divide by multiplying with ``1 / s``, and flushes subnormals to zero); near the largest
    float ``m / s`` is then below 8.

    Shapes: ``maxabs`` any shape (e.g. keepdims statistics); ``s`` has that shape and
    dtype.
    """
    m = jnp.maximum(jnp.asarray(maxabs), jnp.asarray(floor, jnp.asarray(maxabs).dtype))
    _, e = jnp.frexp(m)
    outside = (e > SAFE_EXPONENT) | ((e < -SAFE_EXPONENT) & (m > 0))
    info = jnp.finfo(m.dtype)
    e = jnp.clip(e - 1, info.minexp, info.maxexp - 3)
    s = jnp.where(outside & jnp.isfinite(m), jnp.ldexp(jnp.ones_like(m), e), 1.0)
    return jax.lax.stop_gradient(s.astype(m.dtype))


def _max_scaled_square(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(s, q)`` over the last axis (keepdims): ``s = max|x|`` (1 where ``x`` is exactly
    zero) and ``q = sum (x/s)^2``, so that ``||x|| = s sqrt(q)`` and the squares neither
    overflow (``1e20**2 > float32 max``) nor underflow."""
    s = jnp.max(jnp.abs(x), axis=-1, keepdims=True, initial=0.0)
    s = jnp.where(s > 0, s, 1.0)
    return s, jnp.sum(jnp.square(x / s), axis=-1, keepdims=True)


@jax.custom_jvp
def _safe_norm_last(x: jax.Array) -> jax.Array:
    s, q = _max_scaled_square(x)
    return s[..., 0] * jnp.sqrt(q[..., 0])


@_safe_norm_last.defjvp
def _safe_norm_last_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    n = _safe_norm_last(x)
    safe_n = jnp.where(n > 0, n, 1.0)
    # x / n as (x / s) / (n / s), s a power of two (1 from 2**-50 to 2**50, so the same bits
    # there): the derivative of 1 / n, -1 / n**2, would underflow float32 to -inf for
    # |x| below 1e-19 and break second derivatives (Hessians, force training)
    s = magnitude_scale(safe_n)[..., None]
    unit = jnp.where((n > 0)[..., None], (x / s) / (safe_n[..., None] / s), 0.0)
    return n, jnp.sum(unit * dx, axis=-1)


def safe_norm(x: jax.Array, axis: int = -1, keepdims: bool = False) -> jax.Array:
    """Euclidean norm ``||x||_2`` over ``axis`` with a finite value and gradient everywhere.

    Value: exact (rescaled by ``max|x|``, so finite at 1e20 in float32). Gradient (custom
    JVP): ``x / ||x||`` for ``x != 0`` and the subgradient 0 at ``x = 0``, where plain
    ``jnp.linalg.norm`` gives NaN. No epsilon enters the value.
    """
    x = jnp.moveaxis(x, axis, -1)
    n = _safe_norm_last(x)
    if keepdims:
        n = jnp.expand_dims(n, axis if axis >= 0 else n.ndim + axis + 1)
    return n


def safe_normalize(x: jax.Array, axis: int = -1, eps: float = 0.0) -> jax.Array:
    """``x / ||x||`` over ``axis``; the zero vector maps to the zero direction (not NaN).

    With ``eps > 0`` it returns ``x / (||x|| + eps)``. Value and gradient stay right in
    float32 from 1e-30 to 1e30 (both are divided by :func:`magnitude_scale` first).
    """
    n = safe_norm(x, axis=axis, keepdims=True)
    # divide both by a power of two (1 at ordinary magnitudes): the same value, but the
    # derivative of 1/n (n**-2) does not underflow float32 at n = 1e30
    s = magnitude_scale(n)
    x, n = x / s, n / s
    if eps > 0:
        return x / (n + eps / s)
    return jnp.where(n > 0, x / jnp.where(n > 0, n, 1.0), 0.0)


@jax.custom_jvp
def field_norm(f: jax.Array) -> jax.Array:
    """``||f||_2`` over the last axis (keepdims) ``[..., 1]``, overflow- and underflow-safe:
    ``s sqrt(sum (f/s)^2)`` with ``s = max|f|`` (:func:`_max_scaled_square`); 0 for a zero
    field. Its derivative is the unit vector ``f / ||f||`` (0 at 0), formed by :func:`unit`
    so that no ``s^2`` or ``||f||^2`` appears in a gradient (float32 keeps ``d/df`` right from
    1e-30 to 1e30). The irreps, molecular and Clifford norms use it per field."""
    s, q = _max_scaled_square(f)
    return jnp.where(q > 0, s * jnp.sqrt(jnp.where(q > 0, q, 1.0)), 0.0)


@field_norm.defjvp
def _field_norm_jvp(primals, tangents):
    (f,), (t,) = primals, tangents
    n = field_norm(f)
    return n, jnp.sum(unit(f, n) * t, axis=-1, keepdims=True)


def unit(f: jax.Array, n: jax.Array | None = None) -> jax.Array:
    """``f / ||f||`` over the last axis (0 for a zero field), as ``(f/s) / (||f||/s)`` with
    ``s = max|f|`` held constant, so its derivative never squares a large or tiny norm.

    ``n`` (optional, ``[..., 1]``) replaces :func:`field_norm` ``(f)`` in the denominator,
    e.g. a norm clamped from below."""
    s = jax.lax.stop_gradient(jnp.max(jnp.abs(f), axis=-1, keepdims=True, initial=0.0))
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


def centroid(x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Geometric centre ``mu(x) = sum_i m_i x_i / sum_i m_i`` of ``x [batch, nodes, 3]``.

    Returns ``[batch, 3]``; reduces over the node axis, real nodes only. A fully masked
    graph has centroid 0. Padded nodes are excluded by selection (``jnp.where``), so
    whatever they hold (NaN, inf) changes neither the value nor the gradient. Near the
    float limit the sum is taken of ``x / s`` (:func:`magnitude_scale`, per sample), so a
    centroid of values near ``3e38`` is finite.
    """
    if mask is not None:
        x = jnp.where(mask[..., None], x, 0.0)
    s = magnitude_scale(jnp.max(jnp.abs(x), axis=(1, 2), keepdims=True, initial=0.0))  # [B, 1, 1]
    xs = x / s
    if mask is None:
        return jnp.mean(xs, axis=1) * s[:, 0]
    m = mask.astype(x.dtype)[..., None]
    return jnp.sum(xs, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0) * s[:, 0]


def random_rotation(key: jax.Array, shape: tuple[int, ...] = (), dtype=jnp.float32) -> jax.Array:
    """Haar-random rotation matrices ``[*shape, 3, 3]`` in SO(3) (``e3nn.rand_matrix``)."""
    return e3nn.rand_matrix(key, shape, dtype=dtype)


def random_reflection(key: jax.Array, shape: tuple[int, ...] = (), dtype=jnp.float32) -> jax.Array:
    """Random improper orthogonal matrices ``[*shape, 3, 3]`` (det = -1): rotation times -I."""
    return -random_rotation(key, shape, dtype)


def random_orthogonal(key: jax.Array, shape: tuple[int, ...] = (), dtype=jnp.float32) -> jax.Array:
    """Haar-random elements of O(3): a rotation, with probability 1/2 times -I."""
    k1, k2 = jax.random.split(key)
    sign = jnp.where(jax.random.bernoulli(k2, 0.5, shape), -1.0, 1.0).astype(dtype)
    return random_rotation(k1, shape, dtype) * sign[..., None, None]


def random_translation(
    key: jax.Array, shape: tuple[int, ...] = (), scale: float = 1.0, dtype=jnp.float32
) -> jax.Array:
    """Translation vectors ``[*shape, 3]``, i.i.d. normal with standard deviation ``scale``."""
    return scale * jax.random.normal(key, (*shape, 3), dtype)


def random_permutation(key: jax.Array, num_nodes: int) -> jax.Array:
    """A random permutation of ``range(num_nodes)`` as an int array ``[nodes]``."""
    return jax.random.permutation(key, num_nodes)


def rotate(x, matrix: jax.Array):
    """Apply ``matrix [3, 3]`` to the last axis of ``x`` (``x @ R^T``), or to an IrrepsArray."""
    if isinstance(x, e3nn.IrrepsArray):
        return x.transform_by_matrix(matrix)
    return x @ matrix.T.astype(x.dtype)


def permute_nodes(x, perm: jax.Array, axes: tuple[int, ...] = (1,)):
    """Reorder node axes ``axes`` of ``x`` by ``perm`` (also works on an IrrepsArray)."""
    for axis in axes:
        x = jnp.take(x, perm, axis=axis) if not isinstance(x, e3nn.IrrepsArray) else _take_irreps(
            x, perm, axis
        )
    return x


def _take_irreps(x: e3nn.IrrepsArray, perm: jax.Array, axis: int) -> e3nn.IrrepsArray:
    return e3nn.IrrepsArray(x.irreps, jnp.take(x.array, perm, axis=axis))
