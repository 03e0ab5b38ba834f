"""Probes: each measures one geometric property of a ``Norm`` numerically.

A probe takes a :class:`Case` (a ``Norm`` with trained-like parameters, one random input of its
kind and the context it needs) and returns ``(error, scale)``; :func:`run_probe` repeats it on
several random inputs and turns the worst relative error ``error / scale`` into a verdict at a
stated tolerance. The cases themselves (random inputs, context, trained-like parameters) are
built by :mod:`geonorm_jax.audit.cases`.

Two families of probes (the survey's Definition 3):

*Preserved symmetries* (condition 1; error = ``max |f(g.x) - g.f(x)| / max |g.f(x)|``):

=================  ===========================================================================
``"SO3"``          a random rotation (coordinates, vectors and ``mu0`` rotate)
``"O3"``           a random improper rotation (rotation times -I)
``"translation"``  a random translation per sample (coordinates and ``mu0`` move); the output
                   must move with it (coordinates) or stay (other kinds)
``"permutation"``  one random permutation of the nodes (and of node-indexed context)
``"batch"``        Case 1: sample 0's output when samples 1..B-1 are replaced by noise
``"padding"``      graph-size independence: the real nodes' outputs when the graph is padded
                   with masked nodes holding large random values
``"replication"``  size consistency (a necessary condition for size extensivity): the first
                   copy's outputs when each graph is duplicated, ``x -> [x, x]``
=================  ===========================================================================

*Introduced invariances* (condition 2 and Cases 3-4; value = relative output change
``max |f(x') - f(x)| / max |f(x)|``; "invariant" means the layer discards the quantity):

=================  ===========================================================================
``"scale"``        each sample scaled by its own factor ``c_b`` in [0.5, 3] (a per-sample
                   contrast change). Coordinates are scaled about their centroid, so the
                   centroid and ``mu0`` stay where they are.
``"shift"``        a random shift per sample and channel, ``x + c_{b,v}`` (for coordinates a
                   translation with ``mu0`` held fixed)
``"node_scale"``   each node scaled by its own factor ``c_{b,i}`` in [0.5, 3] (coordinates: about
                   the origin)
``"radial"``       coordinates only: each particle moved along its direction from the centroid,
                   centroid, ``mu + c_{b,i} (x_i - mu)``, with ``sum_i c_i (x_i - mu) = 0`` so
                   that the centroid (and ``mu0``) do not move (:func:`radial_factors`)
=================  ===========================================================================

Weight kernels ``[fan_in, fan_out]`` get ``scale`` (one global factor), ``shift`` (one constant
per output unit) and ``node_scale`` (one factor per output unit); the other probes do not apply
to a kernel and report ``"n/a"``.

All probes run ``apply(..., training=True)`` (the batch statistics of BatchNorm-like layers are
in use); layers with running state additionally get ``"batch"`` measured in eval mode
(``training=False``), reported in ``ProbeResult.extra["eval"]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from geonorm_jax import geometry
from geonorm_jax.audit.cases import Case, normal, rng_from_key
from geonorm_jax.testing import equivariance_errors

__all__ = [
    "SYMMETRY_PROBES",
    "INVARIANCE_PROBES",
    "PROBES",
    "HOLDS_TOL",
    "BROKEN_TOL",
    "ProbeResult",
    "run_probe",
    "radial_factors",
]

SYMMETRY_PROBES = ("SO3", "O3", "translation", "permutation", "batch", "padding", "replication")
INVARIANCE_PROBES = ("scale", "shift", "node_scale", "radial")
PROBES = SYMMETRY_PROBES + INVARIANCE_PROBES

#: relative error below which a property holds (an invariance is present); in float64 the exact
#: layers sit near 1e-15, and epsilon-inside-sqrt layers within ~1e-5 on unit-scale inputs.
HOLDS_TOL = 1e-4
#: relative error above which a property is broken (an invariance is absent).
BROKEN_TOL = 1e-2

# Verdicts. Symmetry probes: holds / approx / broken; invariance probes: invariant / partial /
# sensitive; both: trivial (the input kind does not transform), n/a, error (the layer raised).
@dataclasses.dataclass
class ProbeResult:
    """One measured property.

    Attributes:
      name: the probe name (see :data:`PROBES`).
      value: the worst relative error (symmetry probes) or the smallest relative change
        (invariance probes) over the random inputs; None when not measured.
      verdict: ``holds | approx | broken`` (symmetry), ``invariant | partial | sensitive``
        (invariance), or ``trivial``, ``n/a``, ``error``.
      tol: ``(HOLDS_TOL, BROKEN_TOL)`` used for the verdict.
      detail: why a probe is ``n/a``/``trivial``/``error``, or what was changed.
      extra: additional numbers: ``eval`` (batch probe in eval mode), ``homogeneous``
        (``|f(c x) - c f(x)|`` rel., scale probe), ``equivariant`` (``|f(x+c) - f(x) - c|``
        rel., shift probe), ``values`` (one value per random input).
    """

    name: str
    value: float | None
    verdict: str
    tol: tuple[float, float] = (HOLDS_TOL, BROKEN_TOL)
    detail: str = ""
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when a symmetry holds (or is trivial) / when an invariance is absent."""
        return self.verdict in ("holds", "trivial", "sensitive")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------- measures

