"""The `Norm` shape shared by every normalization layer, plus input checks and masked statistics.

A normalization layer is a pair of pure functions, following optax's
``GradientTransformation(init, update)``: a constructor closes over the hyperparameters
and returns ``Norm(init, apply)``::

    norm = geo_norm(sigma="system")                       # hyperparameters here
    params, state = norm.init(key, x, **context)           # pytrees
    y, state = norm.apply(params, state, x, mask=mask, training=True, **context)

Tensor layouts (DESIGN.md):

============================  ======================================================
scalar node features          ``[batch, nodes, channels]``
vector node features          ``[batch, nodes, channels, 3]`` or ``e3nn.IrrepsArray``
                              ``[batch, nodes, irreps]``
coordinates                   ``[batch, nodes, 3]``
node mask                     ``[batch, nodes]``, bool (True = real node)
weights                       ``[fan_in, fan_out]`` (a Dense kernel)
============================  ======================================================

Masking contract: padded nodes (``mask == False``) never change the statistics or the
outputs of real nodes. Outputs at padded nodes are unspecified but finite.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "Norm",
    "KINDS",
    "check_features",
    "check_coordinates",
    "check_vectors",
    "check_weights",
    "check_mask",
    "node_mask",
    "masked_mean",
    "masked_var",
    "masked_count",
]

KINDS = ("features", "vectors", "coordinates", "weights")

Params = Any
State = Any


class Norm(NamedTuple):
    """A normalization layer as two pure functions (like ``optax.GradientTransformation``).

    Attributes:
      init: ``init(key, x, **context) -> (params, state)``. ``params`` are trainable,
        ``state`` holds non-trainable running quantities (BatchNorm statistics, the
        power-iteration vector of SpectralNorm); both are pytrees, possibly empty dicts.
      apply: ``apply(params, state, x, *, mask=None, training=False, **context)
        -> (y, new_state)``. ``y`` has the shape and dtype of ``x``.
      kind: what the layer acts on: ``"features"`` ``[B, N, C]``, ``"vectors"``
        ``[B, N, C, 3]`` / IrrepsArray, ``"coordinates"`` ``[B, N, 3]`` or ``"weights"``
        ``[fan_in, fan_out]``. ``None`` for a user's layer of unstated kind (accepted
        anywhere).
      name: catalogue name, for messages and tables.
    """

    init: Callable[..., tuple[Params, State]]
    apply: Callable[..., tuple[Any, State]]
    kind: str | None = None
    name: str = "custom"


def _layout_error(what: str, expected: str, x: Any) -> ValueError:
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", type(x).__name__)
    return ValueError(f"{what}: expected {expected}; received shape {shape} with dtype {dtype}")


def _check_float(x: Any, what: str, expected: str) -> None:
    if not jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating):
        raise _layout_error(what, expected + " of a floating dtype", x)


def check_features(x: Any, what: str = "features") -> None:
    """Raise ``ValueError`` unless ``x`` is a float array ``[batch, nodes, channels]``."""
    expected = "scalar features [batch, nodes, channels]"
    if getattr(x, "ndim", None) != 3:
        raise _layout_error(what, expected, x)
    _check_float(x, what, expected)


def check_coordinates(x: Any, what: str = "coordinates") -> None:
    """Raise ``ValueError`` unless ``x`` is a float array ``[batch, nodes, 3]``."""
    expected = "coordinates [batch, nodes, 3]"
    if getattr(x, "ndim", None) != 3 or x.shape[-1] != 3:
        raise _layout_error(what, expected, x)
    _check_float(x, what, expected)


def check_vectors(x: Any, what: str = "vectors") -> None:
    """Raise ``ValueError`` unless ``x`` is a float array ``[batch, nodes, channels, 3]``."""
    expected = "vector features [batch, nodes, channels, 3]"
    if getattr(x, "ndim", None) != 4 or x.shape[-1] != 3:
        raise _layout_error(what, expected, x)
    _check_float(x, what, expected)


def check_weights(w: Any, what: str = "weights") -> None:
    """Raise ``ValueError`` unless ``w`` is a float kernel ``[fan_in, fan_out]`` (rank >= 2)."""
    expected = "a weight kernel [..., fan_in, fan_out] of rank >= 2"
    if getattr(w, "ndim", 0) < 2:
        raise _layout_error(what, expected, w)
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
