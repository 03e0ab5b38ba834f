"""Tests for the weight reparametrisations (geonorm_jax.norms.weights).

Kernels are Dense kernels ``[fan_in, fan_out]`` (and a conv-like ``[k, fan_in, fan_out]``);
each layer is checked against NumPy written from the paper's formula (float64, 1e-10),
SpectralNorm against ``np.linalg.svd``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geonorm_jax.norms import catalog, weights

FAN_IN, FAN_OUT = 7, 4

LAYERS = {
    "weight_norm": weights.weight_norm,
    "spectral_norm": weights.spectral_norm,
    "scaled_weight_standardization": weights.scaled_weight_standardization,
}


def kernel(seed=0, shape=(FAN_IN, FAN_OUT), dtype=np.float64):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape) + 0.3, dtype)


def np_reference(name, params, state, w):
    w = np.asarray(w, np.float64)
    w2 = w.reshape(-1, w.shape[-1])
    if name == "weight_norm":  # Salimans & Kingma: g v / ||v||, per output unit
        return np.asarray(params["scale"]) * w / np.sqrt((w2**2).sum(0) + 1e-12)
    if name == "spectral_norm":  # Miyato et al.: one power-iteration step from u
        u = np.asarray(state["u"]) / np.linalg.norm(state["u"])
        v = w2 @ u / np.linalg.norm(w2 @ u)
        u = w2.T @ v / np.linalg.norm(w2.T @ v)
        v = w2 @ u / np.linalg.norm(w2 @ u)
        return w / (v @ w2 @ u)
    if name == "scaled_weight_standardization":  # Brock et al.: (W - mu) / (std sqrt(N))
        n = w2.shape[0]
        mu, var = w2.mean(0), w2.var(0)
        return np.asarray(params["scale"]) * 1.5 * (w - mu) / np.sqrt(n * var + 1e-4)
    raise AssertionError(name)


@pytest.mark.parametrize("shape", [(FAN_IN, FAN_OUT), (3, FAN_IN, FAN_OUT)])
@pytest.mark.parametrize("name", list(LAYERS))
def test_matches_numpy_reference(name, shape):
    kwargs = {"gain": 1.5} if name == "scaled_weight_standardization" else {}
    norm = LAYERS[name](**kwargs)
    w = kernel(shape=shape)
    params, state = norm.init(jax.random.key(1), w)
    rng = np.random.default_rng(5)
    params = {k: jnp.asarray(rng.normal(size=v.shape)) for k, v in params.items()}
    w_bar, _ = norm.apply(params, state, w)
    np.testing.assert_allclose(w_bar, np_reference(name, params, state, w), rtol=1e-10)


@pytest.mark.parametrize("name", list(LAYERS))
def test_shape_dtype_jit_and_no_recompilation(name):
    norm = LAYERS[name]()
    w = kernel(dtype=np.float32)
    params, state = norm.init(jax.random.key(0), w)
    w_bar, new_state = norm.apply(params, state, w, training=True)
    assert w_bar.shape == w.shape and w_bar.dtype == jnp.float32
    assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(state)
    traces = []

    @jax.jit
    def step(params, state, w):
        traces.append(1)
        return norm.apply(params, state, w, training=True)

    w_jit, _ = step(params, state, w)
    np.testing.assert_allclose(w_jit, w_bar, rtol=1e-5, atol=1e-6)
    for seed in range(1, 3):
        _, state = step(params, state, kernel(seed, dtype=np.float32))
    assert len(traces) == 1


@pytest.mark.parametrize("name", list(LAYERS))
def test_finite_value_and_grad_for_zero_and_rank_one_kernels(name):
    norm = LAYERS[name]()
    for w in (jnp.zeros((FAN_IN, FAN_OUT), jnp.float32),
              jnp.ones((FAN_IN, FAN_OUT), jnp.float32),  # constant columns, rank one
              jnp.ones((1, FAN_OUT), jnp.float32)):      # fan_in = 1
        params, state = norm.init(jax.random.key(0), w)

        def loss(params, w, state=state):
            w_bar, _ = norm.apply(params, state, w, training=True)
            return jnp.sum(w_bar * jnp.arange(w_bar.size).reshape(w_bar.shape))

        value, grads = jax.value_and_grad(loss, argnums=(0, 1))(params, w)
        assert np.isfinite(float(value))
        for g in jax.tree_util.tree_leaves(grads):
            assert np.all(np.isfinite(np.asarray(g)))


@pytest.mark.parametrize("name", list(LAYERS))
def test_bad_inputs_raise_with_shape(name):
    norm = LAYERS[name]()
    w = kernel()
    params, state = norm.init(jax.random.key(0), w)
    with pytest.raises(ValueError, match=r"\(7,\)"):
        norm.init(jax.random.key(0), w[:, 0])
    with pytest.raises(ValueError, match=r"\(7,\)"):
        norm.apply(params, state, w[:, 0])
    with pytest.raises(ValueError, match=r"\(7, 4\)"):
        norm.apply(params, state, w.astype(jnp.int32))
    with pytest.raises(ValueError, match=r"\(7, 6\)"):  # fan_out differs from params/state
        norm.apply(params, state, jnp.ones((7, 6)))


def test_catalog_entries():
    names = {e.name for e in weights.CATALOG_ENTRIES}
    assert names == set(LAYERS)
    for e in weights.CATALOG_ENTRIES:
        assert e.kind == "weights" and e.survey_row
        params, state = catalog.make(e.name).init(jax.random.key(0), kernel())
        assert tuple(params) == e.params and tuple(state) == e.running_state


# ----------------------------------------------------------------------------- WeightNorm


def test_weight_norm_init_keeps_the_weight_and_columns_have_norm_g():
    w = kernel()
    norm = weights.weight_norm()
    params, state = norm.init(jax.random.key(0), w)
    assert params["scale"].shape == (FAN_OUT,) and state == {}
    np.testing.assert_allclose(params["scale"], np.linalg.norm(np.asarray(w), axis=0), rtol=1e-12)
    w_bar, _ = norm.apply(params, state, w)
    np.testing.assert_allclose(w_bar, w, rtol=1e-12)
    # with g = 2 every output unit has norm 2, whatever v is
    w_bar, _ = norm.apply({"scale": jnp.full((FAN_OUT,), 2.0)}, {}, kernel(9) * 50.0)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(w_bar), axis=0), 2.0, rtol=1e-12)
    unit, _ = weights.weight_norm(use_scale=False).apply({}, {}, w)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(unit), axis=0), 1.0, rtol=1e-12)


def test_weight_norm_gradient_is_orthogonal_to_v():
    """Salimans & Kingma, Eq. 4: grad_v L is orthogonal to v (the norm of v cannot change)."""
    w = kernel()
    norm = weights.weight_norm()
    params, _ = norm.init(jax.random.key(0), w)
    target = kernel(3)
    grad_v = jax.grad(lambda v: jnp.sum((norm.apply(params, {}, v)[0] - target) ** 2))(w)
    np.testing.assert_allclose(np.sum(np.asarray(grad_v) * np.asarray(w), axis=0), 0.0, atol=1e-10)


# ----------------------------------------------------------------------------- SpectralNorm


def test_spectral_norm_converges_to_the_largest_singular_value():
    w = kernel(shape=(12, 6))
    sigma_true = np.linalg.svd(np.asarray(w), compute_uv=False)[0]
    norm = weights.spectral_norm()
    params, state = norm.init(jax.random.key(0), w)
    step = jax.jit(lambda s: norm.apply(params, s, w, training=True))
    for _ in range(60):
        w_bar, state = step(state)
    np.testing.assert_allclose(state["sigma"], sigma_true, rtol=1e-8)
    np.testing.assert_allclose(np.linalg.svd(np.asarray(w_bar), compute_uv=False)[0], 1.0,
                               rtol=1e-8)
    # many steps in one call reach the same answer
    w_many, _ = weights.spectral_norm(n_steps=60).apply({}, norm.init(jax.random.key(0), w)[1], w)
    np.testing.assert_allclose(w_many, np.asarray(w) / sigma_true, rtol=1e-8)


def test_spectral_norm_state_updates_only_when_training():
    w = kernel()
    norm = weights.spectral_norm()
    _, s0 = norm.init(jax.random.key(0), w)
    _, s_other = norm.init(jax.random.key(1), w)
    assert s0["u"].shape == (FAN_OUT,) and not np.allclose(s0["u"], s_other["u"])
    w_eval1, s_eval = norm.apply({}, s0, w, training=False)
    w_eval2, _ = norm.apply({}, s0, w, training=False)
    assert s_eval is s0
    np.testing.assert_array_equal(w_eval1, w_eval2)
    _, s_train = norm.apply({}, s0, w, training=True)
    assert not np.allclose(s_train["u"], s0["u"])
    np.testing.assert_allclose(np.linalg.norm(s_train["u"]), 1.0, rtol=1e-12)
    with pytest.raises(ValueError, match="n_steps"):
        weights.spectral_norm(n_steps=-1)


def test_spectral_norm_gradient_treats_u_v_as_constants():
    """Miyato et al.: d sigma / dW = v u^T with u, v the power-iteration vectors."""
    w = kernel()
    norm = weights.spectral_norm(n_steps=80)
    _, state = norm.init(jax.random.key(0), w)
    g = np.random.default_rng(2).normal(size=w.shape)
    grad = jax.grad(lambda w: jnp.sum(norm.apply({}, state, w)[0] * g))(w)
    u_svd, s, vt = np.linalg.svd(np.asarray(w))
    left, right, sigma = u_svd[:, 0], vt[0], s[0]
    # d/dW <W/sigma, G> = G/sigma - <W, G>/sigma^2 * left right^T
    expected = g / sigma - np.sum(np.asarray(w) * g) / sigma**2 * np.outer(left, right)
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-9)


# ----------------------------------------------------------------------------- Scaled WS


def test_scaled_weight_standardization_columns_and_variance_preservation():
    w = kernel(shape=(256, 8)) * 3.0 + 1.0
    norm = weights.scaled_weight_standardization(epsilon=0.0)
    params, state = norm.init(jax.random.key(0), w)
    assert set(params) == {"scale"} and state == {}
    w_hat = np.asarray(norm.apply(params, state, w)[0])
    np.testing.assert_allclose(w_hat.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(w_hat.var(0) * 256, 1.0, rtol=1e-10)  # Var = 1 / fan_in
    # so a @ W_hat keeps unit variance for unit-variance inputs (statistical, loose)
    a = np.random.default_rng(0).normal(size=(4000, 256))
    assert abs((a @ w_hat).var() - 1.0) < 0.1
    # the survey's formula without 1/sqrt(N) differs by sqrt(fan_in)
    survey = (np.asarray(w) - np.asarray(w).mean(0)) / np.asarray(w).std(0)
    np.testing.assert_allclose(w_hat * np.sqrt(256), survey, rtol=1e-10)
