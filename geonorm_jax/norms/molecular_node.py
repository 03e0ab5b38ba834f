"""Per-node normalizations of interatomic potentials: ViSNet's ``VecLayerNorm`` and TensorNet's
tensor norm.

* :func:`vec_layer_norm`: ViSNet's ``VecLayerNorm`` (``"max_min"`` and ``"rms"``), per node
  over the vector channels (Wang et al. 2024, Nature Communications).
* :func:`tensor_norm`: TensorNet's ``X / (||X||_F^2 + 1)`` per node and channel (Simeon &
  De Fabritiis, NeurIPS 2023).

Layouts, padding and numerics: see :mod:`geonorm_jax.norms.molecular`; norms of vectors
are :func:`geonorm_jax.geometry.field_norm` (finite gradients at 0).
"""

from __future__ import annotations

import dataclasses

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp

from geonorm_jax.geometry import field_norm, unit
from geonorm_jax.norms.base import (
    LAYOUT_KEYS,
    Norm,
    NormInfo,
    check_choice,
    check_hyperparameters,
    check_layout,
    graph_layout,
    zero_padding,
)
from geonorm_jax.norms.irreps_common import as_irreps, is_flat

__all__ = ["vec_layer_norm", "tensor_norm", "CATALOG_ENTRIES"]


# --------------------------------------------------------------------------------------------
# ViSNet VecLayerNorm
# --------------------------------------------------------------------------------------------


