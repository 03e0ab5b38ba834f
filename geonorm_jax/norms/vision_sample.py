"""LayerNorm, InstanceNorm, GroupNorm and FRN: feature norms with per-sample statistics.

The rows of the survey's Table 1 (Aalto et al.), language/vision column, whose statistics
stay inside one sample: scalar node features ``x [batch, nodes, channels]`` (the survey's
``b x x v``) are normalized with statistics over the channels {v}, the nodes {x}, both, or
the nodes and a group of channels {x, v/g}. No running state: training and evaluation
compute the same thing.

Masking: statistics that reduce over nodes count only real nodes (``mask == True``), so
padded nodes never change the outputs of real nodes. Epsilon sits inside the square root,
next to the variance (as in Flax). Statistics are computed in at least float32 and the
output is cast back to the input dtype.

BatchNorm and VarianceNorm (statistics over the batch) live in
:mod:`geonorm_jax.norms.vision_batch`; :mod:`geonorm_jax.norms.vision` re-exports both.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from geonorm_jax.geometry import magnitude_scale
from geonorm_jax.norms.base import (
    Norm,
    NormInfo,
    affine,
    affine_params,
    check_hyperparameters,
    check_param_sizes,
    feature_graphs,
    graph_mean,
    graph_scale,
    stat_dtype,
    zero_padding,
)

__all__ = [
    "layer_norm",
    "instance_norm",
    "group_norm",
    "filter_response_norm",
    "CATALOG_ENTRIES",
]

_NODES = (1,)  # the node axis of [batch, nodes, channels]
_PER_CHANNEL = ("scale", "bias", "tau")  # parameters of shape [channels]


# ----------------------------------------------------------------------------- per-sample norms


def _standardize(xs, graphs, over_nodes: bool, trailing: tuple[int, ...], epsilon: float):
    """``(x - mean) / sqrt(var + eps)`` over the real nodes of each graph (``over_nodes``)
    and the ``trailing`` axes; overflow-safe: ``x`` is divided by a power of two ``s`` when
    outside ``2**+-50`` (and ``eps`` by ``s**2``), which changes no bit otherwise."""
    if over_nodes:
        s = graph_scale(xs, graphs, trailing, epsilon)
        xs = xs / s
        mean = graph_mean(xs, graphs, trailing)
        var = graph_mean(jnp.square(xs - mean), graphs, trailing)
    else:
        top = jnp.max(jnp.abs(xs), axis=trailing, keepdims=True, initial=0.0)
        s = magnitude_scale(top, epsilon**0.5)
        xs = xs / s
        mean = jnp.mean(xs, axis=trailing, keepdims=True)
        var = jnp.mean(jnp.square(xs - mean), axis=trailing, keepdims=True)
    return (xs - mean) * jax.lax.rsqrt(var + epsilon / jnp.square(s))


def _per_sample_norm(
    name: str, axes: tuple[int, ...], epsilon: float, use_scale: bool, use_bias: bool
) -> Norm:
    """``(x - mean) / sqrt(var + eps)`` with statistics over ``axes`` of ``[B, N, C]`` (in
    the flat layout ``[T, C]``, the nodes of each graph stand for axis 1)."""
    over_nodes = 1 in axes  # statistics across nodes need the mask; per-node ones do not
    trailing = tuple(a - 3 for a in axes if a != 1)  # channel axis as -1

    def init(key, x, **context):
        del key
        feature_graphs(x, None, context)
        return affine_params(x.shape[-1], use_scale, use_bias, x.dtype), {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training
        graphs = feature_graphs(x, mask, context)
        check_param_sizes(params, x, name, _PER_CHANNEL)
        xs = zero_padding(x.astype(stat_dtype(x.dtype)), graphs)
        y = _standardize(xs, graphs, over_nodes, trailing, epsilon)
        return affine(y, params).astype(x.dtype), state

    return Norm(init, apply, kind="features", name=name)


@check_hyperparameters
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

    Flat layout (jraph / e3nn-jax / PyG): ``x [total_nodes, channels]`` with
    ``segment_ids=[total_nodes]`` and a static ``num_graphs=``, or ``n_node=[num_graphs]``
    (padding graphs are graphs like any other; ``mask=[total_nodes]`` optional); the
    statistics are then per graph (``jax.ops.segment_sum``), equal to the padded layout's
    (:func:`geonorm_jax.norms.base.graph_layout`).
    """
    axes = {"channels": (2,), "nodes_channels": (1, 2)}
    if reduce not in axes:
        raise ValueError(
            f"layer_norm: reduce must be 'channels' or 'nodes_channels'; received {reduce!r}"
        )
    return _per_sample_norm("layer_norm", axes[reduce], epsilon, use_scale, use_bias)


