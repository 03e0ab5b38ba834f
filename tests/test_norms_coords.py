"""Tests for geonorm_jax.norms.coords: the GeoNorm paper's Eqs. 3-5, Lemmas 1-5 and Theorem 1.

Tolerances: exactness claims (Lemmas 2-5 on the equivariant side, Theorem 1) are checked in
float64 to 1e-10; float32 checks use 1e-4. "Clearly broken" claims (Lemma 1, Lemma 2's
translation, per-particle permutation) require a relative error above 5e-2.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geonorm_jax import geometry
from geonorm_jax.norms import coords
from geonorm_jax.testing import assert_equivariant, equivariance_errors

B, N = 3, 7
GEO_NAMES = ("geo_norm", "geo_norm_system", "geo_norm_shared", "geo_norm_particle_sigma_shared")
ALL = {e.name: e for e in coords.CATALOG_ENTRIES}
EXACT = 1e-10


def _x(seed=0, shape=(B, N, 3), dtype=jnp.float64, scale=2.0, shift=1.5):
    return (scale * jax.random.normal(jax.random.PRNGKey(seed), shape) + shift).astype(dtype)


def _mu0(seed=1, dtype=jnp.float64):
    # The centroid of some other input configuration: a point, not the layer input's centroid.
    return geometry.centroid(_x(seed, dtype=dtype))


def _random_params(params, seed=3):
    """Non-trivial params: every leaf perturbed, so per-particle g_i (and b_i) are distinct."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), max(len(leaves), 1))[: len(leaves)]
    new = [
        leaf + 0.5 * jax.random.normal(k, jnp.shape(leaf), leaf.dtype)
        for leaf, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree.unflatten(tree, new)


def _setup(name, x, seed=3):
    norm = ALL[name].make()
    params, state = norm.init(jax.random.PRNGKey(0), x)
    return norm, _random_params(params, seed), state


def _fn(norm, params, state):
    """``f(x, mu0[, mask]) -> y`` for the equivariance kit."""

    def f(x, mu0=None, mask=None):
        return norm.apply(params, state, x, mask=mask, mu0=mu0)[0]

    return f


def _rel(errors, group):
    err, scale = errors[group]
    return err / max(scale, 1e-30)


# ------------------------------------------------------------------------------------------
# NumPy references, written from the paper's equations
# ------------------------------------------------------------------------------------------


def np_layer_norm_coords(x, g, b, eps):
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    for bi, i in itertools.product(range(x.shape[0]), range(x.shape[1])):
        v = x[bi, i]
        mu = v.sum() / 3.0
        sd = np.sqrt(((v - mu) ** 2).sum() / 3.0 + eps)
        out[bi, i] = g[i, 0] * (v - mu) / sd + b[i]
    return out


def np_scale_norm(x, g, norm, eps):
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    for bi, i in itertools.product(range(x.shape[0]), range(x.shape[1])):
        v = x[bi, i]
        sq = v @ v if norm == "l2" else v @ v / 3.0
        gi = g[i, 0] if np.ndim(g) == 2 else g
        out[bi, i] = gi * v / np.sqrt(sq + eps)
    return out


def np_geo_norm(x, mu0, g, b, sigma, eps, mask=None):
    """Eq. 5; sigma='particle': sigma_i = ||x_i - mu||; 'system': RMS over real i and d."""
    x, mu0 = np.asarray(x, np.float64), np.asarray(mu0, np.float64)
    out = x.copy()  # padded particles pass through
    for bi in range(x.shape[0]):
        real = np.arange(x.shape[1]) if mask is None else np.flatnonzero(np.asarray(mask[bi]))
        pts = x[bi, real]
        mu = pts.mean(axis=0)
        d = pts - mu
        if sigma == "particle":
            s = np.sqrt((d**2).sum(axis=1) + eps)[:, None]
        else:
            s = np.sqrt((d**2).mean() + eps)
        u = (mu - mu0[bi]) / np.linalg.norm(mu - mu0[bi])
        gi = np.asarray(g)[real] if np.ndim(g) == 2 else g
        bb = np.asarray(b)[real] if np.ndim(b) == 2 else b
        out[bi, real] = gi * d / s + bb * u + mu0[bi]
    return out


# ------------------------------------------------------------------------------------------
# Lemmas 1-5
# ------------------------------------------------------------------------------------------


def test_lemma1_layer_norm_on_coordinates_is_neither_rotation_nor_translation_equivariant():
    x = _x()
    norm, params, state = _setup("layer_norm_coords", x)
    errors = equivariance_errors(
        _fn(norm, params, state), jax.random.PRNGKey(5), x, group=("SO3", "O3", "translation")
    )
    for group in ("SO3", "O3", "translation"):
        assert _rel(errors, group) > 5e-2, (group, errors)


@pytest.mark.parametrize("name", ["scale_norm_l2", "scale_norm_rms"])
def test_lemma2_scale_norm_rotation_but_not_translation_equivariant(name):
    x = _x()
    norm, params, state = _setup(name, x)
    f = _fn(norm, params, state)
    assert_equivariant(f, jax.random.PRNGKey(5), x, group=("SO3", "O3"), atol=EXACT, rtol=EXACT)
    errors = equivariance_errors(f, jax.random.PRNGKey(6), x, group="translation")
    assert _rel(errors, "translation") > 5e-2, errors


@pytest.mark.parametrize("masked", [False, True])
def test_lemma3_centroid_is_rotation_and_translation_equivariant(masked):
    x = _x()
    mask = jnp.arange(N)[None, :] < jnp.array([N, 4, 1])[:, None]
    args, kinds = ((x, mask), ("coordinates", "mask")) if masked else ((x,), ("coordinates",))
    assert_equivariant(
        lambda *a: geometry.centroid(*a),
        jax.random.PRNGKey(7),
        *args,
        group=("SO3", "O3", "translation", "permutation"),
        kinds=kinds,
        out_kinds=("point",),
        atol=EXACT,
        rtol=EXACT,
    )


@pytest.mark.parametrize("reading", ["particle", "system"])
def test_lemma4_sigma_is_invariant(reading):
    x = _x()
    f = lambda x: coords.geo_statistics(x, sigma=reading)[1]
    assert_equivariant(
        f,
        jax.random.PRNGKey(8),
        x,
        group=("SO3", "O3", "translation", "permutation"),
        out_kinds=("features",),
        atol=EXACT,
        rtol=EXACT,
    )
    # and it is what the paper says it is
    mu = np.asarray(x).mean(axis=1, keepdims=True)
    dist = np.linalg.norm(np.asarray(x) - mu, axis=-1)
    expected = dist if reading == "particle" else np.sqrt((dist**2).mean(1, keepdims=True) / 3)
    np.testing.assert_allclose(np.asarray(f(x))[..., 0], np.broadcast_to(expected, (B, N)))


@pytest.mark.parametrize("reading", ["particle", "system"])
def test_lemma5_scaled_offsets_rotation_equivariant_translation_invariant(reading):
    x = _x()

    def f(x):
        mu, sigma = coords.geo_statistics(x, sigma=reading)
        return (x - mu[:, None]) / sigma

    assert_equivariant(
        f,
        jax.random.PRNGKey(9),
        x,
        group=("SO3", "O3", "translation", "permutation"),
        out_kinds=("vectors",),  # rotate, do not translate
        atol=EXACT,
        rtol=EXACT,
    )


# ------------------------------------------------------------------------------------------
# Theorem 1 and permutations
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GEO_NAMES)
@pytest.mark.parametrize("masked", [False, True])
def test_theorem1_geo_norm_is_e3_equivariant_float64(name, masked):
    x, mu0 = _x(), _mu0()
    norm, params, state = _setup(name, x)
    f = _fn(norm, params, state)
    if masked:
        mask = jnp.arange(N)[None, :] < jnp.array([N, 5, 2])[:, None]
        args, kinds = (x, mu0, mask), ("coordinates", "point", "mask")
    else:
        args, kinds = (x, mu0), ("coordinates", "point")
    # SO3 rotation, O3 improper element (rotation times -I), translation.
    assert_equivariant(
        f, jax.random.PRNGKey(10), *args, group="E3", kinds=kinds, atol=EXACT, rtol=EXACT
    )


