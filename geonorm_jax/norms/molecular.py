"""Normalizations of machine-learned interatomic potentials and molecule generators.

* :func:`vec_layer_norm`: ViSNet's ``VecLayerNorm`` (``"max_min"`` and ``"rms"``).
* :func:`tensor_norm`: TensorNet's ``X / (||X||_F^2 + 1)``.
* :func:`mace_density_norm`: MACE's learned-density message normalization.
* :func:`species_neighbor_norm`: NequIP's ``AvgNumNeighborsNorm`` (global or per atom type).
* :func:`se3_coord_norm`: MiDi's ``SE3Norm`` of zero-centred coordinates.

Layouts. Vector features ``[batch, nodes, channels, 3]`` (ViSNet's ``[atoms, 3, C]``
transposed), or an ``e3nn.IrrepsArray`` ``[batch, nodes, irreps]`` where a layer says so;
Cartesian rank-2 tensors ``[batch, nodes, channels, 3, 3]`` (TensorNet's ``[atoms, C, 3, 3]``);
coordinates ``[batch, nodes, 3]``; mask ``[batch, nodes]`` (True = real atom). Statistics over
atoms exclude padding with ``jnp.where``; squared statistics are computed on inputs divided by
their largest magnitude (``max(1, max|x|)``), so they cannot overflow.
"""

from __future__ import annotations

from collections.abc import Sequence

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np

from geonorm_jax.norms.base import Norm, NormInfo, check_choice, check_coordinates, check_mask
from geonorm_jax.norms.irreps import as_irreps, field_norm, unit

__all__ = [
    "vec_layer_norm",
    "tensor_norm",
    "mace_density_norm",
    "species_neighbor_norm",
    "se3_coord_norm",
    "bessel_edge_features",
    "CATALOG_ENTRIES",
]


def _err(what: str, expected: str, x) -> ValueError:
    return ValueError(f"{what}: expected {expected}; received shape "
                      f"{getattr(x, 'shape', None)} with dtype "
                      f"{getattr(x, 'dtype', type(x).__name__)}")


def _check_float(x, what, expected, ok: bool) -> None:
    if not ok or not jnp.issubdtype(getattr(x, "dtype", np.dtype(object)), jnp.floating):
        raise _err(what, expected + " of a floating dtype", x)


def _zero_padding(a: jax.Array, mask) -> jax.Array:
    """``a [batch, nodes, ...]`` with padded nodes set to 0 by ``jnp.where`` (NaN-safe)."""
    if mask is None:
        return a
    return jnp.where(mask.astype(bool).reshape(mask.shape + (1,) * (a.ndim - 2)), a, 0.0)


def _safe_norm(v: jax.Array) -> jax.Array:
    """Euclidean norm over the last axis (keepdims), overflow- and underflow-safe, 0 with
    finite gradients at 0 (:func:`geonorm_jax.norms.irreps.field_norm`)."""
    return field_norm(v)


# --------------------------------------------------------------------------------------------
# ViSNet VecLayerNorm
# --------------------------------------------------------------------------------------------


