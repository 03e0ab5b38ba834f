"""Normalization layers from language and vision models (the survey's Table 1, left column).

Every layer here acts on scalar node features ``x [batch, nodes, channels]`` -- the survey's
activations ``A`` of shape ``b x x v`` (b = batch, x = nodes/pixels, v = channels) -- and
returns ``y`` of the same shape and dtype. The layers differ only in the axes their
statistics reduce over:

=====================  ===============  ===========================================
layer                  reduced axes     statistics
=====================  ===============  ===========================================
batch_norm             {b, x}           mean, variance per channel (+ running)
layer_norm             {v} or {x, v}    mean, variance per node (or per graph)
instance_norm          {x}              mean, variance per sample and channel
group_norm             {x, v/g}         mean, variance per sample and channel group
filter_response_norm   {x}              mean square per sample and channel
variance_norm          {b, x}           variance per channel (+ running), no centring
=====================  ===============  ===========================================

Masking: statistics that reduce over nodes count only real nodes (``mask == True``), so
padded nodes never change the outputs of real nodes. Outputs at padded nodes are computed
with the same statistics and are finite when the inputs are.

Epsilon always sits inside the square root, next to the variance (as in Flax):
``(x - mean) / sqrt(var + epsilon)``. Statistics are computed in at least float32 and the
output is cast back to the input dtype.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from geonorm_jax.norms.base import (
    Norm,
    check_features,
    check_mask,
    masked_mean,
    masked_var,
)
from geonorm_jax.norms.catalog import NormInfo

__all__ = [
    "batch_norm",
    "layer_norm",
    "instance_norm",
    "group_norm",
    "filter_response_norm",
    "variance_norm",
    "CATALOG_ENTRIES",
]

_NODES = (1,)  # the node axis of [batch, nodes, channels]


# ----------------------------------------------------------------------------- helpers


def _stat_dtype(dtype) -> jnp.dtype:
    """Statistics in at least float32 (bfloat16/float16 inputs are upcast)."""
    return jnp.promote_types(dtype, jnp.float32)


def _check(x: Any, mask: Any = None, what: str = "features") -> None:
    check_features(x, what)
    check_mask(mask, x.shape)


def _affine_init(x: jax.Array, use_scale: bool, use_bias: bool) -> dict:
    channels = x.shape[-1]
    params = {}
    if use_scale:
        params["scale"] = jnp.ones((channels,), x.dtype)
    if use_bias:
        params["bias"] = jnp.zeros((channels,), x.dtype)
    return params


def _check_channels(tree: dict, x: jax.Array, name: str) -> None:
    channels = x.shape[-1]
    for key, leaf in tree.items():
        if key in ("scale", "bias", "tau", "mean", "var") and leaf.shape[-1] != channels:
            raise ValueError(
                f"{name}: {key!r} has {leaf.shape[-1]} channels but the features have "
                f"{channels}; expected features [batch, nodes, {leaf.shape[-1]}], "
                f"received shape {x.shape}"
            )


def _affine(y: jax.Array, params: dict) -> jax.Array:
    if "scale" in params:
        y = y * params["scale"]
    if "bias" in params:
        y = y + params["bias"]
    return y


def _batch_moments(
    x: jax.Array, mask: jax.Array | None, axis_name: Any, centered: bool = True
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-channel mean and (biased) variance over {b, x}, real nodes only.

    With ``axis_name`` the masked sums and counts are summed over devices
    (``jax.lax.psum``) before dividing, so the result is the statistic of the global batch
    however it is split. Two passes (mean first, then squared deviations), which is more
    accurate than ``E[x^2] - E[x]^2``.

    Returns ``(mean [C], var [C], count [])``; ``var`` is the mean square when
    ``centered=False`` (and ``mean`` is then 0).
    """
    if mask is None:
        m = jnp.ones(x.shape[:2] + (1,), x.dtype)
    else:
        m = mask.astype(x.dtype)[..., None]  # [batch, nodes, 1]
    count = jnp.sum(m)
    total = jnp.sum(m * x, axis=(0, 1))  # [C]
    if axis_name is not None:
        count, total = jax.lax.psum((count, total), axis_name)
    safe_count = jnp.maximum(count, 1.0)
    mean = total / safe_count if centered else jnp.zeros_like(total)
    sq = jnp.sum(m * jnp.square(x - mean), axis=(0, 1))
    if axis_name is not None:
        sq = jax.lax.psum(sq, axis_name)
    return mean, sq / safe_count, count