@pytest.mark.parametrize("name", GEO_NAMES)
def test_theorem1_geo_norm_float32(name):
    x, mu0 = _x(dtype=jnp.float32), _mu0(dtype=jnp.float32)
    norm, params, state = _setup(name, x)
    assert_equivariant(
        _fn(norm, params, state),
        jax.random.PRNGKey(11),
        x,
        mu0,
        group="E3",
        kinds=("coordinates", "point"),
        atol=1e-4,
        rtol=1e-4,
    )


@pytest.mark.parametrize("name", ["geo_norm", "geo_norm_system"])
def test_per_particle_params_break_permutation_equivariance(name):
    x, mu0 = _x(), _mu0()
    norm, params, state = _setup(name, x)
    assert len(np.unique(np.asarray(params["scale"]))) == N  # distinct g_i
    errors = equivariance_errors(
        _fn(norm, params, state),
        jax.random.PRNGKey(12),
        x,
        mu0,
        group="permutation",
        kinds=("coordinates", "point"),
    )
    assert _rel(errors, "permutation") > 5e-2, errors


@pytest.mark.parametrize("name", ["geo_norm_shared", "geo_norm_particle_sigma_shared"])
def test_shared_params_keep_permutation_equivariance(name):
    x, mu0 = _x(), _mu0()
    norm, params, state = _setup(name, x)
    assert params["scale"].shape == ()
    assert_equivariant(
        _fn(norm, params, state),
        jax.random.PRNGKey(12),
        x,
        mu0,
        group=("permutation", "batch"),
        kinds=("coordinates", "point"),
        atol=EXACT,
        rtol=EXACT,
    )


