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
outputs of real nodes. Outputs at padded nodes are unspecified but finite. Padding is
excluded by selection (``jnp.where``), never by multiplying with the mask, so whatever a
padded entry holds (NaN, inf, 1e30) changes neither the real outputs nor any gradient.

Two node layouts (:func:`graph_layout`): the padded one above, and for layers with per-graph
statistics the flat one of jraph, e3nn-jax and PyG: nodes ``[total_nodes, ...]`` with
``segment_ids [total_nodes]`` (the graph of each node) and a static ``num_graphs``, or
``n_node [num_graphs]`` counts; padding graphs are graphs like any other, and an optional
``mask [total_nodes]`` marks padded nodes.

Numerics: statistics that square their inputs first divide them by a power of two
(:func:`graph_scale`, :func:`geonorm_jax.geometry.magnitude_scale`) when their magnitude is
outside ``2**-50 .. 2**50``, so layers are right in float32 from 1e-30 to 1e30 and beyond,
and bit-for-bit unchanged at ordinary magnitudes.

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

from geonorm_jax.geometry import magnitude_scale

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
    "Graphs",
    "graph_layout",
    "zero_padding",
    "graph_sum",
    "graph_count",
    "graph_mean",
    "graph_max_abs",
    "graph_scale",
    "feature_graphs",
    "LAYOUT_KEYS",
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
      layouts: the node layouts ``apply`` accepts: ``"padded"`` (``[batch, nodes, ...]``
        with a mask) and, for layers with per-graph statistics, ``"flat"``
        (``[total_nodes, ...]`` with ``segment_ids=``/``n_node=``, see :func:`graph_layout`).
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
    layouts: tuple[str, ...] = ("padded",)

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


# ----------------------------------------------------------------------------- node layouts

#: The keyword arguments of ``apply`` that select the flat layout.
LAYOUT_KEYS = ("segment_ids", "n_node", "num_graphs")


class Graphs(NamedTuple):
    """How the nodes of an input are grouped into graphs (the groups of a statistic).

    Padded layout: ``x [batch, nodes, ...]``, ``mask [batch, nodes]`` or None,
    ``segment_ids`` None. Flat layout: ``x [total_nodes, ...]``, ``mask [total_nodes]`` or
    None, ``segment_ids [total_nodes]`` (int; ids outside ``[0, num_graphs)`` mark padded
    nodes), ``num_graphs`` a Python int. The node axis is 1 (padded) or 0 (flat); every
    other reduced axis is a trailing one.
    """

    mask: Any = None
    segment_ids: Any = None
    num_graphs: int | None = None

    @property
    def flat(self) -> bool:
        return self.segment_ids is not None

    @property
    def node_axis(self) -> int:
        return 0 if self.flat else 1

    def real(self, ndim: int) -> jax.Array | None:
        """Bool ``[batch, nodes, 1...]`` / ``[total_nodes, 1...]`` of rank ``ndim``, True at
        real nodes (None when every node is real)."""
        keep = self.mask
        if self.flat:
            inside = (self.segment_ids >= 0) & (self.segment_ids < self.num_graphs)
            keep = inside if keep is None else keep & inside
        if keep is None:
            return None
        return keep.reshape(keep.shape + (1,) * (ndim - keep.ndim))


def _positive(axes: Sequence[int], ndim: int) -> tuple[int, ...]:
    return tuple(a % ndim for a in axes)


def _int_array(a: Any, what: str, expected: str, shape: tuple) -> jax.Array:
    a = jnp.asarray(a)
    if a.shape != shape or not jnp.issubdtype(a.dtype, jnp.integer):
        raise ValueError(
            f"{what}: expected {expected} = {shape} of an integer dtype; received shape "
            f"{a.shape} with dtype {a.dtype}"
        )
    return a


