r"""GemNet's basis functions, activation and weight initialization (Gasteiger, Becker and
Günnemann, NeurIPS 2021, "GemNet: Universal Directional Graph Neural Networks for Molecules").

* :func:`gemnet_radial_basis`: ``e_n(d) = u(d / c) sqrt(2 / c) sin(n pi d / c) / d``,
  ``[..., R]``;
* :func:`legendre_spherical_basis`: ``Y_l^0(theta) = sqrt((2l+1) / 4 pi) P_l(cos theta)``,
  ``[..., L]``;
* :func:`scaled_silu`: ``silu(x) / 0.6``, element-wise;
* :func:`he_orthogonal_init`: orthogonal, standardized, times ``1 / sqrt(fan_in)``.

The radial basis is DimeNet's spherical Bessel function of order 0 with GemNet's
normalization ``sqrt(2 / c)`` (the orthonormal sine basis on ``[0, c]``), multiplied by the
polynomial envelope ``u`` of :func:`~geonorm_jax.models.radial.polynomial_envelope` (GemNet:
exponent ``p = 5``). The angular part of GemNet-T's triplet basis is the ``m = 0`` real
spherical harmonics of the triplet angle, i.e. Legendre polynomials of ``cos theta`` (the
authors' ``CircularBasisLayer`` with ``efficient=True``: radial and angular parts kept apart
and combined by the efficient bilinear layer). ``scaled_silu`` is GemNet's ``ScaledSiLU``
(``1 / 0.6`` brings the output variance of a unit Gaussian input to about 1).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from geonorm_jax.models.radial import polynomial_envelope

__all__ = [
    "gemnet_radial_basis",
    "legendre_spherical_basis",
    "scaled_silu",
    "he_orthogonal_init",
]


def gemnet_radial_basis(
    r: jax.Array, cutoff: float, num_radial: int = 6, envelope_p: int = 5
) -> jax.Array:
    r"""GemNet's enveloped Bessel radial basis.

    .. math:: e_n(d) = u(d / c)\,\sqrt{2 / c}\,\frac{\sin(n \pi d / c)}{d},
        \qquad n = 1, \dots, R

    Args:
      r: distances ``[...]`` (Å), > 0 (replace padded distances by a positive value).
      cutoff: ``c`` (Å).
      num_radial: ``R``.
      envelope_p: exponent ``p`` of the polynomial envelope (GemNet: 5).

    Returns:
      ``[..., R]``, exactly 0 at and beyond ``c`` with vanishing first and second derivative.
    """
    if not (isinstance(cutoff, int | float) and cutoff > 0):
        raise ValueError(f"gemnet_radial_basis: expected a cutoff > 0 (Å); received {cutoff!r}")
    if not (isinstance(num_radial, int) and num_radial >= 1):
        raise ValueError(
            f"gemnet_radial_basis: expected num_radial >= 1; received {num_radial!r}"
        )
    r = jnp.asarray(r)
    n = jnp.arange(1, num_radial + 1, dtype=r.dtype)
    u = polynomial_envelope(r, cutoff, envelope_p)[..., None]
    return u * math.sqrt(2.0 / cutoff) * jnp.sin(n * (math.pi / cutoff) * r[..., None]) / (
        r[..., None]
    )


def legendre_spherical_basis(cos_angle: jax.Array, num_spherical: int = 7) -> jax.Array:
    r"""Real spherical harmonics of order ``m = 0`` of an angle, ``l = 0 .. L - 1``.

    .. math:: Y_l^0(\theta) = \sqrt{\frac{2l + 1}{4 \pi}}\, P_l(\cos\theta), \qquad
        (l + 1) P_{l+1}(x) = (2l + 1) x P_l(x) - l P_{l-1}(x)

    (Bonnet's recursion, unrolled over the static ``L``). A polynomial in ``cos theta``: smooth,
    with a finite gradient everywhere, including at ``cos theta = +-1``.

    Args:
      cos_angle: ``cos theta`` ``[...]``, in ``[-1, 1]``.
      num_spherical: ``L`` (GemNet: 7).

    Returns:
      ``[..., L]``.
    """
    if not (isinstance(num_spherical, int) and num_spherical >= 1):
        raise ValueError(
            f"legendre_spherical_basis: expected num_spherical >= 1; received {num_spherical!r}"
        )
    x = jnp.asarray(cos_angle)
    polys = [jnp.ones_like(x), x]
    for l in range(1, num_spherical - 1):  # noqa: E741 - the degree l of the formula
        polys.append(((2 * l + 1) * x * polys[l] - l * polys[l - 1]) / (l + 1))
    norms = [math.sqrt((2 * l + 1) / (4 * math.pi)) for l in range(num_spherical)]  # noqa: E741
    return jnp.stack([c * p for c, p in zip(norms, polys[:num_spherical], strict=True)], -1)


def scaled_silu(x: jax.Array) -> jax.Array:
    """GemNet's activation ``ScaledSiLU(x) = x sigmoid(x) / 0.6``; element-wise."""
    return jax.nn.silu(x) * (1.0 / 0.6)


def he_orthogonal_init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    r"""GemNet's ``he_orthogonal_init`` for a Flax kernel ``[..., fan_out]``.

    The leading axes are the fan-in (``fan_in = prod(shape[:-1])``, as the authors' code does
    for its 3-D bilinear weights). A (semi-)orthogonal ``[fan_in, fan_out]`` matrix ``Q`` is
    standardized over the fan-in axis (mean 0, variance 1 per output unit) and scaled:

    .. math:: W = \frac{Q - \bar Q}{\sqrt{\mathrm{Var}(Q) + 10^{-6}}} \cdot
        \frac{1}{\sqrt{\mathrm{fan\_in}}}

    so ``x W`` has unit variance per output for unit-variance, uncorrelated inputs.
    """
    if len(shape) < 2:
        raise ValueError(f"he_orthogonal_init: expected a kernel of rank >= 2; received {shape}")
    fan_in = math.prod(shape[:-1])
    q = jax.nn.initializers.orthogonal()(key, (fan_in, shape[-1]), jnp.float32)
    mean = jnp.mean(q, axis=0, keepdims=True)
    var = jnp.var(q, axis=0, keepdims=True, ddof=1) if fan_in > 1 else jnp.ones_like(mean)
    w = (q - mean) / jnp.sqrt(var + 1e-6) if fan_in > 1 else q
    return (w / math.sqrt(fan_in)).reshape(shape).astype(dtype)