def test_particle_sigma_puts_every_particle_at_distance_g_from_the_centroid():
    x, mu0 = _x(), _mu0()
    norm, params, state = _setup("geo_norm", x)
    params = {"scale": params["scale"], "bias": jnp.zeros_like(params["bias"])}
    y = norm.apply(params, state, x, mu0=mu0)[0]
    dist = np.linalg.norm(np.asarray(y - mu0[:, None]), axis=-1)
    expected = np.abs(np.asarray(params["scale"]))[:, 0] * np.sqrt(
        1.0 / (1.0 + 1e-6 / np.linalg.norm(np.asarray(x - x.mean(1, keepdims=True)), axis=-1) ** 2)
    )
    np.testing.assert_allclose(dist, expected, rtol=1e-9)


# ------------------------------------------------------------------------------------------
# NumPy references
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GEO_NAMES)
@pytest.mark.parametrize("masked", [False, True])
def test_geo_norm_matches_numpy_eq5(name, masked):
    x, mu0 = _x(), _mu0()
    norm, params, state = _setup(name, x)
    mask = (jnp.arange(N)[None, :] < jnp.array([N, 5, 2])[:, None]) if masked else None
    y = norm.apply(params, state, x, mask=mask, mu0=mu0)[0]
    reading = ALL[name].kwargs["sigma"]
    ref = np_geo_norm(x, mu0, params["scale"], params["bias"], reading, 1e-6, mask)
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-12, atol=1e-12)


def test_layer_norm_coords_matches_numpy_eq3():
    x = _x()
    norm, params, state = _setup("layer_norm_coords", x)
    y = norm.apply(params, state, x)[0]
    ref = np_layer_norm_coords(x, np.asarray(params["scale"]), np.asarray(params["bias"]), 1e-5)
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("norm_kind", ["l2", "rms"])
@pytest.mark.parametrize("per_particle", [True, False])
def test_scale_norm_matches_numpy_eq4(norm_kind, per_particle):
    x = _x()
    norm = coords.scale_norm(norm=norm_kind, per_particle=per_particle)
    params, state = norm.init(jax.random.PRNGKey(0), x)
    params = _random_params(params)
    y = norm.apply(params, state, x)[0]
    ref = np_scale_norm(x, np.asarray(params["scale"]), norm_kind, 1e-8)
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------
# Masking, shapes, dtypes, jit
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ALL))
def test_padding_does_not_change_real_outputs(name):
    x, mu0 = _x(), _mu0()
    norm, params, state = _setup(name, x)
    mask = jnp.arange(N)[None, :] < jnp.array([N, 5, 3])[:, None]
    y1 = norm.apply(params, state, x, mask=mask, mu0=mu0)[0]
    x2 = jnp.where(mask[..., None], x, 1e3 * _x(seed=9))  # garbage in the padded slots
    y2 = norm.apply(params, state, x2, mask=mask, mu0=mu0)[0]
    m = np.asarray(mask)
    np.testing.assert_allclose(np.asarray(y1)[m], np.asarray(y2)[m], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(np.asarray(y2)[~m], np.asarray(x2)[~m])  # passed through
    # and the real outputs equal those of the unpadded graph (sample 1: 5 real particles)
    sub = x[1:2, :5]
    sub_params = jax.tree.map(lambda p: p[:5] if jnp.ndim(p) == 2 else p, params)
    y_sub = norm.apply(sub_params, state, sub, mu0=mu0[1:2])[0]
    np.testing.assert_allclose(np.asarray(y1)[1, :5], np.asarray(y_sub)[0], rtol=1e-12)


@pytest.mark.parametrize("name", sorted(ALL))
def test_float32_in_float32_out_and_jit_agrees(name):
    x, mu0 = _x(dtype=jnp.float32), _mu0(dtype=jnp.float32)
    norm, params, state = _setup(name, x)
    params = jax.tree.map(lambda p: p.astype(jnp.float32), params)
    y, _ = norm.apply(params, state, x, mu0=mu0)
    y_jit, _ = jax.jit(lambda p, x, m: norm.apply(p, state, x, mu0=m))(params, x, mu0)
    assert y.dtype == jnp.float32 and y.shape == x.shape
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_jit), rtol=1e-5, atol=1e-5)