@check_hyperparameters
def instance_norm(*, epsilon: float = 1e-5, use_scale: bool = True, use_bias: bool = True) -> Norm:
    r"""Instance normalization (Ulyanov, Vedaldi & Lempitsky, 2016).

    .. math::
        y_{bxv} = \gamma_v \frac{x_{bxv} - \mu_{bv}}{\sqrt{\sigma^2_{bv} + \epsilon}} + \beta_v

    Statistics per sample and per channel over the nodes {x} (real nodes only), as in the
    survey's ``(A - mu_{x}) / sigma_{x}``. On a graph this is GraphNorm without the learned
    mean shift. Shapes: ``x [batch, nodes, channels]``, ``mu [batch, 1, channels]``,
    ``gamma``, ``beta`` ``[channels]``. No running state. Epsilon inside the square root.

    Flat layout (jraph / e3nn-jax / PyG): ``x [total_nodes, channels]`` with
    ``segment_ids=[total_nodes]`` and a static ``num_graphs=``, or ``n_node=[num_graphs]``
    (padding graphs are graphs like any other; ``mask=[total_nodes]`` optional); the
    statistics are then per graph (``jax.ops.segment_sum``), equal to the padded layout's
    (:func:`geonorm_jax.norms.base.graph_layout`).
    """
    return _per_sample_norm("instance_norm", _NODES, epsilon, use_scale, use_bias)


@check_hyperparameters
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

    Flat layout (jraph / e3nn-jax / PyG): ``x [total_nodes, channels]`` with
    ``segment_ids=[total_nodes]`` and a static ``num_graphs=``, or ``n_node=[num_graphs]``
    (padding graphs are graphs like any other; ``mask=[total_nodes]`` optional); the
    statistics are then per graph (``jax.ops.segment_sum``), equal to the padded layout's
    (:func:`geonorm_jax.norms.base.graph_layout`).
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
        del key
        feature_graphs(x, None, context)
        _check_groups(x)
        return affine_params(x.shape[-1], use_scale, use_bias, x.dtype), {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training
        graphs = feature_graphs(x, mask, context)
        _check_groups(x)
        check_param_sizes(params, x, "group_norm", _PER_CHANNEL)
        c = x.shape[-1]
        xs = zero_padding(x.astype(stat_dtype(x.dtype)), graphs)
        xs = xs.reshape(x.shape[:-1] + (num_groups, c // num_groups))  # [B, N, G, C/G]
        y = _standardize(xs, graphs, True, (-1,), epsilon).reshape(x.shape)
        return affine(y, params).astype(x.dtype), state

    return Norm(init, apply, kind="features", name="group_norm")


# ----------------------------------------------------------------------------- FRN


@check_hyperparameters
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

    Flat layout (jraph / e3nn-jax / PyG): ``x [total_nodes, channels]`` with
    ``segment_ids=[total_nodes]`` and a static ``num_graphs=``, or ``n_node=[num_graphs]``
    (padding graphs are graphs like any other; ``mask=[total_nodes]`` optional); the
    statistics are then per graph (``jax.ops.segment_sum``), equal to the padded layout's
    (:func:`geonorm_jax.norms.base.graph_layout`).
    """

    def init(key, x, **context):
        del key
        feature_graphs(x, None, context)
        params = affine_params(x.shape[-1], use_scale, use_bias, x.dtype)
        if use_tlu:
            params["tau"] = jnp.zeros((x.shape[-1],), x.dtype)
        if learned_epsilon:
            params["eps"] = jnp.asarray(1e-4, x.dtype)
        return params, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training
        graphs = feature_graphs(x, mask, context)
        check_param_sizes(params, x, "filter_response_norm", _PER_CHANNEL)
        xs = zero_padding(x.astype(stat_dtype(x.dtype)), graphs)
        s = graph_scale(xs, graphs, (), epsilon)  # [B, 1, C]: 1 at ordinary magnitudes
        xs = xs / s
        nu2 = graph_mean(jnp.square(xs), graphs)  # [B, 1, C]
        eps = epsilon + jnp.abs(params["eps"]) if learned_epsilon else epsilon
        y = affine(xs * jax.lax.rsqrt(nu2 + eps / jnp.square(s)), params)
        if use_tlu:
            y = jnp.maximum(y, params["tau"])
        return y.astype(x.dtype), state

    return Norm(init, apply, kind="features", name="filter_response_norm")


# ----------------------------------------------------------------------------- catalogue

_FAMILY = "language/vision"

CATALOG_ENTRIES: list[NormInfo] = [
    NormInfo(
        name="layer_norm",
        layouts=("padded", "flat"),
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
        symmetries=("permutation", "batch"),
        order=2,
    ),
    NormInfo(
        name="layer_norm_graph",
        layouts=("padded", "flat"),
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
        symmetries=("permutation", "batch"),
        order=3,
    ),
    NormInfo(
        name="instance_norm",
        layouts=("padded", "flat"),
        constructor=instance_norm,
        kind="features",
        paper="Ulyanov, Vedaldi & Lempitsky, Instance Normalization, arXiv:1607.08022, 2016",
        formula="(A - mu_{x}) / sigma_{x}",
        reduced_axes="x",
        params=("scale", "bias"),
        family=_FAMILY,
        survey_row="InstanceNorm [10]",
        symmetries=("permutation", "batch"),
        order=4,
    ),
    NormInfo(
        name="group_norm",
        layouts=("padded", "flat"),
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
        symmetries=("permutation", "batch"),
        order=5,
    ),
    NormInfo(
        name="filter_response_norm",
        layouts=("padded", "flat"),
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
        symmetries=("permutation", "batch"),
        order=6,
    ),
]
