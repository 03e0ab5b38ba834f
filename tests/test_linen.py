"""Tests for the Flax Linen wrappers (geonorm_jax.linen)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geonorm_jax import linen
from geonorm_jax.norms import vision, weights

B, N, C = 2, 4, 8


def data(seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(B, N, C)) + 1.0, dtype)
    mask = jnp.asarray([[True, True, True, False], [True, True, True, True]])
    return x, mask


def test_norm_layer_collections_and_no_update_at_init():
    x, mask = data()
    layer = linen.NormLayer(vision.batch_norm(momentum=0.5))
    variables = layer.init(jax.random.key(0), x, mask=mask, training=True)
    assert set(variables) == {"params", "batch_stats"}
    assert set(variables["params"]["norm"]) == {"scale", "bias"}
    stats = variables["batch_stats"]["norm"]
    # training=True at init must not move the running statistics
    np.testing.assert_array_equal(stats["mean"], 0.0)
    np.testing.assert_array_equal(stats["var"], 1.0)


def test_norm_layer_updates_stats_only_in_training_with_mutable():
    x, mask = data()
    pure = vision.batch_norm(momentum=0.5)
    layer = linen.NormLayer(pure)
    variables = layer.init(jax.random.key(0), x)
    y, updates = layer.apply(variables, x, mask=mask, training=True, mutable=["batch_stats"])
    params, state = pure.init(jax.random.key(0), x)
    y_pure, state_pure = pure.apply(params, state, x, mask=mask, training=True)
    np.testing.assert_array_equal(y, y_pure)
    for k in ("mean", "var"):
        np.testing.assert_array_equal(updates["batch_stats"]["norm"][k], state_pure[k])
    assert not np.allclose(updates["batch_stats"]["norm"]["mean"], 0.0)
    # evaluation: running statistics, nothing to update
    y_eval, upd_eval = layer.apply(variables, x, training=False, mutable=["batch_stats"])
    np.testing.assert_array_equal(upd_eval["batch_stats"]["norm"]["mean"], 0.0)
    np.testing.assert_array_equal(y_eval, pure.apply(params, state, x)[0])
    # training without a mutable collection: batch statistics used, no error, no update
    y_train = layer.apply(variables, x, mask=mask, training=True)
    np.testing.assert_array_equal(y_train, y_pure)


@pytest.mark.parametrize("name,kwargs", [
    ("layer_norm", {}),
    ("group_norm", {"num_groups": 2}),
    ("filter_response_norm", {}),
    ("variance_norm", {}),
])
def test_norm_layer_equals_pure_function(name, kwargs):
    x, mask = data()
    pure = getattr(vision, name)(**kwargs)
    layer = linen.NormLayer(pure)
    variables = layer.init(jax.random.key(3), x)
    params, state = pure.init(jax.random.key(3), x)
    # perturb the params so the comparison is not between two identity affines
    params = jax.tree_util.tree_map(lambda p: p + 0.3, params)
    variables = {**variables, "params": {"norm": params}}
    y = layer.apply(variables, x, mask=mask, training=False)
    np.testing.assert_array_equal(y, pure.apply(params, state, x, mask=mask)[0])
    assert ("batch_stats" in variables) == bool(state)
    assert y.dtype == jnp.float32


def test_flax_named_convenience_classes_and_catalog_helper():
    x, mask = data()
    bn = linen.BatchNorm(momentum=0.9, epsilon=1e-3, use_bias=False)
    variables = bn.init(jax.random.key(0), x)
    assert set(variables["params"]["norm"]) == {"scale"}
    y = bn.apply(variables, x, mask=mask, training=True, mutable=["batch_stats"])[0]
    y_pure = vision.batch_norm(momentum=0.9, epsilon=1e-3, use_bias=False).apply(
        {"scale": jnp.ones(C, jnp.float32)}, variables["batch_stats"]["norm"], x, mask=mask,
        training=True)[0]
    np.testing.assert_array_equal(y, y_pure)
    ln = linen.LayerNorm(reduce="nodes_channels")
    y_ln = ln.apply(ln.init(jax.random.key(0), x), x, mask=mask)
    np.testing.assert_allclose(
        y_ln, vision.layer_norm(reduce="nodes_channels").apply(
            vision.layer_norm().init(None, x)[0], {}, x, mask=mask)[0], rtol=1e-6)
    gn = linen.GroupNorm(num_groups=4)
    assert gn.apply(gn.init(jax.random.key(0), x), x).shape == x.shape
    layer = linen.norm_layer("batch_norm", momentum=0.8)
    assert isinstance(layer, linen.NormLayer) and layer.norm.name == "batch_norm"
    with pytest.raises(ValueError, match="unknown normalization"):
        linen.norm_layer("no_such_norm")
    with pytest.raises(ValueError, match="no norm"):
        linen.NormLayer().init(jax.random.key(0), x)


@pytest.mark.parametrize("sigma", ["particle", "system"])
def test_geo_norm_layer_equals_pure_function_with_context(sigma):
    from geonorm_jax.norms import catalog

    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(B, N, 3)), jnp.float32)
    mu0 = jnp.asarray(rng.normal(size=(B, 3)), jnp.float32)
    _, mask = data()
    layer = linen.GeoNorm(sigma=sigma)
    variables = layer.init(jax.random.key(0), x, mask=mask, mu0=mu0)
    pure = catalog.make("geo_norm", sigma=sigma)
    params = variables["params"]["norm"]
    params = jax.tree_util.tree_map(lambda p: p + 0.25, params)
    y = layer.apply({"params": {"norm": params}}, x, mask=mask, mu0=mu0)
    np.testing.assert_array_equal(y, pure.apply(params, {}, x, mask=mask, mu0=mu0)[0])
    assert y.shape == x.shape and y.dtype == jnp.float32


def test_norm_layer_inside_a_model_under_jit():
    class Model(nn.Module):
        @nn.compact
        def __call__(self, x, mask, training):
            h = nn.Dense(C)(x)
            h = linen.NormLayer(vision.batch_norm(), name="bn")(h, mask=mask, training=training)
            return linen.NormLayer(vision.layer_norm(), name="ln")(h, mask=mask)

    x, mask = data()
    model = Model()
    variables = model.init(jax.random.key(0), x, mask, False)
    assert set(variables["batch_stats"]) == {"bn"}  # layer_norm has no state
    step = jax.jit(lambda v, x: model.apply(v, x, mask, True, mutable=["batch_stats"]))
    y, updates = step(variables, x)
    y_nojit, updates_nojit = model.apply(variables, x, mask, True, mutable=["batch_stats"])
    np.testing.assert_allclose(y, y_nojit, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(updates["batch_stats"]["bn"]["norm"]["mean"],
                               updates_nojit["batch_stats"]["bn"]["norm"]["mean"], rtol=1e-6)


# ----------------------------------------------------------------------------- NormalizedDense


def test_normalized_dense_weight_norm_equals_pure_function():
    x, _ = data()
    dense = linen.NormalizedDense(features=5, weight_norm=weights.weight_norm())
    variables = dense.init(jax.random.key(0), x)
    assert set(variables["params"]) == {"kernel", "bias", "norm"}
    assert "batch_stats" not in variables
    kernel = variables["params"]["kernel"]
    # WeightNorm's g starts at ||v||: the initial layer equals a plain Dense
    y = dense.apply(variables, x)
    np.testing.assert_allclose(y, x @ kernel, rtol=1e-5, atol=1e-6)
    g = jnp.linspace(0.5, 2.0, 5, dtype=jnp.float32)
    variables = {"params": {**variables["params"], "norm": {"scale": g}}}
    w_pure = weights.weight_norm().apply({"scale": g}, {}, kernel)[0]
    np.testing.assert_allclose(dense.apply(variables, x), x @ w_pure, rtol=1e-5, atol=1e-6)


def test_normalized_dense_spectral_norm_state():
    x, _ = data()
    dense = linen.NormalizedDense(features=5, weight_norm=weights.spectral_norm(), use_bias=False)
    variables = dense.init(jax.random.key(0), x, training=True)
    assert set(variables["params"]) == {"kernel", "norm"}
    u0 = variables["batch_stats"]["norm"]["u"]
    assert u0.shape == (5,)
    _, upd = dense.apply(variables, x, training=True, mutable=["batch_stats"])
    assert not np.allclose(upd["batch_stats"]["norm"]["u"], u0)
    _, upd_eval = dense.apply(variables, x, training=False, mutable=["batch_stats"])
    np.testing.assert_array_equal(upd_eval["batch_stats"]["norm"]["u"], u0)
    # many training steps: the layer's kernel has spectral norm 1
    variables = {**variables, **upd}
    step = jax.jit(lambda v: dense.apply(v, x, training=True, mutable=["batch_stats"])[1])
    for _ in range(30):
        variables = {**variables, **step(variables)}
    kernel = np.asarray(variables["params"]["kernel"], np.float64)
    sigma = np.linalg.svd(kernel, compute_uv=False)[0]
    np.testing.assert_allclose(variables["batch_stats"]["norm"]["sigma"], sigma, rtol=1e-4)
    with pytest.raises(ValueError, match="weights-kind"):
        linen.NormalizedDense(features=5, weight_norm=vision.batch_norm()).init(
            jax.random.key(0), x)
