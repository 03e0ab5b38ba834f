r"""Node-axis sharding: one system too large for one device, split over a 1-D device mesh.

The node axis ``N`` of every node array ``[batch, N, ...]`` is split into ``D`` contiguous
blocks of ``N / D`` nodes, block ``d`` on device ``d`` of a 1-D mesh (axis name ``"nodes"``):
``NamedSharding(mesh, P(None, "nodes"))``. Edges are per graph, ``[batch, E]``, with ``E``
split the same way into ``D`` blocks of ``E / D`` edges, and the *layout contract* is

    every edge in edge block ``d`` of graph ``b`` has its receiver in node block ``d``,
    i.e. ``d N/D <= receivers[b, e] < (d + 1) N/D`` for ``d E/D <= e < (d + 1) E/D``.

:func:`partition_edges` reorders and pads any edge list into this layout (host-side NumPy,
static per-shard budget); a kNN graph from :func:`geonorm_jax.models.knn_graph` already has it
when ``D`` divides ``N`` (exactly ``k`` receiver-sorted edges per node), and
:func:`geonorm_jax.models.sharding.knn_graph` builds it directly on the sharded positions.

This module holds the layout and the placement (no model code): :class:`NodeSharding`, the
mesh, :func:`partition_edges` / :func:`check_partition`, :func:`pad_nodes`,
:func:`shard_nodes`, :func:`shard_graph`, and the two collectives the node-sharded kernels
use inside ``jax.shard_map`` (:func:`gather_nodes`, :func:`local_receivers`). The
node-sharded EGNN kernels that use them are in :mod:`geonorm_jax.models.sharding`.

What runs where, per EGNN layer (``EGNN(node_sharding=...)``):

* per-edge work (``phi_e``, ``phi_x``, the segment sums ``sum_j m_ij`` and
  ``sum_j (x_i - x_j) phi_x(m_ij)``) runs under ``jax.shard_map``: device ``d`` all-gathers
  the sender-side node products ``h W_2`` and the positions (``[B, N, H + 3]``, one
  ``all_gather`` over ``"nodes"``), reads its receiver-side terms ``h_i W_1 + b``, ``x_i``
  from its own block, and segment-sums its ``E / D`` edges into its *local* receivers
  (``receiver - d N/D``). The result ``[B, N, 3 + H]`` leaves sharded over nodes; no
  reduction across devices is needed. In the backward pass the all-gather transposes to a
  ``psum_scatter`` (reduce-scatter) of the sender cotangents, and the parameter gradients of
  the edge MLPs are summed (``psum``) by ``shard_map``'s transpose.
* everything else (node MLPs, masks, every norm of the catalogue) is ordinary ``jnp`` code
  on node-sharded arrays, pinned with ``jax.lax.with_sharding_constraint``; XLA's GSPMD
  partitioner inserts the all-reduces that reductions over nodes need (GeoNorm's centroid
  and ``sigma``, GraphNorm's mean and variance, BatchNorm statistics, ``mu0``).

So the per-device memory is ``O(E/D (H + 3))`` for edges plus ``O(B N (H + 3))`` for the
gathered sender terms, against ``O(E H)`` on one device; with ``k`` neighbours the edge
tensors dominate by a factor ``k``. Communication per layer is one all-gather of
``B N (H + 3)`` numbers forward (and one reduce-scatter backward) plus small all-reduces.

Across hosts: call ``jax.distributed.initialize()`` on every host first; ``jax.devices()``
then lists the devices of all hosts, and ``node_sharding()`` builds the mesh over all of
them. :func:`shard_nodes`, :func:`shard_graph` and :func:`geonorm_jax.parallel.replicate`
place arrays with ``jax.make_array_from_callback``, so every process (running the same
program with the same full host arrays) supplies only the blocks of its own devices; pass the
resulting global arrays to jitted functions as arguments. ``tests/test_multihost.py`` checks
this with two processes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from geonorm_jax.parallel.mesh import place

__all__ = [
    "NodeSharding",
    "node_mesh",
    "node_sharding",
    "partition_edges",
    "check_partition",
    "check_num_nodes",
    "pad_nodes",
    "shard_nodes",
    "shard_graph",
    "gather_nodes",
    "local_receivers",
]


@dataclasses.dataclass(frozen=True)
class NodeSharding:
    """A 1-D device mesh and the name of its axis; node arrays are split over ``axis``.

    Frozen and hashable, so it can be a Flax module attribute (``EGNN(node_sharding=...)``).

    Attributes:
      mesh: a ``jax.sharding.Mesh`` that has ``axis`` among its axis names (other axes, if
        any, replicate).
      axis: the mesh axis the node axis is split over.
    """

    mesh: Mesh
    axis: str = "nodes"

    def __post_init__(self):
        if not (hasattr(jax, "shard_map") and hasattr(jax.lax, "pcast")):
            raise RuntimeError(
                "node sharding needs jax.shard_map and jax.lax.pcast; installed jax "
                f"{jax.__version__} lacks them (tested with jax 0.10.2)"
            )
        if not isinstance(self.mesh, Mesh):
            raise ValueError(
                f"NodeSharding: expected a jax.sharding.Mesh; received {type(self.mesh).__name__}"
            )
        if self.axis not in self.mesh.axis_names:
            raise ValueError(
                f"NodeSharding: expected axis {self.axis!r} among the mesh axes; received "
                f"mesh axes {self.mesh.axis_names}"
            )

    @property
    def num_shards(self) -> int:
        """``D``, the number of node blocks (devices along ``axis``)."""
        return int(self.mesh.shape[self.axis])

    @property
    def spec(self) -> P:
        """``P(None, axis)``: node arrays ``[batch, N, ...]`` and edges ``[batch, E, ...]``."""
        return P(None, self.axis)

    @property
    def nodes(self) -> NamedSharding:
        """``NamedSharding`` of node arrays ``[batch, N, ...]`` (and edge arrays ``[batch, E]``)."""
        return NamedSharding(self.mesh, self.spec)

    @property
    def replicated(self) -> NamedSharding:
        """``NamedSharding`` replicating a whole array on every device (parameters)."""
        return NamedSharding(self.mesh, P())

    def constrain(self, a: jax.Array) -> jax.Array:
        """``with_sharding_constraint(a, nodes)``: pin axis 1 of ``a`` to the node blocks."""
        return jax.lax.with_sharding_constraint(a, self.nodes)


def node_mesh(devices: Sequence[Any] | None = None, axis: str = "nodes") -> Mesh:
    """A 1-D ``Mesh`` over ``devices`` (default ``jax.devices()``, all hosts) named ``axis``."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("node_mesh: expected at least one device; received none")
    return Mesh(np.asarray(devices, dtype=object), (axis,))


