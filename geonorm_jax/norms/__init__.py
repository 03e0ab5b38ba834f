"""Normalization layers as pure functions: ``Norm(init, apply)`` constructors, by family.

Families: ``vision`` (language/vision feature norms; code in ``vision_batch`` and
``vision_sample``), ``weights``, ``graph`` (code in ``graph_stats`` and ``graph_scaling``),
``vector`` and ``coords`` (the GeoNorm paper's Eqs. 3-5); the normalizations of today's
equivariant models: ``irreps`` (EquiformerV2, e3nn, SE(3)-Transformer), ``molecular`` (ViSNet,
TensorNet, MACE, NequIP, MiDi) and ``clifford_norms`` (CGENN, GATr; the algebra helper is
``clifford``). See :mod:`geonorm_jax.norms.base`
for the ``Norm`` shape and :mod:`geonorm_jax.norms.catalog` for the list of every layer of
the survey (Aalto et al.) and the GeoNorm paper (Meng et al.) with its paper, formula and
reduced axes.
"""

# The family modules import only ``base``; ``catalog`` imports the families.
from geonorm_jax.norms import (  # noqa: F401
    catalog,
    clifford,
    clifford_norms,
    coords,
    graph,
    irreps,
    molecular,
    vector,
    vision,
    weights,
)
from geonorm_jax.norms.base import *  # noqa: F403
from geonorm_jax.norms.base import __all__ as _base_all
from geonorm_jax.norms.catalog import CATALOG, get, make, names
from geonorm_jax.norms.clifford import *  # noqa: F403
from geonorm_jax.norms.clifford_norms import *  # noqa: F403
from geonorm_jax.norms.coords import *  # noqa: F403
from geonorm_jax.norms.graph import *  # noqa: F403
from geonorm_jax.norms.irreps import *  # noqa: F403
from geonorm_jax.norms.molecular import *  # noqa: F403
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
    *irreps.__all__,
    *molecular.__all__,
    *clifford.__all__,
    *clifford_norms.__all__,
    "CATALOG",
    "get",
    "make",
    "names",
]
