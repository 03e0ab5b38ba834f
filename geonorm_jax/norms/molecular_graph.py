"""Normalizations of interatomic potentials and molecule generators with statistics over atoms:
MACE's density normalization, NequIP's per-species neighbour norm and MiDi's ``SE3Norm``.

* :func:`mace_density_norm`: MACE's learned-density message normalization, ``x_i / (rho_i +
  1)`` over the neighbours of atom ``i`` (Batatia et al., NeurIPS 2022), with its edge
  embedding :func:`bessel_edge_features`.
* :func:`species_neighbor_norm`: NequIP's ``AvgNumNeighborsNorm`` (global or per atom type;
  Batzner et al. 2022, Nature Communications).
* :func:`se3_coord_norm`: MiDi's ``SE3Norm`` of zero-centred coordinates, over the real
  atoms of each graph (Vignac et al., ECML PKDD 2023).

Layouts, padding and numerics: see :mod:`geonorm_jax.norms.molecular`; the flat node and
edge layout of e3nn-jax and jraph (``senders``/``receivers``) of the first two is
:mod:`geonorm_jax.norms.molecular_edges`. Norms of vectors are
:func:`geonorm_jax.geometry.field_norm` (finite gradients at 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np

from geonorm_jax.geometry import field_norm
from geonorm_jax.norms.base import (
    LAYOUT_KEYS,
    Graphs,
    Norm,
    NormInfo,
    check_coordinates,
    check_hyperparameters,
    check_layout,
    check_mask,
    graph_layout,
    graph_sum,
    layout_error,
    zero_padding,
)
from geonorm_jax.norms.irreps_common import as_irreps, is_flat
from geonorm_jax.norms.molecular_edges import (
    check_no_flat_edges,
    check_padded_only,
    flat_edges,
    node_positions,
    receiver_sum,
)

__all__ = [
    "mace_density_norm",
    "species_neighbor_norm",
    "se3_coord_norm",
    "bessel_edge_features",
    "CATALOG_ENTRIES",
]

_FLAT_NODES = ("an IrrepsArray [num_nodes, irreps], vectors [num_nodes, channels, 3] or "
               "features [num_nodes, channels] (the flat layout, selected by segment_ids= or "
               "n_node=)")
_FLAT_HINT = " (a flat [num_nodes, ...] input needs segment_ids= and num_graphs=, or n_node=)"


def _node_array(x, name: str, expected: str, flat: bool) -> jax.Array:
    """The array of ``x``, checked. Padded: an IrrepsArray ``[batch, nodes, irreps]`` or a
    float array of rank >= 3 (``[batch, nodes, ...]``). Flat (e3nn-jax's and jraph's): an
    IrrepsArray ``[num_nodes, irreps]``, vectors ``[num_nodes, channels, 3]`` or features
    ``[num_nodes, channels]``. ``ValueError`` naming the expected layout otherwise."""
    if isinstance(x, e3nn.IrrepsArray):
        return as_irreps(x, name, flat=flat)[0].array
    if flat:
        ok = getattr(x, "ndim", None) == 2 or (
            getattr(x, "ndim", None) == 3 and x.shape[-1] == 3)
        check_layout(x, name, _FLAT_NODES, ok)
        return x
    ok = getattr(x, "ndim", 0) >= 3
    if not ok and getattr(x, "ndim", None) == 2:
        expected = expected + _FLAT_HINT
    check_layout(x, name, expected, ok)
    return x


def _layout(a, mask, context: dict, name: str) -> Graphs:
    """The :class:`Graphs` of the node array ``a`` (padded or flat, by ``context``'s layout
    keywords), with the layout's edge keywords checked: the flat layout takes no
    ``adjacency=``, the padded one no ``senders=``/``receivers=``/``edge_mask=``."""
    graphs = graph_layout(a, mask, **{k: context.get(k) for k in LAYOUT_KEYS}, what=name)
    if graphs.flat:
        check_padded_only(context, name)
    else:
        check_no_flat_edges(context, name)
    return graphs


def _like_input(x, y: jax.Array):
    """``y`` in the layout of the input ``x``: an IrrepsArray with ``x``'s irreps, or as is."""
    return e3nn.IrrepsArray(x.irreps, y) if isinstance(x, e3nn.IrrepsArray) else y


# --------------------------------------------------------------------------------------------
# MACE density normalization
# --------------------------------------------------------------------------------------------


