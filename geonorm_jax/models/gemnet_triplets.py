r"""GemNet-T's triplets on the flat padded batch, in a fixed per-edge budget.

GemNet's triplet message passing updates each directed edge ``c -> a`` (centre ``a`` =
``receivers``, neighbour ``c`` = ``senders``) with the messages of the other edges
``b -> a`` into the same centre (``b != c``), and each edge also receives the output of its
reverse edge ``a -> c`` (the authors' ``id_swap``). The triplets are stored the way the
authors' efficient bilinear layer wants them, a dense ``[E, M]`` table (their ``Kmax``
layout) instead of a ragged list::

    table        [N, M]   int32   the real edges with receiver a, in edge order (slot k of row a)
    table_mask   [N, M]   bool
    edge_ba      [E, M]   int32   for edge e = (c -> a): the edges b -> a   (= table[a])
    triplet_mask [E, M]   bool    real edge e, real edge b -> a, b -> a != e
    swap         [E]      int32   the reverse edge a -> c of e (0 where there is none)
    swap_mask    [E]      bool

Everything is built with sorts, cumulative sums and scatters (no Python loop over atoms or
edges); the memory is ``O(E M)``. ``M = max_neighbors`` is static: the budget of neighbours
per centre. For a block-padded batch (:func:`~geonorm_jax.models.molecular_graph.batch_frames`)
``M = A - 1`` (atoms per molecule minus one) can never be exceeded. When a centre has more
than ``M`` real edges, its edges beyond the ``M``-th (in edge order) are left out of the
table: they get no triplets and no reverse edge, and the model is then no longer permutation
invariant. Called eagerly, :func:`edge_triplets` raises a ``ValueError`` naming both
numbers instead; under ``jit`` it cannot raise, and ``max_count > M`` tells so: ``GemNetT``
then returns NaN energies (never a silently truncated result) and records the count as
``intermediates/triplet_max_neighbors``. Check the data on the host before training with
:func:`geonorm_jax.models.checks.check_triplet_capacity` (frames of positions) or
:func:`check_triplet_budget` (a built graph).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from geonorm_jax.models.execution_plan import chunked

__all__ = ["Triplets", "neighbor_table", "edge_triplets", "check_triplet_budget",
           "triplet_sums"]


class Triplets(NamedTuple):
    """The triplet structure of a batch (see the module docstring for the fields' shapes).

    ``max_count`` ``[]`` int32: the largest number of real edges into one centre; more than
    ``M`` means that the table was truncated.
    """

    edge_ba: jax.Array  # [E, M]
    triplet_mask: jax.Array  # [E, M]
    swap: jax.Array  # [E]
    swap_mask: jax.Array  # [E]
    max_count: jax.Array  # []


def _check_budget(max_neighbors, where: str) -> None:
    if not (isinstance(max_neighbors, int) and max_neighbors >= 1):
        raise ValueError(f"{where}: expected a static max_neighbors >= 1; received "
                         f"{max_neighbors!r}")


def neighbor_table(
    receivers: jax.Array, edge_mask: jax.Array, num_atoms: int, max_neighbors: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The real edges into each centre, ``M`` slots per atom.

    Args:
      receivers: ``[E]`` int, centre of each edge.
      edge_mask: ``[E]`` bool.
      num_atoms: ``N`` (static).
      max_neighbors: ``M`` (static).

    Returns:
      ``(table [N, M] int32, table_mask [N, M] bool, counts [N] int32)``: slot ``k`` of row
      ``a`` holds the ``k``-th real edge (in edge order) with receiver ``a``; ``counts`` are
      the real edges per centre (before truncation to ``M``).
    """
    _check_budget(max_neighbors, "neighbor_table")
    e = receivers.shape[0]
    edge_mask = jnp.asarray(edge_mask, bool)
    key = jnp.where(edge_mask, receivers, num_atoms)  # padded edges sort last
    order = jnp.argsort(key, stable=True).astype(jnp.int32)  # [E]
    sorted_key = key[order]
    counts = jax.ops.segment_sum(edge_mask.astype(jnp.int32), receivers, num_segments=num_atoms)
    starts = jnp.cumsum(counts) - counts  # [N] first sorted position of each centre
    real = sorted_key < num_atoms
    rank = jnp.arange(e, dtype=jnp.int32) - starts[jnp.minimum(sorted_key, num_atoms - 1)]
    keep = real & (rank < max_neighbors)
    row = jnp.where(keep, sorted_key, num_atoms)  # out of range: dropped
    col = jnp.where(keep, rank, max_neighbors)
    table = jnp.zeros((num_atoms, max_neighbors), jnp.int32).at[row, col].set(
        order, mode="drop")
    table_mask = jnp.zeros((num_atoms, max_neighbors), bool).at[row, col].set(
        True, mode="drop")
    return table, table_mask, counts.astype(jnp.int32)


def edge_triplets(
    senders: jax.Array,
    receivers: jax.Array,
    edge_mask: jax.Array,
    num_atoms: int,
    max_neighbors: int,
) -> Triplets:
    """GemNet-T's triplets ``(b -> a, c -> a)`` and reverse edges, in an ``[E, M]`` budget.

    Args:
      senders, receivers: ``[E]`` int (edge ``e = (c -> a)``: ``senders[e] = c``,
        ``receivers[e] = a``).
      edge_mask: ``[E]`` bool.
      num_atoms: ``N`` (static).
      max_neighbors: ``M`` (static), the budget of edges per centre.

    Returns:
      :class:`Triplets`. Called eagerly, raises ``ValueError`` when a centre has more than
      ``M`` real edges (see the module docstring for the behaviour under ``jit``).
    """
    table, table_mask, counts = neighbor_table(receivers, edge_mask, num_atoms, max_neighbors)
    e = senders.shape[0]
    edge_mask = jnp.asarray(edge_mask, bool)
    max_count = jnp.max(counts) if num_atoms else jnp.int32(0)
    if not isinstance(max_count, jax.core.Tracer) and int(max_count) > max_neighbors:
        raise ValueError(
            f"edge_triplets: an atom has {int(max_count)} real edges; expected at most "
            f"max_neighbors = {max_neighbors} (raise GemNetT.max_neighbors)"
        )
    edge_ba = table[receivers]  # [E, M]
    own = jnp.arange(e, dtype=jnp.int32)[:, None]
    triplet_mask = table_mask[receivers] & (edge_ba != own) & edge_mask[:, None]
    # reverse edge of (c -> a): among the edges into c, the one sent by a
    into_c = table[senders]  # [E, M]
    hit = table_mask[senders] & (senders[into_c] == receivers[:, None])
    slot = jnp.argmax(hit, axis=1)
    swap = jnp.take_along_axis(into_c, slot[:, None], axis=1)[:, 0]
    swap_mask = jnp.any(hit, axis=1) & edge_mask
    return Triplets(edge_ba, triplet_mask, jnp.where(swap_mask, swap, 0), swap_mask, max_count)


def check_triplet_budget(graph, max_neighbors: int) -> int:
    """Raise ``ValueError`` unless every centre of ``graph`` (a ``MolecularGraph``, eager) has
    at most ``max_neighbors`` real edges; returns the largest count."""
    _check_budget(max_neighbors, "check_triplet_budget")
    counts = jax.ops.segment_sum(jnp.asarray(graph.edge_mask, jnp.int32), graph.receivers,
                                 num_segments=graph.num_atoms)
    most = int(jnp.max(counts))
    if most > max_neighbors:
        raise ValueError(
            f"check_triplet_budget: an atom has {most} real edges; expected at most "
            f"max_neighbors = {max_neighbors}"
        )
    return most


def triplet_sums(x_ba: jax.Array, sph: jax.Array, rbf_w1: jax.Array, triplets: Triplets,
                 num_chunks: int = 1) -> jax.Array:
    r"""The triplet part of GemNet-T's efficient bilinear layer, over the real triplets::

        rw[e, c, t] = sum_l rbf_w1[e, c, l] sum_m sph[e, m, l] x_ba[edge_ba[e, m], t] mask[e, m]

    ``x_ba [E, T]`` (the down-projected messages), ``sph [E, M, L]``, ``rbf_w1 [E, C, L]``
    -> ``[E, C, T]``; the sum over ``m`` is the sum over the triplets ``b -> a`` of edge
    ``e = c -> a``, and ``[E, M, T]`` gathered messages are its largest array.

    ``num_chunks > 1``: the edges run in that many chunks (:func:`~.execution_plan.chunked`,
    ``lax.map`` over ``jax.checkpoint``; the edge axis padded to a multiple with empty
    triplets), so a training step holds one chunk's ``[E / num_chunks, M, T]`` at a time and
    recomputes it in the backward pass. Same values as one chunk, up to summation order.
    """
    num_edges = x_ba.shape[0]
    if not (isinstance(num_chunks, int) and num_chunks >= 1):
        raise ValueError(f"num_chunks: expected an int >= 1; received {num_chunks!r}")

    def fn(xs):
        sph_c, rbf_c, edge_ba, mask = xs  # [c, M, L], [c, C, L], [c, M], [c, M]
        x_trip = x_ba[edge_ba] * mask[..., None].astype(x_ba.dtype)  # [c, M, T]
        sum_k = jnp.einsum("eml,emt->elt", sph_c, x_trip)  # [c, L, T]
        return jnp.einsum("ecl,elt->ect", rbf_c, sum_k)  # [c, C, T]

    xs = (sph, rbf_w1, triplets.edge_ba, triplets.triplet_mask)
    num_chunks = min(num_chunks, max(num_edges, 1))
    pad = -num_edges % num_chunks
    if pad:
        xs = jax.tree_util.tree_map(
            lambda a: jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)), xs)
    return chunked(fn, xs, num_chunks)[:num_edges]