def test_no_recompilation_when_only_values_change():
    traces = []
    norm = coords.geo_norm(sigma="system")
    x = _x(dtype=jnp.float32)
    params, state = norm.init(jax.random.PRNGKey(0), x)

    @jax.jit
    def f(params, x, mu0, mask):
        traces.append(1)
        return norm.apply(params, state, x, mask=mask, mu0=mu0)[0]

    for seed in range(3):
        mask = jax.random.bernoulli(jax.random.PRNGKey(seed), 0.7, (B, N))
        f(params, _x(seed, dtype=jnp.float32), _mu0(seed + 10, dtype=jnp.float32), mask)
    assert len(traces) == 1


# ------------------------------------------------------------------------------------------
# Degenerate inputs: value and gradient finite
# ------------------------------------------------------------------------------------------


def _assert_finite_value_and_grads(norm, params, state, inputs):
    """Value and gradients wrt params and x finite for each ``(x, mu0, mask)`` in ``inputs``.

    Jitted (one compilation for inputs of one shape); returns the last ``(y, grads)``.
    """

    def loss(params, x, mu0, mask):
        y = norm.apply(params, state, x, mask=mask, mu0=mu0)[0]
        return jnp.sum(y**2), y

    value_and_grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
    for x, mu0, mask in inputs:
        (_, y), grads = value_and_grads(params, x, mu0, mask)
        assert np.all(np.isfinite(np.asarray(y)))
        for g in jax.tree.leaves(grads):
            assert np.all(np.isfinite(np.asarray(g)))
    return y, grads


@pytest.mark.parametrize("name", ["geo_norm", "geo_norm_shared"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_geo_norm_at_mu_equal_mu0_is_finite_and_bias_vanishes(name, dtype):
    x = _x(dtype=dtype)
    norm, params, state = _setup(name, x)
    params = jax.tree.map(lambda p: p.astype(dtype), params)
    mu0 = geometry.centroid(x)  # exactly the centroid of this layer's input
    # jitted: mu is then computed by XLA, mu0 eagerly; they may differ by rounding only.
    y, (gp, _) = _assert_finite_value_and_grads(norm, params, state, [(x, mu0, None)])
    np.testing.assert_array_equal(np.asarray(gp["bias"]), 0.0)  # direction defined as 0
    mu, sigma = coords.geo_statistics(x, sigma=ALL[name].kwargs["sigma"], epsilon=1e-6)
    g = params["scale"] if params["scale"].ndim == 2 else params["scale"][None, None]
    np.testing.assert_allclose(y, g * (x - mu[:, None]) / sigma + mu0[:, None], rtol=1e-5)

    # mu0 computed from the same x inside the differentiated function (as in a model whose
    # first GeoNorm sees the input): mu - mu0 is identically 0; the gradient is still finite.
    def loss(params, x):
        return jnp.sum(norm.apply(params, state, x, mu0=geometry.centroid(x))[0] ** 2)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))
    np.testing.assert_array_equal(np.asarray(grads[0]["bias"]), 0.0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_centroid_moved_only_by_rounding_counts_as_unmoved(dtype):
    x = _x(dtype=dtype)
    norm, params, state = _setup("geo_norm_shared", x)
    ulp = jnp.finfo(dtype).eps
    mu0 = geometry.centroid(x) + 2 * ulp * jnp.array([1.0, -1.0, 1.0], dtype)
    y = norm.apply(params, state, x, mu0=mu0)[0]
    mu, sigma = coords.geo_statistics(x, sigma="system", epsilon=1e-6)
    np.testing.assert_allclose(y, params["scale"] * (x - mu[:, None]) / sigma + mu0[:, None])
    # a real move (1e-3) is not rounding: the bias enters with a unit direction
    y_moved = norm.apply(params, state, x, mu0=mu0 + 1e-3)[0]
    shift = np.asarray(y_moved - y - 1e-3)
    np.testing.assert_allclose(np.linalg.norm(shift[:, 0], axis=-1), abs(params["bias"]), rtol=1e-3)


def test_bias_direction_unit_or_zero():
    mu = jnp.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0], [0.0, 0.0, 1e-30]])
    mu0 = jnp.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    u = np.asarray(coords.bias_direction(mu, mu0))
    np.testing.assert_allclose(np.linalg.norm(u, axis=-1), [1.0, 0.0, 1.0])
    jac = jax.jit(jax.jacobian(lambda m: coords.bias_direction(m, mu0)))(mu)
    assert np.all(np.isfinite(np.asarray(jac)))


