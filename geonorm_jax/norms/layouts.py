"""Node layouts: padded ``[batch, nodes, ...]`` or flat ``[total_nodes, ...]`` (jraph, PyG),
and statistics per graph in either layout.

* Padded: ``x [batch, nodes, ...]``, ``mask [batch, nodes]`` (bool) or None.
* Flat: ``x [total_nodes, ...]`` with ``segment_ids [total_nodes]`` (the graph of each node;
  ids outside ``[0, num_graphs)`` mark padding) and a static ``num_graphs``, or ``n_node
  [num_graphs]`` counts of consecutive nodes; an optional ``mask [total_nodes]``.

:func:`graph_layout` checks the layout keywords and returns a :class:`Graphs`;
:func:`graph_sum`, :func:`graph_count`, :func:`graph_mean` and :func:`graph_max_abs` reduce
over the real nodes of each graph (and trailing axes) and broadcast back to every node
(padded: ``[batch, 1, ...]``; flat: ``[total_nodes, ...]`` via ``jax.ops.segment_sum``);
:func:`graph_scale` is the power of two to divide by before squaring
(:func:`geonorm_jax.geometry.magnitude_scale`); :func:`zero_padding` sets padded nodes to 0 by
selection, so NaN or inf there reach neither a statistic nor a gradient.

Re-exported by :mod:`geonorm_jax.norms.base`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from geonorm_jax.geometry import magnitude_scale
from geonorm_jax.norms.checks import (
    _check_float,
    check_mask,
    check_node_features,
    layout_error,
    masked_count,
    masked_mean,
    masked_sum,
)

__all__ = [
    "LAYOUT_KEYS",
    "Graphs",
    "graph_layout",
    "feature_graphs",
    "zero_padding",
    "graph_sum",
    "graph_count",
    "graph_mean",
    "graph_max_abs",
    "graph_scale",
]

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
        raise layout_error(what, "flat nodes [total_nodes, ...]", x)
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
            raise layout_error(what, expected, x)
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
        return jnp.max(r, axis=(1, *_positive(axes, a.ndim)), keepdims=True, initial=0.0)
    if axes:
        r = jnp.max(r, axis=_positive(axes, a.ndim), keepdims=True, initial=0.0)
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
