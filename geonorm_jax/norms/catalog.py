"""The catalogue: every normalization layer of both papers, by name, with its metadata.

The CLI (``geonorm-jax norms``), the tests and the audit iterate over :data:`CATALOG`.
Each family module (``vision``, ``weights``, ``graph``, ``vector``, ``coords``, and the
equivariant-model families ``irreps``, ``molecular``, ``clifford_norms``) exports
``CATALOG_ENTRIES``, a list of :class:`NormInfo`; this module registers each family once in
:data:`FAMILIES` and concatenates their entries. Every fact
about a layer (paper, formula, kind, reduced axes, symmetry claims, defaults) is stated once,
in its entry; :data:`SYMMETRY_CLAIMS` is a read-only view derived from the entries.
:class:`NormInfo` itself lives in :mod:`geonorm_jax.norms.base` (re-exported here), so the
family modules never import this one.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType, ModuleType
from typing import NamedTuple

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
    "Family",
    "FAMILIES",
    "CATALOG",
    "SYMMETRY_CLAIMS",
    "claimed_symmetries",
    "get",
    "names",
    "make",
]


class Family(NamedTuple):
    """A family module of the catalogue: ``slug`` (its name in the docs, ``layers/<slug>.md``),
    ``module`` (exports ``CATALOG_ENTRIES``), ``title`` and a one-line ``summary``. Not to be
    confused with :attr:`NormInfo.family`, the paper grouping of one layer."""

    slug: str
    module: ModuleType
    title: str
    summary: str


#: The family modules, in the catalogue's order: the one list of them, from which
#: :data:`CATALOG` is built and the documentation's layer pages are generated. A new family is
#: one module exporting ``CATALOG_ENTRIES`` plus one line here.
FAMILIES: tuple[Family, ...] = (
    Family("vision", vision, "Language and vision",
           "The survey's Table 1, left column: statistics over batch, nodes or channels of "
           "scalar features."),
    Family("weights", weights, "Weight normalizations",
           "Reparametrisations of a weight matrix rather than of activations."),
    Family("graph", graph, "Graph normalizations",
           "The survey's Table 1, right column: per-graph statistics and neighbour-count "
           "scalings of scalar features."),
    Family("vector", vector, "Vector normalizations",
           "The survey's geometric layers for vector channels (also any-l `e3nn.IrrepsArray`)."),
    Family("coords", coords, "Coordinate normalizations (GeoNorm paper)",
           "LayerNorm and ScaleNorm on coordinates (Eqs. 3-4) and GeoNorm (Eq. 5) with its "
           "variants."),
    Family("irreps", irreps, "Irreps normalizations",
           "EquiformerV2, eSEN/UMA, e3nn and SE(3)-Transformer layers on irreps features."),
    Family("molecular", molecular, "Molecular-model normalizations",
           "ViSNet, TensorNet, MACE, NequIP and MiDi."),
    Family("clifford", clifford_norms, "Multivector normalizations",
           "CGENN and GATr layers on Clifford-algebra multivectors."),
)


def _collect() -> tuple[NormInfo, ...]:
    entries: list[NormInfo] = []
    for family in FAMILIES:
        entries.extend(family.module.CATALOG_ENTRIES)
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


def _claims() -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType({e.name: e.symmetries for e in CATALOG if e.symmetries is not None})


#: Read-only view ``{name: claimed symmetries}`` derived from the entries'
#: :attr:`NormInfo.symmetries` (the probe names ``SO3``, ``O3``, ``translation``,
#: ``permutation``, ``batch``); each claim is stated once, where its layer is registered.
SYMMETRY_CLAIMS: Mapping[str, tuple[str, ...]] = _claims()


def claimed_symmetries(name: str) -> tuple[str, ...]:
    """The probe names of the symmetries the layer ``name`` claims (its entry's
    :attr:`NormInfo.symmetries`); ``ValueError`` for an unknown name or an entry without a
    stated claim."""
    claims = get(name).symmetries
    if claims is None:
        raise ValueError(f"claimed_symmetries: expected the entry {name!r} to state its "
                         "symmetries (NormInfo.symmetries); received none")
    return claims
