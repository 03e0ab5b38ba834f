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

Precision: every layer computes in at least float32. An input narrower than float32 (bfloat16,
float16) is promoted to float32 on entry to ``apply`` (with the floating context arrays, e.g.
``mu0``), the layer runs, and its output is cast back to the input's dtype (its new state to
the dtype of the state it received); float32 and float64 inputs pass untouched. This is done
once, where :class:`Norm` wraps ``apply`` (:func:`at_least_float32`), so it holds for every
layer of the catalogue and for a user's ``Norm``: mixed-precision models keep their
normalization statistics (means, variances, norms over nodes, channels or components) in
float32.

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
import functools
import inspect
import threading
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from geonorm_jax.norms import checks as _checks
from geonorm_jax.norms import layouts as _layouts
from geonorm_jax.norms.checks import (  # noqa: F401  (re-exported; layout_error for families)
    E3NN_MOMENTUM,
    affine,
    affine_params,
    check_choice,
    check_coordinates,
    check_features,
    check_hyperparameters,
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
    "COMPUTE_MIN_DTYPE",
    "at_least_float32",
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


class _NormFields(NamedTuple):
    init: Callable[..., tuple[Any, Any]]
    apply: Callable[..., tuple[Any, Any]]
    kind: str | None = None
    name: str = "custom"


def _key_tree(tree: Any) -> Any:
    """The nesting of mappings in ``tree`` (``{key: subtree}``), leaves as None; None and
    an empty mapping are the same (a layer without parameters)."""
    if tree is None:
        return {}
    if isinstance(tree, Mapping):
        return {str(k): _key_tree(v) for k, v in tree.items()}
    return None


def _covers(got: Any, want: Any) -> bool:
    """Every key of ``want`` is in ``got``, recursively (extra keys allowed)."""
    if not isinstance(want, dict):
        return True
    return isinstance(got, dict) and all(k in got and _covers(got[k], v)
                                         for k, v in want.items())


def _describe(keys: Any) -> str:
    if not isinstance(keys, dict):
        return "an array"
    if not keys:
        return "{}"
    inner = ", ".join(f"{k!r}" + ("" if v is None else f": {_describe(v)}")
                      for k, v in sorted(keys.items()))
    return "{" + inner + "}"


_CHECKING = threading.local()
_NOT_MADE = object()


def _expected_keys(init, x, context, cache: dict):
    """The key nesting of ``init(key, x, **context)``'s ``(params, state)`` for inputs shaped
    like ``x`` and ``context`` (one abstract trace per input structure), or None when it cannot
    be told (an ``init`` that needs more than the context)."""
    leaves, treedef = jax.tree_util.tree_flatten((x, context))
    spec = (treedef, tuple((np.shape(a), str(getattr(a, "dtype", type(a).__name__)))
                           for a in leaves))
    try:
        hash(spec)
    except TypeError:
        return None
    if spec not in cache:
        structs = [jax.ShapeDtypeStruct(np.shape(a), a.dtype) if hasattr(a, "dtype") else a
                   for a in leaves]
        ax, actx = jax.tree_util.tree_unflatten(treedef, structs)
        key = jax.ShapeDtypeStruct((2,), np.uint32)
        _CHECKING.active = True
        try:
            made = jax.eval_shape(lambda k, xx, ctx: init(k, xx, **ctx), key, ax, actx)
            cache[spec] = (_key_tree(made[0]), _key_tree(made[1]), made)
        except Exception:  # noqa: BLE001 (init needs what apply's context lacks: no check)
            cache[spec] = _NOT_MADE
        finally:
            _CHECKING.active = False
    out = cache[spec]
    return None if out is _NOT_MADE else out


def _shapes(tree: Any) -> dict:
    return {jax.tree_util.keystr(p): tuple(np.shape(a))
            for p, a in jax.tree_util.tree_leaves_with_path(tree)}


def _guard_apply(init, apply, name: str):
    """``apply`` that first compares the key nesting of ``params`` and ``state`` with what
    ``init`` makes for this input and raises ``ValueError`` naming both (instead of a
    ``KeyError`` deep inside, or another layer's parameters silently ignored)."""
    if getattr(apply, "_geonorm_guarded", False):
        return apply
    cache: dict = {}
    context_free = ("mask", "training")

    @functools.wraps(apply)
    def guarded(params, state, x, *args, **kwargs):
        expected = None
        if not getattr(_CHECKING, "active", False):
            context = {k: v for k, v in kwargs.items() if k not in context_free}
            expected = _expected_keys(init, x, context, cache)
            if expected is not None:
                for what, got, want in (("params", params, expected[0]),
                                        ("state", state, expected[1])):
                    # params exactly (an extra one would be silently ignored); state at
                    # least (running quantities a layer does not read may ride along)
                    got_keys = _key_tree(got)
                    if (got_keys != want) if what == "params" else not _covers(got_keys, want):
                        raise ValueError(
                            f"{name}: expected {what} {_describe(want)} as made by this "
                            f"layer's init; received {what} {_describe(_key_tree(got))} "
                            f"(the variables of another layer?)")
                # None for a layer without variables reads as the {} its init makes
                params = {} if params is None and expected[0] == {} else params
                state = {} if state is None and expected[1] == {} else state
        try:
            return apply(params, state, x, *args, **kwargs)
        except (KeyError, TypeError, IndexError, AttributeError) as e:
            if expected is None:
                raise
            # the keys match: name a parameter whose shape is not what init makes
            want = _shapes(expected[2][0])
            got = _shapes(params)
            bad = [k for k in want if k in got and got[k] != want[k]]
            if not bad:
                raise
            raise ValueError(
                f"{name}: expected params{bad[0]} of shape {want[bad[0]]} as made by this "
                f"layer's init for input shape {tuple(np.shape(getattr(x, 'array', x)))}; "
                f"received shape {got[bad[0]]} (the variables of another layer?)") from e

    guarded._geonorm_guarded = True
    return guarded


#: The narrowest dtype a layer computes in (see the module docstring, "Precision").
COMPUTE_MIN_DTYPE = jnp.float32


def _narrow_float(a: Any) -> bool:
    """``a`` (an array or IrrepsArray) is floating point narrower than float32."""
    dtype = getattr(a, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        return False
    return jnp.finfo(dtype).bits < jnp.finfo(COMPUTE_MIN_DTYPE).bits


def _promote(a: Any) -> Any:
    return a.astype(COMPUTE_MIN_DTYPE) if _narrow_float(a) else a


def _is_array(a: Any) -> bool:
    return hasattr(a, "dtype") and hasattr(a, "astype")


def at_least_float32(apply: Callable) -> Callable:
    """``apply`` computing in at least float32: an input ``x`` narrower than float32 is
    promoted to float32 (so are the floating arrays among the keyword context, e.g. ``mu0``),
    and the output ``y`` is cast back to the dtype of ``x``; the new state's leaves are cast
    to the dtypes of the received state's leaves. float32/float64 inputs call ``apply``
    unchanged (bit for bit)."""
    if getattr(apply, "_geonorm_promoted", False):
        return apply

    @functools.wraps(apply)
    def promoted(params, state, x, *args, **kwargs):
        if not _narrow_float(x):
            return apply(params, state, x, *args, **kwargs)
        kwargs = {k: _promote(v) if _is_array(v) else v for k, v in kwargs.items()}
        y, new_state = apply(params, state, _promote(x), *args, **kwargs)
        y = y.astype(x.dtype) if _is_array(y) else y
        old, new = jax.tree_util.tree_structure(state), jax.tree_util.tree_structure(new_state)
        if state is not None and old == new:
            new_state = jax.tree_util.tree_map(
                lambda n, o: n.astype(o.dtype) if _is_array(n) and _is_array(o) else n,
                new_state, state)
        return y, new_state

    promoted._geonorm_promoted = True
    return promoted


class Norm(_NormFields):
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

    ``apply`` is wrapped on construction so that the variables of another layer (params with
    other keys than ``init`` makes for that input, or state without one of its keys) raise
    ``ValueError`` naming both key sets, and so that it computes in at least float32
    (:func:`at_least_float32`: bfloat16/float16 inputs are promoted, outputs cast back).
    """

    __slots__ = ()

    def __new__(cls, init, apply, kind: str | None = None, name: str = "custom"):
        apply = at_least_float32(_guard_apply(init, apply, name))
        return super().__new__(cls, init, apply, kind, name)


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

