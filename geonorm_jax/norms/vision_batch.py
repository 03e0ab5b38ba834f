"""BatchNorm and VarianceNorm: feature norms with statistics over the batch and the nodes.

The two rows of the survey's Table 1 (Aalto et al.) whose statistics reduce over {b, x}
(b = batch, x = nodes): one mean and/or variance per channel of scalar node features
``x [batch, nodes, channels]``, estimated from the real nodes of the whole batch while
training and replaced by running averages in evaluation. Both keep running state
(``mean``/``var`` ``[channels]``) and accept ``axis_name`` for a batch split across devices.

The per-sample norms of the same column (LayerNorm, InstanceNorm, GroupNorm, FRN) live in
:mod:`geonorm_jax.norms.vision_sample`; :mod:`geonorm_jax.norms.vision` re-exports both.

Epsilon always sits inside the square root, next to the variance (as in Flax). Statistics
are computed in at least float32 and the output is cast back to the input dtype.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from geonorm_jax.geometry import magnitude_scale
from geonorm_jax.norms.base import (
    Norm,
    NormInfo,
    affine,
    affine_params,
    check_features,
    check_hyperparameters,
    check_node_features,
    check_param_sizes,
    stat_dtype,
    zero_padding,
)

__all__ = ["batch_norm", "variance_norm", "CATALOG_ENTRIES"]

_PER_CHANNEL = ("scale", "bias", "mean", "var")  # entries of shape [channels]


# ----------------------------------------------------------------------------- helpers


def _batch_moments(
    x: jax.Array, mask: jax.Array | None, axis_name: Any, centered: bool = True,
    epsilon: float = 0.0,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
    """Per-channel mean and (biased) variance over {b, x}, real nodes only, of ``x / s``.

    ``s [C]`` is a power of two (:func:`geonorm_jax.geometry.magnitude_scale` of the largest
    real ``|x|`` per channel, floored at ``sqrt(epsilon)``): 1 at ordinary magnitudes, so
    the squares of inputs near 1e30 do not overflow float32. With ``axis_name`` the masked
    sums, counts and maxima are reduced over devices (``psum``/``pmax``) before dividing, so
    the result is the statistic of the global batch however it is split. Two passes (mean
    first, then squared deviations), which is more accurate than ``E[x^2] - E[x]^2``.
    Padded nodes are excluded by selection: NaN or inf there changes nothing.

    Returns ``(mean [C], var [C], count [], s [C], x / s)``: the statistics of ``x / s``
    (those of ``x`` are ``s mean`` and ``s**2 var``), and ``x / s`` itself for the caller
    to normalize; ``var`` is the mean square when ``centered=False`` (``mean`` is then 0).
    """
    if mask is None:
        m = jnp.ones(x.shape[:2] + (1,), x.dtype)
    else:
        m = mask.astype(x.dtype)[..., None]  # [batch, nodes, 1]
        x = jnp.where(mask[..., None], x, 0.0)
    count = jnp.sum(m)
    maxabs = jnp.max(jnp.abs(x), axis=(0, 1), initial=0.0)  # [C]
    if axis_name is not None:
        maxabs = jax.lax.pmax(maxabs, axis_name)
    s = magnitude_scale(maxabs, epsilon**0.5)
    x = x / s
    total = jnp.sum(m * x, axis=(0, 1))  # [C]
    if axis_name is not None:
        count, total = jax.lax.psum((count, total), axis_name)
    safe_count = jnp.maximum(count, 1.0)
    mean = total / safe_count if centered else jnp.zeros_like(total)
    sq = jnp.sum(m * jnp.square(x - mean), axis=(0, 1))
    if axis_name is not None:
        sq = jax.lax.psum(sq, axis_name)
    return mean, sq / safe_count, count, s, x


def _ema(old: jax.Array, new: jax.Array, momentum: float, count: jax.Array) -> jax.Array:
    """Flax convention ``ra = momentum * ra + (1 - momentum) * batch``; kept when no real node."""
    updated = momentum * old + (1.0 - momentum) * new.astype(old.dtype)
    return jnp.where(count > 0, updated, old)


# ----------------------------------------------------------------------------- BatchNorm


@check_hyperparameters
def batch_norm(
    *,
    momentum: float = 0.99,
    epsilon: float = 1e-5,
    use_scale: bool = True,
    use_bias: bool = True,
    axis_name: Any = None,
) -> Norm:
    r"""Batch normalization (Ioffe & Szegedy, ICML 2015).

    .. math::
        y = \gamma \frac{x - \mu_{\{b,x\}}}{\sqrt{\sigma^2_{\{b,x\}} + \epsilon}} + \beta

    The survey writes ``(A - mu_{b,x}) / sigma_{b,x}``: per channel, statistics over the
    batch and the nodes (real nodes only when masked).

    Shapes: ``x [batch, nodes, channels]``; ``gamma``, ``beta``, running ``mean``/``var``
    ``[channels]``.

    Training (``training=True``) normalizes with the batch statistics and returns the
    updated running statistics ``ra = momentum * ra + (1 - momentum) * batch`` (Flax's
    convention; the biased variance is stored, as in Flax). Evaluation uses the running
    statistics and returns the state unchanged. A batch without a real node leaves the
    running statistics unchanged.

    Args:
      momentum: decay of the running averages.
      epsilon: added to the variance inside the square root.
      use_scale: learn ``gamma`` (``params["scale"]``, init 1).
      use_bias: learn ``beta`` (``params["bias"]``, init 0).
      axis_name: a mapped axis (``jax.pmap``/``vmap``/``shard_map``) over which the batch
        is split; masked sums and counts are summed across it, so the statistics equal
        those of the unsplit global batch.
    """

    def init(key, x, **context):
        del key, context
        check_features(x)
        dtype = stat_dtype(x.dtype)
        channels = x.shape[-1]
        state = {"mean": jnp.zeros((channels,), dtype), "var": jnp.ones((channels,), dtype)}
        return affine_params(x.shape[-1], use_scale, use_bias, x.dtype), state

    def apply(params, state, x, *, mask=None, training=False, **context):
        del context
        check_node_features(x, mask)
        check_param_sizes({**params, **state}, x, "batch_norm", _PER_CHANNEL)
        xs = zero_padding(x.astype(stat_dtype(x.dtype)), mask)
        if training:
            mean, var, count, s, xs = _batch_moments(xs, mask, axis_name, epsilon=epsilon)
            new_state = {
                "mean": _ema(state["mean"], mean * s, momentum, count),
                "var": _ema(state["var"], var * jnp.square(s), momentum, count),
            }
            y = (xs - mean) * jax.lax.rsqrt(var + epsilon / jnp.square(s))
        else:
            new_state = state
            y = (xs - state["mean"]) * jax.lax.rsqrt(state["var"] + epsilon)
        return affine(y, params).astype(x.dtype), new_state

    return Norm(init, apply, kind="features", name="batch_norm")




# ----------------------------------------------------------------------------- VarianceNorm


@check_hyperparameters
def variance_norm(
    *,
    momentum: float = 0.99,
    epsilon: float = 1e-5,
    use_scale: bool = True,
    use_bias: bool = False,
    centered: bool = True,
    axis_name: Any = None,
) -> Norm:
    r"""Variance normalization: BatchNorm without the mean subtraction.

    .. math::
        y = \gamma \frac{x}{\sqrt{\sigma^2_{\{b,x\}} + \epsilon}} (+ \beta)

    The survey's Table 1 writes ``A / sigma_{b,x}`` and cites Daneshmand, Kohler, Bach,
    Hofmann & Lucchi, "Batch normalization provably avoids rank collapse for randomly
    initialised deep networks" (NeurIPS 2020), whose analysed BatchNorm divides each
    channel by its root mean square over the batch, without centring. Two readings:

    * ``centered=True`` (default, the survey's formula): ``sigma^2`` is the variance
      ``mean((x - mu)^2)`` over {b, x}; the mean is used for the variance but not
      subtracted from ``x``.
    * ``centered=False`` (Daneshmand et al.): ``sigma^2`` is the mean square ``mean(x^2)``.

    Running state (our choice; neither source fixes it): like BatchNorm, a running
    ``var [channels]`` updated ``ra = momentum * ra + (1 - momentum) * batch`` when
    ``training=True`` and used when ``training=False``, so evaluation does not depend on
    the other samples of the batch. ``use_bias`` defaults to False because the layer
    exists to keep the mean; ``axis_name`` works as in :func:`batch_norm`.

    Shapes: ``x [batch, nodes, channels]``; ``gamma``, ``beta``, ``var`` ``[channels]``.
    Epsilon is added to the variance inside the square root.
    """

    def init(key, x, **context):
        del key, context
        check_features(x)
        state = {"var": jnp.ones((x.shape[-1],), stat_dtype(x.dtype))}
        return affine_params(x.shape[-1], use_scale, use_bias, x.dtype), state

    def apply(params, state, x, *, mask=None, training=False, **context):
        del context
        check_node_features(x, mask)
        check_param_sizes({**params, **state}, x, "variance_norm", _PER_CHANNEL)
        xs = zero_padding(x.astype(stat_dtype(x.dtype)), mask)
        if training:
            _, var, count, s, xs = _batch_moments(xs, mask, axis_name, centered, epsilon)
            new_state = {"var": _ema(state["var"], var * jnp.square(s), momentum, count)}
            y = xs * jax.lax.rsqrt(var + epsilon / jnp.square(s))
        else:
            new_state = state
            y = xs * jax.lax.rsqrt(state["var"] + epsilon)
        return affine(y, params).astype(x.dtype), new_state

    return Norm(init, apply, kind="features", name="variance_norm")




# ----------------------------------------------------------------------------- catalogue

_FAMILY = "language/vision"

CATALOG_ENTRIES: list[NormInfo] = [
    NormInfo(
        name="batch_norm",
        constructor=batch_norm,
        kind="features",
        paper="Ioffe & Szegedy, Batch Normalization, ICML 2015",
        formula="(A - mu_{b,x}) / sigma_{b,x}",
        reduced_axes="b,x",
        params=("scale", "bias"),
        running_state=("mean", "var"),
        family=_FAMILY,
        survey_row="BN [1]",
        notes="Running stats follow Flax (biased variance, ra = m*ra + (1-m)*batch). "
        "axis_name sums masked sums and counts across devices.",
        symmetries=("permutation",),
        order=1,
    ),
    NormInfo(
        name="variance_norm",
        constructor=variance_norm,
        kind="features",
        paper="Daneshmand, Kohler, Bach, Hofmann & Lucchi, Batch normalization provably "
        "avoids rank collapse for randomly initialised deep networks, NeurIPS 2020",
        formula="A / sigma_{b,x}",
        reduced_axes="b,x",
        params=("scale",),
        running_state=("var",),
        family=_FAMILY,
        survey_row="VarianceNorm [2]",
        notes="No mean subtraction. centered=True (survey): divide by the std over {b,x}; "
        "centered=False (Daneshmand et al.): by the RMS. Running variance like BatchNorm "
        "(our choice).",
        symmetries=("permutation",),
        order=7,
    ),
]
