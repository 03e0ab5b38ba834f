"""The molecular batch layout shared by Allegro and SchNet: a flat padded graph with static shapes.

Layout (the jraph / e3nn-jax convention; every shape static so nothing recompiles)::

    positions   [N, 3]   float   atom positions (Å)
    species     [N]      int32   atomic numbers Z (0 = padding)
    atom_mask   [N]      bool    True = real atom
    graph_ids   [N]      int32   molecule of each atom, in [0, G)
    senders     [E]      int32   neighbour atom j of edge (i, j)
    receivers   [E]      int32   centre atom i of edge (i, j)
    edge_mask   [E]      bool    True = real edge (both atoms real, same molecule, r_ij < r_c)
    num_graphs  G        static  number of molecules (padding molecules included)

An edge ``(i, j)`` is directed: its vector is ``r_ij = x_j - x_i = positions[senders] -
positions[receivers]``; per-edge quantities are summed onto the centre ``receivers``. Padded
atoms and edges may hold any finite values; the models multiply them out, so they change no
real output (and get zero forces).

Two optional static fields say that the batch is *block padded*: atoms of molecule ``g`` sit in
rows ``[g A, (g+1) A)`` (``atoms_per_graph = A``, ``N = G A``) and its edges in rows
``[g K, (g+1) K)`` (``edges_per_graph = K``, ``E = G K``). Normalization layers then see one
molecule per batch row (``[G, A, ...]`` for atom features, ``[G, K, ...]`` for edge features,
with the masks as ``[G, A]`` / ``[G, K]``), so per-graph statistics are per molecule. Without
them (``None``) a norm sees the whole flat batch as one graph (``[1, N, ...]``): per-node
norms are unaffected, per-graph norms then pool over the batch. :func:`batch_frames` builds a
block-padded batch.

Energies and forces: a model maps a :class:`MolecularGraph` to molecular energies ``[G]``
(a ``segment_sum`` of atomic or edge energies over ``graph_ids``); :func:`energy_and_forces`
returns them with ``F = -dE/dx [N, 3]`` (the gradient of the summed energies, molecules being
independent), inside ``jit``.

One module on purpose: the layout, its builders and the block views the norms see all encode
the same indexing contract, and splitting them would scatter it.
"""

from __future__ import annotations

from typing import Any

import e3nn_jax as e3nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "MolecularGraph",
    "batch_frames",
    "radius_graph",
    "flat_graph",
    "all_pairs",
    "cutoff_edge_mask",
    "edge_vectors",
    "neighbor_counts",
    "energy_and_forces",
    "to_blocks",
    "from_blocks",
    "apply_block_norm",
    "species_scale_shift",
    "graph_energies",
]


@flax.struct.dataclass
class MolecularGraph:
    """A flat padded batch of molecules (see the module docstring for the layout).

    A pytree: the arrays are leaves, ``num_graphs``, ``atoms_per_graph`` and
    ``edges_per_graph`` are static (part of the tree structure, so ``jit`` specialises on
    them).
    """

    positions: jax.Array  # [N, 3]
    species: jax.Array  # [N] int32
    atom_mask: jax.Array  # [N] bool
    graph_ids: jax.Array  # [N] int32
    senders: jax.Array  # [E] int32
    receivers: jax.Array  # [E] int32
    edge_mask: jax.Array  # [E] bool
    num_graphs: int = flax.struct.field(pytree_node=False, default=1)
    atoms_per_graph: int | None = flax.struct.field(pytree_node=False, default=None)
    edges_per_graph: int | None = flax.struct.field(pytree_node=False, default=None)

    @property
    def num_atoms(self) -> int:
        """``N``, padded atoms included."""
        return self.positions.shape[0]

    @property
    def num_edges(self) -> int:
        """``E``, padded edges included."""
        return self.senders.shape[0]

    def validate(self) -> MolecularGraph:
        """Raise ``ValueError`` naming the expected and received shapes; returns ``self``."""
        n = self.positions.shape[0] if getattr(self.positions, "ndim", 0) == 2 else None
        if n is None or self.positions.shape[1] != 3:
            raise ValueError(
                f"MolecularGraph.positions: expected [N, 3]; received shape "
                f"{getattr(self.positions, 'shape', None)}"
            )
        for name in ("species", "atom_mask", "graph_ids"):
            shape = tuple(getattr(self, name).shape)
            if shape != (n,):
                raise ValueError(
                    f"MolecularGraph.{name}: expected shape [N] = ({n},); received {shape}"
                )
        e = tuple(self.senders.shape)
        if len(e) != 1:
            raise ValueError(f"MolecularGraph.senders: expected shape [E]; received {e}")
        for name in ("receivers", "edge_mask"):
            shape = tuple(getattr(self, name).shape)
            if shape != e:
                raise ValueError(
                    f"MolecularGraph.{name}: expected shape [E] = {e} like senders; "
                    f"received {shape}"
                )
        if not (isinstance(self.num_graphs, int) and self.num_graphs >= 1):
            raise ValueError(
                f"MolecularGraph.num_graphs: expected a static int >= 1; "
                f"received {self.num_graphs!r}"
            )
        for name, total, per in (
            ("atoms_per_graph", n, self.atoms_per_graph),
            ("edges_per_graph", e[0], self.edges_per_graph),
        ):
            if per is not None and per * self.num_graphs != total:
                raise ValueError(
                    f"MolecularGraph.{name}: expected num_graphs * {name} = {total}; "
                    f"received {self.num_graphs} * {per}"
                )
        return self


