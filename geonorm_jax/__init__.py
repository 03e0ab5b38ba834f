"""geonorm-jax: normalization layers for equivariant graph neural networks in JAX/Flax.

Every layer of the survey's Table 1 (Aalto et al., *Geometric Considerations for Normalization
Layers in Equivariant Neural Networks*) and of the GeoNorm paper (Meng et al., *Towards
Geometric Normalization Techniques in SE(3) Equivariant GNNs for Physical Dynamics
Simulations*) as a pure ``Norm(init, apply)`` (:mod:`geonorm_jax.norms`), geometry helpers and
the equivariance test kit (:mod:`geonorm_jax.geometry`, :mod:`geonorm_jax.testing`) are
imported with the package.

The other subpackages are imported on first use, so ``import geonorm_jax as gj`` stays light and
``gj.audit.audit(...)``, ``gj.train.train(...)`` or ``gj.data.get_dataset(...)`` work without
importing them first: :mod:`~geonorm_jax.audit` (the survey's geometric-match audit),
:mod:`~geonorm_jax.data`, :mod:`~geonorm_jax.models`, :mod:`~geonorm_jax.linen` and
:mod:`~geonorm_jax.nnx` (Flax Linen and NNX modules for any norm), :mod:`~geonorm_jax.parallel`,
:mod:`~geonorm_jax.train`, :mod:`~geonorm_jax.bench` and any other subpackage.
"""

import importlib
import importlib.util
import pkgutil

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


def __getattr__(name: str):
    """``geonorm_jax.<subpackage>``: import the subpackage on first access (PEP 562)."""
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    lazy = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    return sorted(set(globals()) | set(lazy))
