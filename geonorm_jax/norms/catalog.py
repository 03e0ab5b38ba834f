"""The catalogue: every normalization layer of both papers, by name, with its metadata.

The CLI (``geonorm-jax norms``), the tests and the audit iterate over :data:`CATALOG`.
Each family module (``vision``, ``weights``, ``graph``, ``vector``, ``coords``, and the
equivariant-model families ``irreps``, ``molecular``, ``clifford_norms``) exports
``CATALOG_ENTRIES``, a list of :class:`NormInfo`; this module concatenates them.
:class:`NormInfo` itself lives in :mod:`geonorm_jax.norms.base` (re-exported here), so the
family modules never import this one.
"""

from __future__ import annotations

from geonorm_jax.norms import (
    clifford_norms,
    coords,
    graph,
    irreps,
    molecular,
    vector,
    vision,
    weights,
)
from geonorm_jax.norms.base import NormInfo

__all__ = [
    "NormInfo",
    "CATALOG",
    "SYMMETRY_CLAIMS",
    "claimed_symmetries",
    "get",
    "names",
    "make",
]


def _collect() -> tuple[NormInfo, ...]:
    entries: list[NormInfo] = []
    for module in (vision, weights, graph, vector, coords, irreps, molecular, clifford_norms):
        entries.extend(module.CATALOG_ENTRIES)
    seen: set[str] = set()
    for e in entries:
        if e.name in seen:
            raise RuntimeError(f"duplicate catalogue name {e.name!r}")
        seen.add(e.name)
    return tuple(entries)


CATALOG: tuple[NormInfo, ...] = _collect()
_BY_NAME = {e.name: e for e in CATALOG}


def names(kind: str | None = None) -> tuple[str, ...]:
    """Catalogue names, optionally only those of one ``kind``."""
    return tuple(e.name for e in CATALOG if kind is None or e.kind == kind)


def get(name: str) -> NormInfo:
    """The :class:`NormInfo` for ``name``; ``ValueError`` listing the valid names otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(
            f"unknown normalization {name!r}; expected one of: {', '.join(sorted(_BY_NAME))}"
        ) from None


def make(name: str, **overrides):
    """Build the ``Norm`` called ``name`` (``make("geo_norm", sigma="system")``)."""
    return get(name).make(**overrides)


# The symmetries each layer's paper claims (or, for the survey's rows, that the layer is built
# to have), named as the audit's probes (``geonorm_jax.audit.probes``): ``SO3``, ``O3``,
# ``translation``, ``permutation`` and ``batch`` (the output of one sample does not depend on
# the others). The catalogue-wide contract test confirms each claim with the audit's probes;
# a claim the measurement contradicts is listed there with the measured number. Weight norms
# act on parameters and claim none of these.
_PER_SAMPLE_FEATURES = ("permutation", "batch")
_O3_VECTORS = ("SO3", "O3", "permutation", "batch")
SYMMETRY_CLAIMS: dict[str, tuple[str, ...]] = {
    # language / vision feature norms: per-node, permutation-equivariant
    "batch_norm": ("permutation",),
    "layer_norm": _PER_SAMPLE_FEATURES,
    "layer_norm_graph": _PER_SAMPLE_FEATURES,
    "instance_norm": _PER_SAMPLE_FEATURES,
    "group_norm": _PER_SAMPLE_FEATURES,
    "filter_response_norm": _PER_SAMPLE_FEATURES,
    "variance_norm": ("permutation",),
    "weight_norm": (),
    "spectral_norm": (),
    "scaled_weight_standardization": (),
    # graph norms
    "graph_norm": _PER_SAMPLE_FEATURES,
    "pair_norm": _PER_SAMPLE_FEATURES,
    "mean_subtraction_norm": _PER_SAMPLE_FEATURES,
    "message_norm": _PER_SAMPLE_FEATURES,
    "diff_group_norm": ("permutation",),
    "set_norm": _PER_SAMPLE_FEATURES,
    "graph_size_norm": _PER_SAMPLE_FEATURES,
    "schnet_neighbor_norm": _PER_SAMPLE_FEATURES,
    "mace_avg_neighbor_norm": _PER_SAMPLE_FEATURES,
    "allegro_avg_neighbor_norm": _PER_SAMPLE_FEATURES,
    # vector norms of the survey
    "quaternion_rms_norm": _O3_VECTORS,
    "gvp_vector_layer_norm": _O3_VECTORS,
    "vector_neuron_batch_norm": ("SO3", "O3", "permutation"),
    "ev_norm": _O3_VECTORS,
    # coordinate norms (the survey's rows and the GeoNorm paper's E(n)-equivariant layer)
    "layer_norm_coords": ("batch",),
    "scale_norm_l2": ("SO3", "O3", "batch"),
    "scale_norm_rms": ("SO3", "O3", "batch"),
    "geo_norm": ("SO3", "O3", "translation", "batch"),
    "geo_norm_system": ("SO3", "O3", "translation", "batch"),
    "geo_norm_shared": ("SO3", "O3", "translation", "permutation", "batch"),
    "geo_norm_particle_sigma_shared": ("SO3", "O3", "translation", "permutation", "batch"),
    # today's equivariant models
    "equivariant_layer_norm": ("SO3", "permutation", "batch"),  # EquiformerV2: SO(3)
    "equivariant_layer_norm_sh": ("SO3", "permutation", "batch"),
    "equivariant_rms_norm_sh": ("SO3", "permutation", "batch"),
    "degree_layer_scale": ("SO3", "permutation", "batch"),
    "e3nn_batch_norm": ("SO3", "O3", "permutation"),  # e3nn: E(3)
    "e3nn_instance_norm": _O3_VECTORS,
    "norm_activation": _O3_VECTORS,
    "soft_normalization": _O3_VECTORS,
    "norm_se3": ("SO3", "permutation", "batch"),  # SE(3)-Transformer: SE(3)
    "vec_layer_norm_maxmin": ("SO3", "permutation", "batch"),  # ViSNet: SO(3)
    "vec_layer_norm_rms": ("SO3", "permutation", "batch"),
    "tensor_norm": _O3_VECTORS,  # TensorNet: O(3)
    "mace_density_norm": _O3_VECTORS,  # MACE: E(3)
    "species_neighbor_norm": _O3_VECTORS,  # NequIP: E(3)
    "se3_coord_norm": ("SO3", "translation", "permutation", "batch"),  # MiDi: SE(3)
    "mv_layer_norm": _O3_VECTORS,  # CGENN: O(n)
    "grade_norm": _O3_VECTORS,
    "gatr_layer_norm": _O3_VECTORS,  # GATr: E(3)
}


def claimed_symmetries(name: str) -> tuple[str, ...]:
    """The probe names of the symmetries the layer ``name`` claims (:data:`SYMMETRY_CLAIMS`);
    ``ValueError`` for a catalogue entry without a stated claim."""
    get(name)
    try:
        return SYMMETRY_CLAIMS[name]
    except KeyError:
        raise ValueError(f"claimed_symmetries: expected an entry for {name!r} in "
                         "SYMMETRY_CLAIMS; received none") from None