def vec_layer_norm(*, norm_type: str = "max_min", trainable: bool = True,
                   epsilon: float = 1e-12) -> Norm:
    """ViSNet's ``VecLayerNorm``: vector channels rescaled by the range or the RMS of their norms.

    Per node, with ``d_c = max(||v_c||, eps)`` over the channels ``c`` of one degree:

    .. math::

        \\text{rms:}\\quad y_c = w_c\\, v_c / \\sqrt{\\operatorname{mean}_{c'} d_{c'}^2},
        \\qquad
        \\text{max\\_min:}\\quad y_c = w_c\\,\\mathrm{ReLU}\\Big(\\frac{d_c - \\min_{c'} d_{c'}}
        {\\Delta}\\Big) \\frac{v_c}{d_c},\\ \\Delta = \\max_{c'} d_{c'} - \\min_{c'} d_{c'}
        \\ (1 \\text{ if } 0)

    Reduced axes: per node over channels (``{v}``; ``d`` for the norms). For an IrrepsArray each
    chunk (ViSNet splits ``l = 1`` and ``l = 2`` the same way) is normalized separately.
    ViSNet's ``if (dist == 0).all(): return zeros`` over the whole batch is dropped: with the
    ``eps`` clamp zero vectors already map to zero, so the result is the same.
    Paper: Wang et al. 2024, *Enhancing geometric representations for molecules with
    equivariant vector-scalar interactive message passing* (Nature Communications). Code:
    torchmd-net ``torchmdnet/models/visnet_block.py`` (``VecLayerNorm``, eps 1e-12).

    Args:
      norm_type: ``"max_min"`` (ViSNet's default) or ``"rms"``.
      trainable: learn ``weight [C]`` (ones; ``num_irreps`` for an IrrepsArray).
      epsilon: the clamp on the norms.

    Shapes: vectors ``[batch, nodes, channels, 3]`` or IrrepsArray ``[batch, nodes, irreps]``.
    """
    check_choice(norm_type, ("max_min", "rms"), "vec_layer_norm: norm_type")
    name = f"vec_layer_norm_{norm_type.replace('_', '')}"

    def block(v):  # [B, N, C, d]
        dist = jnp.maximum(_safe_norm(v), epsilon)  # [B, N, C, 1]
        top = jax.lax.stop_gradient(jnp.max(dist, axis=-2, keepdims=True))  # >= eps > 0
        if norm_type == "rms":
            # v / sqrt(mean d^2) = (v/s) / sqrt(mean (d/s)^2) for any s; s = max d puts the
            # mean in [1/C, 1], so no derivative of the rsqrt meets eps^-5 (a node whose
            # channels are all 0, e.g. a cross product of parallel vectors, has mean d^2 =
            # eps^2: the second derivatives of force training overflowed float32 there)
            ds = dist / top
            return (v / top) * jax.lax.rsqrt(jnp.mean(jnp.square(ds), axis=-2, keepdims=True))
        s = jnp.maximum(top, 1.0)
        ds = dist / s
        hi = jnp.max(ds, axis=-2, keepdims=True)
        lo = jnp.min(ds, axis=-2, keepdims=True)
        delta = hi - lo
        delta = jnp.where(delta == 0, 1.0 / s, delta)  # ViSNet: 1 in unscaled units
        return jax.nn.relu((ds - lo) / delta) * unit(v, dist)

    def init(key, x, **context):
        del key, context
        xi, _ = as_irreps(x, name)
        return ({"weight": jnp.ones((xi.irreps.num_irreps,), xi.array.dtype)}
                if trainable else {}), {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training, context
        xi, raw = as_irreps(x, name)
        check_mask(mask, xi.shape)
        k = xi.irreps.num_irreps
        if trainable and tuple(params["weight"].shape) != (k,):
            raise ValueError(f"{name}: 'weight' has shape {tuple(params['weight'].shape)} but "
                             f"the input has {k} channels; re-initialize")
        dtype = xi.array.dtype
        cdt = jnp.promote_types(dtype, jnp.float32)
        lead = xi.array.shape[:-1]
        arr = _zero_padding(xi.array, mask)
        out, i = [], 0
        for mi, sl in zip(xi.irreps, xi.irreps.slices(), strict=True):
            v = arr[..., sl].reshape(lead + (mi.mul, mi.ir.dim)).astype(cdt)
            y = block(v) if mi.mul else v
            if trainable:
                y = y * params["weight"][i:i + mi.mul].astype(cdt)[:, None]
            i += mi.mul
            out.append(y.reshape(lead + (-1,)))
        arr = jnp.concatenate(out, axis=-1).astype(dtype)
        return (arr.reshape(raw) if raw is not None else e3nn.IrrepsArray(xi.irreps, arr)), state

    return Norm(init, apply, kind="vectors", name=name)


# --------------------------------------------------------------------------------------------
# TensorNet
# --------------------------------------------------------------------------------------------


def tensor_norm() -> Norm:
    """TensorNet's tensor normalization: each channel's tensor divided by its squared
    Frobenius norm plus one.

    .. math:: Y_{c} = \\frac{X_{c}}{\\|X_{c}\\|_F^2 + 1}

    Per node and channel; reduces the tensor components (``d``, both indices). Applied to the
    node tensors ``X`` in every interaction layer. Paper: Simeon & De Fabritiis 2023,
    *TensorNet: Cartesian Tensor Representations for Efficient Learning of Molecular
    Potentials* (NeurIPS). Code: torchmd-net ``torchmdnet/models/tensornet.py``
    (``X / (tensor_norm(X) + 1)``, ``tensor_norm = (X**2).sum((-2, -1))``). Overflow-safe: with
    ``s = max(1, max|X_c|)``, ``Y = (X/s) / (s ||X/s||^2 + 1/s)``.

    Shapes: rank-2 tensors ``[batch, nodes, channels, 3, 3]`` (``R X R^T`` under a rotation),
    or vectors ``[batch, nodes, channels, 3]`` (then ``||v||^2``), or an IrrepsArray
    ``[batch, nodes, irreps]``, where each field (chunk channel, ``2l+1`` components) is
    divided by its own squared norm plus one (TensorNet's ``X = I + A + S`` would put its
    ``0e + 1e + 2e`` parts under one norm; a general IrrepsArray does not say which fields
    form a tensor). No params, state or context.
    """
    name = "tensor_norm"
    expected = ("tensors [batch, nodes, channels, 3, 3], vectors [batch, nodes, channels, 3] "
                "or an IrrepsArray [batch, nodes, irreps]")

    def check(x):
        ok = (getattr(x, "ndim", None) == 5 and x.shape[-2:] == (3, 3)) or (
            getattr(x, "ndim", None) == 4 and x.shape[-1] == 3)
        _check_float(x, name, expected, ok)

    def norm(xc, axes):
        s = jax.lax.stop_gradient(
            jnp.maximum(jnp.max(jnp.abs(xc), axis=axes, keepdims=True), 1.0))
        q = jnp.sum(jnp.square(xc / s), axis=axes, keepdims=True)
        return (xc / s) / (s * q + 1.0 / s)

    def init(key, x, **context):
        del key, context
        if isinstance(x, e3nn.IrrepsArray):
            as_irreps(x, name)
        else:
            check(x)
        return {}, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del params, training, context
        if isinstance(x, e3nn.IrrepsArray):
            xi, _ = as_irreps(x, name)
            check_mask(mask, xi.shape)
            dtype, lead = xi.array.dtype, xi.array.shape[:-1]
            cdt = jnp.promote_types(dtype, jnp.float32)
            arr = _zero_padding(xi.array, mask)
            out = [norm(arr[..., sl].reshape(lead + (mi.mul, mi.ir.dim)).astype(cdt),
                        (-1,)).reshape(lead + (-1,))
                   for mi, sl in zip(xi.irreps, xi.irreps.slices(), strict=True)]
            arr = jnp.concatenate(out, -1).astype(dtype) if out else xi.array
            return e3nn.IrrepsArray(xi.irreps, arr), state
        check(x)
        check_mask(mask, x.shape)
        xc = _zero_padding(x.astype(jnp.promote_types(x.dtype, jnp.float32)), mask)
        y = norm(xc, tuple(range(3, x.ndim)))
        return y.astype(x.dtype), state

    return Norm(init, apply, kind="vectors", name=name)


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
        a = x.array if isinstance(x, e3nn.IrrepsArray) else x
        _check_float(a, name, expected, getattr(a, "ndim", 0) >= 3)
        return a

    def edges(a, context, mask=None):
        b, n = a.shape[:2]
        if context.get("edge_features") is not None:
            e = context["edge_features"]
            if e.ndim != 4 or tuple(e.shape[:3]) != (b, n, n):
                raise _err(f"{name}: edge_features", f"[batch, nodes, nodes, F] = ({b}, {n}, "
                           f"{n}, F)", e)
            return e, context.get("adjacency")
        pos = context.get("positions")
        if pos is None:
            return None, None
        if getattr(pos, "shape", None) != (b, n, 3):
            raise _err(f"{name}: positions", f"[batch, nodes, 3] = ({b}, {n}, 3)", pos)
        if mask is not None:  # padded positions may hold anything (NaN, 1e30): zero them
            pos = jnp.where(mask[..., None], pos, 0.0)
        rel = pos[:, :, None, :] - pos[:, None, :, :]
        r = _safe_norm(rel)[..., 0]
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
                raise _err(f"{name}: adjacency", f"[batch, nodes, nodes] = ({b}, {n}, {n})", adj)
            keep = keep & (adj > 0)
        # edges to or from padding never enter, not even as 0 * NaN in a gradient
        e = jnp.where(keep[..., None], e.astype(w.dtype), 0.0)
        h = jnp.einsum("bijf,f->bij", e, w) / np.sqrt(e.shape[-1])  # [B, N, N]
        rho = jnp.sum(jnp.where(keep, jnp.tanh(jnp.square(h)), 0.0), axis=-1)  # [B, N]
        factor = (1.0 / (rho + 1.0)).reshape((b, n) + (1,) * (a.ndim - 2))
        y = (a * factor.astype(a.dtype)).astype(a.dtype)
        return (e3nn.IrrepsArray(x.irreps, y) if isinstance(x, e3nn.IrrepsArray) else y), state

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
        a = x.array if isinstance(x, e3nn.IrrepsArray) else x
        _check_float(a, name, expected, getattr(a, "ndim", 0) >= 3)
        return a

    def types(a, species, t):
        if species is None:
            if t > 1:
                raise ValueError(f"{name}: expected species=[batch, nodes] for {t} per-type "
                                 "values; received none")
            return jnp.zeros(a.shape[:2], jnp.int32)
        if tuple(getattr(species, "shape", ())) != tuple(a.shape[:2]):
            raise _err(f"{name}: species", f"[batch, nodes] = {tuple(a.shape[:2])}", species)
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
        y = a * factor.reshape(a.shape[:2] + (1,) * (a.ndim - 2))
        return (e3nn.IrrepsArray(x.irreps, y) if isinstance(x, e3nn.IrrepsArray) else y), state

    return Norm(init, apply, kind="vectors", name=name)


# --------------------------------------------------------------------------------------------
# MiDi SE3Norm
# --------------------------------------------------------------------------------------------


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
            jnp.maximum(jnp.max(jnp.abs(xm), axis=(1, 2), keepdims=True), 1.0))  # [B, 1, 1]
        nrm = _safe_norm(xm / s)  # [B, N, 1]
        cnt = jnp.maximum(jnp.sum(m, axis=1), 1).astype(xc.dtype)[:, None, None]
        mean = jnp.sum(nrm, axis=1, keepdims=True) / cnt
        y = params["scale"].astype(xc.dtype) * (xm / s) / (mean + epsilon / s)
        return y.astype(x.dtype), state

    return Norm(init, apply, kind="coordinates", name=name)


