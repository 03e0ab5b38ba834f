"""Normalization layers as pure functions: ``Norm(init, apply)`` constructors, one file per family.

See :mod:`geonorm_jax.norms.base` for the shape and :mod:`geonorm_jax.norms.catalog` for
the list of every layer with its paper, formula and reduced axes.
"""

# catalog first: the family modules import NormInfo from it while it imports them.
from geonorm_jax.norms import catalog, coords, graph, vector, vision, weights  # noqa: F401
from geonorm_jax.norms.base import *  # noqa: F403
from geonorm_jax.norms.base import __all__ as _base_all
from geonorm_jax.norms.catalog import CATALOG, NormInfo, get, make, names
from geonorm_jax.norms.coords import *  # noqa: F403
from geonorm_jax.norms.graph import *  # noqa: F403
from geonorm_jax.norms.vector import *  # noqa: F403
from geonorm_jax.norms.vision import *  # noqa: F403
from geonorm_jax.norms.weights import *  # noqa: F403

__all__ = [
    *_base_all,
    *vision.__all__,
    *weights.__all__,
    *graph.__all__,
    *vector.__all__,
    *coords.__all__,
    "CATALOG",
    "NormInfo",
    "get",
    "make",
    "names",
]
