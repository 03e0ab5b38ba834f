"""Geometry helpers: safe vector norms, centroids and random group elements.

Every random transform acts on the package's array layouts: coordinates ``[batch, nodes, 3]``,
vectors ``[batch, nodes, channels, 3]`` (or ``e3nn.IrrepsArray``), node-indexed arrays with
the node axis at position 1 (the layouts of :mod:`geonorm_jax.testing`'s kinds).
"""

from __future__ import annotations

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp

__all__ = [
    "safe_norm",
    "safe_normalize",
    "centroid",
    "random_rotation",
    "random_reflection",
    "random_orthogonal",
    "random_translation",
    "random_permutation",
    "rotate",
    "permute_nodes",
]


@jax.custom_jvp
def _safe_norm_last(x: jax.Array) -> jax.Array:
    # Scale by the largest magnitude so that squares neither overflow (1e20**2 > float32 max)
    # nor underflow; the scale is 1 where the vector is exactly zero.
    scale = jnp.max(jnp.abs(x), axis=-1, keepdims=True)
    scale = jnp.where(scale > 0, scale, 1.0)
    return scale[..., 0] * jnp.sqrt(jnp.sum(jnp.square(x / scale), axis=-1))


@_safe_norm_last.defjvp
def _safe_norm_last_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    n = _safe_norm_last(x)
    safe_n = jnp.where(n > 0, n, 1.0)
    unit = jnp.where((n > 0)[..., None], x / safe_n[..., None], 0.0)
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

    With ``eps > 0`` it returns ``x / (||x|| + eps)``.
    """
    n = safe_norm(x, axis=axis, keepdims=True)
    if eps > 0:
        return x / (n + eps)
    return jnp.where(n > 0, x / jnp.where(n > 0, n, 1.0), 0.0)


def centroid(x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Geometric centre ``mu(x) = sum_i m_i x_i / sum_i m_i`` of ``x [batch, nodes, 3]``.

    Returns ``[batch, 3]``; reduces over the node axis, real nodes only. A fully masked
    graph has centroid 0.
    """
    if mask is None:
        return jnp.mean(x, axis=1)
    m = mask.astype(x.dtype)[..., None]
    return jnp.sum(x * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)


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
