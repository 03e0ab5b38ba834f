"""Shared pieces of the GeoNorm paper's coordinate norms (Meng et al., Section 4, Eqs. 3-5).

Coordinates ``x [batch, nodes, 3]``, mask ``[batch, nodes]`` (True = real particle).
Per-particle parameters ``[N, k]`` fix the number of particles ``N``; shared ones are
scalars ``()``. Padded particles are set to 0 before any statistic
(:func:`geonorm_jax.norms.base.zero_padding`) and returned unchanged at the end
(``_keep_padding``; non-finite padding as 0).

Helpers (private to the coordinate family, used by :mod:`~geonorm_jax.norms.coords_scale` and
:mod:`~geonorm_jax.norms.coords_geo`): ``_check_per_particle_params`` (a per-particle
parameter made for another ``N`` raises ``ValueError``), ``_checked_zero_padded`` (the
checks of every ``apply``, then the input with its padding set to 0), ``_keep_padding``,
``_particle_scale`` (the per-particle power of two ``[batch, nodes, 1]`` to divide by before
squaring, :func:`geonorm_jax.geometry.magnitude_scale`), ``_as_rows`` (a per-particle or
shared parameter broadcast on ``[batch, N, 3]``) and ``_PAPER`` (the reference).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from geonorm_jax import geometry
from geonorm_jax.norms.base import check_coordinates, check_mask, zero_padding

__all__: list[str] = []

_PAPER = (
    "Meng, Zeng, Song, Xu, Zhao, King 2023, Towards Geometric Normalization Techniques in "
    "SE(3) Equivariant GNNs for Physical Dynamics Simulations"
)




def _check_per_particle_params(params: dict, x: jax.Array, name: str) -> None:
    """A per-particle parameter fixes N: say so if ``x`` has a different number of particles."""
    for key, value in params.items():
        shape = jnp.shape(value)
        if len(shape) == 2 and shape[0] != x.shape[1]:
            raise ValueError(
                f"{name}: per-particle parameter {key!r} has shape {shape}, made for "
                f"{shape[0]} particles; received coordinates of shape {x.shape} "
                f"({x.shape[1]} particles). Re-initialize, or use shared parameters."
            )


def _checked_zero_padded(params: dict, x: jax.Array, mask: jax.Array | None,
                         name: str) -> jax.Array:
    """The checks of every coordinate ``apply`` (``x [batch, nodes, 3]``, ``mask [batch,
    nodes]``, per-particle ``params`` made for this ``N``), then ``x`` with its padded
    particles set to 0."""
    check_coordinates(x)
    check_mask(mask, x.shape)
    _check_per_particle_params(params, x, name)
    return zero_padding(x, mask)


def _keep_padding(y: jax.Array, x: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Real particles get ``y``; padded ones are returned unchanged, except that a non-finite
    entry there (NaN, inf) becomes 0: padding never carries NaN or inf out of a layer."""
    if mask is None:
        return y
    return jnp.where(mask[..., None], y, jnp.where(jnp.isfinite(x), x, jnp.zeros((), x.dtype)))


def _particle_scale(x: jax.Array, epsilon: float, axes: tuple[int, ...] = (-1,)) -> jax.Array:
    """Per-particle power of two ``[batch, nodes, 1]`` to divide by before squaring (1 at
    ordinary magnitudes; :func:`geonorm_jax.geometry.magnitude_scale`); ``axes=(1, 2)``: one
    per sample, ``[batch, 1, 1]``."""
    top = jnp.max(jnp.abs(x), axis=axes, keepdims=True, initial=0.0)
    return geometry.magnitude_scale(top, epsilon**0.5)


def _as_rows(p: jax.Array, dtype) -> jax.Array:
    """A per-particle ``[N, k]`` or shared ``()`` parameter as something that broadcasts on
    ``[batch, N, 3]``."""
    p = jnp.asarray(p, dtype)
    return p if p.ndim == 2 else jnp.reshape(p, (1, 1))