def bessel_edge_features(r: jax.Array, *, num_basis: int = 8, r_max: float = 5.0,
                         p: int = 5) -> jax.Array:
    """MACE's radial edge embedding: Bessel basis times the polynomial cutoff.

    .. math:: e_n(r) = \\sqrt{2 / r_{max}}\\,\\frac{\\sin(n \\pi r / r_{max})}{r}\\, f_p(r /
        r_{max}), \\quad f_p(u) = 1 - \\tfrac{(p+1)(p+2)}{2} u^p + p(p+2) u^{p+1}
        - \\tfrac{p(p+1)}{2} u^{p+2}\\ (u < 1),\\ 0\\ (u \\ge 1)

    ``r [...]`` distances; returns ``[..., num_basis]``. At ``r = 0`` the limit
    ``sqrt(2/r_max) n pi / r_max`` is used (finite values and gradients).
    Code: ``mace/modules/radial.py`` (``BesselBasis``, ``PolynomialCutoff``).
    """
    w = jnp.pi / r_max * jnp.arange(1, num_basis + 1, dtype=r.dtype)
    r_ = r[..., None]
    pos = r_ > 0
    r_safe = jnp.where(pos, r_, 1.0)
    bessel = jnp.where(pos, jnp.sin(w * r_safe) / r_safe, w) * np.sqrt(2.0 / r_max)
    u = jnp.minimum(r_ / r_max, 1.0)  # f_p(1) = 0; clamping keeps far pairs from overflowing
    env = (1.0 - (p + 1) * (p + 2) / 2 * u**p + p * (p + 2) * u ** (p + 1)
           - p * (p + 1) / 2 * u ** (p + 2))
    return bessel * jnp.where(u < 1.0, env, 0.0)


