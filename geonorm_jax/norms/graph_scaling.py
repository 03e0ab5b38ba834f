"""Graph norms that rescale node features by a message norm or a count.

MessageNorm (rescale the aggregated message to the norm of the node's features), GraphSizeNorm
(divide by a power of the number of nodes), SchNet's neighbour normalization (divide by each
node's neighbour count) and the average-number-of-neighbours normalization of MACE and
NequIP/Allegro (divide by a dataset constant): the rows of the survey's Table 1 (Aalto et
al., graph/geometric column) that compute no mean or variance of the features. They act on
scalar node features ``x [batch, nodes, channels]`` with an optional node mask
``[batch, nodes]`` (True = real node); padded nodes never enter a count.

Context: ``message=`` (MessageNorm), ``num_neighbors=`` / ``adjacency=`` (the neighbour
norms; optional, see :func:`neighbor_counts`). The layers that standardize with statistics
over nodes live in :mod:`geonorm_jax.norms.graph_stats`; :mod:`geonorm_jax.norms.graph`
re-exports both.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from geonorm_jax.geometry import safe_norm, safe_normalize
from geonorm_jax.norms.base import (
    LAYOUT_KEYS,
    Graphs,
    Norm,
    NormInfo,
    check_node_features,
    feature_graphs,
    graph_count,
    graph_layout,
    zero_padding,
)

__all__ = [
    "message_norm",
    "graph_size_norm",
    "schnet_neighbor_norm",
    "avg_num_neighbors_norm",
    "neighbor_counts",
    "CATALOG_ENTRIES",
]


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
        check_node_features(x, None, f"{name}: x")
        if learn_scale:
            return {"scale": jnp.full((1,), scale, param_dtype)}, {}
        return {}, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training
        check_node_features(x, mask, f"{name}: x")
        m = zero_padding(_message(x, context), mask)
        x = zero_padding(x, mask)
        s = params["scale"] if learn_scale else scale
        unit = safe_normalize(m.astype(x.dtype), axis=-1)  # [B, N, C]
        y = x + s * safe_norm(x, axis=-1, keepdims=True) * unit
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

    Flat layout (jraph / e3nn-jax / PyG): ``x [total_nodes, channels]`` with
    ``segment_ids=[total_nodes]`` and a static ``num_graphs=``, or ``n_node=[num_graphs]``
    (padding graphs are graphs like any other; ``mask=[total_nodes]`` optional); the
    statistics are then per graph (``jax.ops.segment_sum``), equal to the padded layout's
    (:func:`geonorm_jax.norms.base.graph_layout`).
    """
    if not isinstance(power, int | float) or power < 0:
        raise ValueError(f"graph_size_norm: expected power >= 0 (0.5 or 1); received {power!r}")
    name = "graph_size_norm"

    def init(key, x, **context):
        del key
        feature_graphs(x, None, context, f"{name}: x")
        return {}, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del params, training
        graphs = feature_graphs(x, mask, context, f"{name}: x")
        n = graph_count(x[..., :1], graphs)  # [B, 1, 1] (flat: [T, 1]), >= 1
        return (zero_padding(x, graphs) * n ** (-power)).astype(x.dtype), state

    return Norm(init, apply, kind="features", name=name)


# --------------------------------------------------------------------------- neighbour counts


def neighbor_counts(
    x: jax.Array,
    mask: jax.Array | None = None,
    *,
    num_neighbors: Any = None,
    adjacency: Any = None,
    segment_ids: Any = None,
    n_node: Any = None,
    num_graphs: int | None = None,
) -> jax.Array:
    """Number of neighbours of each node, ``[batch, nodes]`` (flat layout: ``[total_nodes]``),
    not clamped; 1 at padded nodes.

    In order of precedence: ``num_neighbors [batch, nodes]`` (flat: ``[total_nodes]``) as
    given; the row sums of ``adjacency [batch, nodes, nodes]`` over real neighbours ``j``
    (the degree; weighted if the adjacency is; padded layout only); else a fully connected
    graph, ``n_real - 1`` (flat: the real nodes of each node's graph, less one). The flat
    layout is chosen by ``segment_ids=`` with ``num_graphs=``, or ``n_node=`` (see
    :func:`geonorm_jax.norms.base.graph_layout`). Padded nodes are excluded by selection.
    """
    graphs = graph_layout(x, mask, segment_ids=segment_ids, n_node=n_node,
                          num_graphs=num_graphs, what="neighbor_counts: x")
    nodes = tuple(x.shape[:1] if graphs.flat else x.shape[:2])
    layout = "[total_nodes]" if graphs.flat else "[batch, nodes]"
    real = graphs.real(len(nodes))
    if num_neighbors is not None:
        if tuple(getattr(num_neighbors, "shape", ())) != nodes:
            raise ValueError(
                f"num_neighbors: expected {layout} = {nodes}; "
                f"received shape {getattr(num_neighbors, 'shape', None)}"
            )
        counts = jnp.asarray(num_neighbors).astype(x.dtype)
    elif adjacency is not None:
        if graphs.flat:
            raise ValueError(
                "adjacency: a dense [batch, nodes, nodes] adjacency needs the padded layout; "
                "in the flat layout pass num_neighbors=[total_nodes] (e.g. a segment_sum of "
                "ones over the receivers)"
            )
        b, n = nodes
        if tuple(getattr(adjacency, "shape", ())) != (b, n, n):
            raise ValueError(
                f"adjacency: expected [batch, nodes, nodes] = {(b, n, n)}; "
                f"received shape {getattr(adjacency, 'shape', None)}"
            )
        adj = jnp.asarray(adjacency).astype(x.dtype)
        if real is not None:
            adj = jnp.where(real[:, None, :] & real[:, :, None], adj, 0.0)
        counts = jnp.sum(adj, axis=-1)
    else:
        ones = jnp.ones(nodes + (1,), x.dtype)
        counts = graph_count(ones, graphs)[..., 0] - 1.0  # [B, 1] or [T]
        counts = jnp.broadcast_to(counts, nodes)
    return counts if real is None else jnp.where(real, counts, 1.0)


