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

from geonorm_jax.norms.base import (
    Norm,
    NormInfo,
    affine,
    affine_params,
    check_choice,
    check_node_features,
    masked_mean,
    node_mask,
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


# --------------------------------------------------------------------------- GraphNorm


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
    """
    name = "graph_norm"

    def init(key, x, **context):
        del key, context
        check_node_features(x, None, f"{name}: x")
        c = x.shape[-1]
        params = {"alpha": jnp.ones((c,), param_dtype)}
        params.update(affine_params(c, use_scale, use_bias, param_dtype))
        return params, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training, context
        check_node_features(x, mask, f"{name}: x")
        mu = masked_mean(x, mask, (1,))  # [B, 1, C]
        shifted = x - params["alpha"] * mu  # [B, N, C]
        var = masked_mean(jnp.square(shifted), mask, (1,))  # [B, 1, C]
        y = affine(shifted * jax.lax.rsqrt(var + epsilon), params)
        return y.astype(x.dtype), state

    return Norm(init, apply, kind="features", name=name)


# --------------------------------------------------------------------------- PairNorm

_PAIR_MODES = ("PN", "PN-SI", "PN-SCS")


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
    """
    check_choice(mode, _PAIR_MODES, "pair_norm: mode")
    name = "pair_norm"

    def init(key, x, **context):
        del key, context
        check_node_features(x, None, f"{name}: x")
        return {}, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del params, training, context
        check_node_features(x, mask, f"{name}: x")
        mu = masked_mean(x, mask, (1,))  # [B, 1, C]
        if mode == "PN":
            xc = x - mu
            sq = jnp.sum(jnp.square(xc), axis=-1, keepdims=True)  # [B, N, 1]
            y = scale * xc * jax.lax.rsqrt(epsilon + masked_mean(sq, mask, (1,)))
        elif mode == "PN-SI":
            xc = x - mu
            y = scale * xc * jax.lax.rsqrt(epsilon + jnp.sum(jnp.square(xc), -1, keepdims=True))
        else:  # PN-SCS
            y = scale * x * jax.lax.rsqrt(epsilon + jnp.sum(jnp.square(x), -1, keepdims=True))
            y = y - mu
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
    """
    check_choice(reading, _READINGS, "mean_subtraction_norm: reading")
    name = "mean_subtraction_norm"
    axes = (1,) if reading == "paper" else (0, 2)

    def init(key, x, **context):
        del key, context
        check_node_features(x, None, f"{name}: x")
        return {}, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del params, training, context
        check_node_features(x, mask, f"{name}: x")
        return (x - masked_mean(x, mask, axes)).astype(x.dtype), state

    return Norm(init, apply, kind="features", name=name)



# --------------------------------------------------------------------------- DiffGroupNorm


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

    def apply(params, state, x, *, mask=None, training=False, **context):
        del context
        check_node_features(x, mask, f"{name}: x")
        assign = jax.nn.softmax(x @ params["kernel"].astype(x.dtype), axis=-1)  # [B, N, G]
        h = assign[..., :, None] * x[..., None, :]  # [B, N, G, C]
        if training:
            mean = masked_mean(h, mask, (0, 1))  # [1, 1, G, C]
            var = masked_mean(jnp.square(h - mean), mask, (0, 1))
            any_real = jnp.sum(node_mask(mask, x.shape, x.dtype)) > 0
            new_mean = momentum * state["mean"] + (1 - momentum) * mean[0, 0]
            new_var = momentum * state["var"] + (1 - momentum) * var[0, 0]
            state = {
                "mean": jnp.where(any_real, new_mean, state["mean"]).astype(state["mean"].dtype),
                "var": jnp.where(any_real, new_var, state["var"]).astype(state["var"].dtype),
            }
        else:
            mean, var = state["mean"], state["var"]
        hn = (h - mean) * jax.lax.rsqrt(var + epsilon)
        if use_scale:
            hn = hn * params["scale"]
        if use_bias:
            hn = hn + params["bias"]
        y = x + lam * jnp.sum(hn, axis=-2)
        return y.astype(x.dtype), state

    return Norm(init, apply, kind="features", name=name)


# --------------------------------------------------------------------------- SetNorm


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
    """
    check_choice(reading, _READINGS, "set_norm: reading")
    name = "set_norm"
    axes = (1, 2) if reading == "paper" else (0, 2)

    def init(key, x, **context):
        del key, context
        check_node_features(x, None, f"{name}: x")
        return affine_params(x.shape[-1], use_scale, use_bias, param_dtype), {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training, context
        check_node_features(x, mask, f"{name}: x")
        mu = masked_mean(x, mask, axes)
        var = masked_mean(jnp.square(x - mu), mask, axes)
        y = affine((x - mu) * jax.lax.rsqrt(var + epsilon), params)
        return y.astype(x.dtype), state

    return Norm(init, apply, kind="features", name=name)


# --------------------------------------------------------------------------- catalogue

CATALOG_ENTRIES: list[NormInfo] = [
    NormInfo(
        name="graph_norm",
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
    ),
    NormInfo(
        name="pair_norm",
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
    ),
    NormInfo(
        name="mean_subtraction_norm",
        constructor=mean_subtraction_norm,
        kind="features",
        paper="Yang et al. 2020, Revisiting 'Over-smoothing' in Deep GCNs (arXiv:2003.13663)",
        formula="A - mu_{b,v}",
        reduced_axes="x",
        kwargs={"reading": "paper"},
        survey_row="MeanSubtractionNorm [15]",
        notes="Paper subtracts the per-graph, per-channel mean over nodes (mu_{x}); the survey "
        "writes mu_{b,v}. Default follows the paper; reading='survey' gives mu_{b,v}.",
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
    ),
    NormInfo(
        name="set_norm",
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
    ),
]
