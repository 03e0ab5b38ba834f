"""Radial functions of interatomic distances for the molecular models (Allegro, SchNet).

Every function acts element-wise on distances ``r [...]`` (Å) and appends a basis axis
where it has one:

=========================  ==============================================  ===============
function                   formula                                          shape
=========================  ==============================================  ===============
:func:`bessel_basis`       ``B_n(r) = (2 / r_c) sin(n pi r / r_c) / r``     ``[..., n]``
:func:`polynomial_envelope`  ``u(d) = 1 - (p+1)(p+2)/2 d^p + p(p+2) d^(p+1)   ``[...]``
                           ``- p(p+1)/2 d^(p+2)``, ``d = r / r_c``
:func:`cosine_cutoff`      ``f(r) = (cos(pi r / r_c) + 1) / 2``             ``[...]``
:func:`gaussian_rbf`       ``e_k(r) = exp(-gamma (r - mu_k)^2)``            ``[..., k]``
:func:`shifted_softplus`   ``ssp(x) = ln(1 + e^x) - ln 2``                  same as ``x``
=========================  ==============================================  ===============

The Bessel basis and the polynomial envelope are those of DimeNet (Gasteiger, Groß and
Günnemann, ICLR 2020), used by NequIP (Batzner et al., 2022) and Allegro (Musaelian et al.,
2023, "Learning local equivariant representations for large-scale atomistic dynamics", with
``p = 6``). The Gaussian basis, the cosine cutoff and the shifted softplus are SchNet's
(Schütt et al., NeurIPS 2017 and J. Chem. Phys. 148, 241722, 2018; the cosine cutoff is
Behler's). Both cutoff functions are exactly 0 at and beyond ``r_c`` with vanishing first
derivative there (the polynomial also the second), so energies built from them, and their
forces, stay continuous when an atom crosses the cutoff.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = [
    "bessel_basis",
    "polynomial_envelope",
    "cosine_cutoff",
    "gaussian_rbf",
    "shifted_softplus",
]


def _check_cutoff(cutoff: float, what: str) -> None:
    if not (isinstance(cutoff, int | float) and cutoff > 0):
        raise ValueError(f"{what}: expected a cutoff > 0 (Å); received {cutoff!r}")


def bessel_basis(r: jax.Array, cutoff: float, num_basis: int = 8) -> jax.Array:
    r"""Sine (spherical Bessel of order 0) radial basis of DimeNet, NequIP and Allegro.

    .. math:: B_n(r) = \frac{2}{r_c} \frac{\sin(n \pi r / r_c)}{r}, \qquad n = 1, \dots, N_b

    Args:
      r: distances ``[...]`` (Å), > 0 (``r = 0`` gives the finite limit ``2 n pi / r_c^2``
        only up to rounding; callers replace padded distances by a positive value).
      cutoff: ``r_c`` (Å).
      num_basis: ``N_b``.

    Returns:
      ``[..., num_basis]`` in the dtype of ``r``. Not cut off: multiply by an envelope.
    """
    _check_cutoff(cutoff, "bessel_basis")
    if not (isinstance(num_basis, int) and num_basis >= 1):
        raise ValueError(f"bessel_basis: expected num_basis >= 1; received {num_basis!r}")
    r = jnp.asarray(r)
    n = jnp.arange(1, num_basis + 1, dtype=r.dtype)
    arg = n * (math.pi / cutoff) * r[..., None]
    return (2.0 / cutoff) * jnp.sin(arg) / r[..., None]


def polynomial_envelope(r: jax.Array, cutoff: float, p: int = 6) -> jax.Array:
    r"""DimeNet's polynomial cutoff envelope (Allegro uses ``p = 6``).

    .. math::
        u(d) = 1 - \frac{(p+1)(p+2)}{2} d^p + p(p+2) d^{p+1} - \frac{p(p+1)}{2} d^{p+2},
        \qquad d = r / r_c,

    for ``d < 1`` and ``u = 0`` for ``d >= 1``. ``u(0) = 1``; ``u``, ``u'`` and ``u''``
    vanish at ``d = 1``, so the energy and the forces are continuous at the cutoff.

    Args:
      r: distances ``[...]`` (Å).
      cutoff: ``r_c`` (Å).
      p: the polynomial's order (> 0).

    Returns:
      ``[...]``, same dtype as ``r``.
    """
    _check_cutoff(cutoff, "polynomial_envelope")
    if not (isinstance(p, int) and p >= 1):
        raise ValueError(f"polynomial_envelope: expected an integer p >= 1; received {p!r}")
    d = jnp.asarray(r) / cutoff
    inside = d < 1.0
    d = jnp.where(inside, d, 0.0)  # keeps the unused branch (and its gradient) finite
    u = (
        1.0
        - 0.5 * (p + 1) * (p + 2) * d**p
        + p * (p + 2) * d ** (p + 1)
        - 0.5 * p * (p + 1) * d ** (p + 2)
    )
    return jnp.where(inside, u, 0.0)


def cosine_cutoff(r: jax.Array, cutoff: float) -> jax.Array:
    r"""Cosine cutoff (Behler 2011; SchNet's filter cutoff in schnetpack).

    .. math:: f(r) = \tfrac12 \left(\cos(\pi r / r_c) + 1\right) \text{ for } r < r_c,
        \quad 0 \text{ otherwise.}

    Continuous with a continuous first derivative at ``r_c``. ``r [...]`` -> ``[...]``.
    """
    _check_cutoff(cutoff, "cosine_cutoff")
    r = jnp.asarray(r)
    inside = r < cutoff
    f = 0.5 * (jnp.cos(math.pi * jnp.where(inside, r, 0.0) / cutoff) + 1.0)
    return jnp.where(inside, f, 0.0)


def gaussian_rbf(
    r: jax.Array,
    start: float = 0.0,
    stop: float = 5.0,
    num_basis: int = 25,
    gamma: float | None = None,
) -> jax.Array:
    r"""SchNet's Gaussian radial basis.

    .. math:: e_k(r) = \exp\left(-\gamma (r - \mu_k)^2\right), \quad
        \mu_k = \text{start} + k \Delta, \ \Delta = (\text{stop} - \text{start}) / (K - 1)

    SchNet (2018) uses ``gamma = 10 Å^-2`` with centres every 0.1 Å; schnetpack's default
    width equals the spacing, ``gamma = 1 / (2 Delta^2)``, which is used when ``gamma`` is
    None.

    Args:
      r: distances ``[...]`` (Å).
      start, stop: first and last centre (Å), ``stop > start``.
      num_basis: ``K >= 2``.
      gamma: the width parameter (Å^-2), or None for ``1 / (2 Delta^2)``.

    Returns:
      ``[..., num_basis]``.
    """
    if not (isinstance(num_basis, int) and num_basis >= 2):
        raise ValueError(f"gaussian_rbf: expected num_basis >= 2; received {num_basis!r}")
    if not stop > start:
        raise ValueError(f"gaussian_rbf: expected stop > start; received {start} and {stop}")
    r = jnp.asarray(r)
    spacing = (stop - start) / (num_basis - 1)
    if gamma is None:
        gamma = 0.5 / spacing**2
    elif not gamma > 0:
        raise ValueError(f"gaussian_rbf: expected gamma > 0; received {gamma!r}")
    mu = start + spacing * jnp.arange(num_basis, dtype=r.dtype)
    return jnp.exp(-gamma * jnp.square(r[..., None] - mu))


def shifted_softplus(x: jax.Array) -> jax.Array:
    r"""SchNet's activation: ``ssp(x) = ln(0.5 e^x + 0.5) = softplus(x) - ln 2``, ``ssp(0) = 0``.

    Element-wise; same shape and dtype as ``x``.
    """
    return jax.nn.softplus(x) - math.log(2.0)