def all_pairs(num_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """All ordered pairs ``(i, j)``, ``i != j`` of one molecule: ``(senders, receivers)``.

    ``A (A - 1)`` edges, grouped by centre: edge ``i (A - 1) + k`` has receiver ``i`` and
    sender the ``k``-th atom other than ``i``. NumPy ``int32 [A (A - 1)]`` each.
    """
    if not (isinstance(num_atoms, int | np.integer) and num_atoms >= 1):
        raise ValueError(f"all_pairs: expected num_atoms >= 1; received {num_atoms!r}")
    i, j = np.nonzero(~np.eye(num_atoms, dtype=bool))
    return j.astype(np.int32), i.astype(np.int32)


def edge_vectors(positions: jax.Array, senders: jax.Array, receivers: jax.Array) -> jax.Array:
    """``r_ij = x_j - x_i = positions[senders] - positions[receivers]``: ``[E, 3]``."""
    return positions[senders] - positions[receivers]


def cutoff_edge_mask(
    positions: jax.Array,
    senders: jax.Array,
    receivers: jax.Array,
    atom_mask: jax.Array,
    cutoff: float,
    candidate_mask: jax.Array | None = None,
) -> jax.Array:
    """``edge_mask [E]``: both atoms real, ``senders != receivers`` and ``|r_ij| < cutoff``.

    Recomputed from the current ``positions [N, 3]`` (traceable: use it inside ``jit``);
    ``candidate_mask [E]`` (optional) is and-ed in.
    """
    d2 = jnp.sum(jnp.square(edge_vectors(positions, senders, receivers)), axis=-1)
    mask = atom_mask[senders] & atom_mask[receivers] & (senders != receivers)
    mask = mask & (d2 < cutoff**2)
    return mask if candidate_mask is None else mask & candidate_mask


def _as_frames(atomic_numbers, batch: int, atoms: int, what: str) -> jax.Array:
    z = jnp.asarray(atomic_numbers)
    if z.shape == (atoms,):
        z = jnp.broadcast_to(z, (batch, atoms))
    if z.shape != (batch, atoms):
        raise ValueError(
            f"batch_frames: expected {what} of shape [A] = ({atoms},) or [B, A] = "
            f"({batch}, {atoms}); received {z.shape}"
        )
    return z


def batch_frames(
    positions: jax.Array,
    atomic_numbers: jax.Array,
    cutoff: float,
    atom_mask: jax.Array | None = None,
) -> MolecularGraph:
    """A block-padded flat batch from ``B`` frames of molecules with ``A`` atom slots each.

    Candidate edges are all ordered intra-molecule pairs (``B A (A - 1)``); the edge mask
    keeps those with both atoms real and ``|r_ij| < cutoff``, recomputed from ``positions``
    (traceable, so call it inside ``jit`` on the current coordinates). Shapes are static in
    ``B`` and ``A`` only.

    Args:
      positions: ``[B, A, 3]`` (Å).
      atomic_numbers: ``[A]`` (the same molecule in every frame, e.g. an MD trajectory) or
        ``[B, A]``; 0 marks a padded atom slot.
      cutoff: ``r_c`` (Å).
      atom_mask: ``[A]`` or ``[B, A]`` bool, or None for ``atomic_numbers > 0``.

    Returns:
      :class:`MolecularGraph` with ``N = B A``, ``E = B A (A - 1)``, ``num_graphs = B``,
      ``atoms_per_graph = A``, ``edges_per_graph = A (A - 1)``.
    """
    positions = jnp.asarray(positions)
    if positions.ndim != 3 or positions.shape[-1] != 3:
        raise ValueError(
            f"batch_frames: expected positions [B, A, 3]; received shape {positions.shape}"
        )
    if not (isinstance(cutoff, int | float) and cutoff > 0):
        raise ValueError(f"batch_frames: expected a cutoff > 0 (Å); received {cutoff!r}")
    b, a, _ = positions.shape
    z = _as_frames(atomic_numbers, b, a, "atomic_numbers").astype(jnp.int32)
    mask = z > 0 if atom_mask is None else _as_frames(atom_mask, b, a, "atom_mask")
    mask = mask.astype(bool)
    s, r = all_pairs(a)
    offsets = (np.arange(b, dtype=np.int32) * a)[:, None]
    senders = jnp.asarray((s[None, :] + offsets).reshape(-1))
    receivers = jnp.asarray((r[None, :] + offsets).reshape(-1))
    flat_pos = positions.reshape(b * a, 3)
    flat_mask = mask.reshape(-1)
    return MolecularGraph(
        positions=flat_pos,
        species=jnp.where(flat_mask, z.reshape(-1), 0),
        atom_mask=flat_mask,
        graph_ids=jnp.asarray(np.repeat(np.arange(b, dtype=np.int32), a)),
        senders=senders,
        receivers=receivers,
        edge_mask=cutoff_edge_mask(flat_pos, senders, receivers, flat_mask, cutoff),
        num_graphs=b,
        atoms_per_graph=a,
        edges_per_graph=a * (a - 1),
    )


def radius_graph(
    positions: jax.Array,
    graph_ids: jax.Array,
    atom_mask: jax.Array,
    cutoff: float,
    max_edges: int,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Directed radius graph of a padded flat batch, with a static edge budget.

    Edges are the ordered pairs ``(i, j)``, ``i != j``, of real atoms of the same molecule
    with ``|x_j - x_i| < cutoff``, sorted by receiver then sender, written into the first
    rows of ``max_edges`` slots. The pair test runs one receiver row at a time
    (``lax.map`` to count, ``lax.scan`` to fill), so the working memory is ``O(N)`` besides
    the ``[max_edges]`` outputs (no ``[N, N]`` matrix).

    Args:
      positions: ``[N, 3]`` (Å).
      graph_ids: ``[N]`` int, molecule of each atom.
      atom_mask: ``[N]`` bool.
      cutoff: ``r_c`` (Å).
      max_edges: static budget ``E``.

    Returns:
      ``(senders [E], receivers [E], edge_mask [E], num_edges [])`` where ``num_edges`` is
      the number of pairs found. Called eagerly, more pairs than ``max_edges`` raise a
      ``ValueError`` naming both numbers; under ``jit`` the surplus edges are dropped and
      ``num_edges > max_edges`` tells so (check it outside).
    """
    positions = jnp.asarray(positions)
    if positions.ndim != 2 or positions.shape[-1] != 3:
        raise ValueError(f"radius_graph: expected positions [N, 3]; received {positions.shape}")
    n = positions.shape[0]
    for name, arr in (("graph_ids", graph_ids), ("atom_mask", atom_mask)):
        if tuple(jnp.shape(arr)) != (n,):
            raise ValueError(
                f"radius_graph: expected {name} of shape [N] = ({n},); received "
                f"{tuple(jnp.shape(arr))}"
            )
    if not (isinstance(max_edges, int) and max_edges >= 1):
        raise ValueError(f"radius_graph: expected a static max_edges >= 1; received {max_edges!r}")
    if not (isinstance(cutoff, int | float) and cutoff > 0):
        raise ValueError(f"radius_graph: expected a cutoff > 0 (Å); received {cutoff!r}")
    graph_ids = jnp.asarray(graph_ids)
    atom_mask = jnp.asarray(atom_mask, bool)

    def row_counts(i):  # neighbours of atom i (i as receiver): [N] bool
        d2 = jnp.sum(jnp.square(positions - positions[i]), axis=-1)
        return (
            (d2 < cutoff**2)
            & atom_mask
            & atom_mask[i]
            & (graph_ids == graph_ids[i])
            & (jnp.arange(n) != i)
        )

    counts = jax.lax.map(lambda i: jnp.sum(row_counts(i)), jnp.arange(n))  # [N]
    num_edges = jnp.sum(counts)
    starts = jnp.cumsum(counts) - counts  # first slot of each receiver's edges

    def fill(carry, i):
        senders, receivers, mask = carry
        row = row_counts(i)
        # the k-th neighbour of i goes to slot starts[i] + k; the others to a dropped slot
        slot = jnp.where(row, starts[i] + jnp.cumsum(row) - 1, max_edges)
        senders = senders.at[slot].set(jnp.arange(n, dtype=jnp.int32), mode="drop")
        receivers = receivers.at[slot].set(jnp.int32(i), mode="drop")
        mask = mask.at[slot].set(True, mode="drop")
        return (senders, receivers, mask), None

    init = (
        jnp.zeros((max_edges,), jnp.int32),
        jnp.zeros((max_edges,), jnp.int32),
        jnp.zeros((max_edges,), bool),
    )
    (senders, receivers, mask), _ = jax.lax.scan(fill, init, jnp.arange(n))
    if not isinstance(num_edges, jax.core.Tracer) and int(num_edges) > max_edges:
        raise ValueError(
            f"radius_graph: found {int(num_edges)} edges within cutoff {cutoff} Å; "
            f"expected at most max_edges = {max_edges}"
        )
    return senders, receivers, mask, num_edges


def flat_graph(
    positions: jax.Array,
    species: jax.Array,
    graph_ids: jax.Array,
    num_graphs: int,
    cutoff: float,
    max_edges: int,
    atom_mask: jax.Array | None = None,
) -> MolecularGraph:
    """A :class:`MolecularGraph` from packed padded atoms, edges by :func:`radius_graph`.

    ``positions [N, 3]``, ``species [N]`` (0 = padding), ``graph_ids [N]`` in ``[0, G)``,
    ``atom_mask [N]`` (default ``species > 0``); ``num_graphs = G`` and ``max_edges = E``
    static. Not block padded (``atoms_per_graph = edges_per_graph = None``). Raises the
    budget ``ValueError`` of :func:`radius_graph` when called eagerly.
    """
    species = jnp.asarray(species, jnp.int32)
    mask = species > 0 if atom_mask is None else jnp.asarray(atom_mask, bool)
    graph_ids = jnp.asarray(graph_ids, jnp.int32)
    senders, receivers, edge_mask, _ = radius_graph(
        positions, graph_ids, mask, cutoff, max_edges
    )
    return MolecularGraph(
        positions=jnp.asarray(positions),
        species=jnp.where(mask, species, 0),
        atom_mask=mask,
        graph_ids=graph_ids,
        senders=senders,
        receivers=receivers,
        edge_mask=edge_mask,
        num_graphs=num_graphs,
    ).validate()


def neighbor_counts(graph: MolecularGraph) -> jax.Array:
    """Number of real edges with each atom as centre: ``[N]`` (the segment sum of
    ``edge_mask`` over ``receivers``), in the dtype of ``positions``."""
    return jax.ops.segment_sum(
        graph.edge_mask.astype(graph.positions.dtype),
        graph.receivers,
        num_segments=graph.num_atoms,
    )


def to_blocks(x: Any, mask: jax.Array, per_graph: int | None) -> tuple[Any, jax.Array]:
    """Flat ``x [M, ...]`` and ``mask [M]`` -> the norm layout ``[G, M/G, ...]``, ``[G, M/G]``.

    ``per_graph`` is ``atoms_per_graph`` or ``edges_per_graph``; ``None`` gives ``[1, M, ...]``
    (the whole batch as one graph). ``x`` may be an array or an ``e3nn.IrrepsArray``.
    """
    arr = x.array if isinstance(x, e3nn.IrrepsArray) else x
    m = arr.shape[0]
    lead = (1, m) if per_graph is None else (m // per_graph, per_graph)
    out = arr.reshape(lead + arr.shape[1:])
    if isinstance(x, e3nn.IrrepsArray):
        out = e3nn.IrrepsArray(x.irreps, out)
    return out, mask.reshape(lead)


def from_blocks(x: Any) -> Any:
    """Inverse of :func:`to_blocks`: ``[G, M/G, ...]`` -> ``[M, ...]``."""
    if isinstance(x, e3nn.IrrepsArray):
        a = x.array
        return e3nn.IrrepsArray(x.irreps, a.reshape((a.shape[0] * a.shape[1],) + a.shape[2:]))
    return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def energy_and_forces(model, variables, graph: MolecularGraph, *, mutable=False, **kwargs):
    """Molecular energies ``[G]`` and forces ``F = -dE/dx [N, 3]`` of any molecular model.

    ``model.apply(variables, graph, **kwargs)`` must return energies ``[G]``. Forces are
    ``-jax.grad(sum_g E_g)(positions)``: the molecules are independent, so the gradient of
    the sum is each molecule's own gradient. Padded atoms get zero force. Traceable (use it
    inside ``jit``).

    Args:
      model: a Flax module (``Allegro``, ``SchNet``).
      variables: its variables.
      graph: the batch.
      mutable: passed to ``model.apply``; when not False, returns the variable updates too.
      **kwargs: further ``model.apply`` keyword arguments.

    Returns:
      ``(energies [G], forces [N, 3])``, plus the mutable updates when ``mutable``.
    """
    if mutable is False:

        def total(pos):
            e = model.apply(variables, graph.replace(positions=pos), **kwargs)
            return jnp.sum(e), e

        (_, energies), grad = jax.value_and_grad(total, has_aux=True)(graph.positions)
        return energies, -grad

    def total_mut(pos):
        e, updates = model.apply(
            variables, graph.replace(positions=pos), mutable=mutable, **kwargs
        )
        return jnp.sum(e), (e, updates)

    (_, (energies, updates)), grad = jax.value_and_grad(total_mut, has_aux=True)(
        graph.positions
    )
    return energies, -grad, updates


def apply_block_norm(
    norm, x: Any, mask: jax.Array, per_graph: int | None, *, name: str, training: bool,
    **context,
):
    """Apply ``norm`` (a ``Norm``) to flat features through :class:`~geonorm_jax.linen.NormLayer`.

    ``x [M, ...]`` (array or IrrepsArray) and ``mask [M]`` are viewed as ``[G, M/G, ...]`` /
    ``[G, M/G]`` (:func:`to_blocks`), normalized with the mask, and flattened back; ``context``
    entries of shape ``[M]`` are viewed the same way. Call it inside a compact Linen module
    (the ``NormLayer`` becomes the submodule ``name``).
    """
    from geonorm_jax.linen import NormLayer  # linen imports the norms only: no cycle

    xb, mb = to_blocks(x, mask, per_graph)
    ctx = {k: to_blocks(v, mask, per_graph)[0] for k, v in context.items()}
    y = NormLayer(norm, name=name)(xb, mask=mb, training=training, **ctx)
    return from_blocks(y)


def species_scale_shift(
    atomic_energies: jax.Array,
    species: jax.Array,
    scale: float | tuple[float, ...] | None,
    shift: tuple[float, ...] | None,
) -> jax.Array:
    """``E_i = sigma_{Z_i} e_i + mu_{Z_i}`` (NequIP / Allegro per-species scale and shift).

    ``atomic_energies [N]``, ``species [N]`` atomic numbers. ``scale``: one float, a tuple
    indexed by atomic number, or None (1); ``shift``: a tuple indexed by atomic number
    (species beyond its length get 0), or None (0). Returns ``[N]``.
    """
    dtype = atomic_energies.dtype
    out = atomic_energies
    if scale is not None:
        if isinstance(scale, int | float):
            out = out * jnp.asarray(scale, dtype)
        else:
            table = jnp.asarray(scale, dtype)
            out = out * jnp.take(table, species, mode="fill", fill_value=1.0)
    if shift is not None:
        table = jnp.asarray(shift, dtype)
        out = out + jnp.take(table, species, mode="fill", fill_value=0.0)
    return out


def graph_energies(atomic_energies: jax.Array, graph: MolecularGraph) -> jax.Array:
    """Molecular energies ``E_g = sum_{i in g} E_i`` ``[G]`` of atomic energies ``[N]`` (0 at
    padded atoms), summed over ``graph.graph_ids``."""
    return jax.ops.segment_sum(atomic_energies, graph.graph_ids, num_segments=graph.num_graphs)
