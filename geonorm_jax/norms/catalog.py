"""The catalogue: every normalization layer of both papers, by name, with its metadata.

The CLI (``geonorm-jax norms``), the tests and the audit iterate over :data:`CATALOG`.
Each family module (``vision``, ``weights``, ``graph``, ``vector``, ``coords``) exports
``CATALOG_ENTRIES``, a list of :class:`NormInfo`; this module concatenates them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

__all__ = ["NormInfo", "CATALOG", "get", "names", "make"]


@dataclasses.dataclass(frozen=True)
class NormInfo:
    """Metadata for one catalogue entry.

    Attributes:
      name: catalogue name (``"geo_norm"``), also accepted by the CLI.
      constructor: ``constructor(**hyperparameters) -> Norm``.
      kind: ``"features"``, ``"vectors"``, ``"coordinates"`` or ``"weights"``.
      paper: the original paper (authors, year, venue).
      formula: the survey's (or GeoNorm paper's) formula, in plain text.
      reduced_axes: the axes the code reduces over, in the survey's letters
        (b = batch, x = nodes, v = channels, d = the 3 spatial components).
      params: names of learnable parameters.
      running_state: names of running (non-trainable) state, empty if none.
      family: ``"language/vision"``, ``"graph/geometric"`` or ``"geonorm paper"``.
      context: keyword context ``apply`` needs beyond ``x`` (e.g. ``("mu0",)``).
      kwargs: keyword arguments passed to ``constructor`` for this entry (variants).
      survey_row: the row of the survey's Table 1 this implements, or "" if not in it.
      notes: where the survey and the original paper differ, and the choice made.
    """

    name: str
    constructor: Callable[..., Any]
    kind: str
    paper: str
    formula: str
    reduced_axes: str
    params: tuple[str, ...] = ()
    running_state: tuple[str, ...] = ()
    family: str = "graph/geometric"
    context: tuple[str, ...] = ()
    kwargs: dict = dataclasses.field(default_factory=dict)
    survey_row: str = ""
    notes: str = ""

    def make(self, **overrides):
        """Build the ``Norm`` with this entry's kwargs, updated by ``overrides``."""
        return self.constructor(**{**self.kwargs, **overrides})


def _collect() -> tuple[NormInfo, ...]:
    from geonorm_jax.norms import coords, graph, vector, vision, weights

    entries: list[NormInfo] = []
    for module in (vision, weights, graph, vector, coords):
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