# --------------------------------------------------------------------------------------------
# Catalogue
# --------------------------------------------------------------------------------------------

_VISNET = ("Wang, Wang, Li, et al. 2024, Enhancing geometric representations for molecules "
           "with equivariant vector-scalar interactive message passing (ViSNet, Nature "
           "Communications); code torchmd-net VecLayerNorm")

CATALOG_ENTRIES: list[NormInfo] = [
    NormInfo(
        name="vec_layer_norm_maxmin", constructor=vec_layer_norm, kind="vectors",
        paper=_VISNET, formula="w * ReLU((||v|| - min_v ||v||) / (max_v - min_v)) * v/||v||",
        reduced_axes="v per node (d for the norm)", params=("weight",),
        family="equivariant models", kwargs={"norm_type": "max_min"},
    ),
    NormInfo(
        name="vec_layer_norm_rms", constructor=vec_layer_norm, kind="vectors",
        paper=_VISNET, formula="w * v / sqrt(mean_v max(||v||, eps)^2)",
        reduced_axes="v,d per node", params=("weight",),
        family="equivariant models", kwargs={"norm_type": "rms"},
    ),
    NormInfo(
        name="tensor_norm", constructor=tensor_norm, kind="vectors",
        paper="Simeon, De Fabritiis 2023, TensorNet: Cartesian Tensor Representations for "
        "Efficient Learning of Molecular Potentials (NeurIPS); code torchmd-net tensornet.py",
        formula="X / (||X||_F^2 + 1)", reduced_axes="d (per node and channel)",
        family="equivariant models",
        notes="Rank-2 tensors [b, x, v, 3, 3]; the audit probes its vectors [b, x, v, 3] "
        "(||v||^2 + 1).",
    ),
    NormInfo(
        name="mace_density_norm", constructor=mace_density_norm, kind="vectors",
        paper="Batatia, Kovacs, Simm, Ortner, Csanyi 2022, MACE (NeurIPS); code mace "
        "RealAgnosticDensityInteractionBlock",
        formula="x_i / (sum_j tanh(MLP(e_ij)^2) + 1)", reduced_axes="x (neighbours j of i)",
        params=("density_weight",), family="equivariant models", context=("positions",),
        notes="Edge features: MACE's Bessel x polynomial-cutoff embedding of the distances "
        "from positions= (or edge_features= given directly).",
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
    ),
    NormInfo(
        name="se3_coord_norm", constructor=se3_coord_norm, kind="coordinates",
        paper="Vignac, Osman, Toni, Frossard 2023, MiDi: Mixed Graph and 3D Denoising "
        "Diffusion for Molecule Generation (ECML PKDD); code midi SE3Norm",
        formula="w * x / (mean_x ||x|| + eps)", reduced_axes="x,d (per graph)",
        params=("scale",), family="equivariant models",
        notes="Assumes zero-centred coordinates (MiDi re-centres before the layer).",
    ),
]