def _err(a, b) -> tuple[float, float]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b))), float(np.max(np.abs(b)))


def _rel(err: float, scale: float) -> float:
    if not np.isfinite(err):
        return float("inf")
    return err / scale if scale > 0 else (0.0 if err == 0 else float("inf"))


_GEOMETRIC = ("SO3", "O3", "translation", "permutation")


def _group_error(case: Case, group: str, key):
    """``equivariance_errors`` for the four geometric groups at once (one reference
    evaluation), cached on the case."""
    if "groups" not in case.cache:
        names = list(case.context)
        fn = lambda x, *ctx: case.apply(x, **dict(zip(names, ctx, strict=True)))
        kinds = (case.kind, *(case.context_kinds[n] for n in names))
        wanted = tuple(g for g in _GEOMETRIC if g not in _TRIVIAL.get(case.kind, {}))
        case.cache["groups"] = equivariance_errors(
            fn, key, case.x, *(case.context[n] for n in names),
            group=wanted, kinds=kinds, out_kinds=(case.kind,),
        )
    return case.cache["groups"][group]


def _batch(case: Case, rng, training: bool | None = None):
    """Case 1: sample 0's output when samples 1..B-1 (and their context) are replaced by noise.

    The same measurement as ``equivariance_errors(..., group="batch")``, with the noise drawn
    by NumPy (``jax.random`` compiles once per new shape, which dominates on tiny inputs).
    """
    if case.x.shape[0] < 2:
        raise ValueError(f"batch probe: expected batch >= 2; received shape {case.x.shape}")

    def others(a):
        noise = 3.0 * normal(rng, a.shape, a.dtype) + 2.0
        return a.at[1:].set(noise[1:])

    ctx = {k: others(v) for k, v in case.context.items()}
    y2 = case.apply(others(case.x), training=training, **ctx)[:1]
    return _err(y2, case.apply(case.x, training=training)[:1])


def _pad_nodes(a, pad, rng):
    noise = 3.0 * normal(rng, (a.shape[0], pad) + a.shape[2:], a.dtype) + 2.0
    return jnp.concatenate([a, noise], axis=1)


def _padding(case: Case, rng):
    b, n = case.x.shape[:2]
    pad = n  # the same node count as the replication probe: fewer shapes to compile
    xp = _pad_nodes(case.x, pad, rng)
    mask = jnp.concatenate([jnp.ones((b, n), bool), jnp.zeros((b, pad), bool)], axis=1)
    ctx = {name: _pad_nodes(v, pad, rng) if case.context_kinds[name] == "features" else v
           for name, v in case.context.items()}
    y = case.apply(xp, mask=mask, **ctx)[:, :n]
    return _err(y, case.apply(case.x))


def _replication(case: Case, rng):
    del rng
    n = case.x.shape[1]
    dup = lambda a: jnp.concatenate([a, a], axis=1)
    ctx = {k: dup(v) if case.context_kinds[k] == "features" else v
           for k, v in case.context.items()}
    # an all-True mask: same result as no mask, and the same compilation as the padding probe
    mask = jnp.ones(case.x.shape[:1] + (2 * n,), bool)
    y = case.apply(dup(case.x), mask=mask, **ctx)[:, :n]
    return _err(y, case.apply(case.x))


def _factors(rng, shape, dtype):
    """Factors in [0.5, 3]: both shrinking and growing."""
    return jnp.asarray(rng.uniform(0.5, 3.0, shape), dtype)


def _per_sample_shape(case: Case):
    return (case.x.shape[0],) + (1,) * (case.x.ndim - 1)


def _scale(case: Case, rng):
    """Returns (invariance err, scale, (homogeneity err, scale))."""
    x = case.x
    if case.kind == "weights":
        c = _factors(rng, (), x.dtype)
    else:
        c = _factors(rng, _per_sample_shape(case), x.dtype)
    if case.kind == "coordinates":  # about the centroid: the centroid and mu0 stay put
        mu = geometry.centroid(x)[:, None, :]
        xs = mu + c * (x - mu)
    else:
        xs = c * x
    y, ys = case.apply(x), case.apply(xs)
    err, scale = _err(ys, y)
    if case.kind == "coordinates":
        hom = _err(ys, mu + c * (y - mu))
    else:
        hom = _err(ys, c * y)
    return err, scale, hom


def _shift(case: Case, rng):
    x = case.x
    if case.kind == "weights":
        shape = (1, x.shape[1])
    elif case.kind == "vectors":
        shape = (x.shape[0], 1) + x.shape[2:]
    else:
        shape = (x.shape[0], 1, x.shape[2])
    c = 2.0 * normal(rng, shape, x.dtype)
    y, ys = case.apply(x), case.apply(x + c)
    err, scale = _err(ys, y)
    return err, scale, _err(ys, y + c)


