"""Where a normalization goes in a model: one vocabulary of *places*, declared per model.

A model that takes normalizations declares a :class:`NormPlacement`: its places (each a
:class:`NormPlace` with a name, the ``Norm`` kinds it accepts and what it normalizes) and,
for each kind of ``Norm`` (the catalogue's ``kind``: ``"coordinates"``, ``"vectors"``,
``"features"``, ...), the default place. The model's attribute for place ``p`` is always
``f"{p}_norm"``. Everything else asks the placement: the model checks a norm against it, the
trainer (:func:`geonorm_jax.train.setup.norm_place`), the CLI's ``--norm-place`` choices and
the config's ``model.norm_place`` read it. Another model (Allegro, SchNet, GemNet, ...) declares
its own ``NormPlacement`` the same way, e.g.::

    MY_PLACEMENT = NormPlacement("MyModel", (
        NormPlace("feature", ("features",), "scalar features after each interaction"),
        NormPlace("vector", ("vectors",), "vector features after each interaction"),
    ), defaults=(("features", "feature"), ("vectors", "vector")))

:data:`EGNN_PLACEMENT` is the velocity EGNN's (Satorras et al., 2021; places as in the GeoNorm
paper, Meng et al.): a coordinates norm defaults to the positions (``coord``) and may also
normalize the aggregated coordinate update (``update``); a vectors norm goes to the update
(as ``[B, N, 1, 3]``); a features norm to the invariant features ``h`` (``feature``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from geonorm_jax.norms.base import Norm

__all__ = ["NormPlace", "NormPlacement", "EGNN_PLACEMENT", "PLACES"]


@dataclasses.dataclass(frozen=True)
class NormPlace:
    """One place of a model where a normalization can go.

    Attributes:
      name: the place's name (``"coord"``); the model attribute is ``f"{name}_norm"``.
      kinds: the ``Norm`` kinds it accepts (a ``Norm`` of kind None, a user's own layer of
        unstated kind, is accepted anywhere).
      description: what the norm normalizes there, with shapes.
    """

    name: str
    kinds: tuple[str, ...]
    description: str = ""

    @property
    def field(self) -> str:
        """The model attribute that holds this place's ``Norm``: ``f"{name}_norm"``."""
        return f"{self.name}_norm"


@dataclasses.dataclass(frozen=True)
class NormPlacement:
    """A model's places and the default place of each ``Norm`` kind.

    Attributes:
      model: the model's name (used in error messages).
      places: its :class:`NormPlace` entries.
      defaults: ``(kind, place name)`` pairs: where a norm of that kind goes unless a place
        is given.
    """

    model: str
    places: tuple[NormPlace, ...]
    defaults: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        names = self.names()
        if len(set(names)) != len(names):
            raise ValueError(f"{self.model}: expected distinct place names; received {names}")
        for kind, place in self.defaults:
            if kind not in self.place(place).kinds:
                raise ValueError(
                    f"{self.model}: default place {place!r} for kind {kind!r} does not accept "
                    f"that kind (it accepts {self.place(place).kinds})"
                )

    def names(self) -> tuple[str, ...]:
        """The place names, in declaration order."""
        return tuple(p.name for p in self.places)

    def fields(self) -> tuple[str, ...]:
        """The model attributes of the places (``coord_norm``, ...)."""
        return tuple(p.field for p in self.places)

    def kinds_by_place(self) -> dict[str, tuple[str, ...]]:
        """``{place name: accepted kinds}``."""
        return {p.name: p.kinds for p in self.places}

    def place(self, name: str) -> NormPlace:
        """The :class:`NormPlace` called ``name`` (ValueError listing the names otherwise)."""
        for p in self.places:
            if p.name == name:
                return p
        raise ValueError(f"place: expected one of {self.names()}; received {name!r}")

    def default_place(self, kind: str | None, norm_name: str = "the norm") -> str:
        """The default place of a ``Norm`` of ``kind`` (ValueError if the model takes none)."""
        for k, place in self.defaults:
            if k == kind:
                return place
        kinds = [k for k, _ in self.defaults]
        takes = " or ".join([", ".join(kinds[:-1]), kinds[-1]] if len(kinds) > 1 else kinds)
        raise ValueError(
            f"model.norm: {norm_name!r} is a {kind!r} normalization; the {self.model} takes "
            f"{takes} norms (places {', '.join(self.names())})"
        )

    def check(self, norm: Any, place: str) -> None:
        """ValueError unless ``norm`` (a ``Norm`` or None) may go at ``place``."""
        p = self.place(place)
        if norm is None:
            return
        if not isinstance(norm, Norm):
            raise ValueError(
                f"{p.field}: expected a geonorm_jax Norm (or None); received "
                f"{type(norm).__name__}"
            )
        if norm.kind is not None and norm.kind not in p.kinds:
            raise ValueError(
                f"{p.field}: expected a Norm of kind {' or '.join(map(repr, p.kinds))}; "
                f"received {norm.name!r} of kind {norm.kind!r}"
            )


EGNN_PLACEMENT = NormPlacement(
    "EGNN",
    (
        NormPlace("coord", ("coordinates",),
                  "the positions x [B, N, 3] after each layer (GeoNorm's place)"),
        NormPlace("update", ("coordinates", "vectors"),
                  "the aggregated coordinate update [B, N, 3] before it is added"),
        NormPlace("feature", ("features",), "the invariant features h [B, N, H] after each layer"),
    ),
    defaults=(("coordinates", "coord"), ("vectors", "update"), ("features", "feature")),
)

# {place: accepted kinds} of the EGNN (None-kind Norms are accepted anywhere).
PLACES = EGNN_PLACEMENT.kinds_by_place()
