"""Input checks, masked statistics and small helpers shared by every norm family.

Layouts are those of :mod:`geonorm_jax.norms.base`: scalar features ``[batch, nodes,
channels]``, vectors ``[batch, nodes, channels, 3]``, coordinates ``[batch, nodes, 3]``,
weights ``[fan_in, fan_out]``, node mask ``[batch, nodes]`` (bool, True = real node).

* checks: :func:`check_features`, :func:`check_coordinates`, :func:`check_vectors`,
  :func:`check_weights`, :func:`check_mask`, :func:`check_node_features`,
  :func:`check_choice`, :func:`check_param_sizes`, :func:`check_layout`; each raises
  ``ValueError`` naming the expected layout and the received shape and dtype
  (:func:`layout_error`);
* masked statistics over real nodes only (padding excluded by ``jnp.where``):
  :func:`masked_sum`, :func:`masked_count` (never below 1), :func:`masked_mean`
  (``sum_real x / count``, 0 for a fully masked group), :func:`masked_var` (biased);
* affine maps ``y * scale + bias`` (:func:`affine_params`, :func:`affine`) and the
  statistics dtype (:func:`stat_dtype`, at least float32).

Everything here is re-exported by :mod:`geonorm_jax.norms.base`, the import path the
family modules use.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "layout_error",
    "check_layout",
    "check_features",
    "check_coordinates",
    "check_vectors",
    "check_weights",
    "check_mask",
    "node_mask",
    "masked_mean",
    "masked_var",
    "masked_count",
    "masked_sum",
    "check_node_features",
    "check_choice",
    "check_param_sizes",
    "stat_dtype",
    "affine_params",
    "affine",
    "check_hyperparameters",
    "E3NN_MOMENTUM",
]


def layout_error(what: str, expected: str, x: Any) -> ValueError:
    """``ValueError("{what}: expected {expected}; received shape {shape} with dtype
    {dtype}")`` for ``x`` (an array or anything else)."""
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", type(x).__name__)
    return ValueError(f"{what}: expected {expected}; received shape {shape} with dtype {dtype}")


def _check_float(x: Any, what: str, expected: str) -> None:
    if not jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating):
        raise layout_error(what, expected + " of a floating dtype", x)


def check_layout(x: Any, what: str, expected: str, ok: bool) -> None:
    """Raise :func:`layout_error` (``expected`` + " of a floating dtype") unless ``ok`` (the
    caller's shape test) holds and ``x`` has a floating dtype; ``x`` is not converted."""
    if not ok or not jnp.issubdtype(getattr(x, "dtype", np.dtype(object)), jnp.floating):
        raise layout_error(what, expected + " of a floating dtype", x)


def check_features(x: Any, what: str = "features") -> None:
    """Raise ``ValueError`` unless ``x`` is a float array ``[batch, nodes, channels]``."""
    expected = "scalar features [batch, nodes, channels]"
    if getattr(x, "ndim", None) != 3:
        raise layout_error(what, expected, x)
    _check_float(x, what, expected)


def check_coordinates(x: Any, what: str = "coordinates") -> None:
    """Raise ``ValueError`` unless ``x`` is a float array ``[batch, nodes, 3]``."""
    expected = "coordinates [batch, nodes, 3]"
    if getattr(x, "ndim", None) != 3 or x.shape[-1] != 3:
        raise layout_error(what, expected, x)
    _check_float(x, what, expected)


def check_vectors(x: Any, what: str = "vectors") -> None:
    """Raise ``ValueError`` unless ``x`` is a float array ``[batch, nodes, channels, 3]``."""
    expected = "vector features [batch, nodes, channels, 3]"
    if getattr(x, "ndim", None) != 4 or x.shape[-1] != 3:
        raise layout_error(what, expected, x)
    _check_float(x, what, expected)


def check_weights(w: Any, what: str = "weights") -> None:
    """Raise ``ValueError`` unless ``w`` is a float kernel ``[fan_in, fan_out]`` (rank >= 2)."""
    expected = "a weight kernel [..., fan_in, fan_out] of rank >= 2"
    if getattr(w, "ndim", 0) < 2:
        raise layout_error(what, expected, w)
    _check_float(w, what, expected)


