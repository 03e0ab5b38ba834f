"""The `Norm` shape shared by every normalization layer, plus input checks and masked statistics.

A normalization layer is a pair of pure functions, following optax's
``GradientTransformation(init, update)``: a constructor closes over the hyperparameters
and returns ``Norm(init, apply)``::

    norm = geo_norm(sigma="system")                       # hyperparameters here
    params, state = norm.init(key, x, **context)           # pytrees
    y, state = norm.apply(params, state, x, mask=mask, training=True, **context)

Tensor layouts, in the survey's letters (Aalto et al., Table 1: b = batch, x = nodes, v =
channels, d = the 3 spatial components):

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

This module also holds :class:`NormInfo` (the metadata of one catalogue entry) and the small
helpers the family modules share (affine maps, the statistics dtype, parameter-size checks,
masked sums), so that ``catalog`` can import the families and the families import only
``base``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "Norm",
    "NormInfo",
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
    "masked_sum",
    "check_node_features",
    "check_choice",
    "check_param_sizes",
    "stat_dtype",
    "affine_params",
    "affine",
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


@dataclasses.dataclass(frozen=True)
class NormInfo:
    """Metadata for one catalogue entry.

    Attributes:
      name: catalogue name (``"geo_norm"``), also accepted by the CLI.
      constructor: ``constructor(**hyperparameters) -> Norm``.
      kind: ``"features"``, ``"vectors"``, ``"coordinates"`` or ``"weights"``.
      paper: the original paper (authors, year, venue).
      formula: the formula of the survey (Aalto et al., Table 1) or of the GeoNorm paper
        (Meng et al., Eqs. 3-5), in plain text.
      reduced_axes: the axes the code reduces over, in the survey's letters
        (b = batch, x = nodes, v = channels, d = the 3 spatial components).
      params: names of learnable parameters.
      running_state: names of running (non-trainable) state, empty if none.
      family: ``"language/vision"``, ``"graph/geometric"`` or ``"geonorm paper"``.
      context: keyword context ``apply`` needs beyond ``x`` (e.g. ``("mu0",)``).
      kwargs: keyword arguments passed to ``constructor`` for this entry (variants).
      survey_row: the row of the survey's Table 1 this implements, or "" if not in it.
      notes: where the survey and the original paper differ, and the choice made.
    """

    name: str
    constructor: Callable[..., Any]
    kind: str
    paper: str
    formula: str
    reduced_axes: str
    params: tuple[str, ...] = ()
    running_state: tuple[str, ...] = ()
    family: str = "graph/geometric"
    context: tuple[str, ...] = ()
    kwargs: dict = dataclasses.field(default_factory=dict)
    survey_row: str = ""
    notes: str = ""

    def make(self, **overrides):
        """Build the ``Norm`` with this entry's kwargs, updated by ``overrides``."""
        return self.constructor(**{**self.kwargs, **overrides})


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


def masked_sum(x: jax.Array, mask: jax.Array | None, axes: Sequence[int]) -> jax.Array:
    """Sum of ``x [batch, nodes, ...]`` over ``axes`` (keepdims) over real nodes only.

    ``mask`` is ``[batch, nodes]`` (bool) and broadcasts over the trailing axes of ``x``.
    """
    if mask is not None:
        x = jnp.where(_broadcast_mask(mask, x.ndim), x, 0.0)
    return jnp.sum(x, axis=tuple(axes), keepdims=True)


# ----------------------------------------------------------------------------- shared helpers


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
        if key in tree and tree[key].shape[-1] != size:
            k = tree[key].shape[-1]
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