@check_hyperparameters
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

    Shapes: vectors ``[batch, nodes, channels, 3]`` or IrrepsArray ``[batch, nodes, irreps]``
    (padded, this library's layout), or ``[num_nodes, channels, 3]`` / ``[num_nodes, irreps]``
    with ``segment_ids=`` + ``num_graphs=`` or ``n_node=`` (flat, e3nn-jax's and jraph's).
    """
    check_choice(norm_type, ("max_min", "rms"), "vec_layer_norm: norm_type")
    name = f"vec_layer_norm_{norm_type.replace('_', '')}"

    def block(v):  # [B, N, C, d]
        dist = jnp.maximum(field_norm(v), epsilon)  # [B, N, C, 1]
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
        del key
        xi, _ = as_irreps(x, name, flat=is_flat(context))
        return ({"weight": jnp.ones((xi.irreps.num_irreps,), xi.array.dtype)}
                if trainable else {}), {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training
        xi, raw = as_irreps(x, name, flat=is_flat(context))  # padded or flat (graph_layout)
        graphs = graph_layout(xi.array, mask, **{k: context.get(k) for k in LAYOUT_KEYS},
                              what=name)
        k = xi.irreps.num_irreps
        if trainable and tuple(params["weight"].shape) != (k,):
            raise ValueError(f"{name}: 'weight' has shape {tuple(params['weight'].shape)} but "
                             f"the input has {k} channels; re-initialize")
        dtype = xi.array.dtype
        cdt = jnp.promote_types(dtype, jnp.float32)
        lead = xi.array.shape[:-1]
        arr = zero_padding(xi.array, graphs)
        out, i = [], 0
        for mi, sl in zip(xi.irreps, xi.irreps.slices(), strict=True):
            v = arr[..., sl].reshape(lead + (mi.mul, mi.ir.dim)).astype(cdt)
            y = block(v) if mi.mul else v
            if trainable:
                y = y * params["weight"][i:i + mi.mul].astype(cdt)[:, None]
            i += mi.mul
            out.append(y.reshape(lead + (mi.mul * mi.ir.dim,)))
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
    form a tensor). Flat layout (e3nn-jax's and jraph's): the same without the ``batch`` axis,
    ``[num_nodes, ...]`` with ``segment_ids=`` + ``num_graphs=`` or ``n_node=``. No params or
    state.
    """
    name = "tensor_norm"
    expected = ("tensors [batch, nodes, channels, 3, 3], vectors [batch, nodes, channels, 3] "
                "or an IrrepsArray [batch, nodes, irreps]")
    expected_flat = ("tensors [num_nodes, channels, 3, 3], vectors [num_nodes, channels, 3] "
                     "or an IrrepsArray [num_nodes, irreps] (the flat layout)")

    def check(x, flat):
        lead = 1 if flat else 2
        ok = (getattr(x, "ndim", None) == lead + 3 and x.shape[-2:] == (3, 3)) or (
            getattr(x, "ndim", None) == lead + 2 and x.shape[-1] == 3)
        check_layout(x, name, expected_flat if flat else expected, ok)

    def norm(xc, axes):
        s = jax.lax.stop_gradient(
            jnp.maximum(jnp.max(jnp.abs(xc), axis=axes, keepdims=True, initial=0.0), 1.0))
        q = jnp.sum(jnp.square(xc / s), axis=axes, keepdims=True)
        return (xc / s) / (s * q + 1.0 / s)

    def init(key, x, **context):
        del key
        if isinstance(x, e3nn.IrrepsArray):
            as_irreps(x, name, flat=is_flat(context))
        else:
            check(x, is_flat(context))
        return {}, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del params, training
        flat = is_flat(context)  # padded or flat layout (graph_layout)
        layout = {k: context.get(k) for k in LAYOUT_KEYS}
        if isinstance(x, e3nn.IrrepsArray):
            xi, _ = as_irreps(x, name, flat=flat)
            graphs = graph_layout(xi.array, mask, **layout, what=name)
            dtype, lead = xi.array.dtype, xi.array.shape[:-1]
            cdt = jnp.promote_types(dtype, jnp.float32)
            arr = zero_padding(xi.array, graphs)
            out = [norm(arr[..., sl].reshape(lead + (mi.mul, mi.ir.dim)).astype(cdt),
                        (-1,)).reshape(lead + (mi.dim,))
                   for mi, sl in zip(xi.irreps, xi.irreps.slices(), strict=True)]
            arr = jnp.concatenate(out, -1).astype(dtype) if out else xi.array
            return e3nn.IrrepsArray(xi.irreps, arr), state
        check(x, flat)
        graphs = graph_layout(x, mask, **layout, what=name)
        xc = zero_padding(x.astype(jnp.promote_types(x.dtype, jnp.float32)), graphs)
        y = norm(xc, tuple(range(2 if flat else 3, x.ndim)))
        return y.astype(x.dtype), state

    return Norm(init, apply, kind="vectors", name=name)


# --------------------------------------------------------------------------------------------
# Catalogue
# --------------------------------------------------------------------------------------------

_VISNET = ("Wang, Wang, Li, et al. 2024, Enhancing geometric representations for molecules "
           "with equivariant vector-scalar interactive message passing (ViSNet, Nature "
           "Communications); code torchmd-net VecLayerNorm")

_VEC_LAYER_NORM = NormInfo(
    name="vec_layer_norm_maxmin", constructor=vec_layer_norm, kind="vectors",
    paper=_VISNET, formula="w * ReLU((||v|| - min_v ||v||) / (max_v - min_v)) * v/||v||",
    reduced_axes="v per node (d for the norm)", params=("weight",),
    family="equivariant models", kwargs={"norm_type": "max_min"},
    layouts=("padded", "flat"),
    symmetries=("SO3", "permutation", "batch"),
)

CATALOG_ENTRIES: list[NormInfo] = [
    _VEC_LAYER_NORM,
    dataclasses.replace(
        _VEC_LAYER_NORM,
        name="vec_layer_norm_rms", formula="w * v / sqrt(mean_v max(||v||, eps)^2)",
        reduced_axes="v,d per node", kwargs={"norm_type": "rms"},
    ),
    NormInfo(
        name="tensor_norm", constructor=tensor_norm, kind="vectors",
        paper="Simeon, De Fabritiis 2023, TensorNet: Cartesian Tensor Representations for "
        "Efficient Learning of Molecular Potentials (NeurIPS); code torchmd-net tensornet.py",
        formula="X / (||X||_F^2 + 1)", reduced_axes="d (per node and channel)",
        family="equivariant models",
        notes="Rank-2 tensors [b, x, v, 3, 3]; the audit probes its vectors [b, x, v, 3] "
        "(||v||^2 + 1).",
        layouts=("padded", "flat"),
        symmetries=("SO3", "O3", "permutation", "batch"),
    ),
]
