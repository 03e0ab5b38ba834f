"""Rotation-equivariant normalization of vector (and higher-order) node features.

The survey's Table 1 rows for geometric data, acting on ``kind="vectors"``:

* :func:`rms_vector_norm`: Quaternion [Shen et al. 2020] and Vector Perceptron / GVP
  [Jing et al. 2021] / EGAN [Le et al. 2022]: ``A / RMS``.
* :func:`vector_neuron_batch_norm`: Vector Neurons [Deng et al. 2021]: BatchNorm of the
  vector norms, applied along each vector's direction.
* :func:`ev_norm`: EvNorm of UNiTE [Qiao et al. 2021]: standardized norms times
  ``v / (||v|| + beta)``.

Layouts. Raw vectors ``[batch, nodes, channels, 3]``, or an ``e3nn.IrrepsArray``
``[batch, nodes, irreps]`` of any ``l`` and parity, with ``mask [batch, nodes]`` (this
library's padded layout); or e3nn-jax's and jraph's flat layout, ``[num_nodes, channels, 3]``
or ``[num_nodes, irreps]`` with ``segment_ids=`` + ``num_graphs=`` or ``n_node=`` and ``mask
[num_nodes]`` (:func:`geonorm_jax.norms.base.graph_layout`; per-graph statistics by
``jax.ops.segment_sum``, batch statistics over every real node, so jraph's padding graph must
be marked by the mask for :func:`vector_neuron_batch_norm`). For an IrrepsArray each ``mul x
ir`` chunk ``[..., mul, 2l+1]`` is normalized separately, its ``mul`` copies playing the role of
channels and its ``2l+1`` components the role of ``d``; the output has the same irreps.
Scalars (``l = 0``) are by default treated like any other irrep (their "norm" is ``|s|``,
which is invariant for ``0e`` and ``0o`` alike); ``scalars="identity"`` passes them through.
Per-channel parameters have one entry per channel (``C``, or ``irreps.num_irreps`` for an
IrrepsArray, in chunk order).

All three layers use only invariant statistics (norms), so they commute with every
orthogonal matrix (rotations and reflections). They do not touch translations: vector
features are differences or velocities, not positions.

Each layer is a block function on ``[batch, nodes, channels, dim]`` plugged into the same
IrrepsArray plumbing (input checks, channel counts, the per-chunk split), which lives in
:mod:`geonorm_jax.norms.vector_common` and gives them their layouts.

Numerics and padding: squared statistics divide their inputs by a power of two first when
their magnitude is outside ``2**-50 .. 2**50`` (:func:`geonorm_jax.geometry.magnitude_scale`;
bit-for-bit unchanged otherwise), so every layer is right in float32 from 1e-30 to 1e30;
padded nodes are excluded by selection, so NaN or inf there reaches neither a real output
nor a gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from geonorm_jax import geometry
from geonorm_jax.norms.base import (
    Norm,
    NormInfo,
    check_hyperparameters,
    graph_count,
    graph_scale,
    graph_sum,
    zero_padding,
)
from geonorm_jax.norms.vector_common import (
    _along,
    _check_scalars,
    _scale,
    _vector_layer,
)

__all__ = [
    "rms_vector_norm",
    "vector_neuron_batch_norm",
    "ev_norm",
    "CATALOG_ENTRIES",
]

# --------------------------------------------------------------------------------------------
# RMS vector norm: Quaternion / GVP / EGAN
# --------------------------------------------------------------------------------------------


@check_hyperparameters
def rms_vector_norm(
    *,
    reduce: str = "channels",
    epsilon: float = 1e-8,
    use_scale: bool = False,
    scalars: str = "same",
    name: str = "rms_vector_norm",
) -> Norm:
    """Divide vector features by their root-mean-square norm (GVP / Quaternion / EGAN).

    .. math::

        y_{x c} = \\gamma_c \\frac{V_{x c}}{\\sqrt{\\operatorname{mean}_{c'} \\|V_{x c'}\\|_2^2
        + \\epsilon}} \\quad (\\texttt{reduce="channels"})

    with the mean also over the real nodes of each graph for ``reduce="nodes_channels"``.

    Papers: Jing et al. 2021, *Learning from protein structure with geometric vector
    perceptrons* (GVP): "the vector features are scaled by the root-mean-square norm", per
    node over the vector channels (the reference ``gvp-pytorch`` LayerNorm does
    ``V / sqrt(mean_c max(||V_c||^2, 1e-8))``, and LayerNorms the scalars separately, which
    here is a separate feature norm). Le et al. 2022 (EGAN) use the same layer. Shen et al.
    2020, *3D-rotation-equivariant quaternion neural networks*: the same form, which the
    survey notes is identical.

    Survey (Table 1): ``A / RMS_{x,v}`` for both rows, i.e. statistics over nodes *and*
    channels. The GVP code reduces over channels only (``{v, d}``); that is the default
    here, and ``reduce="nodes_channels"`` gives the survey's subscripts (``{x, v, d}``, real
    nodes only). We could not verify from the Quaternion paper's text which axes its
    normalization reduces; the catalogue entry ``quaternion_rms_norm`` follows the survey's
    ``{x, v}``, ``gvp_vector_layer_norm`` follows the GVP code.

    Args:
      reduce: ``"channels"`` (per node; GVP) or ``"nodes_channels"`` (per graph; survey).
      epsilon: added to the mean squared norm under the square root (GVP instead clamps
        each ``||V_c||^2`` from below at 1e-8). Zero vectors map to zero, with finite
        gradients.
      use_scale: learn a per-channel scale ``scale`` ``[C]`` (ones at init). GVP has none.
      scalars: for an IrrepsArray, ``"same"`` (treat ``l = 0`` like the other irreps) or
        ``"identity"`` (pass them through).
      name: the catalogue name carried by the returned ``Norm``.

    Shapes: ``[batch, nodes, channels, 3]`` or IrrepsArray ``[batch, nodes, irreps]`` (padded,
    this library's layout), or ``[num_nodes, channels, 3]`` / ``[num_nodes, irreps]`` with
    ``segment_ids=`` + ``num_graphs=`` or ``n_node=`` (flat, e3nn-jax's and jraph's); same
    shape and dtype out. No running state, no context.
    """
    if reduce not in ("channels", "nodes_channels"):
        raise ValueError(f"reduce: expected 'channels' or 'nodes_channels'; received {reduce!r}")
    _check_scalars(scalars)

    def block(params, state, v, graphs, training):
        del training
        if reduce == "channels":  # per node
            s = _scale(v, (-2, -1), epsilon)[..., 0]  # [..., 1]; 1 normally
        else:  # per graph: [B, 1, 1] padded, [num_nodes, 1] flat
            s = graph_scale(v, graphs, (-2, -1), epsilon)[..., 0]
        sq = jnp.sum(jnp.square(v / s[..., None]), axis=-1)  # [..., C] squared norms
        if reduce == "channels":
            ms = jnp.mean(sq, axis=-1, keepdims=True)  # [..., 1]
        else:
            ms = graph_sum(sq, graphs, (-1,)) / graph_count(sq, graphs, (-1,))
        y = v / s[..., None] * jax.lax.rsqrt(ms + epsilon / jnp.square(s))[..., None]
        if use_scale:
            y = y * params["scale"].astype(v.dtype)[:, None]
        return y.astype(v.dtype), state

    def params_of(c, dt):
        return {"scale": jnp.ones((c,), dt)} if use_scale else {}

    return _vector_layer(name, block, scalars, params_of)


# --------------------------------------------------------------------------------------------
# Vector Neuron BatchNorm
# --------------------------------------------------------------------------------------------


@check_hyperparameters
def vector_neuron_batch_norm(
    *,
    momentum: float = 0.99,
    epsilon: float = 1e-5,
    norm_epsilon: float = 1e-6,
    use_scale: bool = True,
    use_bias: bool = True,
    axis_name: str | None = None,
    scalars: str = "same",
) -> Norm:
    """Vector Neuron BatchNorm (Deng et al. 2021, *Vector Neurons*, Sec. 3.4).

    .. math::

        n_{bxc} = \\|V_{bxc}\\|_2, \\qquad
        \\hat n_{bxc} = \\gamma_c \\frac{n_{bxc} - \\mu_c}{\\sqrt{\\sigma_c^2 + \\epsilon}}
        + \\beta_c, \\qquad
        y_{bxc} = V_{bxc} \\frac{\\hat n_{bxc}}{n_{bxc} + \\epsilon_n}

    ``mu_c``, ``sigma_c^2``: mean and biased variance of the norms of channel ``c`` over the
    batch and the real nodes (``{b, x}``), as BatchNorm does; with ``training=False`` the
    running averages are used instead. The survey (Table 1) writes it as
    ``(A^pos / ||A^pos||_2, BN(A^inv))``: the direction of each vector times the
    batch-normalized norm, which is this layer. As in the authors' code
    (``x / (||x|| + EPS) * BN(||x||)``, EPS = 1e-6), the direction is
    ``V / (||V|| + norm_epsilon)``, so zero vectors give zero output with finite gradients;
    ``epsilon`` goes under the square root of the variance.

    Args:
      momentum: running statistics ``r <- momentum r + (1 - momentum) batch`` (flax's
        convention), updated only when ``training=True``.
      epsilon: variance epsilon.
      norm_epsilon: added to ``||V||`` in the direction (see above).
      use_scale, use_bias: BatchNorm's affine ``gamma_c`` (``scale``, ones) and ``beta_c``
        (``bias``, zeros), shape ``[C]``.
      axis_name: if set, statistics are also averaged over this ``pmap``/``shard_map``
        axis (sums of values and counts are ``psum``-ed).
      scalars: for an IrrepsArray, ``"same"`` or ``"identity"`` for ``l = 0`` chunks.

    State: ``{"mean": [C], "var": [C]}`` (zeros, ones at init). Shapes: vectors
    ``[batch, nodes, channels, 3]`` or IrrepsArray ``[batch, nodes, irreps]`` (padded), or
    ``[num_nodes, channels, 3]`` / ``[num_nodes, irreps]`` (flat, with ``segment_ids=`` or
    ``n_node=``; the batch statistics pool every real node).
    """
    _check_scalars(scalars)
    name = "vector_neuron_batch_norm"

    def psum(v):
        return jax.lax.psum(v, axis_name) if axis_name is not None else v

    def block(params, state, v, graphs, training):
        n = geometry.safe_norm(v, axis=-1)  # [..., C]; 0 at padded nodes
        if training:
            nodes = tuple(range(n.ndim - 1))  # (0, 1) padded, (0,) flat

            def total(a):  # sum over the real nodes of the batch: [C]
                return psum(jnp.sum(zero_padding(a, graphs), axis=nodes))

            maxabs = jnp.max(jnp.abs(n), axis=nodes, initial=0.0)
            maxabs = jax.lax.pmax(maxabs, axis_name) if axis_name is not None else maxabs
            s = geometry.magnitude_scale(maxabs, epsilon**0.5)  # [C], 1 normally
            ns = n / s
            real = total(jnp.ones_like(n))
            count = jnp.maximum(real, 1.0)
            mean = total(ns) / count  # [C]
            var = total(jnp.square(ns - mean)) / count
            rdt = state["mean"].dtype  # mean, var: [C], of n / s
            kept = real > 0  # a batch without a real node keeps the running averages
            new_state = {
                "mean": jnp.where(kept, (momentum * state["mean"]
                                         + (1 - momentum) * (mean * s)).astype(rdt),
                                  state["mean"]),
                "var": jnp.where(kept, (momentum * state["var"]
                                        + (1 - momentum) * (var * jnp.square(s))).astype(rdt),
                                 state["var"]),
            }
            nhat = (ns - mean) * jax.lax.rsqrt(var + epsilon / jnp.square(s))
        else:
            mean, var = state["mean"].astype(v.dtype), state["var"].astype(v.dtype)
            new_state = state
            nhat = (n - mean) * jax.lax.rsqrt(var + epsilon)
            s = geometry.magnitude_scale(n, norm_epsilon)  # per vector, 1 normally
            ns = n / s
        if use_scale:
            nhat = nhat * params["scale"].astype(v.dtype)
        if use_bias:
            nhat = nhat + params["bias"].astype(v.dtype)
        y = _along(v, ns, s, nhat, norm_epsilon)
        return y.astype(v.dtype), new_state

    def params_of(c, dt):
        params = {}
        if use_scale:
            params["scale"] = jnp.ones((c,), dt)
        if use_bias:
            params["bias"] = jnp.zeros((c,), dt)
        return params

    def state_of(c, dt):
        return {"mean": jnp.zeros((c,), dt), "var": jnp.ones((c,), dt)}

    return _vector_layer(name, block, scalars, params_of, state_of)


# --------------------------------------------------------------------------------------------
# EvNorm (UNiTE)
# --------------------------------------------------------------------------------------------


@check_hyperparameters
def ev_norm(
    *,
    epsilon: float = 1e-5,
    beta_init: float = 1.0,
    use_scale: bool = True,
    use_bias: bool = True,
    bias_init: float = 0.0,
    scalars: str = "same",
) -> Norm:
    """EvNorm of UNiTE (Qiao, Christensen, Manby, Welborn, Anandkumar, Miller 2021).

    Survey (Table 1, citing UNiTE):

    .. math::

        \\operatorname{EvNorm}(A) = \\Big(\\frac{\\|A\\|_2 - \\mu_{\\{x,v\\}}}
        {\\sigma_{\\{x,v\\}}},\\; \\frac{A}{\\|A\\|_2 + \\beta}\\Big)

    i.e. an invariant part (standardized norms) and an equivariant part (directions with a
    soft, learnable floor ``beta``); the survey's labels "Positional" and "Invariant" are
    swapped relative to which part is which. In UNiTE the two parts feed the next layer
    separately (the invariant one through an MLP that then gates the equivariant one).
    As a single layer with one output we combine them, with an affine on the invariant
    part:

    .. math::

        y_{xc} = \\Big(\\gamma_c \\frac{\\|V_{xc}\\| - \\mu}{\\sqrt{\\sigma^2 + \\epsilon}}
        + \\delta_c\\Big) \\frac{V_{xc}}{\\|V_{xc}\\| + \\max(|\\beta_c|, \\epsilon)}

    ``mu``, ``sigma^2``: mean and biased variance of the norms over the real nodes and the
    channels of each graph (``{x, v}``, per sample, as the survey's subscripts say; for an
    IrrepsArray per chunk). ``epsilon`` goes under the square root of the variance and
    floors ``|beta|``, so zero vectors give finite values and gradients.

    Args:
      epsilon: see above.
      beta_init: initial ``beta`` ``[C]`` (learnable, as the survey lists ``beta`` among
        the learnable parameters).
      use_scale, use_bias: affine ``gamma`` (``scale``, ones) and ``delta`` (``bias``,
        ``bias_init``), shape ``[C]``. With the defaults the invariant factor is the plain
        standardized norm, negative for vectors shorter than average (they are flipped).
      bias_init: initial ``delta``.
      scalars: for an IrrepsArray, ``"same"`` or ``"identity"`` for ``l = 0`` chunks.

    Shapes: vectors ``[batch, nodes, channels, 3]`` or IrrepsArray ``[batch, nodes, irreps]``
    (padded), or ``[num_nodes, channels, 3]`` / ``[num_nodes, irreps]`` (flat, with
    ``segment_ids=`` or ``n_node=``; the statistics per graph). No running state.
    """
    _check_scalars(scalars)
    name = "ev_norm"

    def block(params, state, v, graphs, training):
        del training
        n = geometry.safe_norm(v, axis=-1)  # [..., C]
        s = graph_scale(n, graphs, (-1,), epsilon)  # [B, 1, 1] / [num_nodes, 1], 1 normally
        ns = n / s
        count = graph_count(n, graphs, (-1,))  # per graph, broadcast like s
        mean = graph_sum(ns, graphs, (-1,)) / count
        var = graph_sum(jnp.square(ns - mean), graphs, (-1,)) / count
        nhat = (ns - mean) * jax.lax.rsqrt(var + epsilon / jnp.square(s))
        if use_scale:
            nhat = nhat * params["scale"].astype(v.dtype)
        if use_bias:
            nhat = nhat + params["bias"].astype(v.dtype)
        beta = jnp.maximum(jnp.abs(params["beta"].astype(v.dtype)), epsilon)
        y = _along(v, ns, s, nhat, beta)
        return y.astype(v.dtype), state

    def params_of(c, dt):
        params = {"beta": jnp.full((c,), beta_init, dt)}
        if use_scale:
            params["scale"] = jnp.ones((c,), dt)
        if use_bias:
            params["bias"] = jnp.full((c,), bias_init, dt)
        return params

    return _vector_layer(name, block, scalars, params_of)


# --------------------------------------------------------------------------------------------
# Catalogue
# --------------------------------------------------------------------------------------------

CATALOG_ENTRIES: list[NormInfo] = [
    NormInfo(
        name="quaternion_rms_norm",
        constructor=rms_vector_norm,
        kind="vectors",
        paper="Shen, Zhang, Huang, Wei, Zhang 2020, 3D-Rotation-Equivariant Quaternion "
        "Neural Networks (ECCV)",
        formula="A / RMS_{x,v}",
        reduced_axes="x,v,d",
        survey_row="Quaternion [4]",
        kwargs={"reduce": "nodes_channels", "name": "quaternion_rms_norm"},
        notes="Same formula as GVP (the survey calls them identical). Axes follow the "
        "survey's subscripts {x,v} (real nodes and channels of each graph); the original "
        "paper's reduction axes were not verified.",
        layouts=("padded", "flat"),
        symmetries=("SO3", "O3", "permutation", "batch"),
    ),
    NormInfo(
        name="gvp_vector_layer_norm",
        constructor=rms_vector_norm,
        kind="vectors",
        paper="Jing, Eismann, Suriana, Townshend, Dror 2021, Learning from Protein Structure "
        "with Geometric Vector Perceptrons (ICLR); also EGAN, Le, Noe, Clevert 2022",
        formula="V / sqrt(mean_c ||V_c||^2)",
        reduced_axes="v,d",
        survey_row="Vector Perceptron / EGAN [8] [9]",
        kwargs={"reduce": "channels", "name": "gvp_vector_layer_norm"},
        notes="Per node over channels, as in the GVP code; the survey writes RMS_{x,v} "
        "(use reduce='nodes_channels'). GVP LayerNorms the scalar channels separately.",
        layouts=("padded", "flat"),
        symmetries=("SO3", "O3", "permutation", "batch"),
    ),
    NormInfo(
        name="vector_neuron_batch_norm",
        constructor=vector_neuron_batch_norm,
        kind="vectors",
        paper="Deng, Litany, Duan, Poulenard, Tagliasacchi, Guibas 2021, Vector Neurons: A "
        "General Framework for SO(3)-Equivariant Networks (ICCV)",
        formula="V/||V|| * BN(||V||)  (survey: (A^pos/||A^pos||_2, BN(A^inv)))",
        reduced_axes="b,x (per channel), d for the norm",
        params=("scale", "bias"),
        running_state=("mean", "var"),
        survey_row="Vector Neuron [22]",
        notes="Running statistics per channel; direction V/(||V|| + 1e-6) as in the authors' code.",
        layouts=("padded", "flat"),
        symmetries=("SO3", "O3", "permutation"),
    ),
    NormInfo(
        name="ev_norm",
        constructor=ev_norm,
        kind="vectors",
        paper="Qiao, Christensen, Manby, Welborn, Anandkumar, Miller 2021, UNiTE: Unitary "
        "N-body Tensor Equivariant Network with Applications to Quantum Chemistry",
        formula="((||A|| - mu_{x,v})/sigma_{x,v}, A/(||A|| + beta))",
        reduced_axes="x,v (per sample), d for the norm",
        params=("beta", "scale", "bias"),
        survey_row="EvNorm [21]",
        notes="The invariant and equivariant parts are multiplied into one output, with an "
        "affine on the standardized norm. beta learnable per channel, floored at epsilon.",
        layouts=("padded", "flat"),
        symmetries=("SO3", "O3", "permutation", "batch"),
    ),
]
