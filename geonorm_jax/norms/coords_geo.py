"""GeoNorm, the E(3)-equivariant normalization of coordinates (the GeoNorm paper, Eq. 5).

Paper: Meng, Zeng, Song, Xu, Zhao, King, *Towards Geometric Normalization Techniques in SE(3)
Equivariant GNNs for Physical Dynamics Simulations*, Section 4.

.. math::

    F(x_i) = g_i \\frac{x_i - \\mu}{\\sigma_i}
           + \\frac{\\mu - \\mu_0}{\\|\\mu - \\mu_0\\|_2}\\, b_i + \\mu_0

* :func:`geo_statistics`: the centroid ``mu [batch, 3]`` and the spread ``sigma [batch,
  nodes, 1]`` in both readings (``"particle"``: Eq. 5; ``"system"``: the Figure 3 caption).
* :func:`bias_direction`: ``(mu - mu0) / ||mu - mu0||``, the zero vector when the centroid
  has not moved.
* :func:`geo_norm`: the layer, with per-particle (the paper) or shared ``g``, ``b``.

Coordinates ``x [batch, nodes, 3]``, context ``mu0 [batch, 3]`` (the centroid of the model's
input positions); padded particles are excluded from every statistic and returned unchanged
(:mod:`geonorm_jax.norms.coords_common`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from geonorm_jax import geometry
from geonorm_jax.norms.base import (
    Norm,
    NormInfo,
    check_coordinates,
    check_hyperparameters,
    zero_padding,
)
from geonorm_jax.norms.coords_common import (
    _PAPER,
    _as_rows,
    _checked_zero_padded,
    _keep_padding,
    _particle_scale,
)

__all__ = ["geo_norm", "geo_statistics", "bias_direction", "CATALOG_ENTRIES"]


@check_hyperparameters
def geo_statistics(
    x: jax.Array,
    *,
    mask: jax.Array | None = None,
    sigma: str = "particle",
    epsilon: float = 0.0,
) -> tuple[jax.Array, jax.Array]:
    """GeoNorm's statistics: the centroid and the spread around it.

    .. math::

        \\mu(x) = \\frac{1}{N}\\sum_{i \\text{ real}} x_i, \\qquad
        \\sigma_i = \\sqrt{\\|x_i - \\mu\\|_2^2 + \\epsilon}
        \\;(\\texttt{"particle"}, \\text{Eq. 5})

        \\sigma = \\sqrt{\\tfrac{1}{3N}\\textstyle\\sum_{i \\text{ real}} \\|x_i - \\mu\\|_2^2
        + \\epsilon} \\;(\\texttt{"system"}, \\text{the Figure 3 caption})

    Args:
      x: coordinates ``[batch, nodes, 3]``.
      mask: ``[batch, nodes]`` bool or None; only real particles enter ``mu`` and ``sigma``.
      sigma: ``"particle"`` (Eq. 5 as written; reduces over ``d``) or ``"system"`` (reduces
        over real nodes ``x`` and ``d``).
      epsilon: added under the square root (``0`` gives the paper's exact statistics).

    Returns:
      ``(mu [batch, 3], sigma [batch, nodes, 1])``; the system reading is broadcast to every
      particle. ``mu`` is rotation- and translation-equivariant (Lemma 3); ``sigma`` is
      invariant (Lemma 4), in both readings.
    """
    if sigma not in ("particle", "system"):
        raise ValueError(f"sigma: expected 'particle' or 'system'; received {sigma!r}")
    return _geo_statistics(zero_padding(x, mask), mask, sigma, epsilon)


def _geo_statistics(x, mask, sigma: str, epsilon: float):
    """:func:`geo_statistics` of ``x`` whose padded particles are already 0."""
    mu = geometry.centroid(x, mask)  # [B, 3]
    offsets = x - mu[:, None, :]  # [B, N, 3]
    if mask is not None:
        offsets = jnp.where(mask[..., None], offsets, 0.0)
    # squares of offsets / s, s a power of two (1 at ordinary magnitudes) so that 1e30 does
    # not overflow float32: per particle, or per sample for the system reading
    axes = (2,) if sigma == "particle" else (1, 2)
    s = _particle_scale(offsets, epsilon, axes)  # [B, N, 1] or [B, 1, 1]
    sq = jnp.sum(jnp.square(offsets / s), axis=-1, keepdims=True)  # [B, N, 1]
    eps = epsilon / jnp.square(s)
    if sigma == "particle":
        return mu, s * jnp.sqrt(sq + eps)
    if mask is None:
        ms = jnp.mean(sq, axis=1, keepdims=True) / 3.0
    else:
        m = mask.astype(x.dtype)[..., None]
        count = jnp.maximum(jnp.sum(m, axis=1, keepdims=True), 1.0)
        ms = jnp.sum(jnp.where(m > 0, sq, 0.0), axis=1, keepdims=True) / (3.0 * count)
    return mu, jnp.broadcast_to(s * jnp.sqrt(ms + eps), sq.shape)


def bias_direction(mu: jax.Array, mu0: jax.Array, *, tol: jax.Array | float = 0.0) -> jax.Array:
    """GeoNorm's bias direction ``(mu - mu0) / ||mu - mu0||`` ``[batch, 3]``, defined everywhere.

    The paper leaves it undefined when the centroid has not moved (``mu == mu0``, e.g. a
    GeoNorm applied to the model's input itself). Here the direction is the zero vector
    whenever ``||mu - mu0|| <= max(tol, sqrt(finfo(dtype).tiny))``, so the bias term vanishes
    there. The norm is :func:`geonorm_jax.geometry.safe_norm` (custom JVP), so value and
    gradient are finite everywhere: the gradient is 0 below the threshold and at most
    ``1 / threshold`` just above it. No epsilon enters the value above the threshold, so
    the direction is exactly a unit vector and exactly equivariant there.

    Args:
      mu: the centroid of the layer input ``[batch, 3]``.
      mu0: the centroid of the model input ``[batch, 3]``.
      tol: threshold ``[batch, 1]`` or scalar; :func:`geo_norm` passes a few ulps of the
        coordinates' magnitude, so that a centroid that differs from ``mu0`` only by
        rounding (the same mean computed twice in different order) counts as unmoved.
    """
    delta = mu - mu0
    n = geometry.safe_norm(delta, axis=-1, keepdims=True)
    ok = n > jnp.maximum(tol, jnp.finfo(delta.dtype).tiny)
    s = geometry.magnitude_scale(n)  # 1 at ordinary magnitudes; keeps d(1/n) from underflow
    return jnp.where(ok, (delta / s) / jnp.where(ok, n / s, 1.0), 0.0)


def _rounding_tol(x: jax.Array, mu0: jax.Array, mask: jax.Array | None) -> jax.Array:
    """``32 ulp * (mean_i ||x_i|| + ||mu0||)`` ``[batch, 1]``: the size of rounding noise in
    a centroid. Rotation- and permutation-invariant; constant for gradients."""
    x, mu0 = jax.lax.stop_gradient(x), jax.lax.stop_gradient(mu0)
    radius = geometry.centroid(geometry.safe_norm(x, axis=-1, keepdims=True), mask)  # [B, 1]
    scale = radius + geometry.safe_norm(mu0, axis=-1, keepdims=True)
    return 32.0 * jnp.finfo(x.dtype).eps * scale



@check_hyperparameters
def geo_norm(
    *,
    sigma: str = "particle",
    params: str = "particle",
    epsilon: float = 1e-6,
    init_scale: float = 1.0,
    bias_init: float = 0.0,
) -> Norm:
    """GeoNorm, the SE(3)-equivariant normalization of coordinates (GeoNorm paper, Eq. 5).

    .. math::

        \\mu = \\frac{1}{N}\\sum_i x_i, \\qquad
        F(x_i) = g_i \\frac{x_i - \\mu}{\\sigma_i}
               + \\frac{\\mu - \\mu_0}{\\|\\mu - \\mu_0\\|_2}\\, b_i + \\mu_0,
        \\qquad g_i, b_i \\in \\mathbb{R}

    where ``mu0`` is the centroid of the model's *input* positions ``x^0`` (not of this
    layer's input). Two readings of ``sigma``, because the paper contradicts itself:

    * ``sigma="particle"`` (Eq. 5 as written):
      ``sigma_i = sqrt(||x_i - mu||^2 + epsilon)``, reduces over ``d``. Note what this does:
      ``(x_i - mu)/sigma_i`` is a *unit* vector, so every particle is mapped to distance
      ``|g_i|`` from the centroid and all radial information in ``x`` is discarded.
    * ``sigma="system"`` (the Figure 3 caption, "statistics over dimension N and coordinate
      dimension 3"): ``sigma = sqrt(mean_{real i, d} (x_id - mu_d)^2 + epsilon)``, reduces
      over nodes ``x`` and ``d``; one scale for the whole system, which keeps the shape.

    Epsilon goes under the square root of ``sigma`` in both readings (as flax does for the
    variance); the public Equinox GeoNorm uses ``||x_i - mu|| + eps`` instead. ``sigma`` is
    never 0, so coincident particles and ``N = 1`` give finite values and gradients.

    Bias direction: undefined in the paper when ``mu == mu0``; here it is the zero vector
    when ``||mu - mu0||`` is at most rounding noise, ``32 * finfo(dtype).eps *
    (mean_i ||x_i|| + ||mu0||)`` (see :func:`bias_direction`), with a finite gradient (0)
    there. The threshold is rotation- and permutation-invariant; only inside this band of
    a few ulps (where the direction would be rounding noise anyway) does it depend on the
    frame's origin.

    Args:
      sigma: ``"particle"`` or ``"system"`` (above).
      params: ``"particle"`` (the paper): ``scale`` ``g`` and ``bias`` ``b`` of shape
        ``[N, 1]``, one per particle; they fix ``N`` and break permutation equivariance
        (particle ``i`` always gets ``g_i``). ``"shared"``: scalar ``g``, ``b`` of shape
        ``()`` shared by every particle: permutation-equivariant and valid for any ``N``.
      epsilon: see above.
      init_scale: initial ``g`` (the Equinox code draws ``0.1 * normal`` instead).
      bias_init: initial ``b``.

    Context: ``mu0`` ``[batch, 3]`` is required by ``apply`` (``ValueError`` otherwise);
    ``init`` ignores it. Transform it with the coordinates (a *point*): then ``F`` is
    equivariant under rotations, reflections and translations (Theorem 1, for all of O(3)).

    Shapes: ``x [batch, nodes, 3]`` -> ``[batch, nodes, 3]``; ``mask [batch, nodes]``:
    padded particles are excluded from ``mu`` and ``sigma`` and returned unchanged.
    """
    if sigma not in ("particle", "system"):
        raise ValueError(f"sigma: expected 'particle' or 'system'; received {sigma!r}")
    if params not in ("particle", "shared"):
        raise ValueError(f"params: expected 'particle' or 'shared'; received {params!r}")
    param_mode = params
    name = {
        ("particle", "particle"): "geo_norm",
        ("system", "particle"): "geo_norm_system",
        ("system", "shared"): "geo_norm_shared",
        ("particle", "shared"): "geo_norm_particle_sigma_shared",
    }[(sigma, param_mode)]

    def init(key, x, **context):
        del key, context
        check_coordinates(x)
        shape = (x.shape[1], 1) if param_mode == "particle" else ()
        return {
            "scale": jnp.full(shape, init_scale, x.dtype),
            "bias": jnp.full(shape, bias_init, x.dtype),
        }, {}

    def apply(p, state, x, *, mask=None, training=False, mu0=None, **context):
        del training, context
        xz = _checked_zero_padded(p, x, mask, name)
        if mu0 is None:
            raise ValueError(
                f"{name}: GeoNorm needs mu0, the centroid of the model's input positions "
                f"[batch, 3]; pass apply(..., mu0=geometry.centroid(x0, mask)). "
                f"Received coordinates of shape {x.shape} and no mu0."
            )
        mu0 = jnp.asarray(mu0)
        if mu0.shape != (x.shape[0], 3):
            raise ValueError(
                f"{name}: expected mu0 of shape [batch, 3] = {(x.shape[0], 3)}; "
                f"received shape {mu0.shape}"
            )
        mu0 = mu0.astype(x.dtype)
        mu, sig = _geo_statistics(xz, mask, sigma, epsilon)
        direction = bias_direction(mu, mu0, tol=_rounding_tol(xz, mu0, mask))  # [B, 3]
        g = _as_rows(p["scale"], x.dtype)
        b = _as_rows(p["bias"], x.dtype)
        # (x - mu) / sigma as ((x - mu) / s) / (sigma / s), s a power of two (1 at ordinary
        # magnitudes), so d(1/sigma) = -sigma**-2 does not underflow at sigma = 1e30
        ss = geometry.magnitude_scale(sig)
        offsets = (xz - mu[:, None, :]) / ss
        y = g * offsets / (sig / ss) + b * direction[:, None, :] + mu0[:, None, :]
        return _keep_padding(y, x, mask).astype(x.dtype), state

    return Norm(init, apply, kind="coordinates", name=name)



# --------------------------------------------------------------------------------------------
# Catalogue
# --------------------------------------------------------------------------------------------

_GEO_FORMULA = "g_i (x_i - mu)/sigma_i + (mu - mu0)/||mu - mu0|| b_i + mu0"
_SHARED = ("SO3", "O3", "translation", "permutation", "batch")

_GEO_NORM = NormInfo(
    name="geo_norm",
    constructor=geo_norm,
    kind="coordinates",
    paper=_PAPER + " (Eq. 5)",
    formula=_GEO_FORMULA + ", sigma_i = ||x_i - mu||",
    reduced_axes="x (mu), d (sigma_i)",
    params=("scale", "bias"),
    family="geonorm paper",
    context=("mu0",),
    kwargs={"sigma": "particle", "params": "particle"},
    notes="Eq. 5 as written: per-particle sigma puts every particle at distance |g_i| "
    "from the centroid. Per-particle g, b [N,1] fix N and break permutation "
    "equivariance. Direction := 0 when mu == mu0.",
    symmetries=("SO3", "O3", "translation", "batch"),
)

CATALOG_ENTRIES: list[NormInfo] = [
    _GEO_NORM,
    dataclasses.replace(
        _GEO_NORM,
        name="geo_norm_system",
        paper=_PAPER + " (Eq. 5 with the Figure 3 caption's statistics)",
        formula=_GEO_FORMULA + ", sigma = sqrt(mean_{i,d} (x_id - mu_d)^2)",
        reduced_axes="x (mu), x,d (sigma)",
        kwargs={"sigma": "system", "params": "particle"},
        notes="The Figure 3 caption's reading (statistics over N and the 3 coordinates); "
        "keeps the shape of the system. Per-particle g, b as in the paper.",
    ),
    dataclasses.replace(
        _GEO_NORM,
        name="geo_norm_shared",
        paper=_PAPER + " (Eq. 5, system sigma, shared g and b; this library's variant)",
        formula=_GEO_FORMULA + ", sigma = sqrt(mean_{i,d} (x_id - mu_d)^2), g_i = g, b_i = b",
        reduced_axes="x (mu), x,d (sigma)",
        kwargs={"sigma": "system", "params": "shared"},
        notes="Not in the paper: scalar g, b shared across particles make the layer "
        "E(3)- and permutation-equivariant and valid for any N (padded batches, "
        "transfer across system sizes).",
        symmetries=_SHARED,
    ),
    dataclasses.replace(
        _GEO_NORM,
        name="geo_norm_particle_sigma_shared",
        paper=_PAPER + " (Eq. 5 sigma_i, shared g and b; this library's variant)",
        formula=_GEO_FORMULA + ", sigma_i = ||x_i - mu||, g_i = g, b_i = b",
        kwargs={"sigma": "particle", "params": "shared"},
        notes="Eq. 5's per-particle sigma with shared scalar g, b: permutation-equivariant, "
        "but every particle lands on a sphere of radius |g| about the centroid.",
        symmetries=_SHARED,
    ),
]
