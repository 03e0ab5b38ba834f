"""Normalizations of interatomic potentials and molecule generators with statistics over atoms:
MACE's density normalization, NequIP's per-species neighbour norm and MiDi's ``SE3Norm``.

* :func:`mace_density_norm`: MACE's learned-density message normalization, ``x_i / (rho_i +
  1)`` over the neighbours of atom ``i`` (Batatia et al., NeurIPS 2022), with its edge
  embedding :func:`bessel_edge_features`.
* :func:`species_neighbor_norm`: NequIP's ``AvgNumNeighborsNorm`` (global or per atom type;
  Batzner et al. 2022, Nature Communications).
* :func:`se3_coord_norm`: MiDi's ``SE3Norm`` of zero-centred coordinates, over the real
  atoms of each graph (Vignac et al., ECML PKDD 2023).

Layouts, padding and numerics: see :mod:`geonorm_jax.norms.molecular`; norms of vectors
are :func:`geonorm_jax.geometry.field_norm` (finite gradients at 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np

from geonorm_jax.geometry import field_norm
from geonorm_jax.norms.base import (
    Norm,
    NormInfo,
    check_coordinates,
    check_hyperparameters,
    check_layout,
    check_mask,
    layout_error,
    zero_padding,
)

__all__ = [
    "mace_density_norm",
    "species_neighbor_norm",
    "se3_coord_norm",
    "bessel_edge_features",
    "CATALOG_ENTRIES",
]


def _node_array(x, name: str, expected: str) -> jax.Array:
    """The array of ``x`` (an IrrepsArray's ``.array``), checked to be a float array of rank
    >= 3 (``[batch, nodes, ...]``); ``ValueError`` naming ``expected`` otherwise."""
    a = x.array if isinstance(x, e3nn.IrrepsArray) else x
    check_layout(a, name, expected, getattr(a, "ndim", 0) >= 3)
    return a


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
    ``edge_features=[batch, nodes, nodes, F]`` (receiver ``i``, sender ``j``) with an optional
    ``adjacency=[batch, nodes, nodes]`` (default: every other real atom), or
    ``positions=[batch, nodes, 3]``, from which MACE's Bessel-times-cutoff embedding of the
    distances is built (:func:`bessel_edge_features`; atoms beyond ``r_max`` contribute 0).
    Without either context the density is 0 and the layer is the identity.

    Paper: Batatia, Kovács, Simm, Ortner, Csányi 2022, *MACE: Higher Order Equivariant
    Message Passing Neural Networks for Fast and Accurate Force Fields* (NeurIPS); the density
    normalization is MACE's ``RealAgnosticDensityInteractionBlock`` (``mace/modules/blocks.py``:
    ``edge_density = tanh(density_fn(edge_feats) ** 2)``, ``message / (density + 1)``), used
    by the MACE-MP foundation models.

    Shapes: ``x`` node messages ``[batch, nodes, ...]`` (any trailing axes, e.g. vectors
    ``[batch, nodes, channels, 3]``) or an IrrepsArray; same out. Params ``density_weight [F]``.
    """
    name = "mace_density_norm"
    expected = "node messages [batch, nodes, ...] (rank >= 3) or an IrrepsArray"

    def arr_of(x):
        return _node_array(x, name, expected)

    def edges(a, context, mask=None):
        b, n = a.shape[:2]
        if context.get("edge_features") is not None:
            e = context["edge_features"]
            if e.ndim != 4 or tuple(e.shape[:3]) != (b, n, n):
                raise layout_error(f"{name}: edge_features",
                                   f"[batch, nodes, nodes, F] = ({b}, {n}, {n}, F)", e)
            return e, context.get("adjacency")
        pos = context.get("positions")
        if pos is None:
            return None, None
        if getattr(pos, "shape", None) != (b, n, 3):
            raise layout_error(f"{name}: positions", f"[batch, nodes, 3] = ({b}, {n}, 3)", pos)
        if mask is not None:  # padded positions may hold anything (NaN, 1e30): zero them
            pos = jnp.where(mask[..., None], pos, 0.0)
        rel = pos[:, :, None, :] - pos[:, None, :, :]
        r = field_norm(rel)[..., 0]
        return bessel_edge_features(r, num_basis=num_basis, r_max=r_max), context.get(
            "adjacency")

    def init(key, x, **context):
        a = arr_of(x)
        e, _ = edges(a, context)
        f = num_basis if e is None else e.shape[-1]
        return {"density_weight": jax.random.normal(key, (f,), a.dtype)}, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training
        a = arr_of(x)
        check_mask(mask, a.shape)
        e, adj = edges(a, context, mask)
        if e is None:
            return x, state
        w = params["density_weight"]
        if w.shape != (e.shape[-1],):
            raise ValueError(f"{name}: 'density_weight' has shape {w.shape} but the edge "
                             f"features have F = {e.shape[-1]}; re-initialize")
        b, n = a.shape[:2]
        keep = ~jnp.eye(n, dtype=bool)[None]
        if mask is not None:
            keep = keep & mask[:, None, :] & mask[:, :, None]
        if adj is not None:
            if tuple(adj.shape) != (b, n, n):
                raise layout_error(f"{name}: adjacency",
                                   f"[batch, nodes, nodes] = ({b}, {n}, {n})", adj)
            keep = keep & (adj > 0)
        # edges to or from padding never enter, not even as 0 * NaN in a gradient
        e = jnp.where(keep[..., None], e.astype(w.dtype), 0.0)
        h = jnp.einsum("bijf,f->bij", e, w) / np.sqrt(e.shape[-1])  # [B, N, N]
        rho = jnp.sum(jnp.where(keep, jnp.tanh(jnp.square(h)), 0.0), axis=-1)  # [B, N]
        factor = (1.0 / (rho + 1.0)).reshape((b, n) + (1,) * (a.ndim - 2))
        # padded nodes give 0, whatever they hold (never NaN or inf, even where masked later)
        y = (zero_padding(a, mask) * factor.astype(a.dtype)).astype(a.dtype)
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

    ``z_i`` the atom type of node ``i`` (context ``species=[batch, nodes]``, integers in
    ``[0, T)``, or floats holding them; out-of-range types are clipped), ``N̄_t`` the
    average neighbour count of atoms of type ``t`` over the training set,
    ``p = 1/2`` (NequIP, ``norm_const = 1/sqrt(N)``) or 1 (MACE). With one value (or no
    ``species``) it is one global constant. Per node; reduces no axis at apply time.

    ``avg_num_neighbors``: a float, a sequence of ``T`` floats, or None to estimate in ``init``
    from the batch there: per type, the mean over its real atoms of the neighbour counts
    (``adjacency=[batch, nodes, nodes]`` row sums, else ``n_real - 1``; a type absent from the
    batch gets 1). Stored in ``state["avg_num_neighbors"] [T]``, never updated by ``apply``.

    Paper: Batzner et al. 2022, *E(3)-equivariant graph neural networks for data-efficient
    and accurate interatomic potentials* (Nature Communications). Code: nequip
    ``nequip/nn/_graph_mixin``-style module ``AvgNumNeighborsNorm`` (per-type
    ``avg_num_neighbors`` dict, embedding lookup on the atom type).

    Shapes: ``x [batch, nodes, ...]`` (rank >= 3) or an IrrepsArray; same out.
    """
    if avg_num_neighbors is not None:
        vals = np.atleast_1d(np.asarray(avg_num_neighbors, np.float64))
        if vals.ndim != 1 or not np.all(vals > 0):
            raise ValueError("species_neighbor_norm: expected avg_num_neighbors > 0 (a float "
                             f"or one per type); received {avg_num_neighbors!r}")
        num_species = max(num_species, vals.size) if vals.size > 1 else num_species
    name = "species_neighbor_norm"
    expected = "node features [batch, nodes, ...] (rank >= 3) or an IrrepsArray"

    def arr_of(x):
        return _node_array(x, name, expected)

    def types(a, species, t):
        if species is None:
            if t > 1:
                raise ValueError(f"{name}: expected species=[batch, nodes] for {t} per-type "
                                 "values; received none")
            return jnp.zeros(a.shape[:2], jnp.int32)
        if tuple(getattr(species, "shape", ())) != tuple(a.shape[:2]):
            raise layout_error(f"{name}: species", f"[batch, nodes] = {tuple(a.shape[:2])}",
                               species)
        z = jnp.asarray(species)
        if jnp.issubdtype(z.dtype, jnp.floating):
            z = jnp.floor(z)
        return jnp.clip(z.astype(jnp.int32), 0, t - 1)

    def init(key, x, *, mask=None, **context):
        del key
        a = arr_of(x)
        if avg_num_neighbors is not None:
            v = np.broadcast_to(vals, (num_species,)) if vals.size == 1 else vals
            return {}, {"avg_num_neighbors": jnp.asarray(v, jnp.float32)}
        z = types(a, context.get("species"), num_species)
        b, n = a.shape[:2]
        m = jnp.ones((b, n), bool) if mask is None else mask.astype(bool)
        adj = context.get("adjacency")
        if adj is not None:
            counts = jnp.sum(jnp.where(m[:, None, :] & (jnp.asarray(adj) > 0), 1.0, 0.0), -1)
        else:
            counts = jnp.broadcast_to(jnp.sum(m, 1, keepdims=True) - 1.0, (b, n))
        onehot = jax.nn.one_hot(z, num_species) * m[..., None]  # [B, N, T]
        tot = jnp.einsum("bnt,bn->t", onehot, counts)
        cnt = jnp.sum(onehot, axis=(0, 1))
        est = jnp.where(cnt > 0, tot / jnp.maximum(cnt, 1.0), 1.0)
        return {}, {"avg_num_neighbors": jnp.where(est > 0, est, 1.0).astype(jnp.float32)}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del params, training
        a = arr_of(x)
        check_mask(mask, a.shape)
        avg = state.get("avg_num_neighbors") if isinstance(state, dict) else None
        if avg is None or avg.ndim != 1:
            raise ValueError(f"{name}: expected state {{'avg_num_neighbors': [types]}} from "
                             f"init; received {state!r}")
        z = types(a, context.get("species"), avg.shape[0])
        factor = (avg.astype(a.dtype) ** (-power))[z]  # [B, N]
        # padded nodes give 0, whatever they hold (never NaN or inf, even where masked later)
        y = zero_padding(a, mask) * factor.reshape(a.shape[:2] + (1,) * (a.ndim - 2))
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
        "from positions= (or edge_features= given directly).",
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
        "global form.",
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