def mace_density_norm(*, num_basis: int = 8, r_max: float = 5.0) -> Norm:
    """MACE's density normalization of aggregated messages.

    .. math::

        \\rho_i = \\sum_{j \\ne i} \\tanh\\big(\\mathrm{MLP}(e_{ij})^2\\big), \\qquad
        y_i = \\frac{x_i}{\\rho_i + 1}, \\qquad \\mathrm{MLP}(e) = e \\cdot w / \\sqrt{F}

    over the real neighbours ``j`` of atom ``i`` (``{x}`` per receiving node). ``MLP`` is e3nn's
    ``FullyConnectedNet([F, 1])``: one linear layer, weights ``w [F]`` (``density_weight``,
    standard normal init) and no output activation. Edge features ``e_ij`` come from context:
    given directly (``edge_features``), or built from ``positions`` as MACE's
    Bessel-times-cutoff embedding of the distances (:func:`bessel_edge_features`; atoms beyond
    ``r_max`` contribute 0). Without either context the density is 0 and the layer is the
    identity (padded nodes give 0).

    Layouts:

    * padded (this library's): ``x [batch, nodes, ...]`` (any trailing axes, e.g. vectors
      ``[batch, nodes, channels, 3]``) or an IrrepsArray ``[batch, nodes, irreps]``, ``mask
      [batch, nodes]``; ``edge_features=[batch, nodes, nodes, F]`` (receiver ``i``, sender
      ``j``) with an optional ``adjacency=[batch, nodes, nodes]`` (default: every other real
      atom), or ``positions=[batch, nodes, 3]``.
    * flat (e3nn-jax's and jraph's, :mod:`~geonorm_jax.norms.molecular_edges`): an
      IrrepsArray ``[num_nodes, irreps]``, vectors ``[num_nodes, channels, 3]`` or features
      ``[num_nodes, channels]`` with ``segment_ids=`` + ``num_graphs=`` or ``n_node=``, ``mask
      [num_nodes]``; the edges ``senders=``, ``receivers=`` ``[num_edges]`` (message from
      ``senders[k]`` to ``receivers[k]``; optional ``edge_mask=[num_edges]``) with
      ``edge_features=[num_edges, F]`` or ``positions=[num_nodes, 3]``. Only edges between
      real nodes enter, self-loops never (``j != i``): jraph's padding edges, which point at
      a padding node, drop out without an edge mask. On the edges of the padded layout's
      graph the result equals the padded layout's.

    ``positions`` may be an IrrepsArray ``1o``. Paper: Batatia, Kovács, Simm, Ortner, Csányi
    2022, *MACE: Higher Order Equivariant Message Passing Neural Networks for Fast and
    Accurate Force Fields* (NeurIPS); the density normalization is MACE's
    ``RealAgnosticDensityInteractionBlock`` (``mace/modules/blocks.py``: ``edge_density =
    tanh(density_fn(edge_feats) ** 2)``, ``message / (density + 1)``), used by the MACE-MP
    foundation models.

    Shapes: out = ``x``'s. Params ``density_weight [F]``.
    """
    name = "mace_density_norm"
    expected = "node messages [batch, nodes, ...] (rank >= 3) or an IrrepsArray"

    def dense_edges(a, context, mask=None):
        b, n = a.shape[:2]
        if context.get("edge_features") is not None:
            e = context["edge_features"]
            if getattr(e, "ndim", None) != 4 or tuple(e.shape[:3]) != (b, n, n):
                raise layout_error(f"{name}: edge_features",
                                   f"[batch, nodes, nodes, F] = ({b}, {n}, {n}, F)", e)
            return e, context.get("adjacency")
        pos = context.get("positions")
        if pos is None:
            return None, None
        pos = pos.array if isinstance(pos, e3nn.IrrepsArray) else pos
        if getattr(pos, "shape", None) != (b, n, 3):
            raise layout_error(f"{name}: positions", f"[batch, nodes, 3] = ({b}, {n}, 3)", pos)
        if mask is not None:  # padded positions may hold anything (NaN, 1e30): zero them
            pos = jnp.where(mask[..., None], pos, 0.0)
        rel = pos[:, :, None, :] - pos[:, None, :, :]
        r = field_norm(rel)[..., 0]
        return bessel_edge_features(r, num_basis=num_basis, r_max=r_max), context.get(
            "adjacency")

    def list_edges(a, graphs, context):
        """Flat: ``(edge features [E, F] or None, Edges or None)``."""
        n = a.shape[0]
        edges = flat_edges(context, graphs, n, name, self_loops=False)
        e, pos = context.get("edge_features"), context.get("positions")
        if e is None and pos is None:
            return None, edges
        if edges is None:
            given = "edge_features" if e is not None else "positions"
            raise ValueError(f"{name}: the flat layout reads {given}= along the edges "
                             "senders= and receivers= [num_edges] (optional edge_mask=); "
                             "received no senders or receivers")
        if e is not None:
            if getattr(e, "ndim", None) != 2 or e.shape[0] != edges.num_edges:
                raise layout_error(f"{name}: edge_features",
                                   f"[num_edges, F] = ({edges.num_edges}, F)", e)
            return e, edges
        p = node_positions(pos, graphs, n, name)
        r = field_norm(p[edges.receivers] - p[edges.senders])[..., 0]  # [E]
        return bessel_edge_features(r, num_basis=num_basis, r_max=r_max), edges

    def features(a, graphs, context):
        if graphs.flat:
            return list_edges(a, graphs, context)
        return dense_edges(a, context, graphs.mask)

    def init(key, x, *, mask=None, **context):
        a = _node_array(x, name, expected, is_flat(context))
        e, _ = features(a, _layout(a, mask, context, name), context)
        f = num_basis if e is None else e.shape[-1]
        return {"density_weight": jax.random.normal(key, (f,), a.dtype)}, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training
        a = _node_array(x, name, expected, is_flat(context))
        graphs = _layout(a, mask, context, name)
        e, links = features(a, graphs, context)  # links: Edges (flat) or adjacency (padded)
        if e is None:
            return (x if graphs.real(a.ndim) is None
                    else _like_input(x, zero_padding(a, graphs))), state
        w = params["density_weight"]
        if w.shape != (e.shape[-1],):
            raise ValueError(f"{name}: 'density_weight' has shape {w.shape} but the edge "
                             f"features have F = {e.shape[-1]}; re-initialize")
        lead = a.shape[:1] if graphs.flat else a.shape[:2]
        if graphs.flat:
            # edges to or from padding never enter, not even as 0 * NaN in a gradient
            e = jnp.where(links.keep[:, None], e.astype(w.dtype), 0.0)
            h = (e @ w) / np.sqrt(e.shape[-1])  # [E]
            rho = receiver_sum(jnp.tanh(jnp.square(h)), links, a.shape[0])  # [num_nodes]
        else:
            b, n = lead
            keep = ~jnp.eye(n, dtype=bool)[None]
            if graphs.mask is not None:
                keep = keep & graphs.mask[:, None, :] & graphs.mask[:, :, None]
            adj = links
            if adj is not None:
                if tuple(getattr(adj, "shape", ())) != (b, n, n):
                    raise layout_error(f"{name}: adjacency",
                                       f"[batch, nodes, nodes] = ({b}, {n}, {n})", adj)
                keep = keep & (adj > 0)
            e = jnp.where(keep[..., None], e.astype(w.dtype), 0.0)
            h = jnp.einsum("bijf,f->bij", e, w) / np.sqrt(e.shape[-1])  # [B, N, N]
            rho = jnp.sum(jnp.where(keep, jnp.tanh(jnp.square(h)), 0.0), axis=-1)  # [B, N]
        factor = (1.0 / (rho + 1.0)).reshape(lead + (1,) * (a.ndim - len(lead)))
        # padded nodes give 0, whatever they hold (never NaN or inf, even where masked later)
        y = (zero_padding(a, graphs) * factor.astype(a.dtype)).astype(a.dtype)
        return _like_input(x, y), state

    return Norm(init, apply, kind="vectors", name=name)


