"""The GeoNorm paper's baselines on coordinates: LayerNorm (Eq. 3) and ScaleNorm (Eq. 4).

Paper: Meng, Zeng, Song, Xu, Zhao, King, *Towards Geometric Normalization Techniques in SE(3)
Equivariant GNNs for Physical Dynamics Simulations*, Section 4.

* :func:`layer_norm_coords` (Eq. 3): LayerNorm over each particle's 3 components, ``g_i
  (x_i - mean_d x_i) / std_d x_i + b_i``; neither rotation- nor translation-equivariant
  (Lemma 1).
* :func:`scale_norm` (Eq. 4): ``g_i x_i / norm(x_i)``; rotation- but not
  translation-equivariant (Lemma 2).

Both act on coordinates ``x [batch, nodes, 3]`` with per-particle parameters (``[N, 1]``,
``[N, 3]``) by default, reduce over ``d`` only, and return padded particles unchanged
(:mod:`geonorm_jax.norms.coords_common`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from geonorm_jax.norms.base import Norm, NormInfo, check_coordinates, check_hyperparameters
from geonorm_jax.norms.coords_common import (
    _PAPER,
    _as_rows,
    _checked_zero_padded,
    _keep_padding,
    _particle_scale,
)

__all__ = ["layer_norm_coords", "scale_norm", "CATALOG_ENTRIES"]


# --------------------------------------------------------------------------------------------
# Eq. 3: LayerNorm on coordinates
# --------------------------------------------------------------------------------------------


@check_hyperparameters
def layer_norm_coords(*, epsilon: float = 1e-5) -> Norm:
    """LayerNorm applied to each particle's 3 coordinates (GeoNorm paper, Eq. 3).

    .. math::

        \\mu_i = \\tfrac{1}{3}\\sum_d x_{id}, \\quad
        \\sigma_i = \\sqrt{\\tfrac{1}{3}\\sum_d (x_{id} - \\mu_i)^2 + \\epsilon}, \\quad
        y_i = g_i \\frac{x_i - \\mu_i}{\\sigma_i} + b_i, \\quad g_i \\in \\mathbb{R},\\;
        b_i \\in \\mathbb{R}^3

    Shown in the paper only as the naive baseline: it is neither rotation- nor
    translation-equivariant (Lemma 1), because the mean over the components ``d`` of a
    vector is not a geometric quantity.

    Shapes: ``x [batch, nodes, 3]``; reduces over ``d`` (the 3 components) only.
    Params (created from ``x`` at init, so they fix ``N``): ``scale`` ``[N, 1]`` (ones),
    ``bias`` ``[N, 3]`` (zeros). Epsilon goes inside the square root of the variance.
    No context is needed.
    """

    def init(key, x, **context):
        del key, context
        check_coordinates(x)
        n = x.shape[1]
        return {"scale": jnp.ones((n, 1), x.dtype), "bias": jnp.zeros((n, 3), x.dtype)}, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training, context
        xz = _checked_zero_padded(params, x, mask, "layer_norm_coords")
        s = _particle_scale(xz, epsilon)  # [B, N, 1], 1 at ordinary magnitudes
        xs = xz / s
        mu = jnp.mean(xs, axis=-1, keepdims=True)  # [B, N, 1]
        var = jnp.mean(jnp.square(xs - mu), axis=-1, keepdims=True)
        y = (xs - mu) * jax.lax.rsqrt(var + epsilon / jnp.square(s))
        y = y * _as_rows(params["scale"], x.dtype) + _as_rows(params["bias"], x.dtype)
        return _keep_padding(y, x, mask).astype(x.dtype), state

    return Norm(init, apply, kind="coordinates", name="layer_norm_coords")


# --------------------------------------------------------------------------------------------
# Eq. 4: ScaleNorm
# --------------------------------------------------------------------------------------------


@check_hyperparameters
def scale_norm(*, norm: str = "l2", epsilon: float = 1e-8, per_particle: bool = True) -> Norm:
    """Feature-scaling norm: each position scaled to a learned length (GeoNorm paper, Eq. 4).

    .. math::

        y_i = g_i \\frac{x_i}{\\operatorname{norm}(x_i)}, \\qquad
        \\operatorname{norm}(x_i) = \\sqrt{\\|x_i\\|_2^2 + \\epsilon}\\;(\\texttt{"l2"})
        \\;\\text{ or }\\; \\sqrt{\\tfrac{1}{3}\\|x_i\\|_2^2 + \\epsilon}\\;(\\texttt{"rms"})

    This is the ``CoorsNorm`` of egnn-pytorch and the coordinate form of the vector norms of
    the survey's Table 1. It is rotation-equivariant but not translation-equivariant
    (Lemma 2): it rescales positions about the origin of the frame.

    Args:
      norm: ``"l2"`` or ``"rms"`` (root-mean-square over the 3 components).
      epsilon: added under the square root, so the value and gradient are finite at
        ``x_i = 0`` (the output is 0 there).
      per_particle: ``True`` (the paper): ``scale`` ``[N, 1]``, which fixes ``N`` and breaks
        permutation equivariance; ``False``: one shared scalar ``scale`` ``()``.

    Shapes: ``x [batch, nodes, 3]``; reduces over ``d`` only. ``scale`` initialised to 1.
    """
    if norm not in ("l2", "rms"):
        raise ValueError(f"norm: expected 'l2' or 'rms'; received {norm!r}")
    name = f"scale_norm_{norm}"

    def init(key, x, **context):
        del key, context
        check_coordinates(x)
        shape = (x.shape[1], 1) if per_particle else ()
        return {"scale": jnp.ones(shape, x.dtype)}, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del training, context
        xz = _checked_zero_padded(params, x, mask, name)
        s = _particle_scale(xz, epsilon)  # [B, N, 1], 1 at ordinary magnitudes
        xs = xz / s
        sq = jnp.sum(jnp.square(xs), axis=-1, keepdims=True)  # [B, N, 1]
        if norm == "rms":
            sq = sq / 3.0
        y = xs * jax.lax.rsqrt(sq + epsilon / jnp.square(s)) * _as_rows(params["scale"], x.dtype)
        return _keep_padding(y, x, mask).astype(x.dtype), state

    return Norm(init, apply, kind="coordinates", name=name)


# --------------------------------------------------------------------------------------------
# Catalogue
# --------------------------------------------------------------------------------------------

_SCALE_NORM = NormInfo(
    name="scale_norm_l2",
    constructor=scale_norm,
    kind="coordinates",
    paper=_PAPER + " (Eq. 4; CoorsNorm of egnn-pytorch)",
    formula="g_i x_i / ||x_i||_2",
    reduced_axes="d",
    params=("scale",),
    family="geonorm paper",
    kwargs={"norm": "l2"},
    notes="Lemma 2: rotation- but not translation-equivariant. epsilon under the sqrt.",
    symmetries=("SO3", "O3", "batch"),
)

CATALOG_ENTRIES: list[NormInfo] = [
    NormInfo(
        name="layer_norm_coords",
        constructor=layer_norm_coords,
        kind="coordinates",
        paper=_PAPER + " (Eq. 3; LayerNorm of Ba et al. 2016 applied to coordinates)",
        formula="g_i (x_i - mean_d x_i)/std_d x_i + b_i, g_i in R, b_i in R^3",
        reduced_axes="d",
        params=("scale", "bias"),
        family="geonorm paper",
        notes="Lemma 1: neither rotation- nor translation-equivariant. Per-particle params "
        "[N,1] and [N,3] fix N.",
        symmetries=("batch",),
    ),
    _SCALE_NORM,
    dataclasses.replace(
        _SCALE_NORM,
        name="scale_norm_rms",
        paper=_PAPER + " (Eq. 4, RMS variant)",
        formula="g_i x_i / RMS_d(x_i)",
        kwargs={"norm": "rms"},
        notes="Lemma 2: rotation- but not translation-equivariant. RMS = ||x_i||/sqrt(3).",
    ),
]
