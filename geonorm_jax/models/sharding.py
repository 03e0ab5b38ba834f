"""The node-sharded EGNN kernels and kNN graph: the model side of node-axis sharding.

The layout (node blocks, edge blocks, the layout contract), :class:`NodeSharding` and the
placement helpers are in :mod:`geonorm_jax.parallel.nodes`; this module holds what needs the
EGNN's edge kernels (:mod:`geonorm_jax.models.egnn_kernels`) or the kNN builder
(:mod:`geonorm_jax.models.edges`):

* :func:`sharded_list_edges`: one layer's per-edge work under ``jax.shard_map`` (one
  all-gather of ``[h W_2, x]`` per layer; see :mod:`geonorm_jax.parallel.nodes` for what runs
  where);
* :func:`sharded_edge_inputs`: the edge attributes ``[q_i q_j, ||x_i - x_j||^2]`` per block;
* :func:`prepare_sharded_edges`: the checks of the per-graph edges ``[B, E]``;
* :func:`knn_graph`: the kNN graph built per node block, already in the layout.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from geonorm_jax.models import edges as edges_lib
from geonorm_jax.models import egnn_kernels as kernels
from geonorm_jax.models.egnn_kernels import EdgeKernelConfig
from geonorm_jax.models.execution_plan import resolve_chunk
from geonorm_jax.parallel import nodes as nodes_lib
from geonorm_jax.parallel.nodes import NodeSharding

__all__ = [
    "sharded_list_edges",
    "sharded_edge_inputs",
    "prepare_sharded_edges",
    "knn_graph",
]


def sharded_list_edges(
    p, a, b, x, edge_attr, senders, receivers, emask, cfg: EdgeKernelConfig, ns: NodeSharding
):
    """Node-sharded edge list: ``(sum_j trans_ij, sum_j m_ij, count_i)``, sharded over nodes.

    Node arrays ``a, b [B, N, H]``, ``x [B, N, 3]`` and per-graph edges ``[B, E]`` (``[B, E,
    2]``) split over ``ns`` (the layout of :mod:`geonorm_jax.parallel.nodes`).
    Under ``jax.shard_map``, device ``d``:

    1. all-gathers ``[b, x]`` (sender side, ``[B, N, H + 3]``), the only collective;
    2. reads ``a_i``, ``x_i`` of its receivers from its own block ``[B, N/D, .]``;
    3. runs the per-edge MLPs on its ``B E/D`` edges (chunked by ``cfg.edge_chunk`` as in
       :func:`~geonorm_jax.models.egnn_kernels.list_edges`) and segment-sums
       ``[trans, m, edge_mask]`` into its local receivers ``[B N/D, 3 + H + 1]``.

    The parameters ``p`` enter replicated (``P()``); their gradients are summed (``psum``) over
    devices by ``shard_map``'s transpose, and the all-gather's transpose reduce-scatters the
    sender cotangents.
    """
    batch, n = x.shape[:2]
    hidden = a.shape[-1]
    block = n // ns.num_shards

    def local(p, a, bx, ea, s, r, em):
        # a [B, N/D, H], bx [B, N/D, H + 3]; ea [B, E/D, 2]; s, r, em [B, E/D]
        full = nodes_lib.gather_nodes(bx, ns.axis).reshape(batch * n, hidden + 3)
        b_all, x_all = full[:, :hidden], full[:, hidden:]
        a_loc, x_loc = a.reshape(-1, hidden), bx[..., hidden:].reshape(-1, 3)
        r_loc, em = nodes_lib.local_receivers(r, em, block, ns.axis)
        s_all = (s + (jnp.arange(batch, dtype=s.dtype) * n)[:, None]).reshape(-1)

        def fn(xs):
            s, r, em, ea = xs
            diff, radial = kernels.edge_geometry(x_loc[r] - x_all[s], cfg)  # [c, 3], [c, 1]
            pre = kernels.first_edge_layer(p, a_loc[r], b_all[s], radial, ea)
            trans, m = kernels.edge_messages(p, pre, diff, em, cfg)
            out = jnp.concatenate([trans, m, em[:, None]], axis=-1)
            return jax.ops.segment_sum(out, r, num_segments=batch * block)

        zeros = lambda: jax.lax.pcast(
            jnp.zeros((batch * block, hidden + 4), x.dtype), ns.axis, to="varying"
        )
        xs = (s_all, r_loc, em.reshape(-1), ea.reshape(-1, ea.shape[-1]))
        edge_chunk, save_dots = resolve_chunk(cfg.edge_chunk, xs[0].shape[0], hidden, x.dtype,
                                              save_dots=cfg.save_dots)
        total = kernels.sum_edge_chunks(fn, xs, zeros, edge_chunk, save_dots)
        return total.reshape(batch, block, hidden + 4)

    spec = ns.spec
    total = jax.shard_map(
        local, mesh=ns.mesh, in_specs=(P(),) + (spec,) * 6, out_specs=spec
    )(p, a, jnp.concatenate([b, x], axis=-1), edge_attr, senders, receivers, emask)
    total = ns.constrain(total)
    return total[..., :3], total[..., 3 : 3 + hidden], total[..., 3 + hidden :]


def sharded_edge_inputs(x, charges, mask, senders, receivers, edge_mask, ns: NodeSharding):
    """Edge attributes ``[q_i q_j, ||x_i - x_j||^2] [B, E, 2]`` and the float edge mask ``[B, E]``.

    The node-sharded counterpart of :func:`geonorm_jax.models.edges.list_edge_inputs`: under
    ``shard_map`` each device all-gathers ``[x, q, mask] [B, N, 5]`` and computes its own
    edge block; edges touching a padded node, or outside their node block, are masked.
    """
    batch, n = x.shape[:2]
    block = n // ns.num_shards
    dtype = x.dtype
    node_mask = jnp.ones((batch, n), dtype) if mask is None else mask.astype(dtype)

    def local(xqm, s, r, em):  # xqm [B, N/D, 5]; s, r, em [B, E/D]
        full = nodes_lib.gather_nodes(xqm, ns.axis).reshape(batch * n, 5)
        loc = xqm.reshape(-1, 5)
        r_loc, em = nodes_lib.local_receivers(r, em, block, ns.axis)
        s_all = (s + (jnp.arange(batch, dtype=s.dtype) * n)[:, None]).reshape(-1)
        xi, xj = loc[r_loc], full[s_all]
        em = em.reshape(-1).astype(dtype) * xi[:, 4] * xj[:, 4]
        r0 = jnp.sum(jnp.square(xi[:, :3] - xj[:, :3]), axis=-1)
        attr = jnp.stack([xi[:, 3] * xj[:, 3], r0], axis=-1)
        return attr.reshape(batch, -1, 2), em.reshape(batch, -1)

    spec = ns.spec
    xqm = jnp.concatenate([x, charges, node_mask[..., None]], axis=-1)
    return jax.shard_map(local, mesh=ns.mesh, in_specs=(spec,) * 4, out_specs=(spec, spec))(
        xqm, senders, receivers, edge_mask
    )


def prepare_sharded_edges(senders, receivers, edge_mask, batch, n, ns: NodeSharding):
    """Per-graph edges ``[B, E]`` for the node-sharded path (flat ``[E]`` only when ``B = 1``).

    Checks ``D | N`` and ``D | E``; with concrete (not traced) receivers, also the node-block
    layout (:func:`geonorm_jax.parallel.check_partition`). Under ``jit`` a wrong layout
    cannot be detected: its out-of-block edges are masked out (dropped).
    """
    edges_lib.check_edges(senders, receivers, edge_mask, batch)
    if senders.ndim == 1:
        if batch != 1:
            raise ValueError(
                f"node_sharding: expected per-graph edges [batch={batch}, edges] (flat edges "
                f"only for batch 1); received flat shape {senders.shape}"
            )
        senders, receivers = senders[None], receivers[None]
        edge_mask = None if edge_mask is None else edge_mask[None]
    if edge_mask is None:
        edge_mask = jnp.ones(senders.shape, bool)
    shards = ns.num_shards
    if n % shards or senders.shape[1] % shards:
        raise ValueError(
            f"node_sharding: expected nodes and edges per graph divisible by the number of "
            f"shards {shards}; received {n} nodes and {senders.shape[1]} edges (pad with "
            f"geonorm_jax.parallel.shard_graph)"
        )
    pair = (receivers, edge_mask)
    # across hosts a process cannot read the other processes' blocks: check only local arrays
    if not any(isinstance(a, jax.core.Tracer) for a in pair) and all(
        getattr(a, "is_fully_addressable", True) for a in pair
    ):
        nodes_lib.check_partition(np.asarray(receivers), np.asarray(edge_mask), n, shards)
    return senders, receivers, edge_mask.astype(bool)


def knn_graph(
    sharding: NodeSharding,
    x: jax.Array,
    k: int,
    mask: jax.Array | None = None,
    cutoff: float | None = None,
    row_chunk: int | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """:func:`geonorm_jax.models.knn_graph` computed per node block, already partitioned.

    Device ``d`` all-gathers the positions ``[B, N, 3]`` (and mask) and finds the ``k``
    nearest senders of its own receivers ``[d N/D, (d+1) N/D)``: memory
    ``O(B N/D N)`` per device, or ``O(B row_chunk N)`` with ``row_chunk``. The edge blocks
    come out in the layout of :mod:`geonorm_jax.parallel.nodes`, sharded over ``axis``; the
    arrays equal
    ``knn_graph(x, k, mask, cutoff)``.

    Returns:
      ``(senders, receivers, edge_mask)``, each ``[batch, N k]``, sharded over nodes.
    """
    if getattr(x, "ndim", None) != 3 or x.shape[-1] != 3:
        raise ValueError(
            f"knn_graph: expected coordinates [batch, nodes, 3]; received shape "
            f"{getattr(x, 'shape', None)}"
        )
    if k < 1:
        raise ValueError(f"knn_graph: expected k >= 1; received k={k}")
    batch, n, _ = x.shape
    block = nodes_lib.check_num_nodes(n, sharding.num_shards)
    if mask is None:
        mask = jnp.ones((batch, n), bool)
    elif getattr(mask, "shape", None) != (batch, n):
        raise ValueError(
            f"knn_graph: expected mask [batch, nodes] = {(batch, n)}; received shape "
            f"{getattr(mask, 'shape', None)}"
        )
    axis = sharding.axis

    def local(x_rows, mask_rows):  # [B, N/D, 3], [B, N/D]
        rows = jax.lax.axis_index(axis) * block + jnp.arange(block, dtype=jnp.int32)
        x_all = nodes_lib.gather_nodes(x_rows, axis)
        mask_all = nodes_lib.gather_nodes(mask_rows, axis)
        senders, emask = edges_lib.knn_rows(
            x_rows, rows, x_all, mask_rows, mask_all, k, cutoff, row_chunk
        )
        receivers = jnp.broadcast_to(rows[None, :, None], senders.shape)
        flat = lambda a: a.reshape(batch, block * k)
        return flat(senders), flat(receivers), flat(emask)

    spec = sharding.spec
    fn = jax.shard_map(local, mesh=sharding.mesh, in_specs=(spec, spec), out_specs=spec)
    return fn(jax.lax.stop_gradient(x), mask)