# --------------------------------------------------------------------------------------------
# NequIP per-species average-neighbour normalization
# --------------------------------------------------------------------------------------------


def species_neighbor_norm(
    *, avg_num_neighbors: float | Sequence[float] | None = None, num_species: int = 1,
    power: float = 0.5,
) -> Norm:
    """NequIP's ``AvgNumNeighborsNorm``: features divided by ``N̄^p``, one ``N̄`` per atom type.

    .. math:: y_i = x_i \\,/\\, \\bar N_{z_i}^{\\,p}

    ``z_i`` the atom type of node ``i`` (context ``species``, integers in ``[0, T)``, or floats
    holding them; out-of-range types are clipped), ``N̄_t`` the average neighbour count of
    atoms of type ``t`` over the training set, ``p = 1/2`` (NequIP, ``norm_const =
    1/sqrt(N)``) or 1 (MACE). With one value (or no ``species``) it is one global constant.
    Per node; reduces no axis at apply time.

    ``avg_num_neighbors``: a float, a sequence of ``T`` floats, or None to estimate in ``init``
    from the batch there: per type, the mean over its real atoms of the neighbour counts (a
    type absent from the batch gets 1). Stored in ``state["avg_num_neighbors"] [T]``, never
    updated by ``apply``.

    Layouts:

    * padded (this library's): ``x [batch, nodes, ...]`` (rank >= 3) or an IrrepsArray
      ``[batch, nodes, irreps]``, ``mask [batch, nodes]``, ``species=[batch, nodes]``; the
      counts of ``init`` are the row sums of ``adjacency=[batch, nodes, nodes]`` over real
      neighbours, else ``n_real - 1``.
    * flat (e3nn-jax's and jraph's, :mod:`~geonorm_jax.norms.molecular_edges`): an
      IrrepsArray ``[num_nodes, irreps]``, vectors ``[num_nodes, channels, 3]`` or features
      ``[num_nodes, channels]`` with ``segment_ids=`` + ``num_graphs=`` or ``n_node=``, ``mask
      [num_nodes]``, ``species=[num_nodes]``; the counts of ``init`` are the kept edges into
      each node (``senders=``, ``receivers=`` ``[num_edges]``, optional ``edge_mask=``; edges
      from padding nodes never count), else ``n_real - 1`` of its graph. Equal to the padded
      layout's on the same graphs.

    Paper: Batzner et al. 2022, *E(3)-equivariant graph neural networks for data-efficient
    and accurate interatomic potentials* (Nature Communications). Code: nequip
    ``nequip/nn/_graph_mixin``-style module ``AvgNumNeighborsNorm`` (per-type
    ``avg_num_neighbors`` dict, embedding lookup on the atom type).

    Shapes: out = ``x``'s.
    """
    if avg_num_neighbors is not None:
        vals = np.atleast_1d(np.asarray(avg_num_neighbors, np.float64))
        if vals.ndim != 1 or not np.all(vals > 0):
            raise ValueError("species_neighbor_norm: expected avg_num_neighbors > 0 (a float "
                             f"or one per type); received {avg_num_neighbors!r}")
        num_species = max(num_species, vals.size) if vals.size > 1 else num_species
    name = "species_neighbor_norm"
    expected = "node features [batch, nodes, ...] (rank >= 3) or an IrrepsArray"

    def types(a, graphs, species, t):
        lead = a.shape[:1] if graphs.flat else a.shape[:2]
        if species is None:
            if t > 1:
                where = "[num_nodes]" if graphs.flat else "[batch, nodes]"
                raise ValueError(f"{name}: expected species={where} for {t} per-type values; "
                                 "received none")
            return jnp.zeros(lead, jnp.int32)
        if tuple(getattr(species, "shape", ())) != tuple(lead):
            where = "[num_nodes]" if graphs.flat else "[batch, nodes]"
            raise layout_error(f"{name}: species", f"{where} = {tuple(lead)}", species)
        z = jnp.asarray(species)
        if jnp.issubdtype(z.dtype, jnp.floating):
            z = jnp.floor(jnp.where(jnp.isfinite(z), z, 0.0))  # padding may hold NaN
        return jnp.clip(z.astype(jnp.int32), 0, t - 1)

    def counts_of(a, graphs, context):
        """Neighbour counts per node (``[batch, nodes]`` or ``[num_nodes]``)."""
        if graphs.flat:
            n = a.shape[0]
            edges = flat_edges(context, graphs, n, name, self_loops=True)
            if edges is not None:
                return receiver_sum(jnp.ones((edges.num_edges,)), edges, n)
            return graph_sum(jnp.ones((n,)), graphs) - 1.0
        b, n = a.shape[:2]
        m = jnp.ones((b, n), bool) if graphs.mask is None else graphs.mask.astype(bool)
        adj = context.get("adjacency")
        if adj is not None:
            if tuple(getattr(adj, "shape", ())) != (b, n, n):
                raise layout_error(f"{name}: adjacency",
                                   f"[batch, nodes, nodes] = ({b}, {n}, {n})", adj)
            return jnp.sum(jnp.where(m[:, None, :] & (jnp.asarray(adj) > 0), 1.0, 0.0), -1)
        return jnp.broadcast_to(jnp.sum(m, 1, keepdims=True) - 1.0, (b, n))

    def init(key, x, *, mask=None, **context):
        del key
        a = _node_array(x, name, expected, is_flat(context))
        graphs = _layout(a, mask, context, name)
        if avg_num_neighbors is not None:
            v = np.broadcast_to(vals, (num_species,)) if vals.size == 1 else vals
            return {}, {"avg_num_neighbors": jnp.asarray(v, jnp.float32)}
        z = types(a, graphs, context.get("species"), num_species)
        real = graphs.real(z.ndim)
        m = jnp.ones(z.shape, bool) if real is None else real
        counts = counts_of(a, graphs, context)
        onehot = jax.nn.one_hot(z, num_species) * m[..., None]  # [B, N, T] or [num_nodes, T]
        tot = jnp.einsum("...t,...->t", onehot, counts)
        cnt = jnp.sum(onehot, axis=tuple(range(z.ndim)))
        est = jnp.where(cnt > 0, tot / jnp.maximum(cnt, 1.0), 1.0)
        return {}, {"avg_num_neighbors": jnp.where(est > 0, est, 1.0).astype(jnp.float32)}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del params, training
        a = _node_array(x, name, expected, is_flat(context))
        graphs = _layout(a, mask, context, name)
        avg = state.get("avg_num_neighbors") if isinstance(state, dict) else None
        if avg is None or avg.ndim != 1:
            raise ValueError(f"{name}: expected state {{'avg_num_neighbors': [types]}} from "
                             f"init; received {state!r}")
        z = types(a, graphs, context.get("species"), avg.shape[0])
        factor = (avg.astype(a.dtype) ** (-power))[z]  # [B, N] or [num_nodes]
        # padded nodes give 0, whatever they hold (never NaN or inf, even where masked later)
        y = zero_padding(a, graphs) * factor.reshape(z.shape + (1,) * (a.ndim - z.ndim))
        return _like_input(x, y), state

    return Norm(init, apply, kind="vectors", name=name)