def _context_counts(x, mask, context):
    return neighbor_counts(
        x, mask, num_neighbors=context.get("num_neighbors"), adjacency=context.get("adjacency"),
        **{k: context.get(k) for k in LAYOUT_KEYS},
    )


def _mean_over_real(a: jax.Array, graphs: Graphs) -> jax.Array:
    """Mean of ``a [batch, nodes]`` (flat: ``[total_nodes]``) over every real node, a scalar."""
    real = graphs.real(a.ndim)
    if real is None:
        return jnp.mean(a)
    total = jnp.sum(jnp.where(real, a, 0.0))
    return total / jnp.maximum(jnp.sum(real.astype(a.dtype)), 1.0)


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

    Flat layout (jraph / e3nn-jax / PyG): ``x [total_nodes, channels]`` with
    ``segment_ids=[total_nodes]`` and a static ``num_graphs=``, or ``n_node=[num_graphs]``
    (padding graphs are graphs like any other; ``mask=[total_nodes]`` optional); the
    statistics are then per graph (``jax.ops.segment_sum``), equal to the padded layout's
    (:func:`geonorm_jax.norms.base.graph_layout`).
    Neighbour counts there come from ``num_neighbors=[total_nodes]`` or, by default,
    a fully connected graph per segment (``adjacency=`` is padded-only).
    """
    name = "schnet_neighbor_norm"

    def init(key, x, **context):
        del key
        feature_graphs(x, None, context, f"{name}: x")
        return {}, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del params, training
        graphs = feature_graphs(x, mask, context, f"{name}: x")
        counts = jnp.maximum(_context_counts(x, mask, context), 1.0)  # [B, N] or [T]
        return (zero_padding(x, graphs) / counts[..., None]).astype(x.dtype), state

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

    Flat layout (jraph / e3nn-jax / PyG): ``x [total_nodes, channels]`` with
    ``segment_ids=[total_nodes]`` and a static ``num_graphs=``, or ``n_node=[num_graphs]``
    (padding graphs are graphs like any other; ``mask=[total_nodes]`` optional); the
    statistics are then per graph (``jax.ops.segment_sum``), equal to the padded layout's
    (:func:`geonorm_jax.norms.base.graph_layout`).
    Neighbour counts there come from ``num_neighbors=[total_nodes]`` or, by default,
    a fully connected graph per segment (``adjacency=`` is padded-only).
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
        graphs = feature_graphs(x, mask, context, f"{name}: x")
        if avg_num_neighbors is not None:
            avg = jnp.asarray(avg_num_neighbors, jnp.float32)
        else:
            counts = _context_counts(x, mask, context)  # [B, N] or [T]
            est = _mean_over_real(counts, graphs)
            avg = jnp.where(est > 0, est, 1.0).astype(jnp.float32)
        return {}, {"avg_num_neighbors": avg}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del params, training
        graphs = feature_graphs(x, mask, context, f"{name}: x")
        x = zero_padding(x, graphs)
        if "avg_num_neighbors" not in state:
            raise ValueError(
                f"{name}: expected state {{'avg_num_neighbors': scalar}} from init; "
                f"received state with keys {sorted(state)}"
            )
        avg = state["avg_num_neighbors"].astype(x.dtype)
        return (x * avg ** (-power)).astype(x.dtype), state

    return Norm(init, apply, kind="features", name=name)


# --------------------------------------------------------------------------- catalogue

_MACE_AVG = NormInfo(
    name="mace_avg_neighbor_norm",
    layouts=("padded", "flat"),
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
    symmetries=("permutation", "batch"),
    order=9,
)

CATALOG_ENTRIES: list[NormInfo] = [
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
        symmetries=("permutation", "batch"),
        order=4,
    ),
    NormInfo(
        name="graph_size_norm",
        layouts=("padded", "flat"),
        constructor=graph_size_norm,
        kind="features",
        paper="Dwivedi et al. 2020, Benchmarking Graph Neural Networks (arXiv:2003.00982)",
        formula="A / |X|",
        reduced_axes="x (node count)",
        kwargs={"power": 0.5},
        survey_row="GraphSizeNorm [23]",
        notes="The original code multiplies by snorm_n = 1/sqrt(|X|) (power 0.5, our default); "
        "the survey writes A/|X| (power=1.0). |X| counts real nodes from the mask.",
        symmetries=("permutation", "batch"),
        order=7,
    ),
    NormInfo(
        name="schnet_neighbor_norm",
        layouts=("padded", "flat"),
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
        symmetries=("permutation", "batch"),
        order=8,
    ),
    _MACE_AVG,
    dataclasses.replace(
        _MACE_AVG,
        name="allegro_avg_neighbor_norm",
        paper="Musaelian et al. 2023, Learning local equivariant representations for "
        "large-scale atomistic dynamics (Allegro, Nat. Commun.); also NequIP",
        kwargs={"power": 0.5},
        notes="Allegro/NequIP divide by sqrt(avg neighbour count) (power 0.5), where the survey "
        "writes A / N. The constant is given or estimated once in init, stored in state and "
        "never updated.",
        order=10,
    ),
]