@pytest.mark.parametrize("name", sorted(ALL))
def test_single_particle_is_finite(name):
    x, mu0 = _x(shape=(2, 1, 3)), _mu0()[:2]
    norm, params, state = _setup(name, x)
    _assert_finite_value_and_grads(norm, params, state, [(x, mu0, None)])


@pytest.mark.parametrize("name", sorted(ALL))
def test_coincident_particles_are_finite(name):
    # every particle at the same point: sigma = 0 (both readings); for Eq. 3 use x_i = (c, c, c)
    # so that the per-particle variance over d is 0 too; the origin for ScaleNorm's ||x_i|| = 0.
    point = jnp.zeros(3) if name.startswith("scale_norm") else jnp.array([0.7, 0.7, 0.7])
    x = jnp.broadcast_to(point, (B, N, 3))
    norm, params, state = _setup(name, x)
    real, none = jnp.ones((B, N), bool), jnp.zeros((B, N), bool)  # and a fully masked graph
    _assert_finite_value_and_grads(norm, params, state, [(x, _mu0(), real), (x, _mu0(), none)])


# ------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GEO_NAMES)
def test_missing_mu0_raises(name):
    x = _x()
    norm, params, state = _setup(name, x)
    with pytest.raises(ValueError, match="needs mu0"):
        norm.apply(params, state, x)
    with pytest.raises(ValueError, match=r"\(5, 3\)"):
        norm.apply(params, state, x, mu0=jnp.zeros((5, 3)))


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("shape", [(B, N, 2), (N, 3), (B, N, 3, 1)])
def test_bad_coordinate_shape_raises_naming_the_shape(name, shape):
    bad = jnp.ones(shape)
    norm = ALL[name].make()
    with pytest.raises(ValueError, match=re_shape(shape)):
        norm.init(jax.random.PRNGKey(0), bad)
    params, state = norm.init(jax.random.PRNGKey(0), _x())
    with pytest.raises(ValueError, match=re_shape(shape)):
        norm.apply(params, state, bad, mu0=_mu0())


def re_shape(shape):
    return "received shape " + str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


@pytest.mark.parametrize("name", ["geo_norm", "layer_norm_coords", "scale_norm_l2"])
def test_per_particle_params_reject_a_different_number_of_particles(name):
    norm, params, state = _setup(name, _x())
    with pytest.raises(ValueError, match=r"\(3, 4, 3\)"):
        norm.apply(params, state, _x(shape=(B, 4, 3)), mu0=_mu0())


def test_bad_mask_and_integer_coordinates_raise():
    norm, params, state = _setup("geo_norm_shared", _x())
    with pytest.raises(ValueError, match=r"\(3, 5\)"):
        norm.apply(params, state, _x(), mask=jnp.ones((3, 5), bool), mu0=_mu0())
    with pytest.raises(ValueError, match="floating"):
        norm.apply(params, state, jnp.ones((B, N, 3), jnp.int32), mu0=_mu0())


def test_bad_hyperparameters_raise():
    with pytest.raises(ValueError, match="sigma"):
        coords.geo_norm(sigma="batch")
    with pytest.raises(ValueError, match="params"):
        coords.geo_norm(params="global")
    with pytest.raises(ValueError, match="norm"):
        coords.scale_norm(norm="l1")


def test_catalogue_entries_are_consistent():
    for entry in coords.CATALOG_ENTRIES:
        norm = entry.make()
        assert norm.kind == "coordinates" == entry.kind
        assert norm.name == entry.name
        assert entry.family == "geonorm paper"
        assert ("mu0" in entry.context) == entry.name.startswith("geo_norm")