# --------------------------------------------------------------------------------------------
# MiDi SE3Norm
# --------------------------------------------------------------------------------------------


@check_hyperparameters
def se3_coord_norm(*, epsilon: float = 1e-5) -> Norm:
    """MiDi's ``SE3Norm``: coordinates divided by their mean norm over the real nodes.

    .. math:: y_i = w\\, \\frac{x_i}{\\operatorname{mean}_{j\\ \\text{real}} \\|x_j\\|_2
        + \\epsilon}

    Reduced axes: ``{x, d}`` per graph. ``w`` a learned scalar (``scale [1]``, ones). The
    layer assumes zero-centred coordinates (MiDi removes the centre of mass before every
    layer), so it is rotation- but not translation-equivariant by itself: it normalizes about
    the origin. Paper: Vignac, Osman, Toni, Frossard 2023, *MiDi: Mixed Graph and 3D Denoising
    Diffusion for Molecule Generation* (ECML PKDD). Code: ``midi/models/layers.py``
    (``SE3Norm``, eps 1e-5; sums over all nodes of zero-padded positions divided by the node
    count, which equals the masked mean here).

    Shapes: coordinates ``[batch, nodes, 3]``, mask ``[batch, nodes]``.
    """
    name = "se3_coord_norm"

    def init(key, x, **context):
        del key, context
        check_coordinates(x, name)
        return {"scale": jnp.ones((1,), x.dtype)}, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training, context
        check_coordinates(x, name)
        check_mask(mask, x.shape)
        if tuple(params["scale"].shape) != (1,):
            raise ValueError(f"{name}: expected 'scale' of shape (1,); received "
                             f"{tuple(params['scale'].shape)}")
        xc = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        m = jnp.ones(x.shape[:2], bool) if mask is None else mask.astype(bool)
        xm = jnp.where(m[..., None], xc, 0.0)
        s = jax.lax.stop_gradient(
            jnp.maximum(jnp.max(jnp.abs(xm), axis=(1, 2), keepdims=True, initial=0.0),
                        1.0))  # [B, 1, 1]
        nrm = field_norm(xm / s)  # [B, N, 1]
        cnt = jnp.maximum(jnp.sum(m, axis=1), 1).astype(xc.dtype)[:, None, None]
        mean = jnp.sum(nrm, axis=1, keepdims=True) / cnt
        y = params["scale"].astype(xc.dtype) * (xm / s) / (mean + epsilon / s)
        return y.astype(x.dtype), state

    return Norm(init, apply, kind="coordinates", name=name)


