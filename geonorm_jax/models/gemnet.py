r"""GemNet-T (Gasteiger, Becker and Günnemann, NeurIPS 2021, "GemNet: Universal Directional
Graph Neural Networks for Molecules"), the triplets-only GemNet, on the flat padded batch.

Directional message passing on directed edges ``c -> a`` (``senders = c``, ``receivers = a``,
``d_ca = |x_c - x_a|``), with the blocks of :mod:`.gemnet_blocks`::

    e(d_ca)       = u(d / r_c) sqrt(2 / r_c) sin(n pi d / r_c) / d          [E, R]  radial basis
    Y(theta_cab)  = sqrt((2l+1)/4pi) P_l(cos theta_cab)                     [E, M, L] triplets
    h_a^0         = Emb(Z_a)                                                [N, F_a]
    m_ca^0        = act(W [h_c || h_a || e(d_ca)])                         [E, F_e]
    E_a           = Out_0(h^0, m^0) + sum_{t=1..T} Out_t(h^t, m^t)          [N]  output blocks
    (h^t, m^t)    = Interaction_t(h^{t-1}, m^{t-1}; e, Y, triplets)
    E_g           = sum_{a in g} (sigma E_a + mu_{Z_a})                     [G]

Forces are ``F = -dE/dx`` (:func:`~geonorm_jax.models.molecular_graph.energy_and_forces`),
GemNet's ``direct_forces=False``. Triplets (edges ``b -> a`` with ``b != c`` for each edge
``c -> a``) and reverse edges come from :func:`~.gemnet_triplets.edge_triplets` in a static
``[E, M]`` budget (``M = max_neighbors``; by default ``A - 1`` for a block-padded batch,
which is never exceeded). **Quadruplets (GemNet-Q) are not implemented.** Every term reaching
the energy carries the envelope ``u`` of the edge it came through, so energies and forces are
smooth as atoms cross ``r_c``. Padded atoms, edges and triplets are masked out of every sum
and of the scale-factor statistics, so they change no real output.

GemNet's normalizations, each one argument:

(a) ``scale_factors``: the fitted constants ``alpha`` of :mod:`.gemnet_scaling` after every
    Hadamard product with a radial embedding and every sum (per triplet interaction: after
    the radial product and after the bilinear triplet sum; per atom update and output block:
    after the sum over edges). They live in the ``"scale_factors"`` collection; fit them once
    with :func:`~.gemnet_scaling.fit_scale_factors` (``model.init`` sets them to 1).
    ``False``: no factors (the identity).
(b) ``residual_scaling``: the ``1/sqrt(2)`` after every residual sum (in the residual layers,
    the interaction's skip connections and the sum of the triplet and reverse-edge
    messages). ``False``: plain sums.

The ``ScaledSiLU`` activation (``silu / 0.6``) and the He-orthogonal initialization are part
of the architecture and stay on. ``species_scale`` / ``species_shift`` (None: off) are the
optional per-species energy scale and shift of the other molecular models.

Normalization places (:data:`GEMNET_PLACEMENT`, kind ``features``): ``atom_norm`` on the atom
embeddings ``h [G, A, F_a]`` after the atom update of each interaction block (before the edge
embeddings are updated from them: GemNet's output blocks read only the edge embeddings, so a
norm on ``h`` after the last block would change nothing), ``edge_norm`` on the edge
embeddings ``m [G, K, F_e]`` (edge mask) at the end of each block; block-padded batches give
one molecule per row, as for Allegro and SchNet (the norm's variables are
``interaction_t/atom_norm`` and ``interaction_t/edge_norm``).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from geonorm_jax.models import execution_plan, registry
from geonorm_jax.models.gemnet_basis import (
    gemnet_radial_basis,
    he_orthogonal_init,
    legendre_spherical_basis,
    scaled_silu,
)
from geonorm_jax.models.gemnet_blocks import InteractionBlock, OutputBlock, dense
from geonorm_jax.models.gemnet_triplets import edge_triplets
from geonorm_jax.models.layers import matmul_dtype_of, merge_training, mixed_einsum
from geonorm_jax.models.molecular_graph import (
    MolecularGraph,
    edge_vectors,
    graph_energies,
    species_scale_shift,
)
from geonorm_jax.models.placement import NormPlace, NormPlacement
from geonorm_jax.norms.base import Norm

__all__ = ["GEMNET_SPEC", "GemNetT", "GEMNET_PLACEMENT", "GEMNET_T_MD17", "GEMNET_T_SMALL",
           "MAX_NEIGHBORS_LIMIT"]

#: The largest ``GemNetT.max_neighbors`` accepted: more neighbours than any atom has within
#: a molecular cutoff (a close-packed solid has about 80 within 6 Å), while the triplet
#: tables take memory ``O(E M)``.
MAX_NEIGHBORS_LIMIT = 1024

# The authors' GemNet-T for MD17 (TUM-DAML/gemnet_pytorch, pretrained/GemNet-T/
# model_kwargs.json): 4 blocks, atom and edge width 128, triplet 64, radial and circular
# embeddings 16, bilinear 64, 7 spherical and 6 radial functions, r_c = 5 Å, envelope p = 5,
# 1 residual layer before and 1 after the skip, 1 after the concatenation, 2 in atom updates.
GEMNET_T_MD17 = dict(
    num_blocks=4, emb_size_atom=128, emb_size_edge=128, emb_size_trip=64, emb_size_rbf=16,
    emb_size_cbf=16, emb_size_bil_trip=64, num_spherical=7, num_radial=6, cutoff=5.0,
    envelope_p=5, num_before_skip=1, num_after_skip=1, num_concat=1, num_atom=2,
)

# A small GemNet-T for CPU runs: the same structure, 2 blocks, widths / 4.
GEMNET_T_SMALL = {**GEMNET_T_MD17, **dict(
    num_blocks=2, emb_size_atom=32, emb_size_edge=32, emb_size_trip=16, emb_size_rbf=8,
    emb_size_cbf=8, emb_size_bil_trip=16,
)}

GEMNET_PLACEMENT = NormPlacement(
    "GemNet-T",
    (
        NormPlace("atom", ("features",),
                  "the atom embeddings h [G, A, F_a] after each block's atom update"),
        NormPlace("edge", ("features",),
                  "the edge embeddings m [G, K, F_e] (edge mask) after each block"),
    ),
    defaults=(("features", "atom"),),
)


def _uniform_sqrt3(key, shape, dtype=jnp.float32):
    """GemNet's atom-embedding init: ``U(-sqrt 3, sqrt 3)`` (unit variance)."""
    return jax.random.uniform(key, shape, dtype, -math.sqrt(3.0), math.sqrt(3.0))


