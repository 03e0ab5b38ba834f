"""The inputs of the geometric-match audit: a :class:`Case` is a ``Norm`` with trained-like
parameters, one random input of its kind and the context it needs.

Inputs (:func:`make_case`), batch ``B = 3``, ``N = 6`` nodes, ``C = 4`` channels by default:

* coordinates ``[B, N, 3]``: a unit-spread cloud around a centroid away from the origin, with
  ``mu0 [B, 3]`` (GeoNorm's stored input centroid) the centroid plus a unit normal offset;
* vectors ``[B, N, C, 3]``: standard normal;
* features ``[B, N, C]``: ``1.5 n`` plus a per-channel offset, so mean subtraction has
  something to remove;
* weights ``[C + 1, C + 2]``: normal, scaled by ``1 / sqrt(C)``.

Parameters and running state come from ``norm.init`` and are moved away from their initial
values by :func:`perturb_like_trained`, so a layer whose initial ``g = 1, b = 0`` would hide a
broken symmetry is measured as it would be after training. Random numbers come from NumPy,
seeded from the JAX key (:func:`rng_from_key`): eager ``jax.random`` compiles once per new
shape, which would dominate the audit's run time on these tiny arrays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from geonorm_jax import geometry

__all__ = [
    "Case",
    "CONTEXT_BUILDERS",
    "NUM_SPECIES",
    "make_case",
    "perturb_like_trained",
    "rng_from_key",
    "normal",
    "clear_jit_cache",
]


@dataclasses.dataclass
class Case:
    """A ``Norm`` ready to probe: parameters, state, one input ``x`` and its context.

    Attributes:
      norm: the layer.
      kind: ``features | vectors | coordinates | weights``.
      params, state: trained-like parameters and running state.
      x: the input (layout of ``kind``).
      context: ``{name: array}`` passed to ``apply`` as keywords.
      context_kinds: ``{name: testing kind}`` (``"point"`` for ``mu0``, ``"features"`` for a
        node-indexed message).
      training: the ``training`` flag for ``apply``.
    """

    norm: Any
    kind: str
    params: Any
    state: Any
    x: jax.Array
    context: dict
    context_kinds: dict
    training: bool = True
    cache: dict = dataclasses.field(default_factory=dict, repr=False)
    jit: bool = True

    def apply(self, x, training: bool | None = None, mask=None, **context):
        ctx = {**self.context, **context}
        kw = {} if mask is None else {"mask": mask}
        training = self.training if training is None else training
        if self.jit:
            fn = _jitted(self.norm.apply)
            return fn(self.params, self.state, x, training=training, **kw, **ctx)
        y, _ = self.norm.apply(self.params, self.state, x, training=training, **kw, **ctx)
        return y


_JIT_CACHE: dict = {}


def clear_jit_cache() -> None:
    """Drop the compiled ``apply`` functions of :meth:`Case.apply` (one per layer; the audit
    clears them after each layer so a whole-catalogue audit does not keep them all)."""
    _JIT_CACHE.clear()


def _jitted(apply):
    """``jax.jit`` of ``apply`` returning only ``y``, one per apply function (so the cases of
    one layer share compilations)."""
    fn = _JIT_CACHE.get(apply)
    if fn is None:
        fn = jax.jit(lambda p, s, x, **kw: apply(p, s, x, **kw)[0], static_argnames=("training",))
        _JIT_CACHE[apply] = fn
    return fn


# ------------------------------------------------------------------------------- inputs

def rng_from_key(key) -> np.random.Generator:
    """A NumPy generator seeded by a JAX PRNG key (raw ``uint32[2]`` or typed)."""
    if jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.random.default_rng(np.asarray(key, np.uint32).ravel().tolist())


def normal(rng, shape, dtype) -> jax.Array:
    """Standard normal ``shape`` array of ``dtype`` from the NumPy generator ``rng``."""
    return jnp.asarray(rng.standard_normal(shape), dtype)


def _random_input(rng, kind: str, batch: int, nodes: int, channels: int, dtype):
    if kind == "coordinates":  # a cloud of unit spread around a centroid away from the origin
        return normal(rng, (batch, nodes, 3), dtype) + 2.0 * normal(rng, (batch, 1, 3), dtype)
    if kind == "vectors":
        return normal(rng, (batch, nodes, channels, 3), dtype)
    if kind == "features":  # per-channel offsets, so mean subtraction has something to remove
        return (1.5 * normal(rng, (batch, nodes, channels), dtype)
                + normal(rng, (1, 1, channels), dtype))
    if kind == "weights":
        return normal(rng, (channels + 1, channels + 2), dtype) / float(np.sqrt(channels))
    raise ValueError(
        f"kind: expected one of features, vectors, coordinates, weights; received {kind!r}"
    )


def _mu0(rng, x):
    """A reference centroid: the centroid of an earlier configuration, offset from mu(x)."""
    return geometry.centroid(x) + normal(rng, x.shape[:1] + (3,), x.dtype)


def _message(rng, x):
    return normal(rng, x.shape[:3], x.dtype)


def _positions(rng, x):
    """Atom positions ``[B, N, 3]`` (spread 1.5, so most pairs lie within MACE's 5 Å cutoff)
    for layers that read distances (``mace_density_norm``). Registered with the testing kind
    ``"features"`` so the padding and replication probes pad and duplicate them with the
    nodes; the layers use only distances, which no rotation or translation changes."""
    return 1.5 * normal(rng, x.shape[:2] + (3,), x.dtype)


#: atom types drawn by :func:`_species` (the ``species_neighbor_norm`` entry has 3 values)
NUM_SPECIES = 3


def _species(rng, x):
    """Atom types ``[B, N]`` for per-species layers: integer values in ``[0, NUM_SPECIES)``
    held in ``x``'s float dtype, so the probes' float noise (batch, padding) can replace them
    without a cast; the layers round them down and clip them to their type range."""
    return jnp.asarray(rng.integers(0, NUM_SPECIES, x.shape[:2]), x.dtype)


#: Context the audit can build: ``name -> (testing kind, builder(rng, x) -> array)`` with
#: ``rng`` a ``numpy.random.Generator``. Add an entry (or pass ``context_builders=`` to
#: :func:`make_case`) for a layer of your own.
CONTEXT_BUILDERS: dict[str, tuple[str, Callable]] = {
    "mu0": ("point", _mu0),
    "message": ("features", _message),
    "positions": ("features", _positions),
    "species": ("features", _species),
}


def perturb_like_trained(rng, tree, noise: float = 0.3):
    """Trained-like values: positive leaves get ``p * exp(noise * n)`` (stay positive, e.g.
    scales and variances), other float leaves ``p + noise * n``; integer leaves are kept.

    ``rng`` is a ``numpy.random.Generator`` or a JAX key.
    """
    if not isinstance(rng, np.random.Generator):
        rng = rng_from_key(rng)
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    out = []
    for leaf in leaves:
        arr = np.asarray(leaf)
        if not np.issubdtype(arr.dtype, np.floating):
            out.append(leaf)
            continue
        n = rng.standard_normal(arr.shape)
        if arr.size and bool(np.all(arr > 0)):
            new = arr * np.exp(noise * n)
        else:
            new = arr + noise * n
        out.append(jnp.asarray(new, arr.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


def make_case(
    norm,
    kind: str,
    key,
    *,
    batch: int = 3,
    nodes: int = 6,
    channels: int = 4,
    context: Sequence[str] = (),
    context_builders: dict | None = None,
    training: bool = True,
    noise: float = 0.3,
    dtype=None,
) -> Case:
    """Build a :class:`Case`: a random input of ``kind``, its context, init + perturbed params.

    ``context`` names the keywords ``apply`` needs (``mu0`` is always built for coordinates;
    names without a builder are skipped, so optional context such as ``num_neighbors`` is left
    to the layer's default).
    """
    dtype = dtype or (jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    builders = {**CONTEXT_BUILDERS, **(context_builders or {})}
    rng = rng_from_key(key)
    x = _random_input(rng, kind, batch, nodes, channels, dtype)
    names = list(dict.fromkeys(list(context) + (["mu0"] if kind == "coordinates" else [])))
    ctx, ctx_kinds = {}, {}
    for name in names:
        if name not in builders:
            continue
        ckind, build = builders[name]
        ctx[name] = build(rng, x)
        ctx_kinds[name] = ckind
    params, state = norm.init(key, x, **ctx)
    params = perturb_like_trained(rng, params, noise)
    state = perturb_like_trained(rng, state, noise)
    return Case(norm, kind, params, state, x, ctx, ctx_kinds, training)