def check_mask(mask: Any, x_shape: Sequence[int]) -> None:
    """Raise ``ValueError`` unless ``mask`` is ``None`` or has shape ``x_shape[:2]``."""
    if mask is None:
        return
    expected = tuple(x_shape[:2])
    if tuple(getattr(mask, "shape", ())) != expected:
        raise ValueError(
            f"mask: expected a node mask [batch, nodes] = {expected}; "
            f"received shape {getattr(mask, 'shape', None)}"
        )


def node_mask(mask: jax.Array | None, x_shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """The mask as floats ``[batch, nodes]`` (ones when ``mask`` is None)."""
    if mask is None:
        return jnp.ones(tuple(x_shape[:2]), dtype)
    return mask.astype(dtype)


def _broadcast_mask(mask: jax.Array, ndim: int) -> jax.Array:
    return mask.reshape(mask.shape + (1,) * (ndim - mask.ndim))


def masked_count(x: jax.Array, mask: jax.Array | None, axes: Sequence[int]) -> jax.Array:
    """Number of real entries of ``x`` over ``axes`` (keepdims), never below 1."""
    m = node_mask(mask, x.shape, x.dtype)
    m = jnp.broadcast_to(_broadcast_mask(m, x.ndim), x.shape)
    return jnp.maximum(jnp.sum(m, axis=tuple(axes), keepdims=True), 1.0)


def masked_mean(x: jax.Array, mask: jax.Array | None, axes: Sequence[int]) -> jax.Array:
    """Mean of ``x`` over ``axes`` (keepdims) counting only nodes where ``mask`` is True.

    ``mask`` is ``[batch, nodes]`` and broadcasts over trailing axes of ``x``. A fully
    masked group returns 0 rather than NaN.
    """
    if mask is None:
        return jnp.mean(x, axis=tuple(axes), keepdims=True)
    m = _broadcast_mask(mask.astype(x.dtype), x.ndim)
    total = jnp.sum(jnp.where(m > 0, x, 0.0), axis=tuple(axes), keepdims=True)
    return total / masked_count(x, mask, axes)


def masked_var(
    x: jax.Array, mask: jax.Array | None, axes: Sequence[int], mean: jax.Array | None = None
) -> jax.Array:
    """Biased variance of ``x`` over ``axes`` (keepdims), counting only real nodes."""
    if mean is None:
        mean = masked_mean(x, mask, axes)
    return masked_mean(jnp.square(x - mean), mask, axes)


def masked_sum(x: jax.Array, mask: jax.Array | None, axes: Sequence[int]) -> jax.Array:
    """Sum of ``x [batch, nodes, ...]`` over ``axes`` (keepdims) over real nodes only.

    ``mask`` is ``[batch, nodes]`` (bool) and broadcasts over the trailing axes of ``x``.
    """
    if mask is not None:
        x = jnp.where(_broadcast_mask(mask, x.ndim), x, 0.0)
    return jnp.sum(x, axis=tuple(axes), keepdims=True)


# ----------------------------------------------------------------------------- small helpers


def check_node_features(x: Any, mask: Any = None, what: str = "features") -> None:
    """:func:`check_features` on ``x [batch, nodes, channels]``, then :func:`check_mask`."""
    check_features(x, what)
    check_mask(mask, x.shape)


def check_choice(value: Any, choices: tuple, what: str) -> None:
    """Raise ``ValueError`` naming ``choices`` unless ``value`` is one of them."""
    if value not in choices:
        raise ValueError(f"{what}: expected one of {choices}; received {value!r}")


def check_param_sizes(
    tree: dict,
    x: Any,
    name: str,
    keys: Sequence[str],
    *,
    unit: str = "channels",
    holder: str = "the features have",
    layout: str = "features [batch, nodes, {n}]",
) -> None:
    """Raise ``ValueError`` unless each ``tree[key]`` (for ``key`` in ``keys``) has as many
    entries on its last axis as ``x`` has on its last axis.

    Used for per-channel parameters and running statistics (``x [batch, nodes, channels]``)
    and per-output-unit weight parameters (``x [fan_in, fan_out]``). The message says
    ``"{name}: {key!r} has {k} {unit} but {holder} {x.shape[-1]}; expected {layout},
    received shape {x.shape}"``, with ``{n}`` in ``layout`` replaced by ``k``.
    """
    size = x.shape[-1]
    for key in keys:
        shape = tuple(np.shape(tree[key])) if key in tree else None
        if shape == ():
            raise ValueError(f"{name}: {key!r} is a scalar but {holder} {size} {unit}; "
                             f"expected shape ({size},), received shape () (the variables of "
                             f"another layer?)")
        if shape is not None and shape[-1] != size:
            k = shape[-1]
            raise ValueError(
                f"{name}: {key!r} has {k} {unit} but {holder} {size}; "
                f"expected {layout.format(n=k)}, received shape {x.shape}"
            )


def stat_dtype(dtype) -> jnp.dtype:
    """The dtype statistics are computed in: at least float32 (bfloat16/float16 upcast)."""
    return jnp.promote_types(dtype, jnp.float32)


def affine_params(channels: int, use_scale: bool, use_bias: bool, dtype) -> dict:
    """Per-channel affine parameters: ``scale`` (ones) and ``bias`` (zeros), ``[channels]``."""
    params = {}
    if use_scale:
        params["scale"] = jnp.ones((channels,), dtype)
    if use_bias:
        params["bias"] = jnp.zeros((channels,), dtype)
    return params


def affine(y: jax.Array, params: dict) -> jax.Array:
    """``y * params["scale"] + params["bias"]``, each term only if present (broadcast on the
    last axis)."""
    if "scale" in params:
        y = y * params["scale"]
    if "bias" in params:
        y = y + params["bias"]
    return y



# ------------------------------------------------------------------------ hyperparameter domains

#: Constructors whose ``momentum`` is e3nn's weight of the new batch, ``r <- (1 - m) r + m
#: batch``, so its domain is ``(0, 1]``; every other ``momentum`` is Flax's decay ``r <- m r +
#: (1 - m) batch``, domain ``[0, 1)``.
E3NN_MOMENTUM = frozenset({"e3nn_batch_norm"})

_EPSILONS = ("epsilon", "norm_epsilon", "norm_clamp")


def _real(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return None
    return float(value)


def _check_domain(owner: str, key: str, value: Any) -> None:
    if key in _EPSILONS:
        v = _real(value)
        if v is None or not math.isfinite(v) or v < 0:
            raise ValueError(f"{owner}: {key}: expected a finite number >= 0; received "
                             f"{value!r}")
    elif key == "momentum":
        v = _real(value)
        e3nn_style = owner in E3NN_MOMENTUM
        ok = v is not None and (0.0 < v <= 1.0 if e3nn_style else 0.0 <= v < 1.0)
        if not ok:
            domain = ("in (0, 1] (e3nn's weight of the new batch)" if e3nn_style
                      else "in [0, 1) (the decay of the running averages)")
            raise ValueError(f"{owner}: momentum: expected a number {domain}; received "
                             f"{value!r}")


def check_hyperparameters(constructor):
    """Decorator for a layer constructor: ``ValueError`` naming the argument and its domain
    when ``epsilon``, ``norm_epsilon`` or ``norm_clamp`` is not a finite number >= 0 (0 is the
    exact formula, undefined on constant inputs), or ``momentum`` is outside ``[0, 1)``
    (Flax's decay; ``(0, 1]`` for e3nn's convention, :data:`E3NN_MOMENTUM`). The signature is
    kept (``inspect.signature`` follows ``__wrapped__``)."""
    sig = inspect.signature(constructor)
    owner = constructor.__name__

    @functools.wraps(constructor)
    def checked(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        for key, value in bound.arguments.items():
            _check_domain(owner, key, value)
        return constructor(*args, **kwargs)

    return checked