def graph_layout(
    x: Any,
    mask: Any = None,
    *,
    segment_ids: Any = None,
    n_node: Any = None,
    num_graphs: Any = None,
    what: str = "x",
) -> Graphs:
    """Check the layout keywords of ``apply`` and return the :class:`Graphs` of ``x``.

    * Padded (no ``segment_ids``/``n_node``): ``x [batch, nodes, ...]``, ``mask [batch,
      nodes]`` or None.
    * Flat, with ``segment_ids [total_nodes]`` (int, the graph of each node, as
      ``jraph.GraphsTuple`` nodes after ``jnp.repeat(arange(G), n_node)``) and
      ``num_graphs`` (a static Python int, as ``jax.ops.segment_sum``'s
      ``num_segments``); or with ``n_node [num_graphs]`` (int counts, consecutive nodes;
      ``num_graphs`` is then ``n_node.shape[0]``, and nodes past ``sum(n_node)`` are padding).
      ``mask [total_nodes]`` (bool) optionally marks further padded nodes.

    Raises ``ValueError`` naming the expected and the received shapes or values.
    """
    shape = tuple(getattr(x, "shape", ()))
    if segment_ids is None and n_node is None:
        if num_graphs is not None:
            raise ValueError(
                f"{what}: num_graphs={num_graphs!r} needs segment_ids= (flat layout "
                f"[total_nodes, ...]); received no segment_ids or n_node"
            )
        check_mask(mask, shape)
        return Graphs(mask=None if mask is None else jnp.asarray(mask))
    if segment_ids is not None and n_node is not None:
        raise ValueError(f"{what}: expected segment_ids= or n_node=, not both")
    if len(shape) < 1:
        raise _layout_error(what, "flat nodes [total_nodes, ...]", x)
    total = shape[0]
    if n_node is not None:
        n_node = jnp.asarray(n_node)
        if n_node.ndim != 1:
            raise ValueError(
                f"{what}: expected n_node [num_graphs] of an integer dtype; received shape "
                f"{n_node.shape}"
            )
        graphs = n_node.shape[0]
        if num_graphs is not None and num_graphs != graphs:
            raise ValueError(
                f"{what}: num_graphs={num_graphs!r} but n_node has {graphs} entries"
            )
        _int_array(n_node, f"{what}: n_node", "[num_graphs]", (graphs,))
        ends = jnp.cumsum(n_node)
        segment_ids = jnp.searchsorted(ends, jnp.arange(total), side="right")
        num_graphs = graphs
    else:
        segment_ids = _int_array(segment_ids, f"{what}: segment_ids", "[total_nodes]", (total,))
        if not isinstance(num_graphs, int) or isinstance(num_graphs, bool) or num_graphs < 1:
            raise ValueError(
                f"{what}: segment_ids needs num_graphs, a static Python int >= 1 (the number "
                f"of graphs, padding graphs included); received {num_graphs!r}"
            )
    if mask is not None:
        mask = jnp.asarray(mask)
        if mask.shape != (total,):
            raise ValueError(
                f"mask: expected a node mask [total_nodes] = {(total,)} in the flat layout; "
                f"received shape {mask.shape}"
            )
        mask = mask.astype(bool)
    return Graphs(mask=mask, segment_ids=segment_ids, num_graphs=int(num_graphs))


def feature_graphs(x: Any, mask: Any, context: dict, what: str = "features") -> Graphs:
    """Check scalar node features in either layout and return their :class:`Graphs`.

    The layout keywords (:data:`LAYOUT_KEYS`) are read from ``context`` (``apply``'s
    keyword arguments): without them ``x [batch, nodes, channels]`` and ``mask [batch,
    nodes]`` (:func:`check_node_features`); with them ``x [total_nodes, channels]``,
    ``mask [total_nodes]`` (:func:`graph_layout`).
    """
    keys = {k: context.get(k) for k in LAYOUT_KEYS}
    if keys["segment_ids"] is None and keys["n_node"] is None:
        check_node_features(x, mask, what)
    else:
        expected = "flat scalar features [total_nodes, channels]"
        if getattr(x, "ndim", None) != 2:
            raise _layout_error(what, expected, x)
        _check_float(x, what, expected)
    return graph_layout(x, mask, **keys, what=what)


