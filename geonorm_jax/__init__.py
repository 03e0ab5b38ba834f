"""geonorm-jax: normalization layers for equivariant graph neural networks in JAX/Flax.

Every layer of the survey's Table 1 and of the GeoNorm paper as a pure ``Norm(init, apply)``
(:mod:`geonorm_jax.norms`), Flax Linen wrappers (:mod:`geonorm_jax.linen`), geometry helpers
and the equivariance test kit (:mod:`geonorm_jax.geometry`, :mod:`geonorm_jax.testing`).
"""

from geonorm_jax import geometry, norms, testing
from geonorm_jax.norms import CATALOG, Norm, NormInfo
from geonorm_jax.testing import assert_equivariant, equivariance_errors

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "geometry",
    "norms",
    "testing",
    "CATALOG",
    "Norm",
    "NormInfo",
    "assert_equivariant",
    "equivariance_errors",
]
