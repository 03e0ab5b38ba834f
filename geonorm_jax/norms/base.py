"""The `Norm` shape shared by every normalization layer, and the catalogue entry `NormInfo`.

A normalization layer is a pair of pure functions, following optax's
``GradientTransformation(init, update)``: a constructor closes over the hyperparameters
and returns ``Norm(init, apply)``::

    norm = geo_norm(sigma="system")                       # hyperparameters here
    params, state = norm.init(key, x, **context)           # pytrees
    y, state = norm.apply(params, state, x, mask=mask, training=True, **context)

Tensor layouts, in the survey's letters (Aalto et al., Table 1: b = batch, x = nodes, v =
channels, d = the 3 spatial components):

============================  ======================================================
scalar node features          ``[batch, nodes, channels]``
vector node features          ``[batch, nodes, channels, 3]`` or ``e3nn.IrrepsArray``
                              ``[batch, nodes, irreps]``
coordinates                   ``[batch, nodes, 3]``
node mask                     ``[batch, nodes]``, bool (True = real node)
weights                       ``[fan_in, fan_out]`` (a Dense kernel)
============================  ======================================================

Masking contract: padded nodes (``mask == False``) never change the statistics or the
outputs of real nodes. Outputs at padded nodes are unspecified but finite. Padding is
excluded by selection (``jnp.where``), never by multiplying with the mask, so whatever a
padded entry holds (NaN, inf, 1e30) changes neither the real outputs nor any gradient.

Two node layouts (:func:`graph_layout`): the padded one above, and for layers with per-graph
statistics the flat one of jraph, e3nn-jax and PyG: nodes ``[total_nodes, ...]`` with
``segment_ids [total_nodes]`` (the graph of each node) and a static ``num_graphs``, or
``n_node [num_graphs]`` counts; padding graphs are graphs like any other, and an optional
``mask [total_nodes]`` marks padded nodes.

Numerics: statistics that square their inputs first divide them by a power of two
(:func:`graph_scale`, :func:`geonorm_jax.geometry.magnitude_scale`) when their magnitude is
outside ``2**-50 .. 2**50``, so layers are right in float32 from 1e-30 to 1e30 and beyond,
and bit-for-bit unchanged at ordinary magnitudes.

This module holds :class:`Norm` and :class:`NormInfo` (every fact about one catalogue entry:
paper, formula, kind, reduced axes, symmetry claims, hyperparameter defaults, its place in the
family's listing). It re-exports the input checks and masked statistics of
:mod:`geonorm_jax.norms.checks` and the node layouts of :mod:`geonorm_jax.norms.layouts`, so
that ``catalog`` can import the families and the families import only ``base``.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

from geonorm_jax.norms import checks as _checks
from geonorm_jax.norms import layouts as _layouts
from geonorm_jax.norms.checks import (  # noqa: F401  (re-exported; layout_error for families)
    affine,
    affine_params,
    check_choice,
    check_coordinates,
    check_features,
    check_layout,
    check_mask,
    check_node_features,
    check_param_sizes,
    check_vectors,
    check_weights,
    layout_error,
    masked_count,
    masked_mean,
    masked_sum,
    masked_var,
    node_mask,
    stat_dtype,
)
from geonorm_jax.norms.layouts import (  # noqa: F401  (re-exported)
    LAYOUT_KEYS,
    Graphs,
    feature_graphs,
    graph_count,
    graph_layout,
    graph_max_abs,
    graph_mean,
    graph_scale,
    graph_sum,
    zero_padding,
)

__all__ = [
    "Norm",
    "NormInfo",
    "KINDS",
    "SYMMETRIES",
    *(n for n in _checks.__all__ if n not in ("layout_error", "check_layout")),
    *_layouts.__all__,
]

KINDS = ("features", "vectors", "coordinates", "weights")

#: The symmetry names a :class:`NormInfo` may claim: the audit's probes
#: (``geonorm_jax.audit.probes``).
SYMMETRIES = ("SO3", "O3", "translation", "permutation", "batch")

Params = Any
State = Any


class Norm(NamedTuple):
    """A normalization layer as two pure functions (like ``optax.GradientTransformation``).

    Attributes:
      init: ``init(key, x, **context) -> (params, state)``. ``params`` are trainable,
        ``state`` holds non-trainable running quantities (BatchNorm statistics, the
        power-iteration vector of SpectralNorm); both are pytrees, possibly empty dicts.
      apply: ``apply(params, state, x, *, mask=None, training=False, **context)
        -> (y, new_state)``. ``y`` has the shape and dtype of ``x``.
      kind: what the layer acts on: ``"features"`` ``[B, N, C]``, ``"vectors"``
        ``[B, N, C, 3]`` / IrrepsArray, ``"coordinates"`` ``[B, N, 3]`` or ``"weights"``
        ``[fan_in, fan_out]``. ``None`` for a user's layer of unstated kind (accepted
        anywhere).
      name: catalogue name, for messages and tables.
    """

    init: Callable[..., tuple[Params, State]]
    apply: Callable[..., tuple[Any, State]]
    kind: str | None = None
    name: str = "custom"


@dataclasses.dataclass(frozen=True)
class NormInfo:
    """Metadata for one catalogue entry.

    Attributes:
      name: catalogue name (``"geo_norm"``), also accepted by the CLI.
      constructor: ``constructor(**hyperparameters) -> Norm``.
      kind: ``"features"``, ``"vectors"``, ``"coordinates"`` or ``"weights"``.
      paper: the original paper (authors, year, venue).
      formula: the formula of the survey (Aalto et al., Table 1) or of the GeoNorm paper
        (Meng et al., Eqs. 3-5), in plain text.
      reduced_axes: the axes the code reduces over, in the survey's letters
        (b = batch, x = nodes, v = channels, d = the 3 spatial components).
      params: names of learnable parameters.
      running_state: names of running (non-trainable) state, empty if none.
      family: ``"language/vision"``, ``"graph/geometric"`` or ``"geonorm paper"``.
      context: keyword context ``apply`` needs beyond ``x`` (e.g. ``("mu0",)``).
      kwargs: keyword arguments passed to ``constructor`` for this entry (variants).
      survey_row: the row of the survey's Table 1 this implements, or "" if not in it.
      notes: where the survey and the original paper differ, and the choice made.
      layouts: the node layouts ``apply`` accepts: ``"padded"`` (``[batch, nodes, ...]``
        with a mask) and, for layers with per-graph statistics, ``"flat"``
        (``[total_nodes, ...]`` with ``segment_ids=``/``n_node=``, see :func:`graph_layout`).
      symmetries: the symmetries the layer's paper claims (or, for the survey's rows, that
        the layer is built to have), named as the audit's probes (:data:`SYMMETRIES`:
        ``SO3``, ``O3``, ``translation``, ``permutation``, ``batch`` = the output of one
        sample does not depend on the others); ``()`` for a layer that claims none (weight
        norms act on parameters). ``None`` = not stated (the catalogue contract test
        rejects it). The catalogue-wide contract test confirms each claim with the probes.
      order: the entry's place in its family's listing (the survey's Table 1 order), for
        families whose code is split over modules (:func:`family_entries`); 0 = as declared.

    Derived facts: :attr:`hyperparameters` (the constructor's keyword defaults) and
    :attr:`defaults` (those updated by ``kwargs``: what :meth:`make` builds).
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
    layouts: tuple[str, ...] = ("padded",)
    symmetries: tuple[str, ...] | None = None
    order: int = 0

    def __post_init__(self):
        unknown = set(self.symmetries or ()) - set(SYMMETRIES)
        if unknown:
            raise ValueError(f"NormInfo {self.name!r}: expected symmetries among {SYMMETRIES}; "
                             f"received {sorted(unknown)}")

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """The constructor's keyword arguments and their defaults, in signature order."""
        return {k: p.default for k, p in inspect.signature(self.constructor).parameters.items()
                if p.kind is p.KEYWORD_ONLY and p.default is not p.empty}

    @property
    def defaults(self) -> dict[str, Any]:
        """The hyperparameters this entry builds: :attr:`hyperparameters` updated by
        ``kwargs``."""
        return {**self.hyperparameters, **self.kwargs}

    def make(self, **overrides):
        """Build the ``Norm`` with this entry's kwargs, updated by ``overrides``."""
        return self.constructor(**{**self.kwargs, **overrides})


def family_entries(*modules) -> list[NormInfo]:
    """The ``CATALOG_ENTRIES`` of ``modules`` (the code modules of one family), concatenated
    and stably sorted by :attr:`NormInfo.order`."""
    return sorted((e for m in modules for e in m.CATALOG_ENTRIES), key=lambda e: e.order)