def zero_padding(x: jax.Array, graphs: Graphs | jax.Array | None) -> jax.Array:
    """``x`` with every padded node set to 0 by selection (``jnp.where``), so NaN or inf
    there reach neither a statistic nor a gradient. ``graphs`` is a :class:`Graphs` or a
    padded mask ``[batch, nodes]`` (or None: nothing is padded)."""
    if graphs is None:
        return x
    if not isinstance(graphs, Graphs):
        graphs = Graphs(mask=graphs)
    keep = graphs.real(x.ndim)
    return x if keep is None else jnp.where(keep, x, jnp.zeros((), x.dtype))


def _gather_graphs(per_graph: jax.Array, graphs: Graphs) -> jax.Array:
    ids = jnp.clip(graphs.segment_ids, 0, graphs.num_graphs - 1)
    return jnp.take(per_graph, ids, axis=0)


def graph_sum(a: jax.Array, graphs: Graphs, axes: Sequence[int] = ()) -> jax.Array:
    """Sum of ``a`` over the real nodes of each graph and over the trailing ``axes``
    (negative indices), broadcast back to every node (keepdims).

    Padded: ``[batch, 1, ...]``, the sum over axis 1 and ``axes``. Flat: ``[total_nodes,
    ...]``, each node holding its graph's sum (``jax.ops.segment_sum``).
    """
    if not graphs.flat:
        return masked_sum(a, graphs.mask, (1, *_positive(axes, a.ndim)))
    r = jnp.sum(a, axis=_positive(axes, a.ndim), keepdims=True) if axes else a
    r = zero_padding(r, graphs)
    per_graph = jax.ops.segment_sum(r, jnp.clip(graphs.segment_ids, 0, graphs.num_graphs),
                                    num_segments=graphs.num_graphs)
    return _gather_graphs(per_graph, graphs)


def graph_count(a: jax.Array, graphs: Graphs, axes: Sequence[int] = ()) -> jax.Array:
    """Number of real entries of ``a`` per graph (over the nodes and ``axes``), never below
    1, broadcastable like :func:`graph_sum`."""
    pos = _positive(axes, a.ndim)
    if not graphs.flat:
        return masked_count(a, graphs.mask, (1, *pos))
    per_node = 1
    for i in pos:
        per_node *= a.shape[i]
    ones = jnp.full((a.shape[0],) + (1,) * (a.ndim - 1), per_node, a.dtype)
    return jnp.maximum(graph_sum(ones, graphs), 1.0)


def graph_mean(a: jax.Array, graphs: Graphs, axes: Sequence[int] = ()) -> jax.Array:
    """Mean of ``a`` over the real nodes of each graph and the trailing ``axes``, shaped
    like :func:`graph_sum` (0 for a graph without a real node). Padded: exactly
    :func:`masked_mean` over ``(1, *axes)``."""
    if not graphs.flat:
        return masked_mean(a, graphs.mask, (1, *_positive(axes, a.ndim)))
    return graph_sum(a, graphs, axes) / graph_count(a, graphs, axes)


def graph_max_abs(a: jax.Array, graphs: Graphs, axes: Sequence[int] = ()) -> jax.Array:
    """Largest ``|a|`` over the real nodes of each graph and the trailing ``axes``, shaped
    like :func:`graph_sum` (0 for a graph without a real node)."""
    r = zero_padding(jnp.abs(a), graphs)
    if not graphs.flat:
        return jnp.max(r, axis=(1, *_positive(axes, a.ndim)), keepdims=True)
    if axes:
        r = jnp.max(r, axis=_positive(axes, a.ndim), keepdims=True)
    per_graph = jax.ops.segment_max(r, jnp.clip(graphs.segment_ids, 0, graphs.num_graphs),
                                    num_segments=graphs.num_graphs)
    return _gather_graphs(jnp.maximum(per_graph, 0.0), graphs)


def graph_scale(
    a: jax.Array, graphs: Graphs, axes: Sequence[int] = (), epsilon: float = 0.0
) -> jax.Array:
    """The power of two to divide ``a`` by before squaring it in a statistic over the nodes
    of each graph and ``axes`` (:func:`geonorm_jax.geometry.magnitude_scale` of
    :func:`graph_max_abs`, floored at ``sqrt(epsilon)``); 1 at ordinary magnitudes. No
    gradient. Shaped like :func:`graph_sum`."""
    return magnitude_scale(graph_max_abs(a, graphs, axes), float(epsilon) ** 0.5)
