r"""The per-edge kernels of the velocity EGNN (Satorras et al., 2021): pure functions.

For every edge ``(i, j)`` (``i`` receives, ``j`` sends) one EGNN layer computes

.. math::

    m_{ij} = \phi_e(h_i, h_j, \|x_i - x_j\|^2, e_{ij}), \qquad
    t_{ij} = \mathrm{clip}_{\pm 100}\big((x_i - x_j)\,\phi_x(m_{ij})\big)

and sums ``t_ij`` and ``m_ij`` over the senders ``j`` of each receiver ``i``. The functions
here do exactly that and nothing else: they take the layer's parameters as a dict ``p``, the
node products of the factorised first edge layer (``a = h W_1 + b``, ``b = h W_2``), the
positions and the edge tensors, and an :class:`EdgeKernelConfig` with the few settings they
read. The Flax module :class:`geonorm_jax.models.EGCLVel` owns the parameters and calls them;
:mod:`geonorm_jax.models.sharding` calls them per node block under ``jax.shard_map``.

Shapes: node arrays ``[B, N, .]``; dense edge tensors ``[B, N, N, .]``; edge-list tensors
``[E, .]`` with flat indices into the ``B N`` nodes. ``H`` is the hidden width.

Factorised first edge layer: ``W [h_i; h_j; r_ij; e_ij] + b = (h W_1 + b)_i + (h W_2)_j +
r_ij w_3 + e_ij W_4``; the node products are computed once per node, so the per-edge work of
``phi_e`` is one ``H x H`` product (plus one in ``phi_x``). The parameters are exactly those of
``Linear(2H + 1 + 2, H)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from geonorm_jax import geometry
from geonorm_jax.models.execution_plan import checkpointed, chunked, resolve_chunk
from geonorm_jax.models.layers import mixed_dot_general

__all__ = [
    "EDGE_ATTR_DIM",
    "CLAMP",
    "EdgeKernelConfig",
    "linear",
    "edge_messages",
    "edge_geometry",
    "first_edge_layer",
    "dense_blocks",
    "dense_edges",
    "list_edges",
    "sum_edge_chunks",
]

EDGE_ATTR_DIM = 2  # [q_i q_j, ||x^0_i - x^0_j||^2]
CLAMP = 100.0  # the reference's torch.clamp(trans, -100, 100)


class EdgeKernelConfig(NamedTuple):
    """The settings the edge kernels read (those of :class:`geonorm_jax.models.EGNN`).

    Attributes:
      attention: multiply ``m_ij`` by ``sigmoid(Linear(m_ij))`` (needs ``p["attention"]``).
      tanh: ``phi_x <- coords_range * tanh(phi_x)``.
      coords_range: scale of the tanh output.
      norm_diff: use ``(x_i - x_j) / (||x_i - x_j|| + norm_diff_epsilon)`` in ``t_ij``.
      norm_diff_epsilon: the epsilon of ``norm_diff`` (1.0 in the reference ``gcl.py``).
      matmul_dtype: dtype of the matrix products' operands (None: the computation dtype);
        see :func:`linear`.
      edge_chunk: edges processed together (``None``: all at once; ``"auto"``: the one-layer
        plan of :func:`~geonorm_jax.models.execution_plan.plan_edges`, resolved at trace
        time); see :func:`~.execution_plan.chunked` and :func:`sum_edge_chunks`.
      save_dots: chunked only: keep the chunks' matrix-product outputs for the backward pass
        instead of recomputing each chunk in full (for ``"auto"``, the plan decides).
    """

    attention: bool = False
    tanh: bool = False
    coords_range: float = 1.0
    norm_diff: bool = False
    norm_diff_epsilon: float = 1.0
    edge_chunk: int | str | None = None
    matmul_dtype: Any = None
    save_dots: bool = False


def linear(p: dict, x: jax.Array, matmul_dtype=None) -> jax.Array:
    """``x W (+ b)`` with the parameters ``p = {"kernel", "bias"?}`` cast to the dtype of ``x``.

    ``matmul_dtype`` (e.g. ``jnp.bfloat16``): the product's operands are cast to it and the
    product accumulates and returns in the dtype of ``x`` (``preferred_element_type``); the
    bias is added in the dtype of ``x``. None: all in the dtype of ``x``.
    """
    y = mixed_dot_general(matmul_dtype)(x, p["kernel"].astype(x.dtype),
                                        (((x.ndim - 1,), (0,)), ((), ())))
    return y + p["bias"].astype(x.dtype) if "bias" in p else y


def edge_messages(p: dict, pre, diff, emask, cfg: EdgeKernelConfig):
    """Per-edge part of a layer: ``pre`` = first edge layer before SiLU ``[..., H]``.

    Returns the masked coordinate terms ``clip((x_i - x_j) phi_x(m_ij)) [..., 3]`` and the
    masked messages ``m_ij [..., H]``; ``emask [...]`` is 1 for real edges, 0 otherwise.
    """
    silu, md = jax.nn.silu, cfg.matmul_dtype
    m = silu(linear(p["edge_mlp_out"], silu(pre), md))
    if cfg.attention:
        m = m * jax.nn.sigmoid(linear(p["attention"], m, md))
    phi_x = linear(p["coord_mlp_out"], silu(linear(p["coord_mlp_hidden"], m, md)), md)
    if cfg.tanh:
        phi_x = cfg.coords_range * jnp.tanh(phi_x)
    trans = jnp.clip(diff * phi_x, -CLAMP, CLAMP)
    emask = emask[..., None]
    return trans * emask, m * emask


def edge_geometry(diff, cfg: EdgeKernelConfig):
    """``(diff', ||x_i - x_j||^2 [..., 1])`` from ``diff = x_i - x_j [..., 3]``.

    ``diff'`` is ``diff`` or, with ``cfg.norm_diff``, ``diff / (||diff|| + epsilon)`` (a safe
    norm: finite gradient at coincident particles).
    """
    radial = jnp.sum(jnp.square(diff), axis=-1, keepdims=True)
    if cfg.norm_diff:
        length = geometry.safe_norm(diff, axis=-1, keepdims=True)
        diff = diff / (length + cfg.norm_diff_epsilon)
    return diff, radial


def first_edge_layer(p, a_i, b_j, radial, edge_attr):
    """``W [h_i; h_j; r_ij; e_ij] + b`` as ``a_i + b_j + r_ij w_r + e_ij W_e`` (factorised)."""
    w_r, w_e = p["edge_w_radial"].astype(a_i.dtype), p["edge_w_attr"].astype(a_i.dtype)
    pre = a_i + b_j + radial * w_r[0]
    for c in range(EDGE_ATTR_DIM):
        pre = pre + edge_attr[..., c : c + 1] * w_e[c]
    return pre


def dense_blocks(batch: int, n: int, edge_chunk: int | None) -> tuple[int, int]:
    """``(rows, blocks)`` of the dense kernels' chunks: a chunk is ``blocks`` blocks of
    ``rows`` receivers, each with all ``N`` senders (``rows * N * blocks`` edges).

    ``edge_chunk >= N^2`` (or None): whole graphs (``rows = N``), the largest divisor
    ``blocks`` of ``B`` with ``blocks N^2 <= edge_chunk``; otherwise one block per chunk of
    the largest divisor ``rows`` of ``N`` with ``rows N <= edge_chunk`` (at least 1).
    """
    if edge_chunk is None or edge_chunk >= n * n:
        per_chunk = max(1, (edge_chunk or batch * n * n) // (n * n))
        return n, max(d for d in range(1, batch + 1) if batch % d == 0 and d <= per_chunk)
    return max(d for d in range(1, n + 1) if n % d == 0 and d * n <= max(edge_chunk, n)), 1


def dense_edges(p, a, b, x, edge_attr, pair_mask, cfg: EdgeKernelConfig):
    """Fully connected graph: ``(sum_j trans_ij [B,N,3], sum_j m_ij [B,N,H])``.

    ``a, b [B, N, H]``, ``x [B, N, 3]``, ``edge_attr [B, N, N, 2]``, ``pair_mask [B, N, N]``;
    the sums run over the sender axis 2. Chunks (:func:`dense_blocks`): whole graphs, or
    blocks of ``rows`` receivers with all their senders (the receivers' ``a``, ``x``,
    ``edge_attr`` and mask split into ``[B N / rows, rows, ...]`` blocks, the senders' ``b``
    and ``x`` repeated once per block of their graph).
    """
    batch, n = x.shape[:2]

    def fn(xs):
        a, x_r, edge_attr, pair_mask, b, x_s = xs  # [c, r, .] receivers, [c, N, .] senders
        diff, radial = edge_geometry(x_r[:, :, None] - x_s[:, None, :], cfg)  # [c, r, N, .]
        pre = first_edge_layer(p, a[:, :, None], b[:, None, :], radial, edge_attr)
        shape = pre.shape[:3]  # the products run on [c r N, .]: two-dimensional operands
        flat = lambda t: t.reshape((-1,) + t.shape[3:])
        trans, m = edge_messages(p, flat(pre), flat(diff), pair_mask.reshape(-1), cfg)
        unflat = lambda t: t.reshape(shape + t.shape[1:])
        return jnp.sum(unflat(trans), axis=2), jnp.sum(unflat(m), axis=2)

    edge_chunk, save_dots = resolve_chunk(cfg.edge_chunk, batch * n * n, a.shape[-1],
                                          a.dtype, save_dots=cfg.save_dots, granule=n)
    rows, blocks = dense_blocks(batch, n, edge_chunk)
    per_graph = n // rows
    to_blocks = lambda t: t.reshape((batch * per_graph, rows) + t.shape[2:])
    senders = lambda t: jnp.repeat(t, per_graph, axis=0) if per_graph > 1 else t
    xs = (to_blocks(a), to_blocks(x), to_blocks(edge_attr), to_blocks(pair_mask),
          senders(b), senders(x))
    trans, m = chunked(fn, xs, batch * per_graph // blocks, save_dots)
    return trans.reshape(batch, n, -1), m.reshape(batch, n, -1)


def list_edges(p, a, b, x, edge_attr, senders, receivers, emask, cfg: EdgeKernelConfig):
    """Edge list (flat over ``B N`` nodes): segment sums over receivers, chunked over edges.

    ``a, b [B, N, H]``, ``x [B, N, 3]``, ``edge_attr [E, 2]``, ``senders, receivers,
    emask [E]``. Returns ``(sum_j trans_ij [B, N, 3], sum_j m_ij [B, N, H])``.
    """
    batch, n = x.shape[:2]
    flat = lambda t: t.reshape((batch * n,) + t.shape[2:])
    a, b, x = flat(a), flat(b), flat(x)

    def fn(xs):
        s, r, em, ea = xs
        diff, radial = edge_geometry(x[r] - x[s], cfg)  # [c, 3], [c, 1]
        pre = first_edge_layer(p, a[r], b[s], radial, ea)
        trans, m = edge_messages(p, pre, diff, em, cfg)
        out = jnp.concatenate([trans, m], axis=-1)
        return jax.ops.segment_sum(out, r, num_segments=batch * n)

    xs = (senders, receivers, emask, edge_attr)
    zeros = lambda: jnp.zeros((batch * n, 3 + a.shape[-1]), x.dtype)
    edge_chunk, save_dots = resolve_chunk(cfg.edge_chunk, senders.shape[0], a.shape[-1],
                                          a.dtype, save_dots=cfg.save_dots)
    total = sum_edge_chunks(fn, xs, zeros, edge_chunk, save_dots)
    total = total.reshape(batch, n, -1)
    return total[..., :3], total[..., 3:]


def sum_edge_chunks(fn, xs, zeros, edge_chunk: int | None, save_dots: bool = False):
    """``sum_c fn(xs[c])`` over chunks of ``edge_chunk`` edges (the leading axis of ``xs``).

    ``xs`` is padded with zeros (masked edges to node 0) to a whole number of chunks; with
    more than one chunk, ``lax.scan`` accumulates ``jax.checkpoint(fn)`` from ``zeros()``, so
    the backward pass holds one chunk of edge intermediates at a time (``save_dots``: see
    :func:`chunked`).
    """
    num_edges = xs[0].shape[0]
    chunk = min(edge_chunk or num_edges, num_edges)
    num_chunks = -(-num_edges // chunk)
    pad = num_chunks * chunk - num_edges
    if pad:
        xs = tuple(jnp.pad(t, [(0, pad)] + [(0, 0)] * (t.ndim - 1)) for t in xs)
    if num_chunks == 1:
        return fn(xs)
    split = lambda t: t.reshape((num_chunks, chunk) + t.shape[1:])
    body = checkpointed(fn, save_dots)
    total, _ = jax.lax.scan(
        lambda acc, c: (acc + body(c), None), zeros(), jax.tree_util.tree_map(split, xs)
    )
    return total
