"""Equivariance test kit: measure and assert how a function transforms under E(3), S_N and batching.

Each positional argument and each output of ``fn`` is described by a *kind*, which says how a
group element acts on it:

=================  ====================  ==========  ============  ===============
kind               layout                rotation    translation   permutation
=================  ====================  ==========  ============  ===============
``"coordinates"``  ``[B, N, 3]``         ``x R^T``   ``x + t``     node axis 1
``"vectors"``      ``[B, N, ..., 3]``    ``v R^T``   unchanged     node axis 1
``"irreps"``       IrrepsArray [B,N,.]   D(R)        unchanged     node axis 1
``"features"``     ``[B, N, ...]``       unchanged   unchanged     node axis 1
``"mask"``         ``[B, N]``            unchanged   unchanged     node axis 1
``"edges"``        ``[B, N, N, ...]``    unchanged   unchanged     node axes 1, 2
``"point"``        ``[B, 3]``            ``p R^T``   ``p + t``     unchanged
``"direction"``    ``[B, 3]``            ``d R^T``   unchanged     unchanged
``"global"``       ``[B, ...]``          unchanged   unchanged     unchanged
``"static"``       anything              unchanged   unchanged     unchanged
=================  ====================  ==========  ============  ===============

Groups: ``"SO3"`` (a random rotation), ``"O3"`` (a random rotation times -I, i.e. an improper
element, so together with SO3 this covers O(3)), ``"translation"``, ``"permutation"`` (one
random node permutation), ``"batch"`` (sample 0's output must not change when the other
samples change). Aliases: ``"SE3" = (SO3, translation)``, ``"E3" = (SO3, O3, translation)``,
``"all"`` = every group.

Trained models on a data split (the N-body splits of :mod:`geonorm_jax.data`: dicts of
``loc, vel, charges, target`` and optionally ``mask``, each ``[S, N, ...]``) are measured with
one group element *per sample*: :func:`transform_split` applies per-sample rotations
``[S, 3, 3]``, translations ``[S, 3]`` and node permutations ``[S, N]`` to a split,
:func:`transform_positions` applies them to predictions ``[..., S, N, 3]``,
:func:`equivariance_residual` is ``f(g.x) - g.f(x)``, and :func:`model_equivariance_errors`
reduces it to relative RMS errors. The RTE evaluation of :mod:`geonorm_jax.train.evaluate`
(the GeoNorm paper's Table 1) and the experiments' equivariance tables are built on these.

The module is one thing, the package's single implementation of "apply a group element, compare
``f(g.x)`` with ``g.f(x)``", for functions and for trained models; hence its length.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import chex
import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np

from geonorm_jax import geometry

__all__ = [
    "GROUPS",
    "equivariance_errors",
    "assert_equivariant",
    "infer_kinds",
    "transform_split",
    "transform_positions",
    "equivariance_residual",
    "random_split_transforms",
    "model_equivariance_errors",
]

GROUPS = ("SO3", "O3", "translation", "permutation", "batch")
_ALIASES = {
    "SE3": ("SO3", "translation"),
    "E3": ("SO3", "O3", "translation"),
    "all": GROUPS,
}
_NODE_KINDS = {"coordinates", "vectors", "irreps", "features", "mask"}
_KINDS = _NODE_KINDS | {"edges", "point", "direction", "global", "static"}


def _expand_groups(group: str | Sequence[str]) -> tuple[str, ...]:
    names = (group,) if isinstance(group, str) else tuple(group)
    out: list[str] = []
    for name in names:
        for g in _ALIASES.get(name, (name,)):
            if g not in GROUPS:
                raise ValueError(
                    f"group: expected one of {GROUPS + tuple(_ALIASES)}; received {name!r}"
                )
            if g not in out:
                out.append(g)
    return tuple(out)


def infer_kinds(args: Sequence) -> tuple[str, ...]:
    """Guess kinds: IrrepsArray: irreps; ``[B,N,3]``: coordinates; bool: mask; else features."""
    kinds = []
    for a in args:
        if isinstance(a, e3nn.IrrepsArray):
            kinds.append("irreps")
        elif a is None:
            kinds.append("static")
        elif jnp.asarray(a).dtype == jnp.bool_:
            kinds.append("mask")
        elif a.ndim == 3 and a.shape[-1] == 3:
            kinds.append("coordinates")
        elif a.ndim == 4 and a.shape[-1] == 3:
            kinds.append("vectors")
        else:
            kinds.append("features")
    return tuple(kinds)


def _act(x, kind: str, group: str, element):
    """Apply one group element to ``x`` of the given kind."""
    if x is None or kind == "static":
        return x
    if kind not in _KINDS:
        raise ValueError(f"kind: expected one of {sorted(_KINDS)}; received {kind!r}")
    if group in ("SO3", "O3"):
        if kind in ("coordinates", "vectors", "point", "direction", "irreps"):
            return geometry.rotate(x, element)
        return x
    if group == "translation":
        if kind == "coordinates":
            return x + element[:, None, :].astype(x.dtype)
        if kind == "point":
            return x + element.astype(x.dtype)
        return x
    if group == "permutation":
        if kind in _NODE_KINDS:
            return geometry.permute_nodes(x, element, axes=(1,))
        if kind == "edges":
            return geometry.permute_nodes(x, element, axes=(1, 2))
        return x
    raise AssertionError(group)


def _as_array(x) -> jax.Array:
    return x.array if isinstance(x, e3nn.IrrepsArray) else jnp.asarray(x)


def _num_nodes_and_batch(args, kinds) -> tuple[int, int, jnp.dtype]:
    for a, k in zip(args, kinds, strict=True):
        if k in _NODE_KINDS and a is not None:
            arr = _as_array(a)
            dtype = arr.dtype if jnp.issubdtype(arr.dtype, jnp.floating) else jnp.float32
            return arr.shape[1], arr.shape[0], dtype
    raise ValueError("equivariance_errors: expected at least one node-indexed argument [B, N, ...]")


def _perturb_other_samples(key, args, kinds):
    """Replace samples 1..B-1 of every float argument with fresh noise; keep sample 0."""
    out = []
    for i, (a, k) in enumerate(zip(args, kinds, strict=True)):
        if a is None or k == "static":
            out.append(a)
            continue
        arr = _as_array(a)
        if not jnp.issubdtype(arr.dtype, jnp.floating) or arr.shape[0] < 2:
            out.append(a)
            continue
        noise = 3.0 * jax.random.normal(jax.random.fold_in(key, i), arr.shape, arr.dtype) + 2.0
        new = arr.at[1:].set(noise[1:])
        out.append(e3nn.IrrepsArray(a.irreps, new) if isinstance(a, e3nn.IrrepsArray) else new)
    return tuple(out)


def _outputs(fn, args):
    y = fn(*args)
    return y if isinstance(y, tuple) else (y,)


def _rel_err(a, b) -> tuple[float, float]:
    a, b = np.asarray(_as_array(a), np.float64), np.asarray(_as_array(b), np.float64)
    err = float(np.max(np.abs(a - b))) if a.size else 0.0
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    return err, scale


def _transformed_pairs(fn, key, args, group, kinds, out_kinds, translation_scale):
    """Yield ``(group, fn(g.x), g.fn(x))`` for every requested group (batch: sample 0 only)."""
    num_nodes, batch, dtype = _num_nodes_and_batch(args, kinds)
    ys = _outputs(fn, args)
    if len(out_kinds) != len(ys):
        raise ValueError(f"out_kinds: expected {len(ys)} entries; got {len(out_kinds)}")
    wanted = _expand_groups(group)
    keys = jax.random.split(key, len(GROUPS))
    for g, k in zip(GROUPS, keys, strict=True):
        if g not in wanted:
            continue
        if g == "batch":
            if batch < 2:
                raise ValueError(f"group 'batch': expected batch >= 2; received batch {batch}")
            y2 = _outputs(fn, _perturb_other_samples(k, args, kinds))
            yield g, tuple(_as_array(a)[:1] for a in y2), tuple(_as_array(b)[:1] for b in ys)
            continue
        if g == "SO3":
            element = geometry.random_rotation(k, (), dtype)
        elif g == "O3":
            element = geometry.random_reflection(k, (), dtype)
        elif g == "translation":
            element = geometry.random_translation(k, (batch,), translation_scale, dtype)
        else:
            element = geometry.random_permutation(k, num_nodes)
        gx = tuple(_act(a, kd, g, element) for a, kd in zip(args, kinds, strict=True))
        y_of_gx = tuple(_as_array(y) for y in _outputs(fn, gx))
        g_of_y = tuple(
            _as_array(_act(y, kd, g, element)) for y, kd in zip(ys, out_kinds, strict=True)
        )
        yield g, y_of_gx, g_of_y


def _resolve_kinds(fn, args, kinds, out_kinds):
    kinds = tuple(kinds) if kinds is not None else infer_kinds(args)
    if len(kinds) != len(args):
        raise ValueError(f"kinds: expected {len(args)} entries, one per argument; got {len(kinds)}")
    if out_kinds is None:
        out_kinds = infer_kinds(_outputs(fn, args))
    return kinds, tuple(out_kinds)


def equivariance_errors(
    fn: Callable,
    key: jax.Array,
    *args,
    group: str | Sequence[str] = "all",
    kinds: Sequence[str] | None = None,
    out_kinds: Sequence[str] | None = None,
    translation_scale: float = 3.0,
) -> dict[str, tuple[float, float]]:
    """Measure ``max |fn(g.x) - g.fn(x)|`` for each group ``g``.

    Args:
      fn: ``fn(*args) -> output`` or a tuple of outputs.
      key: PRNG key for the random group elements.
      *args: inputs, batch axis first.
      group: group names or aliases (see module docstring).
      kinds: how each argument transforms; inferred by :func:`infer_kinds` when None.
      out_kinds: how each output transforms; inferred from the outputs when None.
      translation_scale: standard deviation of the random translation.

    Returns:
      ``{group: (max_abs_error, max_abs_reference)}``; the relative error is their ratio.
      For ``"batch"`` the error is the change of sample 0's outputs when samples 1..B-1
      are replaced by noise.
    """
    kinds, out_kinds = _resolve_kinds(fn, args, kinds, out_kinds)
    results: dict[str, tuple[float, float]] = {}
    for g, lhs, rhs in _transformed_pairs(
        fn, key, args, group, kinds, out_kinds, translation_scale
    ):
        errs = [_rel_err(a, b) for a, b in zip(lhs, rhs, strict=True)]
        results[g] = (max(e for e, _ in errs), max(s for _, s in errs))
    return results


def assert_equivariant(
    fn: Callable,
    key: jax.Array,
    *args,
    group: str | Sequence[str] = "all",
    kinds: Sequence[str] | None = None,
    out_kinds: Sequence[str] | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    translation_scale: float = 3.0,
) -> None:
    """Assert that ``fn`` is equivariant (or invariant, per ``out_kinds``) under ``group``.

    For each group in ``group`` it checks ``fn(g.x) == g.fn(x)`` with
    ``chex.assert_trees_all_close(..., atol=atol, rtol=rtol)`` (element-wise), and the
    failure message names the group. See :func:`equivariance_errors` for the arguments.

    Example::

        y = lambda x, mu0: norm.apply(params, state, x, mu0=mu0)[0]
        assert_equivariant(y, key, x, mu0, group="E3", kinds=("coordinates", "point"))
    """
    kinds, out_kinds = _resolve_kinds(fn, args, kinds, out_kinds)
    for g, lhs, rhs in _transformed_pairs(
        fn, key, args, group, kinds, out_kinds, translation_scale
    ):
        try:
            chex.assert_trees_all_close(lhs, rhs, atol=atol, rtol=rtol)
        except AssertionError as e:
            err = max(_rel_err(a, b)[0] for a, b in zip(lhs, rhs, strict=True))
            raise AssertionError(
                f"not {g}-equivariant: max |f(g.x) - g.f(x)| = {err:.3e} "
                f"(atol={atol:.1e}, rtol={rtol:.1e})"
            ) from e


# --- trained models on a data split: one group element per sample --------------------------


def _check_elements(num: int, num_nodes: int, rotation, translation, permutation) -> None:
    for name, value, shape in (
        ("rotation", rotation, (num, 3, 3)),
        ("translation", translation, (num, 3)),
        ("permutation", permutation, (num, num_nodes)),
    ):
        if value is not None and tuple(np.shape(value)) != shape:
            raise ValueError(
                f"{name}: expected shape {list(shape)} (one per sample); "
                f"received {list(np.shape(value))}"
            )


def _rotate_samples(a, rotation):
    """``a [..., S, N, 3] @ R_s^T`` for each sample ``s``; NumPy stays NumPy."""
    xp = np if isinstance(a, np.ndarray) else jnp
    return xp.einsum("...snj,sij->...sni", a, rotation.astype(a.dtype))


def _permute_samples(a, permutation, node_axis: int = 1):
    """``a[s, P_s[i]]`` along ``node_axis`` (the sample axis is the one before it)."""
    xp = np if isinstance(a, np.ndarray) else jnp
    lead = node_axis - 1
    index = permutation.reshape(*([1] * lead), *permutation.shape,
                                *([1] * (a.ndim - node_axis - 1)))
    return xp.take_along_axis(a, index, axis=node_axis)


def transform_positions(x, *, rotation=None, translation=None, permutation=None):
    """One group element per sample acting on positions ``x [..., S, N, 3]``.

    ``x_s -> (x_s R_s^T + t_s)[P_s]``: rotation ``R [S, 3, 3]``, translation ``t [S, 3]`` and
    node permutation ``P [S, N]`` (``x'[s, i] = x[s, P_s[i]]``), each optional. Leading axes
    (e.g. seeds) are kept; a NumPy ``x`` gives a NumPy result in its dtype (float64 stays
    float64), a JAX array a JAX array.
    """
    num, num_nodes = np.shape(x)[-3], np.shape(x)[-2]
    _check_elements(num, num_nodes, rotation, translation, permutation)
    if rotation is not None:
        x = _rotate_samples(x, rotation)
    if translation is not None:
        x = x + translation.astype(x.dtype)[:, None, :]
    if permutation is not None:
        x = _permute_samples(x, permutation, node_axis=x.ndim - 2)
    return x


def transform_split(data: dict, *, rotation=None, translation=None, permutation=None) -> dict:
    """One group element per sample acting on a split ``{name: [S, N, ...]}``.

    ``loc`` and ``target`` transform as positions (:func:`transform_positions`), ``vel`` as
    vectors (rotated and permuted, not translated), every other entry (``charges [S, N, 1]``,
    ``mask [S, N]``) as node features (permuted only).

    Args:
      data: the split; ``loc [S, N, 3]`` is required.
      rotation: ``[S, 3, 3]`` or None.
      translation: ``[S, 3]`` or None.
      permutation: ``[S, N]`` integer node orders or None.

    Returns:
      A new dict with the same keys.
    """
    if "loc" not in data or np.ndim(data["loc"]) != 3 or np.shape(data["loc"])[-1] != 3:
        shape = list(np.shape(data["loc"])) if "loc" in data else None
        raise ValueError(f"data['loc']: expected shape [S, N, 3]; received {shape}")
    num, num_nodes = np.shape(data["loc"])[:2]
    _check_elements(num, num_nodes, rotation, translation, permutation)
    out = dict(data)
    if rotation is not None:
        for name in ("loc", "vel", "target"):
            if name in out:
                out[name] = _rotate_samples(out[name], rotation)
    if translation is not None:
        for name in ("loc", "target"):
            if name in out:
                out[name] = out[name] + translation.astype(out[name].dtype)[:, None, :]
    if permutation is not None:
        out = {name: _permute_samples(a, permutation) for name, a in out.items()}
    return out


def equivariance_residual(prediction_of_transformed, prediction, **element):
    """``f(g.x) - g.f(x)`` for predicted positions ``[..., S, N, 3]``.

    Args:
      prediction_of_transformed: ``f(g.x)``, the model's output on
        ``transform_split(x, **element)``.
      prediction: ``f(x)``.
      **element: ``rotation``, ``translation``, ``permutation`` as in
        :func:`transform_positions`.
    """
    return prediction_of_transformed - transform_positions(prediction, **element)


def random_split_transforms(key: jax.Array, data: dict, *, translation_scale: float = 1.0,
                            dtype=jnp.float32) -> dict:
    """One random group element per sample of ``data``.

    ``jax.random.split(key, 3)`` gives the keys of: a Haar-random rotation ``[S, 3, 3]``
    (:func:`geonorm_jax.geometry.random_rotation`), a translation ``[S, 3]`` drawn from
    ``N(0, tau^2 I_3)`` with ``tau = translation_scale * std(data["loc"])`` (all components),
    and a uniformly random node permutation ``[S, N]`` per sample.

    Returns:
      ``{"rotation", "translation", "permutation"}``, the keyword arguments of
      :func:`transform_split` and :func:`model_equivariance_errors`.
    """
    num, num_nodes = np.shape(data["loc"])[:2]
    k_rot, k_trans, k_perm = jax.random.split(key, 3)
    tau = translation_scale * jnp.std(data["loc"])
    return {
        "rotation": geometry.random_rotation(k_rot, (num,), dtype=dtype),
        "translation": geometry.random_translation(k_trans, (num,), 1.0, dtype) * tau,
        "permutation": jax.vmap(lambda k: geometry.random_permutation(k, num_nodes))(
            jax.random.split(k_perm, num)
        ),
    }


def model_equivariance_errors(predict: Callable, data: dict, *, rotation, translation,
                              permutation) -> dict:
    """Relative equivariance errors of a trained model on a split, one per group.

    With ``y = predict(data)`` (predicted positions ``[S, N, 3]``) and
    ``scale = rms(y - centroid(y))`` (over samples, nodes and the 3 axes), for ``g`` the
    per-sample rotation (``"rot"``), translation (``"trans"``) and node permutation
    (``"perm"``)::

        error_g = rms(predict(g.data) - g.y) / scale

    (:func:`equivariance_residual`). An equivariant model gives float rounding (about 1e-7
    in float32). Jittable; ``jax.vmap`` it over stacked parameters to measure several seeds.

    Args:
      predict: ``data -> positions [S, N, 3]`` (evaluation mode).
      data: the split (see :func:`transform_split`).
      rotation, translation, permutation: one element per sample
        (:func:`random_split_transforms`).

    Returns:
      ``{"rot", "trans", "perm"}`` scalar arrays.
    """
    y = predict(data)
    scale = jnp.sqrt(jnp.mean(jnp.square(y - jnp.mean(y, axis=1, keepdims=True))))
    out = {}
    for name, element in (("rot", {"rotation": rotation}),
                          ("trans", {"translation": translation}),
                          ("perm", {"permutation": permutation})):
        residual = equivariance_residual(predict(transform_split(data, **element)), y, **element)
        out[name] = jnp.sqrt(jnp.mean(jnp.square(residual))) / scale
    return out
