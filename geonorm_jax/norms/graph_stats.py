"""Graph norms that standardize node features with statistics over the nodes of a graph.

GraphNorm, PairNorm, MeanSubtractionNorm, DiffGroupNorm and SetNorm: the rows of the survey's
Table 1 (Aalto et al., graph/geometric column) that subtract a mean and/or divide by a spread
computed over the real nodes of each graph (or, for DiffGroupNorm, of the whole batch). They
act on scalar node features ``x [batch, nodes, channels]`` with an optional node mask
``[batch, nodes]`` (True = real node); padded nodes never enter a statistic or a count and
their outputs are finite but unspecified.

Each layer follows its *original* paper; where the survey's Table 1 writes different reduced
axes, the docstring names both and ``reading="survey"`` offers the survey's formula where
cheap. The layers that rescale by a message norm or a count live in
:mod:`geonorm_jax.norms.graph_scaling`; :mod:`geonorm_jax.norms.graph` re-exports both.
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
    check_choice,
    check_hyperparameters,
    check_node_features,
    check_param_sizes,
    feature_graphs,
    graph_mean,
    graph_scale,
    masked_mean,
    node_mask,
    zero_padding,
)

__all__ = [
    "graph_norm",
    "pair_norm",
    "mean_subtraction_norm",
    "diff_group_norm",
    "set_norm",
    "CATALOG_ENTRIES",
]

_READINGS = ("paper", "survey")


def _graphs(x, mask, context, name: str, reading: str):
    """Check ``x`` and return its graphs; the survey's readings (statistics across the
    batch) exist only in the padded layout."""
    graphs = feature_graphs(x, mask, context, f"{name}: x")
    if graphs.flat and reading != "paper":
        raise ValueError(
            f"{name}: reading={reading!r} reduces over the batch axis and needs the padded "
            f"layout [batch, nodes, channels]; received flat features of shape {x.shape}"
        )
    return graphs


def _survey_scale(x, axes, epsilon: float = 0.0):
    """Power-of-two rescaling for statistics over ``axes`` of zero-padded ``x`` (1 at
    ordinary magnitudes)."""
    return magnitude_scale(jnp.max(jnp.abs(x), axis=axes, keepdims=True, initial=0.0), epsilon**0.5)


# --------------------------------------------------------------------------- GraphNorm


@check_hyperparameters
def graph_norm(
    *, epsilon: float = 1e-5, use_scale: bool = True, use_bias: bool = True, param_dtype=jnp.float32
) -> Norm:
    r"""GraphNorm (Cai et al., ICML 2021, "GraphNorm: A Principled Approach to Accelerating
    Graph Neural Network Training").

    .. math::

        \mu_{b,c} = \frac1{n_b}\sum_i x_{b,i,c},\quad
        \sigma^2_{b,c} = \frac1{n_b}\sum_i (x_{b,i,c} - \alpha_c\mu_{b,c})^2,\quad
        y = \gamma_c \frac{x - \alpha_c \mu_{b,c}}{\sqrt{\sigma^2_{b,c} + \epsilon}} + \beta_c

    Per graph and per channel, reducing over the real nodes (survey: axes ``{x}``; the
    survey's formula agrees with the paper). Note that the variance is that of the *shifted*
    features ``x - alpha * mu`` (the paper's Eq. 8), not of ``x``. ``epsilon`` is inside
    the square root.

    Args:
      epsilon: added to the variance inside the square root.
      use_scale: learn ``gamma`` (``params["scale"]``, ``[channels]``, init 1).
      use_bias: learn ``beta`` (``params["bias"]``, ``[channels]``, init 0).
      param_dtype: dtype of the parameters.

    Params: ``alpha`` ``[channels]`` (init 1; the paper's learnable mean scale), ``scale``,
    ``bias``. State: none. Shapes: ``x [batch, nodes, channels]``, ``mask [batch, nodes]``.

    Flat layout (jraph / e3nn-jax / PyG): ``x [total_nodes, channels]`` with
    ``segment_ids=[total_nodes]`` and a static ``num_graphs=``, or ``n_node=[num_graphs]``
    (padding graphs are graphs like any other; ``mask=[total_nodes]`` optional); the
    statistics are then per graph (``jax.ops.segment_sum``), equal to the padded layout's
    (:func:`geonorm_jax.norms.base.graph_layout`).
    """
    name = "graph_norm"

    def init(key, x, **context):
        del key
        feature_graphs(x, None, context, f"{name}: x")
        c = x.shape[-1]
        params = {"alpha": jnp.ones((c,), param_dtype)}
        params.update(affine_params(c, use_scale, use_bias, param_dtype))
        return params, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training
        graphs = feature_graphs(x, mask, context, f"{name}: x")
        check_param_sizes(params, x, name, ("alpha", "scale", "bias"))
        xs = zero_padding(x, graphs)
        s = graph_scale(xs, graphs, (), epsilon)  # [B, 1, C], 1 at ordinary magnitudes
        xs = xs / s
        mu = graph_mean(xs, graphs)  # [B, 1, C]
        shifted = xs - params["alpha"] * mu  # [B, N, C]
        var = graph_mean(jnp.square(shifted), graphs)  # [B, 1, C]
        y = affine(shifted * jax.lax.rsqrt(var + epsilon / jnp.square(s)), params)
        return y.astype(x.dtype), state

    return Norm(init, apply, kind="features", name=name)


# --------------------------------------------------------------------------- PairNorm

_PAIR_MODES = ("PN", "PN-SI", "PN-SCS")


@check_hyperparameters
def pair_norm(*, scale: float = 1.0, mode: str = "PN", epsilon: float = 1e-6) -> Norm:
    r"""PairNorm (Zhao & Akoglu, ICLR 2020, "PairNorm: Tackling Oversmoothing in GNNs").

    With the per-graph column mean :math:`\mu_{b,c} = \frac1{n_b}\sum_i x_{b,i,c}` (axes
    ``{x}``) and :math:`x^c = x - \mu`:

    - ``"PN"`` (the paper's Eq. 4):
      :math:`y_i = s\, x^c_i / \sqrt{\epsilon + \frac1{n_b}\sum_j \|x^c_j\|_2^2}`, one scalar
      per graph (reduces over ``{x, v}``).
    - ``"PN-SI"`` (scale individually): :math:`y_i = s\, x^c_i / \sqrt{\epsilon + \|x^c_i\|^2}`.
    - ``"PN-SCS"`` (scale-and-center-shift): :math:`y_i = s\, x_i / \sqrt{\epsilon +
      \|x_i\|^2} - \mu_b` (normalize first, then subtract the mean of the *input*).

    The survey writes :math:`s (A - \mu_{\{x,v\}})/\sigma_{\{x,v\}}`. The paper centres per
    channel (``mu_{x}``, not ``mu_{x,v}``), and PN's denominator is the RMS over nodes of the
    node norms, i.e. ``sqrt(channels) * RMS_{x,v}(x^c)`` -- a root mean square of centred
    features rather than a standard deviation about a scalar mean. We implement the paper.
    ``epsilon`` (1e-6 as in the authors' code) is inside the square root. No parameters.

    Args:
      scale: the hyperparameter ``s``.
      mode: ``"PN"``, ``"PN-SI"`` or ``"PN-SCS"``.
      epsilon: added inside the square root of the squared norms.

    Flat layout (jraph / e3nn-jax / PyG): ``x [total_nodes, channels]`` with
    ``segment_ids=[total_nodes]`` and a static ``num_graphs=``, or ``n_node=[num_graphs]``
    (padding graphs are graphs like any other; ``mask=[total_nodes]`` optional); the
    statistics are then per graph (``jax.ops.segment_sum``), equal to the padded layout's
    (:func:`geonorm_jax.norms.base.graph_layout`).
    """
    check_choice(mode, _PAIR_MODES, "pair_norm: mode")
    name = "pair_norm"

    def init(key, x, **context):
        del key
        feature_graphs(x, None, context, f"{name}: x")
        return {}, {}

    def _unit_rows(v):
        """``(v / sn, 1 / sqrt(eps / sn^2 + ||v / sn||^2))`` per node: ``v / sqrt(eps +
        ||v||^2)`` is their product; ``sn`` is a per-node power-of-two rescaling."""
        sn = magnitude_scale(jnp.max(jnp.abs(v), axis=-1, keepdims=True, initial=0.0), epsilon**0.5)
        v = v / sn
        sq = jnp.sum(jnp.square(v), -1, keepdims=True)
        return v, jax.lax.rsqrt(epsilon / jnp.square(sn) + sq)

    def apply(params, state, x, *, mask=None, training=False, **context):
        del params, training
        graphs = feature_graphs(x, mask, context, f"{name}: x")
        x = zero_padding(x, graphs)
        if mode == "PN":
            sg = graph_scale(x, graphs, (-1,), epsilon)  # [B, 1, 1]
            xc = x / sg - graph_mean(x / sg, graphs)
            sq = jnp.sum(jnp.square(xc), axis=-1, keepdims=True)  # [B, N, 1]
            y = scale * xc * jax.lax.rsqrt(epsilon / jnp.square(sg) + graph_mean(sq, graphs))
        elif mode == "PN-SI":
            sg = graph_scale(x, graphs)  # [B, 1, C]
            xc, r = _unit_rows(x - graph_mean(x / sg, graphs) * sg)
            y = scale * xc * r
        else:  # PN-SCS
            sg = graph_scale(x, graphs)
            xs, r = _unit_rows(x)
            y = scale * xs * r - graph_mean(x / sg, graphs) * sg
        return y.astype(x.dtype), state

    return Norm(init, apply, kind="features", name=name)


# --------------------------------------------------------------------------- MeanSubtractionNorm


def mean_subtraction_norm(*, reading: str = "paper") -> Norm:
    r"""MeanSubtractionNorm (Yang et al., 2020, "Revisiting 'Over-smoothing' in Deep GCNs").

    - ``reading="paper"`` (default): :math:`y_{b,i,c} = x_{b,i,c} - \frac1{n_b}\sum_j
      x_{b,j,c}`: subtract each graph's per-channel mean over its real nodes (axes ``{x}``).
    - ``reading="survey"``: the survey's Table 1 formula :math:`A - \mu_{\{b,v\}}`: subtract,
      for each node index, the mean over the batch (real entries only) and the channels.
      This couples different graphs of a batch and is not node-permutation equivariant
      per graph; it is offered only to compare with the survey.

    No parameters, no state, no epsilon.

    Flat layout (jraph / e3nn-jax / PyG): ``x [total_nodes, channels]`` with
    ``segment_ids=[total_nodes]`` and a static ``num_graphs=``, or ``n_node=[num_graphs]``
    (padding graphs are graphs like any other; ``mask=[total_nodes]`` optional); the
    statistics are then per graph (``jax.ops.segment_sum``), equal to the padded layout's
    (:func:`geonorm_jax.norms.base.graph_layout`).
    Only ``reading="paper"`` accepts it (the survey's reading reduces over the batch).
    """
    check_choice(reading, _READINGS, "mean_subtraction_norm: reading")
    name = "mean_subtraction_norm"
    axes = (1,) if reading == "paper" else (0, 2)

    def init(key, x, **context):
        del key
        _graphs(x, None, context, name, reading)
        return {}, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del params, training
        graphs = _graphs(x, mask, context, name, reading)
        x = zero_padding(x, graphs)
        if reading == "paper":
            s = graph_scale(x, graphs)  # [B, 1, C]
            return (x - graph_mean(x / s, graphs) * s).astype(x.dtype), state
        s = _survey_scale(x, axes)
        return (x - masked_mean(x / s, mask, axes) * s).astype(x.dtype), state

    return Norm(init, apply, kind="features", name=name)



# --------------------------------------------------------------------------- DiffGroupNorm


@check_hyperparameters
def diff_group_norm(
    *,
    num_groups: int,
    lam: float = 0.01,
    epsilon: float = 1e-5,
    momentum: float = 0.9,
    use_scale: bool = True,
    use_bias: bool = True,
    param_dtype=jnp.float32,
) -> Norm:
    r"""Differentiable group normalization (Zhou et al., NeurIPS 2020, "Towards Deeper Graph
    Neural Networks with Differentiable Group Normalization").

    .. math::

        S = \mathrm{softmax}(x\,\Gamma) \in [0,1]^{B\times N\times G},\quad
        h_g = S_{:,:,g} \odot x,\quad
        y = x + \lambda \sum_{g=1}^{G} \Big(\gamma_g \frac{h_g - \mu_g}
        {\sqrt{\sigma^2_g + \epsilon}} + \beta_g\Big)

    ``Gamma`` (``params["kernel"]``, ``[channels, groups]``, lecun-normal init) assigns each
    node softly to ``G`` clusters; each group's features are batch-normalized with their own
    statistics ``mu_g, sigma_g [channels]`` over all real nodes of the batch (axes
    ``{b, x}``) while training, and with running averages otherwise. ``lam`` is the
    survey's ``s`` (the paper's lambda, default 0.01 as in the paper). The survey's formula
    agrees with the paper. ``epsilon`` is inside the square root.

    Running statistics follow Flax: ``ra = momentum * ra + (1 - momentum) * batch`` (the
    default 0.9 equals PyTorch's ``momentum=0.1`` used by the original code) with the biased
    variance (PyTorch stores the unbiased one). A fully masked batch leaves them unchanged.

    Args:
      num_groups: ``G``, the number of clusters (>= 1).
      lam: the skip weight ``lambda``.
      epsilon: added to the variance inside the square root.
      momentum: decay of the running statistics.
      use_scale: learn ``gamma`` (``params["scale"]``, ``[groups, channels]``, init 1).
      use_bias: learn ``beta`` (``params["bias"]``, ``[groups, channels]``, init 0).
      param_dtype: dtype of parameters and running statistics.

    State: ``mean``, ``var`` ``[groups, channels]`` (init 0 and 1).
    """
    if not isinstance(num_groups, int) or num_groups < 1:
        raise ValueError(f"diff_group_norm: expected num_groups >= 1; received {num_groups!r}")
    name = "diff_group_norm"

    def init(key, x, **context):
        del context
        check_node_features(x, None, f"{name}: x")
        c = x.shape[-1]
        params = {"kernel": jax.nn.initializers.lecun_normal()(key, (c, num_groups), param_dtype)}
        if use_scale:
            params["scale"] = jnp.ones((num_groups, c), param_dtype)
        if use_bias:
            params["bias"] = jnp.zeros((num_groups, c), param_dtype)
        state = {
            "mean": jnp.zeros((num_groups, c), param_dtype),
            "var": jnp.ones((num_groups, c), param_dtype),
        }
        return params, state

    def _check_channels(params, state, x):
        c = x.shape[-1]
        kernel = params.get("kernel")
        if kernel is not None and kernel.shape[0] != c:
            raise ValueError(
                f"{name}: 'kernel' has {kernel.shape[0]} channels (shape {kernel.shape}) but the "
                f"features have {c}; expected features [batch, nodes, {kernel.shape[0]}], "
                f"received shape {x.shape}"
            )
        check_param_sizes({**params, **state}, x, name, ("scale", "bias", "mean", "var"))

    def apply(params, state, x, *, mask=None, training=False, **context):
        del context
        check_node_features(x, mask, f"{name}: x")
        _check_channels(params, state, x)
        x = zero_padding(x, mask)
        assign = jax.nn.softmax(x @ params["kernel"].astype(x.dtype), axis=-1)  # [B, N, G]
        h = assign[..., :, None] * x[..., None, :]  # [B, N, G, C]
        if training:
            s = _survey_scale(h, (0, 1), epsilon)  # [1, 1, G, C], 1 normally
            hs = h / s
            mean = masked_mean(hs, mask, (0, 1))  # [1, 1, G, C]
            var = masked_mean(jnp.square(hs - mean), mask, (0, 1))
            any_real = jnp.sum(node_mask(mask, x.shape, x.dtype)) > 0
            new_mean = momentum * state["mean"] + (1 - momentum) * (mean * s)[0, 0]
            new_var = momentum * state["var"] + (1 - momentum) * (var * jnp.square(s))[0, 0]
            state = {
                "mean": jnp.where(any_real, new_mean, state["mean"]).astype(state["mean"].dtype),
                "var": jnp.where(any_real, new_var, state["var"]).astype(state["var"].dtype),
            }
            hn = (hs - mean) * jax.lax.rsqrt(var + epsilon / jnp.square(s))
        else:
            hn = (h - state["mean"]) * jax.lax.rsqrt(state["var"] + epsilon)
        if use_scale:
            hn = hn * params["scale"]
        if use_bias:
            hn = hn + params["bias"]
        y = x + lam * jnp.sum(hn, axis=-2)
        return y.astype(x.dtype), state

    return Norm(init, apply, kind="features", name=name)


# --------------------------------------------------------------------------- SetNorm


@check_hyperparameters
def set_norm(
    *,
    epsilon: float = 1e-5,
    use_scale: bool = True,
    use_bias: bool = True,
    reading: str = "paper",
    param_dtype=jnp.float32,
) -> Norm:
    r"""SetNorm (Zhang et al., ICML 2022, "Set Norm and Equivariant Skip Connections: Putting
    the Deep in Deep Sets").

    - ``reading="paper"`` (default): standardize each set over its real elements *and*
      channels (axes ``{x, v}``), then a per-channel affine:
      :math:`y = \gamma_c (x - \mu_b)/\sqrt{\sigma_b^2 + \epsilon} + \beta_c`.
    - ``reading="survey"``: the survey's Table 1 formula
      :math:`(A - \mu_{\{b,v\}})/\sigma_{\{b,v\}}`: one mean and variance per node index,
      over the batch (real entries) and channels; couples the graphs of a batch. Offered
      only to compare with the survey.

    ``epsilon`` is inside the square root. Params ``scale``/``bias`` ``[channels]``.

    Flat layout (jraph / e3nn-jax / PyG): ``x [total_nodes, channels]`` with
    ``segment_ids=[total_nodes]`` and a static ``num_graphs=``, or ``n_node=[num_graphs]``
    (padding graphs are graphs like any other; ``mask=[total_nodes]`` optional); the
    statistics are then per graph (``jax.ops.segment_sum``), equal to the padded layout's
    (:func:`geonorm_jax.norms.base.graph_layout`).
    Only ``reading="paper"`` accepts it (the survey's reading reduces over the batch).
    """
    check_choice(reading, _READINGS, "set_norm: reading")
    name = "set_norm"
    axes = (1, 2) if reading == "paper" else (0, 2)

    def init(key, x, **context):
        del key
        _graphs(x, None, context, name, reading)
        return affine_params(x.shape[-1], use_scale, use_bias, param_dtype), {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training
        graphs = _graphs(x, mask, context, name, reading)
        check_param_sizes(params, x, name, ("scale", "bias"))
        x = zero_padding(x, graphs)
        if reading == "paper":
            s = graph_scale(x, graphs, (-1,), epsilon)  # [B, 1, 1]
            xs = x / s
            mu = graph_mean(xs, graphs, (-1,))
            var = graph_mean(jnp.square(xs - mu), graphs, (-1,))
        else:
            s = _survey_scale(x, axes, epsilon)
            xs = x / s
            mu = masked_mean(xs, mask, axes)
            var = masked_mean(jnp.square(xs - mu), mask, axes)
        y = affine((xs - mu) * jax.lax.rsqrt(var + epsilon / jnp.square(s)), params)
        return y.astype(x.dtype), state

    return Norm(init, apply, kind="features", name=name)


# --------------------------------------------------------------------------- catalogue

CATALOG_ENTRIES: list[NormInfo] = [
    NormInfo(
        name="graph_norm",
        layouts=("padded", "flat"),
        constructor=graph_norm,
        kind="features",
        paper="Cai et al. 2021, GraphNorm: A Principled Approach to Accelerating GNN Training "
        "(ICML)",
        formula="(A - alpha * mu_{x}) / sigma_{x}",
        reduced_axes="x",
        params=("alpha", "scale", "bias"),
        survey_row="GraphNorm [11]",
        notes="Survey agrees with the paper; sigma is the std of A - alpha*mu (paper Eq. 8), "
        "not of A. Plus per-channel gamma/beta as in the paper.",
        symmetries=("permutation", "batch"), order=1,
    ),
    NormInfo(
        name="pair_norm",
        layouts=("padded", "flat"),
        constructor=pair_norm,
        kind="features",
        paper="Zhao & Akoglu 2020, PairNorm: Tackling Oversmoothing in GNNs (ICLR)",
        formula="s * (A - mu_{x,v}) / sigma_{x,v}",
        reduced_axes="x (centre), x,v (PN scale)",
        kwargs={"mode": "PN"},
        survey_row="PairNorm [13]",
        notes="Paper: centre per channel over nodes (mu_{x}), then PN divides by "
        "sqrt(mean_i ||x_i^c||^2), one scalar per graph = sqrt(v)*RMS_{x,v}; PN-SI by each "
        "node's norm, PN-SCS normalizes then subtracts the input mean. Survey writes "
        "mu_{x,v}/sigma_{x,v}. We implement the paper (modes PN, PN-SI, PN-SCS).",
        symmetries=("permutation", "batch"), order=2,
    ),
    NormInfo(
        name="mean_subtraction_norm",
        layouts=("padded", "flat"),
        constructor=mean_subtraction_norm,
        kind="features",
        paper="Yang et al. 2020, Revisiting 'Over-smoothing' in Deep GCNs (arXiv:2003.13663)",
        formula="A - mu_{b,v}",
        reduced_axes="x",
        kwargs={"reading": "paper"},
        survey_row="MeanSubtractionNorm [15]",
        notes="Paper subtracts the per-graph, per-channel mean over nodes (mu_{x}); the survey "
        "writes mu_{b,v}. Default follows the paper; reading='survey' gives mu_{b,v}.",
        symmetries=("permutation", "batch"), order=3,
    ),
    NormInfo(
        name="diff_group_norm",
        constructor=diff_group_norm,
        kind="features",
        paper="Zhou et al. 2020, Towards Deeper GNNs with Differentiable Group Normalization "
        "(NeurIPS)",
        formula="A + s * sum_g BN(softmax_g(A Gamma) * A)",
        reduced_axes="b,x",
        params=("kernel", "scale", "bias"),
        running_state=("mean", "var"),
        kwargs={"num_groups": 4},
        survey_row="DiffGroupNorm [18]",
        notes="Survey agrees with the paper. BN per (group, channel) over real nodes of the "
        "batch with running stats (Flax momentum 0.9 = torch 0.1, biased variance); "
        "s = lam = 0.01. num_groups=4 in this entry is our choice (the paper tunes G).",
        symmetries=("permutation",), order=5,
    ),
    NormInfo(
        name="set_norm",
        layouts=("padded", "flat"),
        constructor=set_norm,
        kind="features",
        paper="Zhang et al. 2022, Set Norm and Equivariant Skip Connections: Putting the Deep "
        "in Deep Sets (ICML)",
        formula="(A - mu_{b,v}) / sigma_{b,v}",
        reduced_axes="x,v",
        params=("scale", "bias"),
        kwargs={"reading": "paper"},
        survey_row="SetNorm [6]",
        notes="Paper standardizes each set over elements and channels (mu_{x,v}) with a "
        "per-channel affine; the survey writes mu_{b,v}. Default follows the paper; "
        "reading='survey' gives mu_{b,v}.",
        symmetries=("permutation", "batch"), order=6,
    ),
]
