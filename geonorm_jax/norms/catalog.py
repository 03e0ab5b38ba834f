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

__all__ = ["NormInfo", "CATALOG", "get", "names", "make"]


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