def _ema(old: jax.Array, new: jax.Array, momentum: float, count: jax.Array) -> jax.Array:
    """Flax convention ``ra = momentum * ra + (1 - momentum) * batch``; kept when no real node."""
    updated = momentum * old + (1.0 - momentum) * new.astype(old.dtype)
    return jnp.where(count > 0, updated, old)


# ----------------------------------------------------------------------------- BatchNorm


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
        dtype = _stat_dtype(x.dtype)
        channels = x.shape[-1]
        state = {"mean": jnp.zeros((channels,), dtype), "var": jnp.ones((channels,), dtype)}
        return _affine_init(x, use_scale, use_bias), state

    def apply(params, state, x, *, mask=None, training=False, **context):
        del context
        _check(x, mask)
        _check_channels({**params, **state}, x, "batch_norm")
        xs = x.astype(_stat_dtype(x.dtype))
        if training:
            mean, var, count = _batch_moments(xs, mask, axis_name)
            new_state = {
                "mean": _ema(state["mean"], mean, momentum, count),
                "var": _ema(state["var"], var, momentum, count),
            }
        else:
            mean, var, new_state = state["mean"], state["var"], state
        y = (xs - mean) * jax.lax.rsqrt(var + epsilon)
        return _affine(y, params).astype(x.dtype), new_state

    return Norm(init, apply, kind="features", name="batch_norm")


# ----------------------------------------------------------------------------- per-sample norms


