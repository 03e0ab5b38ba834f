"""Graph normalization layers of the survey's Table 1, as pure ``Norm(init, apply)`` pairs.

Every layer here acts on scalar node features ``x [batch, nodes, channels]`` (the survey's
activations A of shape b x x x v) with an optional node mask ``[batch, nodes]`` (True = real
node). Padded nodes never enter a statistic or a count; their outputs are finite but
unspecified.

Each layer follows its *original* paper. Where the survey's Table 1 writes a different
formula (a different set of reduced axes, or a different power), the docstring names both,
and where cheap the survey's reading is offered as an option (``reading="survey"``).

=========================  =========================  ========================================
layer                      reduced axes (paper)       survey's formula
=========================  =========================  ========================================
:func:`graph_norm`         x (per graph, channel)     (A - alpha mu_x) / sigma_x
:func:`pair_norm`          x, then x,v (per graph)    s (A - mu_{x,v}) / sigma_{x,v}
:func:`mean_subtraction_   x (per graph, channel)     A - mu_{b,v}
norm`
:func:`message_norm`       v (per node)               MLP(A + s ||A||_2 m / ||m||_2)
:func:`diff_group_norm`    b,x (BatchNorm per group)  A + s sum_g BN(softmax_g(A Gamma) * A)
:func:`set_norm`           x,v (per set)              (A - mu_{b,v}) / sigma_{b,v}
:func:`graph_size_norm`    x (node count)             A / |X|
:func:`schnet_neighbor_    per node (neighbour count) A / N_v
norm`
:func:`avg_num_neighbors_  b,x over the dataset       A / N_{b,x,v}
norm`
=========================  =========================  ========================================
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from geonorm_jax.geometry import safe_norm, safe_normalize
from geonorm_jax.norms.base import (
    Norm,
    check_features,
    check_mask,
    masked_count,
    masked_mean,
    node_mask,
)
from geonorm_jax.norms.catalog import NormInfo

__all__ = [
    "graph_norm",
    "pair_norm",
    "mean_subtraction_norm",
    "message_norm",
    "diff_group_norm",
    "set_norm",
    "graph_size_norm",
    "schnet_neighbor_norm",
    "avg_num_neighbors_norm",
    "neighbor_counts",
    "CATALOG_ENTRIES",
]

_READINGS = ("paper", "survey")


def _check(x: Any, mask: Any, name: str) -> None:
    check_features(x, f"{name}: x")
    check_mask(mask, x.shape)


def _check_choice(value: Any, choices: tuple, what: str) -> None:
    if value not in choices:
        raise ValueError(f"{what}: expected one of {choices}; received {value!r}")


def _affine_params(channels: int, use_scale: bool, use_bias: bool, dtype) -> dict:
    params = {}
    if use_scale:
        params["scale"] = jnp.ones((channels,), dtype)
    if use_bias:
        params["bias"] = jnp.zeros((channels,), dtype)
    return params


def _affine(y: jax.Array, params: dict) -> jax.Array:
    if "scale" in params:
        y = y * params["scale"]
    if "bias" in params:
        y = y + params["bias"]
    return y


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
        _check(x, None, name)
        c = x.shape[-1]
        params = {"alpha": jnp.ones((c,), param_dtype)}
        params.update(_affine_params(c, use_scale, use_bias, param_dtype))
        return params, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training, context
        _check(x, mask, name)
        mu = masked_mean(x, mask, (1,))  # [B, 1, C]
        shifted = x - params["alpha"] * mu  # [B, N, C]
        var = masked_mean(jnp.square(shifted), mask, (1,))  # [B, 1, C]
        y = _affine(shifted * jax.lax.rsqrt(var + epsilon), params)
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
    _check_choice(mode, _PAIR_MODES, "pair_norm: mode")
    name = "pair_norm"

    def init(key, x, **context):
        del key, context
        _check(x, None, name)
        return {}, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del params, training, context
        _check(x, mask, name)
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
    _check_choice(reading, _READINGS, "mean_subtraction_norm: reading")
    name = "mean_subtraction_norm"
    axes = (1,) if reading == "paper" else (0, 2)

    def init(key, x, **context):
        del key, context
        _check(x, None, name)
        return {}, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del params, training, context
        _check(x, mask, name)
        return (x - masked_mean(x, mask, axes)).astype(x.dtype), state

    return Norm(init, apply, kind="features", name=name)


# --------------------------------------------------------------------------- MessageNorm


def message_norm(*, learn_scale: bool = True, scale: float = 1.0, param_dtype=jnp.float32) -> Norm:
    r"""MessageNorm (Li et al., 2020, "DeeperGCN: All You Need to Train Deeper GCNs").

    .. math::

        y_{b,i} = h_{b,i} + s\, \|h_{b,i}\|_2 \frac{m_{b,i}}{\|m_{b,i}\|_2}

    per node, norms over the channels (axis ``{v}``). The paper's layer is
    :math:`h' = \mathrm{MLP}(h + s \|h\|_2 m/\|m\|_2)`; the MLP is the surrounding GCN
    layer's update function, so this ``Norm`` returns only the MLP's input. The survey writes
    the norms with subscript ``{x}``; in the paper (and here) they are per-node vector norms
    over the channels.

    The aggregated message ``m`` comes as context: ``apply(..., message=m)`` with
    ``m [batch, nodes, channels]`` (missing -> ``ValueError``). A zero message has the zero
    direction (safe normalize: finite value and gradient, no epsilon); ``||h||`` uses a safe
    norm whose gradient at 0 is 0.

    Args:
      learn_scale: learn ``s`` (``params["scale"]``, shape ``[1]``); otherwise ``s`` is the
        fixed hyperparameter ``scale``.
      scale: the initial (or fixed) value of ``s``; the paper initialises it at 1.
      param_dtype: dtype of ``s``.
    """
    name = "message_norm"

    def _message(x, context):
        m = context.get("message")
        if m is None:
            raise ValueError(
                f"{name}: expected context message=[batch, nodes, channels] = {tuple(x.shape)}"
                "; received none (call apply(..., message=m))"
            )
        if tuple(getattr(m, "shape", ())) != tuple(x.shape):
            raise ValueError(
                f"{name}: expected message [batch, nodes, channels] = {tuple(x.shape)}; "
                f"received shape {getattr(m, 'shape', None)}"
            )
        return m

    def init(key, x, **context):
        del key, context
        _check(x, None, name)
        if learn_scale:
            return {"scale": jnp.full((1,), scale, param_dtype)}, {}
        return {}, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training
        _check(x, mask, name)
        m = _message(x, context)
        s = params["scale"] if learn_scale else scale
        unit = safe_normalize(m.astype(x.dtype), axis=-1)  # [B, N, C]
        y = x + s * safe_norm(x, axis=-1, keepdims=True) * unit
        return y.astype(x.dtype), state

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
        _check(x, None, name)
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
        _check(x, mask, name)
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
    _check_choice(reading, _READINGS, "set_norm: reading")
    name = "set_norm"
    axes = (1, 2) if reading == "paper" else (0, 2)

    def init(key, x, **context):
        del key, context
        _check(x, None, name)
        return _affine_params(x.shape[-1], use_scale, use_bias, param_dtype), {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training, context
        _check(x, mask, name)
        mu = masked_mean(x, mask, axes)
        var = masked_mean(jnp.square(x - mu), mask, axes)
        y = _affine((x - mu) * jax.lax.rsqrt(var + epsilon), params)
        return y.astype(x.dtype), state

    return Norm(init, apply, kind="features", name=name)


# --------------------------------------------------------------------------- GraphSizeNorm


def graph_size_norm(*, power: float = 0.5) -> Norm:
    r"""GraphSizeNorm (Dwivedi et al., 2020, "Benchmarking Graph Neural Networks").

    .. math:: y_{b,i,c} = x_{b,i,c} / |X_b|^{p}

    with ``|X_b|`` the number of real nodes of graph ``b`` (from the mask; at least 1).
    The original code (benchmarking-gnns, ``snorm_n = 1/sqrt(num_nodes)``) uses ``p = 1/2``,
    our default; the survey's Table 1 writes ``A / |X|``, i.e. ``p = 1`` (``power=1.0``).
    No parameters, no epsilon.
    """
    if not isinstance(power, int | float) or power < 0:
        raise ValueError(f"graph_size_norm: expected power >= 0 (0.5 or 1); received {power!r}")
    name = "graph_size_norm"

    def init(key, x, **context):
        del key, context
        _check(x, None, name)
        return {}, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del params, training, context
        _check(x, mask, name)
        n = masked_count(x[..., :1], mask, (1,))  # [B, 1, 1], >= 1
        return (x * n ** (-power)).astype(x.dtype), state

    return Norm(init, apply, kind="features", name=name)


# --------------------------------------------------------------------------- neighbour counts


def neighbor_counts(
    x: jax.Array, mask: jax.Array | None = None, *, num_neighbors: Any = None, adjacency: Any = None
) -> jax.Array:
    """Number of neighbours of each node, ``[batch, nodes]`` (not clamped).

    In order of precedence: ``num_neighbors [batch, nodes]`` as given; the row sums of
    ``adjacency [batch, nodes, nodes]`` over real neighbours ``j`` (the degree; weighted if
    the adjacency is); else a fully connected graph, ``n_real - 1``.
    """
    b, n = x.shape[:2]
    m = node_mask(mask, x.shape, x.dtype)  # [B, N]
    if num_neighbors is not None:
        if tuple(getattr(num_neighbors, "shape", ())) != (b, n):
            raise ValueError(
                f"num_neighbors: expected [batch, nodes] = {(b, n)}; "
                f"received shape {getattr(num_neighbors, 'shape', None)}"
            )
        return jnp.asarray(num_neighbors).astype(x.dtype)
    if adjacency is not None:
        if tuple(getattr(adjacency, "shape", ())) != (b, n, n):
            raise ValueError(
                f"adjacency: expected [batch, nodes, nodes] = {(b, n, n)}; "
                f"received shape {getattr(adjacency, 'shape', None)}"
            )
        return jnp.sum(jnp.asarray(adjacency).astype(x.dtype) * m[:, None, :], axis=-1)
    real = jnp.sum(m, axis=1, keepdims=True)  # [B, 1]
    return jnp.broadcast_to(real - 1.0, (b, n))


def _context_counts(x, mask, context):
    return neighbor_counts(
        x, mask, num_neighbors=context.get("num_neighbors"), adjacency=context.get("adjacency")
    )


def schnet_neighbor_norm() -> Norm:
    r"""SchNet's neighbour normalization (Schütt et al., NeurIPS 2017, "SchNet: A
    continuous-filter convolutional neural network for modeling quantum interactions").

    .. math:: y_{b,i,c} = x_{b,i,c} / \max(N_{b,i}, 1)

    ``x`` is the aggregated continuous-filter convolution and ``N_{b,i}`` the number of
    neighbours of atom ``i`` (schnetpack's ``normalize_filter``). The survey writes
    ``A / N_{v}``: one count per node. Counts come from context, in order of precedence:
    ``num_neighbors=[batch, nodes]``, ``adjacency=[batch, nodes, nodes]`` (row sums over real
    nodes), else the mask as a fully connected graph (``n_real - 1``). Counts are clamped
    below at 1 (an isolated atom or ``N = 1`` is left unscaled). No parameters.
    """
    name = "schnet_neighbor_norm"

    def init(key, x, **context):
        del key, context
        _check(x, None, name)
        return {}, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del params, training
        _check(x, mask, name)
        counts = jnp.maximum(_context_counts(x, mask, context), 1.0)  # [B, N]
        return (x / counts[..., None]).astype(x.dtype), state

    return Norm(init, apply, kind="features", name=name)


def avg_num_neighbors_norm(*, avg_num_neighbors: float | None = None, power: float = 1.0) -> Norm:
    r"""Average-number-of-neighbours normalization (MACE; NequIP / Allegro).

    .. math:: y = x / \bar N^{p}

    ``\bar N`` is one constant for the whole dataset (the survey's ``N_{b,x,v}``: averaged
    over all atoms of all molecules). MACE (Batatia et al., NeurIPS 2022) divides the
    aggregated messages by ``\bar N`` (``p = 1``); NequIP (Batzner et al., 2022) and Allegro
    (Musaelian et al., 2023) divide by ``sqrt(\bar N)`` (``p = 1/2``).

    ``\bar N`` is a hyperparameter (the original codes compute it once from the training
    set). If ``avg_num_neighbors`` is None it is estimated in ``init`` from the batch given
    there -- the mean over real nodes (axes ``{b, x}``) of the neighbour counts from
    ``num_neighbors=`` / ``adjacency=`` context or a fully connected mask (see
    :func:`neighbor_counts`; ``init`` accepts ``mask=``); an estimate of 0 is replaced by 1.
    Either way the constant is stored in ``state["avg_num_neighbors"]`` (a float32 scalar)
    and never updated by ``apply``, in training or not. No parameters.

    Args:
      avg_num_neighbors: the dataset's average neighbour count (> 0), or None to estimate.
      power: ``p``: 1.0 (MACE) or 0.5 (NequIP/Allegro).
    """
    if avg_num_neighbors is not None and not avg_num_neighbors > 0:
        raise ValueError(
            f"avg_num_neighbors_norm: expected avg_num_neighbors > 0 or None; "
            f"received {avg_num_neighbors!r}"
        )
    if not isinstance(power, int | float) or power < 0:
        raise ValueError(f"avg_num_neighbors_norm: expected power >= 0; received {power!r}")
    name = "avg_num_neighbors_norm"

    def init(key, x, *, mask=None, **context):
        del key
        _check(x, mask, name)
        if avg_num_neighbors is not None:
            avg = jnp.asarray(avg_num_neighbors, jnp.float32)
        else:
            counts = _context_counts(x, mask, context)[..., None]  # [B, N, 1]
            est = masked_mean(counts, mask, (0, 1)).reshape(())
            avg = jnp.where(est > 0, est, 1.0).astype(jnp.float32)
        return {}, {"avg_num_neighbors": avg}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del params, training, context
        _check(x, mask, name)
        if "avg_num_neighbors" not in state:
            raise ValueError(
                f"{name}: expected state {{'avg_num_neighbors': scalar}} from init; "
                f"received state with keys {sorted(state)}"
            )
        avg = state["avg_num_neighbors"].astype(x.dtype)
        return (x * avg ** (-power)).astype(x.dtype), state

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
        name="message_norm",
        constructor=message_norm,
        kind="features",
        paper="Li et al. 2020, DeeperGCN: All You Need to Train Deeper GCNs (arXiv:2006.07739)",
        formula="MLP(A + s * ||A_{x}||_2 * m_{x} / ||m_{x}||_2)",
        reduced_axes="v",
        params=("scale",),
        context=("message",),
        kwargs={"learn_scale": True},
        survey_row="MessageNorm [16]",
        notes="Norms are per node over channels (the survey's subscript x = per node). The MLP "
        "belongs to the surrounding GCN layer; this Norm returns its input "
        "A + s*||A||*m/||m||. s learnable, init 1.",
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
    NormInfo(
        name="graph_size_norm",
        constructor=graph_size_norm,
        kind="features",
        paper="Dwivedi et al. 2020, Benchmarking Graph Neural Networks (arXiv:2003.00982)",
        formula="A / |X|",
        reduced_axes="x (node count)",
        kwargs={"power": 0.5},
        survey_row="GraphSizeNorm [23]",
        notes="The original code multiplies by snorm_n = 1/sqrt(|X|) (power 0.5, our default); "
        "the survey writes A/|X| (power=1.0). |X| counts real nodes from the mask.",
    ),
    NormInfo(
        name="schnet_neighbor_norm",
        constructor=schnet_neighbor_norm,
        kind="features",
        paper="Schütt et al. 2017, SchNet: A continuous-filter convolutional neural network "
        "for modeling quantum interactions (NeurIPS)",
        formula="A / N_{v}",
        reduced_axes="per node (neighbour count)",
        context=("num_neighbors", "adjacency"),
        survey_row="SchNet [24]",
        notes="Divides each atom's aggregated filter output by its neighbour count (clamped at "
        "1). Counts from num_neighbors=, else adjacency= row sums, else fully connected "
        "from the mask (n_real - 1). Both context keys are optional.",
    ),
    NormInfo(
        name="mace_avg_neighbor_norm",
        constructor=avg_num_neighbors_norm,
        kind="features",
        paper="Batatia et al. 2022, MACE: Higher Order Equivariant Message Passing Neural "
        "Networks (NeurIPS)",
        formula="A / N_{b,x,v}",
        reduced_axes="b,x (dataset average, fixed)",
        running_state=("avg_num_neighbors",),
        context=("num_neighbors", "adjacency"),
        kwargs={"power": 1.0},
        survey_row="Allegro / MACE [25] [26]",
        notes="MACE divides messages by the dataset's average neighbour count (power 1). It is "
        "a constant: given, or estimated once in init from the batch given there, stored in "
        "state and never updated.",
    ),
    NormInfo(
        name="allegro_avg_neighbor_norm",
        constructor=avg_num_neighbors_norm,
        kind="features",
        paper="Musaelian et al. 2023, Learning local equivariant representations for "
        "large-scale atomistic dynamics (Allegro, Nat. Commun.); also NequIP",
        formula="A / N_{b,x,v}",
        reduced_axes="b,x (dataset average, fixed)",
        running_state=("avg_num_neighbors",),
        context=("num_neighbors", "adjacency"),
        kwargs={"power": 0.5},
        survey_row="Allegro / MACE [25] [26]",
        notes="Allegro/NequIP divide by sqrt(avg neighbour count) (power 0.5), where the survey "
        "writes A / N. The constant is given or estimated once in init, stored in state and "
        "never updated.",
    ),
]
