"""Flat node and edge layouts (e3nn-jax, jraph) of the molecular layers with neighbour
statistics (:func:`~geonorm_jax.norms.molecular_graph.mace_density_norm`,
:func:`~geonorm_jax.norms.molecular_graph.species_neighbor_norm`).

Flat layout, as e3nn-jax and jraph models carry a batch of graphs:

* nodes ``x [num_nodes, irreps]`` (an ``e3nn.IrrepsArray``), vectors ``[num_nodes, channels,
  3]`` or features ``[num_nodes, channels]``, with ``segment_ids [num_nodes]`` + a static
  ``num_graphs`` or ``n_node [num_graphs]`` and an optional ``mask [num_nodes]``
  (:func:`~geonorm_jax.norms.base.graph_layout`);
* per-node context ``positions [num_nodes, 3]`` (an array or an IrrepsArray ``1o``),
  ``species [num_nodes]``;
* edges ``senders [num_edges]``, ``receivers [num_edges]`` (integer node indices; the keyword
  names of the library's models, ``jraph.GraphsTuple.senders``/``receivers``), an optional
  ``edge_mask [num_edges]`` (bool) and per-edge context ``edge_features [num_edges, F]``.

An edge enters a statistic when its mask is True, both its ends lie in ``[0, num_nodes)``
and are real nodes: the edges ``jraph.pad_with_graphs`` adds, which point at a padding node,
drop out without an edge mask. Self-loops (``sender == receiver``) are dropped where the
layer's formula sums over ``j != i``.

:func:`flat_edges` checks the edge keywords and returns the :class:`Edges`;
:func:`receiver_sum` sums per-edge values into their receivers (``jax.ops.segment_sum``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp

from geonorm_jax.norms.base import Graphs, layout_error

__all__ = [
    "EDGE_KEYS",
    "Edges",
    "flat_edges",
    "check_no_flat_edges",
    "check_padded_only",
    "node_positions",
    "receiver_sum",
]

#: The keyword arguments of ``apply`` that give the flat layout's edges.
EDGE_KEYS = ("senders", "receivers", "edge_mask")


class Edges(NamedTuple):
    """A checked flat edge list: ``senders``, ``receivers`` ``[num_edges]`` (int32, clipped
    into ``[0, num_nodes)``; safe to gather with) and ``keep [num_edges]`` (bool, True on the
    edges that enter a statistic)."""

    senders: jax.Array
    receivers: jax.Array
    keep: jax.Array

    @property
    def num_edges(self) -> int:
        return self.senders.shape[0]


def _index_array(a: Any, what: str) -> jax.Array:
    a = jnp.asarray(a)
    if a.ndim != 1 or not jnp.issubdtype(a.dtype, jnp.integer):
        raise ValueError(f"{what}: expected node indices [num_edges] of an integer dtype; "
                         f"received shape {a.shape} with dtype {a.dtype}")
    return a


def flat_edges(context: dict, graphs: Graphs, num_nodes: int, what: str, *,
               self_loops: bool) -> Edges | None:
    """The :class:`Edges` of ``context``'s ``senders=``/``receivers=``/``edge_mask=`` in the
    flat layout (None when neither is given).

    ``keep`` is ``edge_mask`` (True when absent) and both ends in ``[0, num_nodes)`` and real
    in ``graphs`` (:meth:`~geonorm_jax.norms.base.Graphs.real`), and ``sender != receiver``
    unless ``self_loops``. Raises ``ValueError`` naming the expected and received shapes.
    """
    senders, receivers = context.get("senders"), context.get("receivers")
    edge_mask = context.get("edge_mask")
    if senders is None and receivers is None:
        if edge_mask is not None:
            raise ValueError(f"{what}: edge_mask= needs senders= and receivers= [num_edges]; "
                             "received neither")
        return None
    if senders is None or receivers is None:
        given = "senders" if receivers is None else "receivers"
        raise ValueError(f"{what}: expected both senders= and receivers= [num_edges]; "
                         f"received only {given}=")
    s = _index_array(senders, f"{what}: senders")
    r = _index_array(receivers, f"{what}: receivers")
    if s.shape != r.shape:
        raise ValueError(f"{what}: expected senders and receivers of one shape [num_edges]; "
                         f"received {s.shape} and {r.shape}")
    keep = (s >= 0) & (s < num_nodes) & (r >= 0) & (r < num_nodes)
    if edge_mask is not None:
        em = jnp.asarray(edge_mask)
        if em.shape != s.shape:
            raise ValueError(f"{what}: expected edge_mask [num_edges] = {s.shape}; received "
                             f"shape {em.shape}")
        keep = keep & em.astype(bool)
    s = jnp.clip(s, 0, num_nodes - 1).astype(jnp.int32)
    r = jnp.clip(r, 0, num_nodes - 1).astype(jnp.int32)
    real = graphs.real(1)
    if real is not None:
        keep = keep & real[s] & real[r]
    if not self_loops:
        keep = keep & (s != r)
    return Edges(s, r, keep)


def check_no_flat_edges(context: dict, what: str) -> None:
    """``ValueError`` when an edge keyword of the flat layout (:data:`EDGE_KEYS`) is given to
    the padded layout."""
    given = [k for k in EDGE_KEYS if context.get(k) is not None]
    if given:
        raise ValueError(
            f"{what}: {'/'.join(given)}= are edges of the flat layout (nodes [num_nodes, ...] "
            "with segment_ids= and num_graphs=, or n_node=); the padded layout [batch, nodes, "
            "...] takes adjacency=[batch, nodes, nodes]")


def check_padded_only(context: dict, what: str) -> None:
    """``ValueError`` when ``adjacency=`` (padded only) is given to the flat layout."""
    if context.get("adjacency") is not None:
        raise ValueError(
            f"{what}: adjacency=[batch, nodes, nodes] is the padded layout's; the flat layout "
            f"takes senders=/receivers= [num_edges] (optional edge_mask=); received adjacency "
            f"of shape {getattr(context['adjacency'], 'shape', None)}")


def node_positions(pos: Any, graphs: Graphs, num_nodes: int, what: str) -> jax.Array:
    """``positions [num_nodes, 3]`` (an array or an IrrepsArray ``1o``) as an array with the
    padded nodes set to 0 by selection (they may hold anything: NaN, 1e30)."""
    a = pos.array if isinstance(pos, e3nn.IrrepsArray) else pos
    if (getattr(a, "shape", None) != (num_nodes, 3)
            or not jnp.issubdtype(getattr(a, "dtype", object), jnp.floating)):
        raise layout_error(f"{what}: positions",
                           f"[num_nodes, 3] = ({num_nodes}, 3) of a floating dtype", a)
    real = graphs.real(2)
    return a if real is None else jnp.where(real, a, jnp.zeros((), a.dtype))


def receiver_sum(values: jax.Array, edges: Edges, num_nodes: int) -> jax.Array:
    """``sum`` of the kept edges' ``values [num_edges]`` into their receivers: ``[num_nodes]``
    (``jax.ops.segment_sum``; a dropped edge adds 0 by selection, not ``0 * value``)."""
    v = jnp.where(edges.keep, values, jnp.zeros((), values.dtype))
    return jax.ops.segment_sum(v, edges.receivers, num_segments=num_nodes)