def _per_sample_norm(
    name: str, axes: tuple[int, ...], epsilon: float, use_scale: bool, use_bias: bool
) -> Norm:
    """``(x - mean) / sqrt(var + eps)`` with statistics over ``axes`` of ``[B, N, C]``."""
    masked = 1 in axes  # statistics across nodes need the mask; per-node ones do not

    def init(key, x, **context):
        del key, context
        check_features(x)
        return _affine_init(x, use_scale, use_bias), {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training, context
        _check(x, mask)
        _check_channels(params, x, name)
        xs = x.astype(_stat_dtype(x.dtype))
        m = mask if masked else None
        mean = masked_mean(xs, m, axes)
        var = masked_var(xs, m, axes, mean)
        y = (xs - mean) * jax.lax.rsqrt(var + epsilon)
        return _affine(y, params).astype(x.dtype), state

    return Norm(init, apply, kind="features", name=name)


def layer_norm(
    *,
    epsilon: float = 1e-6,
    use_scale: bool = True,
    use_bias: bool = True,
    reduce: str = "channels",
) -> Norm:
    r"""Layer normalization (Ba, Kiros & Hinton, 2016).

    .. math::
        y = \gamma \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta

    Two readings of the reduced axes, chosen by ``reduce``:

    * ``"channels"`` (default, the original paper and ``flax.linen.LayerNorm``): each
      node's channels are normalized on their own, statistics over {v}, ``mu [B, N, 1]``.
      The mask is not needed (nothing is shared between nodes).
    * ``"nodes_channels"`` (the survey's Table 1, ``(A - mu_{x,v}) / sigma_{x,v}``): one
      mean and variance per sample over all real nodes and channels, ``mu [B, 1, 1]``.

    Shapes: ``x [batch, nodes, channels]``; ``gamma``, ``beta`` ``[channels]``. No running
    state. Epsilon is added to the variance inside the square root.

    Args:
      epsilon: added to the variance inside the square root (Flax default 1e-6).
      use_scale: learn ``gamma`` (``params["scale"]``).
      use_bias: learn ``beta`` (``params["bias"]``).
      reduce: ``"channels"`` or ``"nodes_channels"``, see above.
    """
    axes = {"channels": (2,), "nodes_channels": (1, 2)}
    if reduce not in axes:
        raise ValueError(
            f"layer_norm: reduce must be 'channels' or 'nodes_channels'; received {reduce!r}"
        )
    return _per_sample_norm("layer_norm", axes[reduce], epsilon, use_scale, use_bias)


def instance_norm(*, epsilon: float = 1e-5, use_scale: bool = True, use_bias: bool = True) -> Norm:
    r"""Instance normalization (Ulyanov, Vedaldi & Lempitsky, 2016).

    .. math::
        y_{bxv} = \gamma_v \frac{x_{bxv} - \mu_{bv}}{\sqrt{\sigma^2_{bv} + \epsilon}} + \beta_v

    Statistics per sample and per channel over the nodes {x} (real nodes only), as in the
    survey's ``(A - mu_{x}) / sigma_{x}``. On a graph this is GraphNorm without the learned
    mean shift. Shapes: ``x [batch, nodes, channels]``, ``mu [batch, 1, channels]``,
    ``gamma``, ``beta`` ``[channels]``. No running state. Epsilon inside the square root.
    """
    return _per_sample_norm("instance_norm", _NODES, epsilon, use_scale, use_bias)


def group_norm(
    *,
    num_groups: int = 32,
    epsilon: float = 1e-6,
    use_scale: bool = True,
    use_bias: bool = True,
) -> Norm:
    r"""Group normalization (Wu & He, ECCV 2018).

    The channels are split into ``num_groups`` contiguous groups of ``channels / num_groups``;
    each sample and group is normalized with statistics over the real nodes and the
    group's channels (the survey's {x, v/g}):

    .. math::
        y = \gamma \frac{x - \mu_{\{x, v/g\}}}{\sqrt{\sigma^2_{\{x, v/g\}} + \epsilon}} + \beta

    ``num_groups=1`` is the survey's LayerNorm reading ({x, v}); ``num_groups=channels`` is
    InstanceNorm. Shapes: ``x [batch, nodes, channels]`` viewed as
    ``[batch, nodes, groups, channels/groups]``; ``mu [batch, 1, groups, 1]``; ``gamma``,
    ``beta`` ``[channels]``. No running state. Epsilon inside the square root.

    Raises:
      ValueError: if ``channels`` is not divisible by ``num_groups`` (both are named).
    """
    if num_groups < 1:
        raise ValueError(f"group_norm: num_groups must be >= 1; received {num_groups}")

    def _check_groups(x):
        channels = x.shape[-1]
        if channels % num_groups:
            raise ValueError(
                f"group_norm: the number of channels ({channels}) must be divisible by "
                f"num_groups ({num_groups}); received features of shape {x.shape}"
            )

    def init(key, x, **context):
        del key, context
        check_features(x)
        _check_groups(x)
        return _affine_init(x, use_scale, use_bias), {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training, context
        _check(x, mask)
        _check_groups(x)
        _check_channels(params, x, "group_norm")
        b, n, c = x.shape
        xs = x.astype(_stat_dtype(x.dtype)).reshape(b, n, num_groups, c // num_groups)
        mean = masked_mean(xs, mask, (1, 3))  # [B, 1, G, 1]
        var = masked_var(xs, mask, (1, 3), mean)
        y = ((xs - mean) * jax.lax.rsqrt(var + epsilon)).reshape(b, n, c)
        return _affine(y, params).astype(x.dtype), state

    return Norm(init, apply, kind="features", name="group_norm")


# ----------------------------------------------------------------------------- FRN


def filter_response_norm(
    *,
    epsilon: float = 1e-6,
    use_scale: bool = True,
    use_bias: bool = True,
    use_tlu: bool = True,
    learned_epsilon: bool = False,
) -> Norm:
    r"""Filter response normalization with a thresholded linear unit (Singh & Krishnan, 2020).

    .. math::
        \nu^2 = \frac{1}{|x|} \sum_{x} x^2, \qquad
        y = \max\Big(\gamma \frac{x}{\sqrt{\nu^2 + \epsilon}} + \beta,\; \tau\Big)

    No mean is subtracted: ``nu^2`` is the mean square per sample and channel over the real
    nodes {x}, the survey's ``A / RMS_{x}`` (the survey omits the affine map and the TLU).
    Shapes: ``x [batch, nodes, channels]``, ``nu2 [batch, 1, channels]``; ``gamma``,
    ``beta``, ``tau`` ``[channels]``. No running state.

    Args:
      epsilon: added to ``nu^2`` inside the square root.
      use_scale: learn ``gamma`` (init 1).
      use_bias: learn ``beta`` (init 0).
      use_tlu: apply the thresholded linear unit ``max(y, tau)`` with a learned ``tau``
        (init 0, so it starts as a ReLU after the affine map). Without it the layer is
        FRN alone.
      learned_epsilon: as in the paper (for layers with few nodes), add a learned
        ``|eps_l|`` to ``epsilon``: the effective epsilon is ``epsilon + |eps_l|`` with
        ``params["eps"]`` a scalar initialised to 1e-4.
    """

    def init(key, x, **context):
        del key, context
        check_features(x)
        params = _affine_init(x, use_scale, use_bias)
        if use_tlu:
            params["tau"] = jnp.zeros((x.shape[-1],), x.dtype)
        if learned_epsilon:
            params["eps"] = jnp.asarray(1e-4, x.dtype)
        return params, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training, context
        _check(x, mask)
        _check_channels(params, x, "filter_response_norm")
        xs = x.astype(_stat_dtype(x.dtype))
        nu2 = masked_mean(jnp.square(xs), mask, _NODES)  # [B, 1, C]
        eps = epsilon + jnp.abs(params["eps"]) if learned_epsilon else epsilon
        y = _affine(xs * jax.lax.rsqrt(nu2 + eps), params)
        if use_tlu:
            y = jnp.maximum(y, params["tau"])
        return y.astype(x.dtype), state

    return Norm(init, apply, kind="features", name="filter_response_norm")


# ----------------------------------------------------------------------------- VarianceNorm


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
        state = {"var": jnp.ones((x.shape[-1],), _stat_dtype(x.dtype))}
        return _affine_init(x, use_scale, use_bias), state

    def apply(params, state, x, *, mask=None, training=False, **context):
        del context
        _check(x, mask)
        _check_channels({**params, **state}, x, "variance_norm")
        xs = x.astype(_stat_dtype(x.dtype))
        if training:
            _, var, count = _batch_moments(xs, mask, axis_name, centered=centered)
            new_state = {"var": _ema(state["var"], var, momentum, count)}
        else:
            var, new_state = state["var"], state
        y = xs * jax.lax.rsqrt(var + epsilon)
        return _affine(y, params).astype(x.dtype), new_state

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
    ),
    NormInfo(
        name="layer_norm",
        constructor=layer_norm,
        kind="features",
        paper="Ba, Kiros & Hinton, Layer Normalization, arXiv:1607.06450, 2016",
        formula="(A - mu_{x,v}) / sigma_{x,v}",
        reduced_axes="v",
        params=("scale", "bias"),
        family=_FAMILY,
        survey_row="LayerNorm [7]",
        notes="Default follows the paper (per node over channels, {v}); the survey writes "
        "{x,v}, available as reduce='nodes_channels' (catalogue entry layer_norm_graph).",
    ),
    NormInfo(
        name="layer_norm_graph",
        constructor=layer_norm,
        kind="features",
        paper="Ba, Kiros & Hinton, Layer Normalization, arXiv:1607.06450, 2016",
        formula="(A - mu_{x,v}) / sigma_{x,v}",
        reduced_axes="x,v",
        params=("scale", "bias"),
        family=_FAMILY,
        kwargs={"reduce": "nodes_channels"},
        survey_row="LayerNorm [7]",
        notes="The survey's reading of LayerNorm: one mean/variance per graph over all real "
        "nodes and channels.",
    ),
    NormInfo(
        name="instance_norm",
        constructor=instance_norm,
        kind="features",
        paper="Ulyanov, Vedaldi & Lempitsky, Instance Normalization, arXiv:1607.08022, 2016",
        formula="(A - mu_{x}) / sigma_{x}",
        reduced_axes="x",
        params=("scale", "bias"),
        family=_FAMILY,
        survey_row="InstanceNorm [10]",
    ),
    NormInfo(
        name="group_norm",
        constructor=group_norm,
        kind="features",
        paper="Wu & He, Group Normalization, ECCV 2018",
        formula="(A - mu_{x,v/g}) / sigma_{x,v/g}",
        reduced_axes="x,v/g",
        params=("scale", "bias"),
        family=_FAMILY,
        kwargs={"num_groups": 4},
        survey_row="GroupNorm [12]",
        notes="Catalogue entry uses num_groups=4 so it fits small hidden sizes; channels "
        "must be divisible by num_groups.",
    ),
    NormInfo(
        name="filter_response_norm",
        constructor=filter_response_norm,
        kind="features",
        paper="Singh & Krishnan, Filter Response Normalization Layer, CVPR 2020",
        formula="A / RMS_{x}",
        reduced_axes="x",
        params=("scale", "bias", "tau"),
        family=_FAMILY,
        survey_row="FilterResponseNorm [14]",
        notes="Includes the paper's affine map and TLU max(y, tau) (use_tlu=False drops it); "
        "learned_epsilon=True adds the paper's learned |eps|.",
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
    ),
]