def _node_scale(case: Case, rng):
    x = case.x
    if case.kind == "weights":
        c = _factors(rng, (1, x.shape[1]), x.dtype)
    else:
        c = _factors(rng, x.shape[:2], x.dtype).reshape(x.shape[:2] + (1,) * (x.ndim - 2))
    return _err(case.apply(x * c), case.apply(x))


def radial_factors(rng, x) -> np.ndarray:
    """Factors ``c [B, N]`` with ``sum_i c_i (x_i - mu) = 0`` (so the centroid stays), in
    [0.5, 1.5]: ``c = 1 + delta`` with ``delta`` a random vector in the null space of
    ``D^T`` (``D`` the centred positions, ``[N, 3]``). Needs ``N > 3``."""
    x = np.asarray(x, np.float64)
    d = x - x.mean(axis=1, keepdims=True)  # [B, N, 3]
    out = []
    for db in d:
        r = rng.standard_normal(db.shape[0])
        coef, *_ = np.linalg.lstsq(db, r, rcond=None)
        delta = r - db @ coef  # orthogonal to the columns of D: sum_i delta_i d_i = 0
        delta = 0.5 * delta / max(np.max(np.abs(delta)), 1e-12)
        out.append(1.0 + delta)
    return np.stack(out)


def _radial(case: Case, rng):
    """Each particle moves along its own direction from the centroid; the centroid stays."""
    x = case.x
    if x.shape[1] <= 3:
        raise ValueError(f"radial probe: needs more than 3 particles; received shape {x.shape}")
    mu = geometry.centroid(x)[:, None, :]
    c = jnp.asarray(radial_factors(rng, x)[..., None], x.dtype)
    moved = mu + c * (x - mu)
    return _err(case.apply(moved), case.apply(x))


# Which probes apply to which kind; ``trivial`` means the input of this kind does not transform
# under the group, so the property holds for any layer that maps that kind to itself.
_TRIVIAL = {
    "features": {"SO3": "scalar features are rotation-invariant inputs",
                 "O3": "scalar features are reflection-invariant inputs",
                 "translation": "scalar features do not move under translation"},
    "vectors": {"translation": "vectors do not move under translation"},
}
_NOT_APPLICABLE = {
    "weights": {p: "a weight kernel has no nodes, batch or geometry"
                for p in ("SO3", "O3", "translation", "permutation", "batch", "padding",
                          "replication", "radial")},
    "features": {"radial": "no positions"},
    "vectors": {"radial": "no positions (node_scale measures per-node vector magnitude)"},
}


def _verdict(name: str, rel: float) -> str:
    if name in INVARIANCE_PROBES:
        return "invariant" if rel < HOLDS_TOL else ("sensitive" if rel > BROKEN_TOL else "partial")
    return "holds" if rel < HOLDS_TOL else ("broken" if rel > BROKEN_TOL else "approx")


def _short(e: Exception) -> str:
    msg = f"{type(e).__name__}: {e}"
    return msg if len(msg) < 240 else msg[:237] + "..."


def run_probe(name: str, cases: Sequence[Case], key, *, stateful: bool = False) -> ProbeResult:
    """Run probe ``name`` on every case (one per random input); worst case decides.

    For symmetry probes the value is the largest relative error; for invariance probes it is
    the largest relative change (so "invariant" means invariant on every input).
    """
    if name not in PROBES:
        raise ValueError(f"probe: expected one of {PROBES}; received {name!r}")
    kind = cases[0].kind
    if name in _NOT_APPLICABLE.get(kind, {}):
        return ProbeResult(name, None, "n/a", detail=_NOT_APPLICABLE[kind][name])
    if name in _TRIVIAL.get(kind, {}):
        return ProbeResult(name, 0.0, "trivial", detail=_TRIVIAL[kind][name])
    values, extra_vals = [], {}
    try:
        rng = rng_from_key(key)
        for i, case in enumerate(cases):
            k = jax.random.fold_in(key, i)
            if name in ("SO3", "O3", "translation", "permutation"):
                rel = _rel(*_group_error(case, name, k))
            elif name == "batch":
                rel = _rel(*_batch(case, rng))
                if stateful:
                    extra_vals.setdefault("eval", []).append(
                        _rel(*_batch(case, rng, training=False)))
            elif name == "padding":
                rel = _rel(*_padding(case, rng))
            elif name == "replication":
                rel = _rel(*_replication(case, rng))
            elif name in ("scale", "shift"):
                err, scale, (herr, hscale) = (_scale if name == "scale" else _shift)(case, rng)
                rel = _rel(err, scale)
                key_name = "homogeneous" if name == "scale" else "equivariant"
                extra_vals.setdefault(key_name, []).append(_rel(herr, hscale))
            elif name == "node_scale":
                rel = _rel(*_node_scale(case, rng))
            else:
                rel = _rel(*_radial(case, rng))
            values.append(rel)
    except Exception as e:  # noqa: BLE001 - a layer that cannot run a probe is a finding
        return ProbeResult(name, None, "error", detail=_short(e))
    value = float(max(values))
    extra = {k: float(max(v)) for k, v in extra_vals.items()}
    extra["values"] = [float(v) for v in values]
    return ProbeResult(name, value, _verdict(name, value), extra=extra)
