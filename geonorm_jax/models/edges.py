"""Edge lists with a static budget: fully connected, k-nearest-neighbour and radius graphs.

The edge-list path of :class:`geonorm_jax.models.EGNN` takes ``senders``, ``receivers`` and
``edge_mask``. An edge ``e`` carries the message ``m_ij`` from node ``j = senders[e]`` to
node ``i = receivers[e]``; it is aggregated at ``i`` (the reference's ``row``), and its
coordinate term is ``x_i - x_j``. Two layouts are accepted:

* per graph: ``senders, receivers, edge_mask`` of shape ``[batch, edges]``, with node
  indices in ``[0, nodes)`` of that graph (what the builders below return);
* flat: shape ``[edges]``, with indices into the flattened ``[batch * nodes]`` node axis
  (node ``n`` of graph ``b`` is ``b * nodes + n``), as in jraph.

Shapes are static: a graph with fewer real edges than the budget is padded with edges whose
``edge_mask`` is False (their indices must still be in range; the builders use 0). Edges
that touch a padded node (node ``mask`` False) are ignored by the model whatever
``edge_mask`` says.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["fully_connected_edges", "knn_graph", "flatten_edges"]


def fully_connected_edges(
    num_nodes: int, batch_size: int | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """All ordered pairs ``(i, j)``, ``i != j``: ``num_nodes * (num_nodes - 1)`` edges.

    Edges are sorted by receiver (``i`` major, ``j`` minor), the order of the reference's
    ``get_edges``.

    Args:
      num_nodes: nodes per graph ``N``.
      batch_size: if given, return per-graph arrays ``[batch, N (N - 1)]``; otherwise
        ``[N (N - 1)]``.

    Returns:
      ``(senders, receivers, edge_mask)``: int32 indices in ``[0, N)`` and an all-True bool mask.
    """
    i, j = jnp.meshgrid(jnp.arange(num_nodes), jnp.arange(num_nodes), indexing="ij")
    off_diagonal = (i != j).reshape(-1)
    receivers = i.reshape(-1)[off_diagonal].astype(jnp.int32)
    senders = j.reshape(-1)[off_diagonal].astype(jnp.int32)
    edge_mask = jnp.ones(senders.shape, bool)
    if batch_size is not None:
        tile = lambda a: jnp.broadcast_to(a, (batch_size, a.shape[0]))
        senders, receivers, edge_mask = tile(senders), tile(receivers), tile(edge_mask)
    return senders, receivers, edge_mask


def knn_graph(
    x: jax.Array, k: int, mask: jax.Array | None = None, cutoff: float | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The ``k`` nearest neighbours of every node as a per-graph edge list ``[batch, N k]``.

    Node ``i`` receives from its ``k`` nearest other real nodes ``j`` (Euclidean distance of
    ``x``, self excluded). With ``cutoff``, neighbours farther than ``cutoff`` are masked out,
    which makes this a radius graph with a static budget of ``k`` neighbours. Where fewer
    than ``k`` real neighbours exist (small or padded graphs), the extra edges are masked.
    Receivers are sorted (``i`` major). The graph is built from values only: its indices
    carry no gradient. Cost: ``O(B N^2)`` distances, then ``lax.top_k``.

    Args:
      x: coordinates ``[batch, nodes, 3]``.
      k: static number of neighbours per node, ``1 <= k``; ``k > N - 1`` is allowed (masked).
      mask: node mask ``[batch, nodes]`` bool (True = real) or None.
      cutoff: optional radius; edges longer than it are masked.

    Returns:
      ``(senders, receivers, edge_mask)``, each ``[batch, nodes * k]`` (int32, int32, bool).
    """
    if getattr(x, "ndim", None) != 3 or x.shape[-1] != 3:
        raise ValueError(
            f"knn_graph: expected coordinates [batch, nodes, 3]; received shape "
            f"{getattr(x, 'shape', None)}"
        )
    if k < 1:
        raise ValueError(f"knn_graph: expected k >= 1; received k={k}")
    batch, n, _ = x.shape
    x = jax.lax.stop_gradient(x)
    d2 = jnp.sum(jnp.square(x[:, :, None, :] - x[:, None, :, :]), axis=-1)  # [B, N, N]
    valid = ~jnp.eye(n, dtype=bool)[None]
    if mask is not None:
        valid = valid & mask[:, :, None] & mask[:, None, :]
    d2 = jnp.where(valid, d2, jnp.inf)
    kk = min(k, n)
    neg_d2, senders = jax.lax.top_k(-d2, kk)  # [B, N, kk], nearest first
    edge_mask = jnp.isfinite(neg_d2)
    if cutoff is not None:
        edge_mask = edge_mask & (-neg_d2 <= cutoff**2)
    if kk < k:  # pad the budget to N * k
        pad = ((0, 0), (0, 0), (0, k - kk))
        senders = jnp.pad(senders, pad)
        edge_mask = jnp.pad(edge_mask, pad)
    senders = jnp.where(edge_mask, senders, 0).astype(jnp.int32)
    receivers = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32)[None, :, None], senders.shape)
    flat = lambda a: a.reshape(batch, n * k)
    return flat(senders), flat(receivers), flat(edge_mask)


def flatten_edges(
    senders: jax.Array, receivers: jax.Array, edge_mask: jax.Array | None, num_nodes: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Turn a per-graph edge list ``[batch, edges]`` into a flat one ``[batch * edges]``.

    Node ``n`` of graph ``b`` becomes ``b * num_nodes + n``. A flat input ``[edges]`` is
    returned unchanged (with an all-True mask when ``edge_mask`` is None).
    """
    if edge_mask is None:
        edge_mask = jnp.ones(senders.shape, bool)
    if senders.ndim == 1:
        return senders, receivers, edge_mask.astype(bool)
    offset = (jnp.arange(senders.shape[0], dtype=senders.dtype) * num_nodes)[:, None]
    return (
        (senders + offset).reshape(-1),
        (receivers + offset).reshape(-1),
        edge_mask.astype(bool).reshape(-1),
    )