def node_sharding(devices: Sequence[Any] | None = None, axis: str = "nodes") -> NodeSharding:
    """``NodeSharding(node_mesh(devices, axis), axis)``."""
    return NodeSharding(node_mesh(devices, axis), axis)


def _as_graphs(a: Any, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 1:
        return a[None]
    if a.ndim != 2:
        raise ValueError(
            f"{name}: expected edges [edges] or [batch, edges]; received shape {a.shape}"
        )
    return a


def check_num_nodes(num_nodes: int, num_shards: int) -> int:
    """``N / D`` nodes per block; ValueError unless ``D >= 1`` divides ``N``."""
    if num_shards < 1:
        raise ValueError(f"expected num_shards >= 1; received {num_shards}")
    if num_nodes % num_shards:
        raise ValueError(
            f"expected the node count to be divisible by the number of shards {num_shards}; "
            f"received {num_nodes} nodes (pad with pad_nodes / shard_graph, which mask the "
            f"padding)"
        )
    return num_nodes // num_shards


def partition_edges(
    senders: Any,
    receivers: Any,
    edge_mask: Any | None,
    num_nodes: int,
    num_shards: int,
    edges_per_shard: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reorder and pad an edge list into the node-block layout (host-side NumPy).

    Real edges (``edge_mask`` True) of graph ``b`` whose receiver lies in node block ``d``
    (``receiver // (num_nodes / num_shards) == d``) go to edge block ``d``, keeping their
    order; each block is padded to the static budget ``edges_per_shard`` with masked edges
    ``(block_start, block_start)``. Masked input edges are dropped (they carry nothing).

    Args:
      senders, receivers: per-graph indices ``[batch, edges]`` in ``[0, num_nodes)``, or
        ``[edges]`` for one graph.
      edge_mask: bool, same shape, or None (all real).
      num_nodes: ``N`` per graph; must be divisible by ``num_shards``.
      num_shards: ``D``.
      edges_per_shard: static budget per block and graph (the same for all calls keeps one
        compiled program); default: the largest real count over blocks and graphs (at
        least 1).

    Returns:
      ``(senders, receivers, edge_mask)``, each ``[batch, num_shards * edges_per_shard]``
      (int32, int32, bool); ``[1, ...]`` for a one-graph input.
    """
    if np.shape(senders) != np.shape(receivers):
        raise ValueError(
            f"senders, receivers: expected equal shapes; received {np.shape(senders)} and "
            f"{np.shape(receivers)}"
        )
    if edge_mask is not None and np.shape(edge_mask) != np.shape(senders):
        raise ValueError(
            f"edge_mask: expected the shape of senders {np.shape(senders)}; received "
            f"{np.shape(edge_mask)}"
        )
    s, r = _as_graphs(senders, "senders"), _as_graphs(receivers, "receivers")
    m = np.ones(s.shape, bool) if edge_mask is None else _as_graphs(edge_mask, "edge_mask")
    block = check_num_nodes(num_nodes, num_shards)
    m = m.astype(bool)
    for name, idx in (("senders", s), ("receivers", r)):
        bad = m & ((idx < 0) | (idx >= num_nodes))
        if bad.any():
            raise ValueError(
                f"{name}: expected indices in [0, {num_nodes}); received {idx[bad][0]}"
            )
    owner = np.where(m, r // block, num_shards)  # masked edges: no block
    counts = np.stack([(owner == d).sum(axis=1) for d in range(num_shards)], axis=1)
    needed = max(int(counts.max(initial=0)), 1)
    if edges_per_shard is None:
        edges_per_shard = needed
    elif edges_per_shard < needed:
        raise ValueError(
            f"edges_per_shard: expected at least {needed} (the most real edges with receivers "
            f"in one node block); received {edges_per_shard}"
        )
    batch = s.shape[0]
    shape = (batch, num_shards, edges_per_shard)
    out_r = np.broadcast_to((np.arange(num_shards) * block)[None, :, None], shape).copy()
    out_s, out_m = out_r.copy(), np.zeros(shape, bool)
    for b in range(batch):
        for d in range(num_shards):
            sel = np.nonzero(owner[b] == d)[0]
            out_s[b, d, : sel.size] = s[b, sel]
            out_r[b, d, : sel.size] = r[b, sel]
            out_m[b, d, : sel.size] = True
    flat = lambda a: a.reshape(batch, num_shards * edges_per_shard)
    return flat(out_s).astype(np.int32), flat(out_r).astype(np.int32), flat(out_m)


def check_partition(
    receivers: Any, edge_mask: Any | None, num_nodes: int, num_shards: int
) -> None:
    """Raise ValueError unless the (concrete) edges follow the node-block layout.

    Masked edges are not checked (the model ignores them). ``receivers [batch, E]`` or
    ``[E]``; ``E`` must be divisible by ``num_shards``.
    """
    r = _as_graphs(receivers, "receivers")
    m = np.ones(r.shape, bool) if edge_mask is None else _as_graphs(edge_mask, "edge_mask")
    block = check_num_nodes(num_nodes, num_shards)
    if r.shape[1] % num_shards:
        raise ValueError(
            f"expected the edge count per graph to be divisible by the number of shards "
            f"{num_shards}; received {r.shape[1]} edges (use partition_edges)"
        )
    edge_block = np.arange(r.shape[1]) // (r.shape[1] // num_shards)
    wrong = m.astype(bool) & (r // block != edge_block[None, :])
    if wrong.any():
        b, e = (int(i[0]) for i in np.nonzero(wrong))
        raise ValueError(
            f"edges: expected edge block d to hold only receivers in node block d "
            f"[d*{block}, (d+1)*{block}); received edge {e} of graph {b} (edge block "
            f"{edge_block[e]}) with receiver {int(r[b, e])} (node block {int(r[b, e]) // block}); "
            f"use partition_edges"
        )


def pad_nodes(num_shards: int, x: Any, v: Any, charges: Any, mask: Any | None = None):
    """Append masked nodes so that ``N`` is a multiple of ``num_shards`` (host-side NumPy).

    Node indices of existing edges stay valid (padding is appended at the end of each graph).

    Returns:
      ``(x, v, charges, mask)`` with ``N' = ceil(N / num_shards) num_shards`` nodes; padded
      nodes are zeros with ``mask`` False.
    """
    x, v, charges = np.asarray(x), np.asarray(v), np.asarray(charges)
    if x.ndim != 3:
        raise ValueError(f"x: expected coordinates [batch, nodes, 3]; received shape {x.shape}")
    batch, n = x.shape[:2]
    mask = np.ones((batch, n), bool) if mask is None else np.asarray(mask, bool)
    pad = -n % num_shards
    if pad:
        widths = lambda a: [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2)
        x, v, charges, mask = (np.pad(a, widths(a)) for a in (x, v, charges, mask))
    return x, v, charges, mask



def shard_nodes(sharding: NodeSharding, *arrays: Any):
    """Place each array ``[batch, N, ...]`` (or edges ``[batch, E]``) split over nodes.

    Works across hosts: each process supplies the blocks of its own devices from its full copy
    (:func:`geonorm_jax.parallel.place`). None passes through. Returns a tuple (one array for
    one argument).
    """
    out = tuple(None if a is None else place(a, sharding.nodes) for a in arrays)
    return out[0] if len(out) == 1 else out



def shard_graph(
    sharding: NodeSharding,
    x: Any,
    v: Any,
    charges: Any,
    senders: Any,
    receivers: Any,
    edge_mask: Any | None = None,
    mask: Any | None = None,
    edges_per_shard: int | None = None,
) -> dict[str, jax.Array]:
    """Pad nodes, partition edges and place everything for ``EGNN(node_sharding=sharding)``.

    Returns:
      ``dict(x, v, charges, mask, senders, receivers, edge_mask)`` of node-sharded arrays;
      pass it as ``model.apply(variables, **inputs)``. The predictions of padded nodes (if
      any were added) are to be dropped: ``out[:, :N]``.
    """
    x, v, charges, mask = pad_nodes(sharding.num_shards, x, v, charges, mask)
    s, r, em = partition_edges(
        senders, receivers, edge_mask, x.shape[1], sharding.num_shards, edges_per_shard
    )
    if s.shape[0] != x.shape[0]:
        raise ValueError(
            f"senders: expected per-graph edges [batch={x.shape[0]}, edges]; received "
            f"{s.shape[0]} graph(s)"
        )
    names = ("x", "v", "charges", "mask", "senders", "receivers", "edge_mask")
    return dict(zip(names, shard_nodes(sharding, x, v, charges, mask, s, r, em), strict=True))


def gather_nodes(local: jax.Array, axis: str) -> jax.Array:
    """Inside ``shard_map``: all node blocks ``[B, N, ...]`` from the local one ``[B, N/D, ...]``.

    One tiled ``all_gather`` over ``axis`` (its transpose is a ``psum_scatter``).
    """
    return jax.lax.all_gather(local, axis, axis=1, tiled=True)


def local_receivers(
    receivers: jax.Array, edge_mask: jax.Array, block: int, axis: str
) -> tuple[jax.Array, jax.Array]:
    """Inside ``shard_map``: flat local receiver indices and the in-block edge mask.

    Args:
      receivers: this device's edges ``[B, E/D]``, per-graph node indices in ``[0, N)``.
      edge_mask: ``[B, E/D]`` (bool or float).
      block: ``N / D`` nodes per block.
      axis: the mesh axis (``lax.axis_index`` gives the block ``d``).

    Returns:
      ``(index [B E/D], edge_mask [B, E/D])``: ``index = b N/D + receivers - d N/D`` into the
      flattened local block ``[B N/D]``; edges whose receiver lies outside block ``d``
      (a wrong layout) are masked out and their index set to 0, so they change nothing.
    """
    batch = receivers.shape[0]
    local = receivers - jax.lax.axis_index(axis) * block
    inside = (local >= 0) & (local < block)
    local = jnp.where(inside, local, 0) + (jnp.arange(batch, dtype=local.dtype) * block)[:, None]
    edge_mask = edge_mask & inside if edge_mask.dtype == jnp.bool_ else edge_mask * inside
    return local.reshape(-1), edge_mask
