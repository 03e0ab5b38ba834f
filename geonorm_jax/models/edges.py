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

The model's side of the graph is here too: :func:`check_inputs` and :func:`check_edges`
(ValueError naming the expected and the received shape), :func:`prepare_edges` (checked, flat
edges) and the edge inputs of the EGNN, :func:`list_edge_inputs` and
:func:`dense_edge_inputs`: the edge attributes ``e_ij = [q_i q_j, ||x^0_i - x^0_j||^2]`` of
the input positions and the float edge mask.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = [
    "fully_connected_edges",
    "knn_graph",
    "knn_rows",
    "flatten_edges",
    "check_inputs",
    "check_edges",
    "prepare_edges",
    "list_edge_inputs",
    "dense_edge_inputs",
]


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
    x: jax.Array,
    k: int,
    mask: jax.Array | None = None,
    cutoff: float | None = None,
    row_chunk: int | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The ``k`` nearest neighbours of every node as a per-graph edge list ``[batch, N k]``.

    Node ``i`` receives from its ``k`` nearest other real nodes ``j`` (Euclidean distance of
    ``x``, self excluded). With ``cutoff``, neighbours farther than ``cutoff`` are masked out,
    which makes this a radius graph with a static budget of ``k`` neighbours. Where fewer
    than ``k`` real neighbours exist (small or padded graphs), the extra edges are masked.
    Receivers are sorted (``i`` major): edges ``[i k, (i + 1) k)`` are those of receiver
    ``i``. The graph is built from values only: its indices carry no gradient.

    Cost: ``O(B N^2)`` distances, then ``lax.top_k`` per receiver row. Memory is
    ``O(B N^2)`` (the ``[B, N, N]`` squared distances) unless ``row_chunk`` is given: then
    ``lax.map`` computes the rows of ``row_chunk`` receivers at a time, ``[B, row_chunk, N]``,
    so memory is ``O(B row_chunk N)``; the result is identical (each row's distances and
    ``top_k`` are the same computation).

    Args:
      x: coordinates ``[batch, nodes, 3]``.
      k: static number of neighbours per node, ``1 <= k``; ``k > N - 1`` is allowed (masked).
      mask: node mask ``[batch, nodes]`` bool (True = real) or None.
      cutoff: optional radius; edges longer than it are masked.
      row_chunk: receivers per block (``>= 1``), or None for one block of all ``N`` rows.
        ``N`` need not be a multiple (the last block is padded and the padding dropped).

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
    if row_chunk is not None and row_chunk < 1:
        raise ValueError(f"knn_graph: expected row_chunk >= 1 or None; received {row_chunk}")
    if mask is not None and getattr(mask, "shape", None) != x.shape[:2]:
        raise ValueError(
            f"knn_graph: expected mask [batch, nodes] = {x.shape[:2]}; received shape "
            f"{getattr(mask, 'shape', None)}"
        )
    batch, n, _ = x.shape
    x = jax.lax.stop_gradient(x)
    rows = jnp.arange(n, dtype=jnp.int32)
    senders, edge_mask = knn_rows(x, rows, x, mask, mask, k, cutoff, row_chunk)
    receivers = jnp.broadcast_to(rows[None, :, None], senders.shape)
    flat = lambda a: a.reshape(batch, n * k)
    return flat(senders), flat(receivers), flat(edge_mask)