# --------------------------------------------------------------------------------------------
# Catalogue
# --------------------------------------------------------------------------------------------

CATALOG_ENTRIES: list[NormInfo] = [
    NormInfo(
        name="mace_density_norm", constructor=mace_density_norm, kind="vectors",
        paper="Batatia, Kovacs, Simm, Ortner, Csanyi 2022, MACE (NeurIPS); code mace "
        "RealAgnosticDensityInteractionBlock",
        formula="x_i / (sum_j tanh(MLP(e_ij)^2) + 1)", reduced_axes="x (neighbours j of i)",
        params=("density_weight",), family="equivariant models", context=("positions",),
        notes="Edge features: MACE's Bessel x polynomial-cutoff embedding of the distances "
        "from positions= (or edge_features= given directly). Flat layout: positions "
        "[num_nodes, 3] or edge_features [num_edges, F] along senders=/receivers= [num_edges].",
        layouts=("padded", "flat"),
        symmetries=("SO3", "O3", "permutation", "batch"),
    ),
    NormInfo(
        name="species_neighbor_norm", constructor=species_neighbor_norm, kind="vectors",
        paper="Batzner et al. 2022, E(3)-equivariant graph neural networks for data-efficient "
        "and accurate interatomic potentials (NequIP, Nature Communications); code nequip "
        "AvgNumNeighborsNorm",
        formula="x_i / sqrt(N_{z_i})", reduced_axes="none (N per atom type, from data)",
        running_state=("avg_num_neighbors",), family="equivariant models",
        context=("species",), kwargs={"avg_num_neighbors": (6.0, 10.0, 14.0)},
        notes="Per-type constants (a fixed example here: 3 types); a float gives NequIP's "
        "global form. Flat layout: species [num_nodes]; init's estimate counts the edges "
        "senders=/receivers= [num_edges].",
        layouts=("padded", "flat"),
        symmetries=("SO3", "O3", "permutation", "batch"),
    ),
    NormInfo(
        name="se3_coord_norm", constructor=se3_coord_norm, kind="coordinates",
        paper="Vignac, Osman, Toni, Frossard 2023, MiDi: Mixed Graph and 3D Denoising "
        "Diffusion for Molecule Generation (ECML PKDD); code midi SE3Norm",
        formula="w * x / (mean_x ||x|| + eps)", reduced_axes="x,d (per graph)",
        params=("scale",), family="equivariant models",
        notes="Assumes zero-centred coordinates (MiDi re-centres before the layer).",
        symmetries=("SO3", "translation", "permutation", "batch"),
    ),
]
