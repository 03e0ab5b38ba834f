"""Gated and clamped irreps norms: e3nn-jax's ``norm_activation`` and ``soft_normalization``,
and the SE(3)-Transformer's ``NormSE3``.

* :func:`norm_activation`: every irrep field times a function of its norm (e3nn-jax
  ``e3nn_jax/_src/activation.py``).
* :func:`soft_normalization`: fields shrunk smoothly towards a maximal norm (e3nn-jax).
* :func:`norm_se3`: a LayerNorm of each degree's field norms, through a nonlinearity, times
  the direction (Fuchs et al., NeurIPS 2020; NVIDIA DeepLearningExamples
  ``se3_transformer/model/layers/norm.py``).

Layouts: this library's padded IrrepsArray ``[batch, nodes, irreps]`` or vectors ``[batch,
nodes, channels, 3]``, or e3nn-jax's / jraph's flat ``[num_nodes, irreps]`` / ``[num_nodes,
channels, 3]`` with ``segment_ids=`` + ``num_graphs=`` or ``n_node=``
(:mod:`geonorm_jax.norms.irreps_common`). Per node; the mask is checked and padded nodes set
to 0. Field norms and directions are :func:`geonorm_jax.geometry.field_norm` and
:func:`geonorm_jax.geometry.unit` (finite values and gradients at 0, right in float32 from
1e-30 to 1e30).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from geonorm_jax.geometry import field_norm, stable_reciprocal, unit
from geonorm_jax.norms.base import Norm, NormInfo, check_choice, check_hyperparameters
from geonorm_jax.norms.irreps_common import (
    _assemble,
    _check_param_shapes,
    _init_irreps,
    _is_even_scalar,
    _param_slices,
    _per_channel,
    _prepare,
)

__all__ = ["norm_activation", "soft_normalization", "norm_se3", "CATALOG_ENTRIES"]

_ACTIVATIONS: dict[str, Callable] = {
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "softplus": jax.nn.softplus,
}



def _chunk_norm(f: jax.Array, normalization: str) -> jax.Array:
    """``sqrt(mean_m f^2)`` (component) or ``||f||`` (norm) ``[..., mul, 1]`` via
    :func:`field_norm`."""
    n = field_norm(f)
    return n / jnp.sqrt(f.shape[-1]) if normalization == "component" else n


def _sus(t: jax.Array) -> jax.Array:
    """e3nn's soft unit step ``exp(-1/t)`` (``t > 0``), else 0. Below ``t = 0.02`` it is
    taken as 0 (``exp(-50) = 2e-22``, invisible next to 1 in ``1 + t sus(t)`` even in
    float64), which keeps ``exp(-1/t) / t^2`` out of the gradient (it overflows float32)."""
    pos = t > 0.02
    return jnp.where(pos, jnp.exp(-1.0 / jnp.where(pos, t, 1.0)), 0.0)


def _norm_act_layer(name: str, phi: Callable, normalization: str, scalars: str) -> Norm:
    check_choice(normalization, ("component", "norm"), f"{name}: normalization")
    check_choice(scalars, ("same", "identity"), f"{name}: scalars")

    def init(key, x, **context):
        del key
        _init_irreps(x, name, context)
        return {}, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del params, training
        xi, raw, dtype, blocks, _ = _prepare(x, name, mask, context=context)
        out = []
        for mi, f in zip(xi.irreps, blocks, strict=True):
            if scalars == "identity" and _is_even_scalar(mi):
                out.append(f)
            else:
                out.append(f * phi(_chunk_norm(f, normalization)))
        return _assemble(xi, out, raw, dtype), state

    return Norm(init, apply, kind="vectors", name=name)


def norm_activation(
    *, activation: str | Callable = "tanh", normalization: str = "component",
    scalars: str = "same",
) -> Norm:
    """e3nn-jax's ``norm_activation``: every irrep field times a function of its norm.

    .. math:: y_{cm} = x_{cm}\\,\\phi(n_c), \\qquad
        n_c = \\sqrt{\\operatorname{mean}_m x_{cm}^2}\\ (\\text{component})\\ \\text{or}\\
        \\|x_c\\|_2\\ (\\text{norm})

    Per field (node, chunk, channel); reduces ``{d}`` only. ``n = 0`` gives ``y = 0``
    (e3nn-jax substitutes 1 for the norm of a zero field; the product is 0 either way).
    Code: ``e3nn_jax/_src/activation.py`` (``norm_activation``), Geiger & Smidt 2022.

    Args:
      activation: ``phi``: a name (``tanh``, ``sigmoid``, ``relu``, ``silu``, ``softplus``) or
        a callable.
      normalization: ``"component"`` or ``"norm"``.
      scalars: ``"identity"`` leaves ``0e`` chunks untouched (e3nn-jax's ``acts=[None, ...]``).

    Shapes: as :func:`equivariant_layer_norm`. No params or state.
    """
    if isinstance(activation, str):
        check_choice(activation, tuple(_ACTIVATIONS), "norm_activation: activation")
        activation = _ACTIVATIONS[activation]
    return _norm_act_layer("norm_activation", activation, normalization, scalars)


def soft_normalization(*, max_component: float = 1.0) -> Norm:
    """e3nn-jax's ``soft_normalization``: fields shrunk smoothly towards a maximal norm.

    .. math:: y = x\\,\\phi(n / M), \\qquad \\phi(t) = \\frac{1}{1 + t\\,\\mathrm{sus}(t)},
        \\qquad \\mathrm{sus}(t) = e^{-1/t}\\ (t > 0),\\ 0\\ (t \\le 0)

    ``n`` the component-normalized norm of each field (``sqrt(mean_m x^2)``), ``M =
    max_component``: fields well below ``M`` pass unchanged, large ones end near norm ``M``.
    Per field; reduces ``{d}``. Code: ``e3nn_jax/_src/activation.py`` (``soft_normalization``).

    Shapes: as :func:`equivariant_layer_norm`. No params or state.
    """
    if not max_component > 0:
        raise ValueError(f"soft_normalization: expected max_component > 0; received "
                         f"{max_component!r}")

    def phi(n):
        t = n / max_component
        return stable_reciprocal(1.0 + t * _sus(t))

    return _norm_act_layer("soft_normalization", phi, "component", "same")


@check_hyperparameters
def norm_se3(*, epsilon: float = 1e-5, norm_clamp: float = 2.0 ** -24,
             nonlinearity: str | Callable = "relu") -> Norm:
    """``NormSE3`` of the SE(3)-Transformer: a LayerNorm of each degree's norms, through a
    nonlinearity, times the direction.

    .. math::

        n_c = \\max(\\|x_c\\|_2, \\kappa), \\qquad
        y_{cm} = \\mathrm{ReLU}\\Big(\\gamma_c \\frac{n_c - \\operatorname{mean}_{c'} n_{c'}}
        {\\sqrt{\\operatorname{var}_{c'} n_{c'} + \\epsilon}} + \\beta_c\\Big)\\,
        \\frac{x_{cm}}{n_c}

    per node and chunk (degree); the LayerNorm reduces the chunk's channels (``{v}``; ``d`` for
    the norm). ``kappa = 2^-24`` (the code's ``NORM_CLAMP``). Paper: Fuchs, Worrall, Fischer,
    Welling 2020, *SE(3)-Transformers* (NeurIPS). Code: NVIDIA DeepLearningExamples
    ``DGLPyTorch/DrugDiscovery/SE3Transformer/se3_transformer/model/layers/norm.py``
    (``NormSE3``; a GroupNorm with one group per degree when all degrees have the same channel
    count, which is the same per-degree LayerNorm).

    Args:
      epsilon: LayerNorm epsilon. norm_clamp: ``kappa``. nonlinearity: name or callable.

    Shapes: as :func:`equivariant_layer_norm`; params ``scale``, ``bias`` ``[num_irreps]``.
    """
    if isinstance(nonlinearity, str):
        check_choice(nonlinearity, tuple(_ACTIVATIONS), "norm_se3: nonlinearity")
        nonlinearity = _ACTIVATIONS[nonlinearity]
    name = "norm_se3"

    def init(key, x, **context):
        del key
        xi = _init_irreps(x, name, context)
        k, dt = xi.irreps.num_irreps, xi.array.dtype
        return {"scale": jnp.ones((k,), dt), "bias": jnp.zeros((k,), dt)}, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training
        xi, raw, dtype, blocks, _ = _prepare(x, name, mask, context=context)
        k = xi.irreps.num_irreps
        _check_param_shapes(params, {"scale": (k,), "bias": (k,)}, name, x)
        out = []
        for f, (ps, _) in zip(blocks, _param_slices(xi.irreps), strict=True):
            n = jnp.maximum(_chunk_norm(f, "norm"), norm_clamp)  # [..., mul, 1]
            s = jax.lax.stop_gradient(jnp.maximum(jnp.max(n, axis=-2, keepdims=True), 1.0))
            ns = n / s
            mu = jnp.mean(ns, axis=-2, keepdims=True)
            var = jnp.mean(jnp.square(ns - mu), axis=-2, keepdims=True)
            ln = (ns - mu) * jax.lax.rsqrt(var + epsilon / jnp.square(s))
            ln = ln * _per_channel(params, "scale", ps, f) + _per_channel(params, "bias", ps, f)
            out.append(nonlinearity(ln) * unit(f, jnp.maximum(field_norm(f), norm_clamp)))
        return _assemble(xi, out, raw, dtype), state

    return Norm(init, apply, kind="vectors", name=name)



# --------------------------------------------------------------------------------------------
# Catalogue
# --------------------------------------------------------------------------------------------

CATALOG_ENTRIES: list[NormInfo] = [
    NormInfo(
        name="norm_activation", constructor=norm_activation, kind="vectors",
        paper="Geiger, Smidt 2022; code e3nn-jax norm_activation",
        formula="x * phi(sqrt(mean_m x^2)), phi = tanh", reduced_axes="d (per field)",
        family="equivariant models",
        layouts=("padded", "flat"),
        symmetries=("SO3", "O3", "permutation", "batch"),
    ),
    NormInfo(
        name="soft_normalization", constructor=soft_normalization, kind="vectors",
        paper="Geiger, Smidt 2022; code e3nn-jax soft_normalization",
        formula="x / (1 + t sus(t)), t = sqrt(mean_m x^2) / M, sus(t) = exp(-1/t)",
        reduced_axes="d (per field)", family="equivariant models",
        layouts=("padded", "flat"),
        symmetries=("SO3", "O3", "permutation", "batch"),
    ),
    NormInfo(
        name="norm_se3", constructor=norm_se3, kind="vectors",
        paper="Fuchs, Worrall, Fischer, Welling 2020, SE(3)-Transformers: 3D Roto-Translation "
        "Equivariant Attention Networks (NeurIPS); code NVIDIA SE3Transformer NormSE3",
        formula="ReLU(LayerNorm_v(||x||)) * x / ||x||",
        reduced_axes="v per node and degree (d for the norm)", params=("scale", "bias"),
        family="equivariant models",
        layouts=("padded", "flat"),
        symmetries=("SO3", "permutation", "batch"),
    ),
]