def knn_rows(
    x_rows: jax.Array,
    rows: jax.Array,
    x: jax.Array,
    mask_rows: jax.Array | None,
    mask: jax.Array | None,
    k: int,
    cutoff: float | None = None,
    row_chunk: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The ``k`` nearest senders of the receivers ``rows`` (the kernel of :func:`knn_graph`).

    Args:
      x_rows: receiver coordinates ``[batch, R, 3]``; ``rows [R]`` their node indices in
        ``[0, N)`` (used to exclude self-edges).
      x: all coordinates ``[batch, N, 3]`` (the candidate senders).
      mask_rows, mask: node masks ``[batch, R]`` and ``[batch, N]``, or both None.
      k, cutoff, row_chunk: as in :func:`knn_graph`.

    Returns:
      ``(senders [batch, R, k] int32, edge_mask [batch, R, k] bool)``; masked edges have
      sender 0. Used per node block by :func:`geonorm_jax.models.sharding.knn_graph`.
    """
    batch, r = x_rows.shape[:2]
    n = x.shape[1]
    if mask_rows is None:
        mask_rows = jnp.ones((batch, r), bool)
    if mask is None:
        mask = jnp.ones((batch, n), bool)

    def block(xs):
        xr, ids, mr = xs  # [B, R', 3], [R'], [B, R']
        d2 = jnp.sum(jnp.square(xr[:, :, None, :] - x[:, None, :, :]), axis=-1)  # [B, R', N]
        valid = (ids[:, None] != jnp.arange(n, dtype=ids.dtype)[None, :])[None]
        valid = valid & mr[:, :, None] & mask[:, None, :]
        d2 = jnp.where(valid, d2, jnp.inf)
        kk = min(k, n)
        neg_d2, senders = jax.lax.top_k(-d2, kk)  # [B, R', kk], nearest first
        emask = jnp.isfinite(neg_d2)
        if cutoff is not None:
            emask = emask & (-neg_d2 <= cutoff**2)
        if kk < k:  # pad the budget to k per receiver
            pad = ((0, 0), (0, 0), (0, k - kk))
            senders = jnp.pad(senders, pad)
            emask = jnp.pad(emask, pad)
        return jnp.where(emask, senders, 0).astype(jnp.int32), emask

    if row_chunk is None or row_chunk >= r:
        return block((x_rows, rows, mask_rows))
    num = -(-r // row_chunk)
    pad = num * row_chunk - r
    x_rows = jnp.pad(x_rows, ((0, 0), (0, pad), (0, 0)))
    rows = jnp.pad(rows, (0, pad))
    mask_rows = jnp.pad(mask_rows, ((0, 0), (0, pad)))
    split = lambda a: jnp.moveaxis(a.reshape((batch, num, row_chunk) + a.shape[2:]), 1, 0)
    senders, emask = jax.lax.map(
        block, (split(x_rows), rows.reshape(num, row_chunk), split(mask_rows))
    )  # [num, B, row_chunk, k]
    merge = lambda a: jnp.moveaxis(a, 0, 1).reshape(batch, num * row_chunk, k)[:, :r]
    return merge(senders), merge(emask)


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


def _shape(a) -> Any:
    return getattr(a, "shape", None)


def check_inputs(x, v, charges, mask) -> None:
    """ValueError unless ``x, v [batch, nodes, 3]`` (float), ``charges [batch, nodes, 1]`` and
    ``mask`` None or bool ``[batch, nodes]``."""
    if getattr(x, "ndim", None) != 3 or x.shape[-1] != 3:
        raise ValueError(f"x: expected coordinates [batch, nodes, 3]; received shape {_shape(x)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x: expected a floating dtype; received {x.dtype} (shape {x.shape})")
    batch, n, _ = x.shape
    if _shape(v) != x.shape:
        raise ValueError(
            f"v: expected velocities [batch, nodes, 3] = {x.shape} like x; received shape "
            f"{_shape(v)}"
        )
    if _shape(charges) != (batch, n, 1):
        raise ValueError(
            f"charges: expected [batch, nodes, 1] = {(batch, n, 1)}; received shape "
            f"{_shape(charges)}"
        )
    if mask is not None and (_shape(mask) != (batch, n) or mask.dtype != jnp.bool_):
        raise ValueError(
            f"mask: expected a bool node mask [batch, nodes] = {(batch, n)}; received shape "
            f"{_shape(mask)} with dtype {getattr(mask, 'dtype', None)}"
        )


def check_edges(senders, receivers, edge_mask, batch: int) -> None:
    """ValueError unless ``senders``/``receivers`` are integer ``[edges]`` or
    ``[batch, edges]`` of equal shape and ``edge_mask`` is None or of that shape."""
    if senders is None or receivers is None:
        raise ValueError("senders and receivers: expected both or neither; received one")
    if _shape(senders) != _shape(receivers) or senders.ndim not in (1, 2):
        raise ValueError(
            f"senders, receivers: expected equal shapes [edges] or [batch, edges]; received "
            f"{_shape(senders)} and {_shape(receivers)}"
        )
    if senders.ndim == 2 and senders.shape[0] != batch:
        raise ValueError(
            f"senders: expected per-graph edges [batch={batch}, edges]; received shape "
            f"{senders.shape}"
        )
    if not jnp.issubdtype(senders.dtype, jnp.integer):
        raise ValueError(f"senders: expected integer indices; received dtype {senders.dtype}")
    if edge_mask is not None and _shape(edge_mask) != senders.shape:
        raise ValueError(
            f"edge_mask: expected the shape of senders {senders.shape}; received "
            f"{_shape(edge_mask)}"
        )


def prepare_edges(senders, receivers, edge_mask, batch: int, n: int):
    """:func:`check_edges`, then :func:`flatten_edges`: flat ``[E]`` indices into ``B N``."""
    check_edges(senders, receivers, edge_mask, batch)
    return flatten_edges(senders, receivers, edge_mask, n)


def list_edge_inputs(x, charges, mask, senders, receivers, edge_mask):
    """The EGNN's edge-list inputs from positions ``x [B, N, 3]``, ``charges [B, N, 1]``.

    Returns ``(senders, receivers, edge_attr [E, 2], edge_mask [E])``: flat edges
    (:func:`prepare_edges`), ``e_ij = [q_i q_j, ||x_i - x_j||^2]`` and the edge mask as
    ``x.dtype``, zero for an edge that touches a padded node (``mask [B, N]`` False).
    """
    batch, n = x.shape[:2]
    senders, receivers, emask = prepare_edges(senders, receivers, edge_mask, batch, n)
    if mask is not None:
        flat_mask = mask.reshape(-1)
        emask = emask & flat_mask[senders] & flat_mask[receivers]
    xf, qf = x.reshape(-1, 3), charges.reshape(-1)
    r0 = jnp.sum(jnp.square(xf[receivers] - xf[senders]), axis=-1)
    edge_attr = jnp.stack([qf[receivers] * qf[senders], r0], axis=-1)
    return senders, receivers, edge_attr, emask.astype(x.dtype)


def dense_edge_inputs(x, charges, mask):
    """The EGNN's fully connected inputs: ``(edge_attr [B, N, N, 2], pair_mask [B, N, N])``.

    ``pair_mask`` is 1 for ``i != j`` with both nodes real, 0 otherwise (``x.dtype``).
    """
    batch, n = x.shape[:2]
    dtype = x.dtype
    pair = 1.0 - jnp.eye(n, dtype=dtype)[None]
    if mask is not None:
        m = mask.astype(dtype)
        pair = pair * m[:, :, None] * m[:, None, :]
    emask = jnp.broadcast_to(pair, (batch, n, n))
    r0 = jnp.sum(jnp.square(x[:, :, None] - x[:, None, :]), axis=-1)
    q = charges[..., 0]
    edge_attr = jnp.stack([q[:, :, None] * q[:, None, :], r0], axis=-1)
    return edge_attr, emask