class GemNetT(nn.Module):
    """GemNet-T energy model: :class:`MolecularGraph` -> molecular energies ``[G]``.

    Attributes:
      num_blocks: ``T`` interaction blocks (>= 1).
      emb_size_atom, emb_size_edge: ``F_a``, ``F_e``.
      emb_size_trip: ``T`` width of the down-projected triplet messages.
      emb_size_rbf, emb_size_cbf: widths of the radial embedding and of the circular basis
        down projection.
      emb_size_bil_trip: ``B``, output width of the bilinear layer.
      num_spherical, num_radial: ``L`` and ``R`` basis functions.
      cutoff: ``r_c`` (Å); edges beyond it are dropped.
      envelope_p: exponent of the polynomial envelope (GemNet: 5).
      num_before_skip, num_after_skip, num_concat, num_atom: residual layers at each place.
      max_neighbors: ``M``, the static triplet budget of edges per centre (at most
        :data:`MAX_NEIGHBORS_LIMIT`); None: ``A - 1`` for a block-padded batch (required
        otherwise). A budget above what a batch allows (``A - 1``, or ``N - 1`` for a flat
        batch) is lowered to it, as those slots could never be filled. A centre with more
        real edges than ``M`` raises ``ValueError`` when called eagerly; under ``jit`` it
        makes every energy of the batch NaN (never a silently truncated result); check the
        data beforehand with :func:`~geonorm_jax.models.checks.check_triplet_capacity`.
      scale_factors: normalization (a) (see the module docstring).
      residual_scaling: normalization (b).
      species_scale, species_shift: optional per-species energy scale and shift.
      max_atomic_number: embedding table size minus one.
      atom_norm, edge_norm: ``Norm`` of kind ``features`` or None.
      training: passed to the norms; also a call argument (Flax's convention,
        :func:`~geonorm_jax.models.layers.merge_training`); default False.
      matmul_dtype: mixed precision (:mod:`~geonorm_jax.models.layers`): the operands of
        every dense layer's product, of the radial-to-circular weight contraction and of the
        bilinear layer in this dtype (e.g. ``"bfloat16"``), accumulated and returned in the
        positions' dtype; the sums over triplets and neighbours stay in the positions' dtype.
        None (default): all in the positions' dtype.
      triplet_chunk: how the triplet sums (``[E, M, T]`` gathered messages per block) run:
        ``"auto"`` (default; :meth:`edge_plan`, the execution plan of
        :mod:`~geonorm_jax.models.execution_plan` for ``E`` edges of ``2 M T`` values),
        edges per chunk (``int``) or None (all at once). Chunks hold one chunk's triplets at
        a time and recompute them in the backward pass; values are the same up to summation
        order. The scale-factor fit always runs them at once.
    """

    num_blocks: int = 2
    emb_size_atom: int = 32
    emb_size_edge: int = 32
    emb_size_trip: int = 16
    emb_size_rbf: int = 8
    emb_size_cbf: int = 8
    emb_size_bil_trip: int = 16
    num_spherical: int = 7
    num_radial: int = 6
    cutoff: float = 5.0
    envelope_p: int = 5
    num_before_skip: int = 1
    num_after_skip: int = 1
    num_concat: int = 1
    num_atom: int = 2
    max_neighbors: int | None = None
    scale_factors: bool = True
    residual_scaling: bool = True
    species_scale: float | tuple[float, ...] | None = None
    species_shift: tuple[float, ...] | None = None
    max_atomic_number: int = 118
    atom_norm: Norm | None = None
    edge_norm: Norm | None = None
    training: bool | None = None
    matmul_dtype: Any = None
    triplet_chunk: int | str | None = execution_plan.AUTO

    def __post_init__(self):
        GEMNET_PLACEMENT.check(self.atom_norm, "atom")
        GEMNET_PLACEMENT.check(self.edge_norm, "edge")
        if not (isinstance(self.num_blocks, int) and self.num_blocks >= 1):
            raise ValueError(f"GemNetT.num_blocks: expected an int >= 1; received "
                             f"{self.num_blocks!r}")
        matmul_dtype_of(self.matmul_dtype, "GemNetT.matmul_dtype")
        execution_plan.check_edge_chunk(self.triplet_chunk, "GemNetT.triplet_chunk")
        if not self.cutoff > 0:
            raise ValueError(f"GemNetT.cutoff: expected > 0 (Å); received {self.cutoff!r}")
        if self.max_neighbors is not None and not (
                isinstance(self.max_neighbors, int) and not isinstance(self.max_neighbors, bool)
                and 1 <= self.max_neighbors <= MAX_NEIGHBORS_LIMIT):
            raise ValueError(f"GemNetT.max_neighbors: expected None or an int in [1, "
                             f"{MAX_NEIGHBORS_LIMIT}] (the triplet tables take memory edges x "
                             f"max_neighbors); received {self.max_neighbors!r}")
        super().__post_init__()

    def triplet_budget(self, graph: MolecularGraph) -> int:
        """``M``: ``max_neighbors``, else ``atoms_per_graph - 1`` of a block-padded batch;
        never more than a centre of the batch can have (``A - 1``, or ``N - 1`` flat)."""
        most = (graph.atoms_per_graph if graph.atoms_per_graph is not None
                else graph.num_atoms) - 1
        if self.max_neighbors is not None:
            return max(min(self.max_neighbors, most), 1)
        if graph.atoms_per_graph is None:
            raise ValueError(
                "GemNetT.max_neighbors: expected an int for a batch that is not block padded "
                "(atoms_per_graph is None); received None"
            )
        return max(graph.atoms_per_graph - 1, 1)

    def edge_plan(self, graph: MolecularGraph, dtype=None) -> execution_plan.EdgePlan:
        """The plan of the triplet sums for ``graph`` (``E`` edges, ``M`` =
        :meth:`triplet_budget` slots, width ``T = emb_size_trip``) in ``dtype`` (default: the
        positions'): per edge ``2 M T`` values (the gathered messages and their cotangent)
        in each of ``num_blocks`` blocks; on the CPU, chunks of the bytes of the EGNN's
        ``CPU_CHUNK`` edges of width 64. An explicit ``triplet_chunk`` is stated as such."""
        width = self.triplet_budget(graph) * self.emb_size_trip
        cpu_chunk = max(1, execution_plan.CPU_CHUNK * 64 // width)
        plan = execution_plan.plan_edges(
            graph.num_edges, width, dtype or graph.positions.dtype, layers=self.num_blocks,
            per_hidden=2, cpu_chunk=cpu_chunk)
        if self.triplet_chunk != execution_plan.AUTO:
            chunk = self.triplet_chunk
            plan = plan._replace(chunk=None if chunk is None or chunk >= graph.num_edges
                                 else chunk, reason=f"explicit triplet_chunk={chunk}")
        return plan._replace(save_dots=False)

    @nn.compact
    def atomic_energies(self, graph: MolecularGraph, fit_scale_factors: bool = False,
                        training: bool | None = None):
        """Atomic energies ``E_a [N]`` (0 at padded atoms).

        ``model.apply(variables, graph, method="atomic_energies")``; ``fit_scale_factors``:
        see :func:`~.gemnet_scaling.fit_scale_factors`.
        """
        graph.validate()
        training = merge_training(self.training, training)
        dtype = graph.positions.dtype
        n, fit = graph.num_atoms, fit_scale_factors
        s = 1.0 / math.sqrt(2.0) if self.residual_scaling else 1.0
        senders, receivers = graph.senders, graph.receivers

        vec = edge_vectors(graph.positions, senders, receivers)  # [E, 3] x_c - x_a
        d2 = jnp.sum(jnp.square(vec), axis=-1)
        # an edge of zero length (coincident atoms) has no direction: it is left out like a
        # padded edge, so values and gradients stay finite (models.checks.check_frames
        # reports such data before training)
        emask = graph.edge_mask & (d2 < self.cutoff**2) & (senders != receivers) & (d2 > 0)
        safe = jnp.where(emask[:, None], vec, jnp.asarray([0.0, 0.0, 1.0], dtype))
        r = jnp.sqrt(jnp.sum(jnp.square(safe), axis=-1))  # [E] > 0
        rbf = gemnet_radial_basis(r, self.cutoff, self.num_radial, self.envelope_p)
        rbf = rbf * emask[:, None].astype(dtype)  # [E, R]

        budget = self.triplet_budget(graph)
        trip = edge_triplets(senders, receivers, emask, n, budget)
        if not self.is_initializing():
            self.sow("intermediates", "triplet_max_neighbors", trip.max_count)
        unit = safe / r[:, None]
        cos = jnp.einsum("emd,ed->em", unit[trip.edge_ba], unit)  # [E, M] cos theta_cab
        sph = legendre_spherical_basis(cos, self.num_spherical)
        sph = sph * trip.triplet_mask[..., None].astype(dtype)  # [E, M, L]

        emb = nn.Embed(self.max_atomic_number + 1, self.emb_size_atom,
                       embedding_init=_uniform_sqrt3, name="atom_embedding")
        h = emb(graph.species).astype(dtype)  # [N, F_a]
        md = self.matmul_dtype
        m = scaled_silu(dense(self.emb_size_edge, "edge_embedding", md)(
            jnp.concatenate([h[senders], h[receivers], rbf], axis=-1)))  # [E, F_e]
        rbf3 = dense(self.emb_size_rbf, "mlp_rbf3", md)(rbf)
        w1 = self.param("mlp_cbf3", he_orthogonal_init,
                        (self.num_radial, self.num_spherical, self.emb_size_cbf))
        rbf_w1 = mixed_einsum("er,rlc->ecl", rbf, w1, md)  # [E, C, L]
        rbf_h = dense(self.emb_size_rbf, "mlp_rbf_h", md)(rbf)
        rbf_out = dense(self.emb_size_rbf, "mlp_rbf_out", md)(rbf)

        chunks = self.edge_plan(graph, dtype).num_chunks
        out = lambda t: OutputBlock(self.emb_size_atom, self.num_atom,  # noqa: E731
                                    self.scale_factors, s, matmul_dtype=md,
                                    name=f"output_{t}")
        energy = out(0)(m, rbf_out, receivers, emask, graph.atom_mask, fit)
        for t in range(self.num_blocks):
            h, m = InteractionBlock(
                self.emb_size_trip, self.emb_size_bil_trip, self.num_before_skip,
                self.num_after_skip, self.num_concat, self.num_atom, self.scale_factors, s,
                atom_norm=self.atom_norm, edge_norm=self.edge_norm,
                atoms_per_graph=graph.atoms_per_graph, edges_per_graph=graph.edges_per_graph,
                training=training, matmul_dtype=md, triplet_chunks=chunks,
                name=f"interaction_{t}",
            )(h, m, rbf3, rbf_w1, sph, trip, rbf_h, senders, receivers, emask,
              graph.atom_mask, fit)
            energy = energy + out(t + 1)(m, rbf_out, receivers, emask, graph.atom_mask, fit)
        energy = species_scale_shift(energy, graph.species, self.species_scale,
                                     self.species_shift)
        # a truncated triplet table (possible only under jit: eagerly edge_triplets raises)
        # makes the energies NaN rather than silently wrong; no effect on any bit otherwise
        energy = jnp.where(trip.max_count > budget, jnp.nan, energy)
        return jnp.where(graph.atom_mask, energy, 0.0)

    def __call__(self, graph: MolecularGraph, fit_scale_factors: bool = False,
                 training: bool | None = None) -> jax.Array:
        """Molecular energies ``[G]``: ``segment_sum`` of :meth:`atomic_energies` over
        ``graph_ids``; ``training`` as the attribute (:func:`~.layers.merge_training`)."""
        return graph_energies(self.atomic_energies(graph, fit_scale_factors, training), graph)


def gemnet_init(model: GemNetT, key: jax.Array, batch: dict) -> dict:
    """:func:`~geonorm_jax.models.predict.potential_init`, then GemNet-T's scale factors fitted
    on ``batch`` when ``model.scale_factors`` (:func:`~.gemnet_scaling.fit_scale_factors`; the
    authors fit on 16 batches of 32 molecules)."""
    from geonorm_jax.models.gemnet_scaling import fit_scale_factors
    from geonorm_jax.models.predict import potential_graph

    graph = potential_graph(model, batch)
    variables = model.init(key, graph)
    if model.scale_factors:
        variables = fit_scale_factors(model, variables, graph)
    return {"params": variables["params"],
            "batch_stats": {k: v for k, v in variables.items() if k != "params"}}


GEMNET_SPEC = registry.register(registry.ModelSpec(
    name="gemnet",
    task="molecules",
    module=GemNetT,
    defaults=GEMNET_T_MD17,
    knobs={"hidden": ("emb_size_atom", "emb_size_edge"), "num_layers": ("num_blocks",)},
    builtin_norm={True: {"scale_factors": True, "residual_scaling": True},
                  False: {"scale_factors": False, "residual_scaling": False}},
    sizes={"tiny": dict(num_blocks=1, emb_size_atom=8, emb_size_edge=8, emb_size_trip=4,
                        emb_size_rbf=4, emb_size_cbf=4, emb_size_bil_trip=4, num_spherical=3,
                        num_radial=4),
           "small": GEMNET_T_SMALL},
    placement=GEMNET_PLACEMENT,
    init=gemnet_init,
    citation="Gasteiger, Becker and Günnemann, GemNet: Universal Directional Graph Neural "
             "Networks for Molecules, NeurIPS 2021; configuration: TUM-DAML/gemnet_pytorch "
             "pretrained/GemNet-T model_kwargs.json",
    description="GemNet-T: two-hop message passing with triplet angles (energies, forces)",
))
