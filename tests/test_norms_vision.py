"""Tests for the language/vision feature norms (geonorm_jax.norms.vision).

Every layer is checked against a NumPy implementation written here from the paper's
formula (float64, tolerance 1e-10), plus shapes/dtypes, jit, recompilation, masking,
degenerate inputs and input validation, table-driven over all layers.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geonorm_jax.norms import catalog, vision

B, N, C = 3, 5, 8

# name -> constructor kwargs used by the table-driven tests
LAYERS = {
    "batch_norm": dict(momentum=0.9),
    "layer_norm": dict(),
    "layer_norm_graph": dict(reduce="nodes_channels"),
    "instance_norm": dict(),
    "group_norm": dict(num_groups=4),
    "filter_response_norm": dict(learned_epsilon=True),
    "variance_norm": dict(momentum=0.9),
    "variance_norm_rms": dict(centered=False),
}
CONSTRUCTORS = {
    "batch_norm": vision.batch_norm,
    "layer_norm": vision.layer_norm,
    "layer_norm_graph": vision.layer_norm,
    "instance_norm": vision.instance_norm,
    "group_norm": vision.group_norm,
    "filter_response_norm": vision.filter_response_norm,
    "variance_norm": vision.variance_norm,
    "variance_norm_rms": vision.variance_norm,
}


def make(name):
    return CONSTRUCTORS[name](**LAYERS[name])


def data(seed=0, dtype=np.float64, shape=(B, N, C)):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape) * 2.0 + 0.7
    mask = np.ones(shape[:2], bool)
    mask[0, -2:] = False
    mask[2, -1:] = False
    return jnp.asarray(x, dtype), jnp.asarray(mask)


def random_params(params, seed=1):
    """Non-trivial params so that scale/bias/tau are actually exercised."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in params.items():
        if k == "eps":
            out[k] = jnp.asarray(-0.05, v.dtype)  # negative: tests the |eps_l|
        else:
            out[k] = jnp.asarray(rng.normal(size=v.shape), v.dtype)
    return out


# ----------------------------------------------------------------------------- NumPy references


def np_moments(x, m, axes, centered=True):
    mm = np.broadcast_to(m.reshape(m.shape + (1,) * (x.ndim - 2)), x.shape).astype(float)
    count = np.maximum(mm.sum(axis=axes, keepdims=True), 1.0)
    mean = (mm * x).sum(axis=axes, keepdims=True) / count if centered else 0.0 * count
    var = (mm * (x - mean) ** 2).sum(axis=axes, keepdims=True) / count
    return mean, var


def np_affine(y, p):
    return y * p.get("scale", 1.0) + p.get("bias", 0.0)


def reference(name, params, state, x, m, training):
    """(y, new_state) from the papers' formulas, in NumPy float64."""
    x = np.asarray(x, np.float64)
    m = np.asarray(m)
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    s = {k: np.asarray(v, np.float64) for k, v in state.items()}
    if name == "batch_norm":  # Ioffe & Szegedy: per channel over {b, x}
        if training:
            mean, var = np_moments(x, m, (0, 1))
            s = {"mean": 0.9 * s["mean"] + 0.1 * mean[0, 0],
                 "var": 0.9 * s["var"] + 0.1 * var[0, 0]}
        else:
            mean, var = s["mean"], s["var"]
        return np_affine((x - mean) / np.sqrt(var + 1e-5), p), s
    if name in ("variance_norm", "variance_norm_rms"):  # no mean subtraction
        if training:
            _, var = np_moments(x, m, (0, 1), centered=name == "variance_norm")
            s = {"var": (0.9 if name == "variance_norm" else 0.99) * s["var"]
                 + (0.1 if name == "variance_norm" else 0.01) * var[0, 0]}
        else:
            var = s["var"]
        return np_affine(x / np.sqrt(var + 1e-5), p), s
    if name == "layer_norm":  # Ba et al.: each node's channels
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return np_affine((x - mean) / np.sqrt(var + 1e-6), p), s
    if name == "layer_norm_graph":  # survey: {x, v}
        mean, var = np_moments(x, m, (1, 2))
        return np_affine((x - mean) / np.sqrt(var + 1e-6), p), s
    if name == "instance_norm":  # Ulyanov: per sample and channel over nodes
        mean, var = np_moments(x, m, (1,))
        return np_affine((x - mean) / np.sqrt(var + 1e-5), p), s
    if name == "group_norm":  # Wu & He: per sample and group over nodes and group channels
        xg = x.reshape(B, N, 4, C // 4)
        mean, var = np_moments(xg, m, (1, 3))
        y = ((xg - mean) / np.sqrt(var + 1e-6)).reshape(x.shape)
        return np_affine(y, p), s
    if name == "filter_response_norm":  # Singh & Krishnan: nu2 over nodes, then TLU
        mm = m[..., None].astype(float)
        nu2 = (mm * x**2).sum(1, keepdims=True) / np.maximum(mm.sum(1, keepdims=True), 1)
        y = np_affine(x / np.sqrt(nu2 + 1e-6 + abs(p["eps"])), p)
        return np.maximum(y, p["tau"]), s
    raise AssertionError(name)


# ----------------------------------------------------------------------------- table-driven


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", list(LAYERS))
def test_matches_numpy_reference(name, training):
    x, mask = data()
    norm = make(name)
    params, state = norm.init(jax.random.key(0), x)
    params = random_params(params)
    if state:  # non-trivial running statistics for the evaluation path
        state = {k: jnp.abs(v) + 0.5 for k, v in random_params(state, 2).items()}
    y, new_state = norm.apply(params, state, x, mask=mask, training=training)
    y_ref, state_ref = reference(name, params, state, x, mask, training)
    real = np.asarray(mask)  # outputs at padded nodes are unspecified (computed from zeros)
    np.testing.assert_allclose(np.asarray(y)[real], y_ref[real], rtol=1e-10, atol=1e-10)
    assert np.all(np.isfinite(np.asarray(y)))
    assert set(new_state) == set(state_ref)
    for k in state_ref:
        np.testing.assert_allclose(np.asarray(new_state[k]), state_ref[k], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(LAYERS))
def test_shape_dtype_float32_and_jit(name):
    x, mask = data(dtype=np.float32)
    norm = make(name)
    params, state = norm.init(jax.random.key(0), x)
    assert all(v.dtype == jnp.float32 for v in jax.tree_util.tree_leaves(params))
    y, new_state = norm.apply(params, state, x, mask=mask, training=True)
    assert y.shape == x.shape and y.dtype == jnp.float32
    assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(state)
    y_jit, _ = jax.jit(lambda p, s, x, m: norm.apply(p, s, x, mask=m, training=True))(
        params, state, x, mask
    )
    np.testing.assert_allclose(np.asarray(y_jit), np.asarray(y), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(LAYERS))
def test_no_recompilation_when_values_change(name):
    norm = make(name)
    x, mask = data()
    params, state = norm.init(jax.random.key(0), x)
    traces = []

    @jax.jit
    def step(params, state, x, mask):
        traces.append(1)
        return norm.apply(params, state, x, mask=mask, training=True)

    for seed in range(3):
        x, mask = data(seed)
        _, state = step(params, state, x, mask)
    assert len(traces) == 1


@pytest.mark.parametrize("name", list(LAYERS))
def test_padded_nodes_change_nothing(name):
    x, mask = data()
    norm = make(name)
    params, state = norm.init(jax.random.key(0), x)
    params = random_params(params)
    y1, s1 = norm.apply(params, state, x, mask=mask, training=True)
    x2 = jnp.where(mask[..., None], x, 1e3)  # garbage in the padding
    y2, s2 = norm.apply(params, state, x2, mask=mask, training=True)
    real = np.asarray(mask)
    np.testing.assert_allclose(np.asarray(y1)[real], np.asarray(y2)[real], rtol=1e-10, atol=1e-10)
    for k in s1:
        np.testing.assert_allclose(np.asarray(s1[k]), np.asarray(s2[k]), rtol=1e-10)
    assert np.all(np.isfinite(np.asarray(y2)))


def _degenerate_inputs():
    x, mask = data()
    return {
        "zeros": (jnp.zeros_like(x), mask),
        "constant": (jnp.ones_like(x) * 3.0, mask),
        "one_node": (x[:, :1], jnp.ones((B, 1), bool)),
        "fully_masked_graph": (x, mask.at[1].set(False)),
        "all_masked": (x, jnp.zeros_like(mask)),
    }


@pytest.mark.parametrize("name", list(LAYERS))
def test_finite_value_and_grad_on_degenerate_inputs(name):
    norm = make(name)

    @jax.jit
    def value_and_grad(params, state, x, mask):
        def loss(params, x):
            y, new_state = norm.apply(params, state, x, mask=mask, training=True)
            leaves = jax.tree_util.tree_leaves(new_state)
            return jnp.sum(y**2) + sum(jnp.sum(v) for v in leaves)

        return jax.value_and_grad(loss, argnums=(0, 1))(params, x)

    for case, (x, mask) in _degenerate_inputs().items():
        x = x.astype(jnp.float32)
        params, state = norm.init(jax.random.key(0), x)
        value, grads = value_and_grad(params, state, x, mask)
        assert np.isfinite(float(value)), case
        for g in jax.tree_util.tree_leaves(grads):
            assert np.all(np.isfinite(np.asarray(g))), case


@pytest.mark.parametrize("name", list(LAYERS))
def test_bad_inputs_raise_with_shape(name):
    norm = make(name)
    x, mask = data()
    params, state = norm.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"\(3, 5\)"):
        norm.init(jax.random.key(0), x[..., 0])
    with pytest.raises(ValueError, match=r"\(3, 5\)"):
        norm.apply(params, state, x[..., 0])
    with pytest.raises(ValueError, match=r"\(3, 5, 8\)"):
        norm.apply(params, state, x.astype(jnp.int32))
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        norm.apply(params, state, x, mask=mask[:, :4])
    with pytest.raises(ValueError, match=r"\(3, 5, 12\)"):  # channels differ from params
        norm.apply(params, state, jnp.ones((3, 5, 12)))


def test_unknown_context_is_ignored():
    x, mask = data()
    for name in LAYERS:
        norm = make(name)
        params, state = norm.init(jax.random.key(0), x, mu0=jnp.zeros((B, 3)))
        y1, _ = norm.apply(params, state, x, mask=mask, mu0=jnp.zeros((B, 3)))
        y2, _ = norm.apply(params, state, x, mask=mask)
        np.testing.assert_array_equal(np.asarray(y1), np.asarray(y2))


def test_catalog_entries():
    entries = {e.name: e for e in vision.CATALOG_ENTRIES}
    assert {"batch_norm", "layer_norm", "instance_norm", "group_norm", "filter_response_norm",
            "variance_norm"} <= set(entries)
    x, _ = data()
    for e in entries.values():
        assert e.family == "language/vision" and e.kind == "features" and e.survey_row
        norm = catalog.make(e.name)
        params, state = norm.init(jax.random.key(0), x)
        assert set(params) >= set(e.params) and set(state) == set(e.running_state)
    assert entries["layer_norm"].reduced_axes == "v"
    assert entries["layer_norm_graph"].reduced_axes == "x,v"


# ----------------------------------------------------------------------------- per-layer behaviour


def test_batch_norm_running_stats_only_when_training():
    x, mask = data()
    norm = vision.batch_norm(momentum=0.8)
    params, state = norm.init(jax.random.key(0), x)
    np.testing.assert_array_equal(state["mean"], 0.0)
    np.testing.assert_array_equal(state["var"], 1.0)
    _, same = norm.apply(params, state, x, mask=mask, training=False)
    assert same is state
    _, new = norm.apply(params, state, x, mask=mask, training=True)
    mean, var = np_moments(np.asarray(x), np.asarray(mask), (0, 1))
    np.testing.assert_allclose(new["mean"], 0.2 * mean[0, 0], rtol=1e-12)
    np.testing.assert_allclose(new["var"], 0.8 + 0.2 * var[0, 0], rtol=1e-12)
    # a batch with no real node leaves the running statistics unchanged
    _, kept = norm.apply(params, new, x, mask=jnp.zeros_like(mask), training=True)
    np.testing.assert_array_equal(kept["mean"], new["mean"])
    # evaluation uses the running statistics, not the batch
    y_eval, _ = norm.apply(params, new, x, training=False)
    expected = (np.asarray(x) - new["mean"]) / np.sqrt(new["var"] + 1e-5)
    np.testing.assert_allclose(y_eval, expected, rtol=1e-10)


def test_batch_norm_matches_flax_batch_norm():
    x, _ = data()
    norm = vision.batch_norm(momentum=0.9)
    params, state = norm.init(jax.random.key(0), x)
    y, new = norm.apply(params, state, x, training=True)
    flax_bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
    variables = flax_bn.init(jax.random.key(0), x)
    y_flax, upd = flax_bn.apply(variables, x, mutable=["batch_stats"])
    np.testing.assert_allclose(y, y_flax, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(new["mean"], upd["batch_stats"]["mean"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(new["var"], upd["batch_stats"]["var"], rtol=1e-6)


@pytest.mark.parametrize("name", ["batch_norm", "variance_norm"])
def test_axis_name_gives_global_batch_statistics(name):
    """Split the batch over a vmapped 'device' axis: same result as the unsplit batch."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(4, N, C)) + 1.0)
    mask = jnp.asarray(rng.random((4, N)) > 0.3).at[:, 0].set(True)
    ctor = getattr(vision, name)
    norm_global = ctor(momentum=0.9)
    norm_split = ctor(momentum=0.9, axis_name="d")
    params, state = norm_global.init(jax.random.key(0), x)
    params = random_params(params)
    y_ref, s_ref = norm_global.apply(params, state, x, mask=mask, training=True)

    def per_device(xd, md):
        return norm_split.apply(params, state, xd, mask=md, training=True)

    # 2 devices x 2 graphs each; unequal numbers of real nodes per device
    y, s = jax.vmap(per_device, axis_name="d")(x.reshape(2, 2, N, C), mask.reshape(2, 2, N))
    np.testing.assert_allclose(np.asarray(y).reshape(x.shape), y_ref, rtol=1e-10, atol=1e-12)
    for k in s_ref:
        np.testing.assert_allclose(s[k][0], s_ref[k], rtol=1e-10)
        np.testing.assert_allclose(s[k][1], s_ref[k], rtol=1e-10)
    # and without axis_name the split statistics differ (the test can fail)
    y_local, _ = jax.vmap(lambda xd, md: norm_global.apply(params, state, xd, mask=md,
                                                            training=True))(
        x.reshape(2, 2, N, C), mask.reshape(2, 2, N))
    assert not np.allclose(np.asarray(y_local).reshape(x.shape), y_ref)


def test_layer_norm_axes_pinned():
    x, mask = data()
    ln = vision.layer_norm(use_scale=False, use_bias=False)
    ln_graph = vision.layer_norm(reduce="nodes_channels", use_scale=False, use_bias=False)
    p, s = ln.init(jax.random.key(0), x)
    y, _ = ln.apply(p, s, x)
    # original (Ba et al.): every node's channels have mean 0, variance ~1
    np.testing.assert_allclose(np.mean(y, axis=-1), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.var(y, axis=-1), 1.0, rtol=1e-5)
    # changing node 0 does not change node 1
    y2, _ = ln.apply(p, s, x.at[:, 0].multiply(5.0))
    np.testing.assert_allclose(y2[:, 1:], y[:, 1:], rtol=1e-12)
    # survey reading: one mean per graph over real nodes and channels; nodes are coupled
    pg, sg = ln_graph.init(jax.random.key(0), x)
    yg, _ = ln_graph.apply(pg, sg, x, mask=mask)
    m = np.asarray(mask)
    for b in range(B):
        np.testing.assert_allclose(np.mean(np.asarray(yg)[b][m[b]]), 0.0, atol=1e-12)
        assert np.max(np.abs(np.mean(np.asarray(yg)[b][m[b]], axis=-1))) > 1e-3
    yg2, _ = ln_graph.apply(pg, sg, x.at[:, 0].multiply(5.0), mask=mask)
    assert not np.allclose(yg2[:, 1:], yg[:, 1:])
    with pytest.raises(ValueError, match="nodes_channels"):
        vision.layer_norm(reduce="nodes")


def test_layer_norm_matches_flax():
    x, _ = data(dtype=np.float32)
    norm = vision.layer_norm()
    p, s = norm.init(jax.random.key(0), x)
    y, _ = norm.apply(p, s, x)
    flax_ln = nn.LayerNorm()
    y_flax = flax_ln.apply(flax_ln.init(jax.random.key(0), x), x)
    np.testing.assert_allclose(y, y_flax, rtol=1e-5, atol=1e-5)


def test_group_norm_matches_flax_and_rejects_bad_groups():
    x, _ = data(dtype=np.float32)
    norm = vision.group_norm(num_groups=2)
    p, s = norm.init(jax.random.key(0), x)
    y, _ = norm.apply(p, s, x)
    flax_gn = nn.GroupNorm(num_groups=2)
    y_flax = flax_gn.apply(flax_gn.init(jax.random.key(0), x), x)
    np.testing.assert_allclose(y, y_flax, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(8\).*\(3\)"):
        vision.group_norm(num_groups=3).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"\(6\).*\(4\)"):
        vision.group_norm(num_groups=4).apply(p, s, jnp.ones((3, 5, 6)))
    with pytest.raises(ValueError, match="num_groups"):
        vision.group_norm(num_groups=0)


def test_instance_norm_is_per_sample_and_channel():
    x, mask = data()
    norm = vision.instance_norm(use_scale=False, use_bias=False)
    p, s = norm.init(jax.random.key(0), x)
    y, _ = norm.apply(p, s, x, mask=mask)
    m = np.asarray(mask)
    for b in range(B):
        np.testing.assert_allclose(np.mean(np.asarray(y)[b][m[b]], axis=0), 0.0, atol=1e-12)
    # other samples do not matter
    y2, _ = norm.apply(p, s, x.at[1:].multiply(-3.0), mask=mask)
    np.testing.assert_allclose(y2[0], y[0], rtol=1e-12)


def test_filter_response_norm_tlu_and_no_centring():
    x, _ = data()
    frn = vision.filter_response_norm(use_tlu=False)
    p, s = frn.init(jax.random.key(0), x)
    assert set(p) == {"scale", "bias"}
    y, _ = frn.apply(p, s, x)
    # no mean subtraction: the output mean over nodes is not zero for shifted inputs
    assert np.max(np.abs(np.mean(np.asarray(y), axis=1))) > 0.1
    # RMS over nodes is 1 (epsilon small)
    np.testing.assert_allclose(np.sqrt(np.mean(np.asarray(y) ** 2, axis=1)), 1.0, rtol=1e-5)
    frn_tlu = vision.filter_response_norm()
    p2, _ = frn_tlu.init(jax.random.key(0), x)
    assert set(p2) == {"scale", "bias", "tau"}
    y_tlu, _ = frn_tlu.apply({**p2, "tau": jnp.full((C,), 0.3)}, {}, x)
    np.testing.assert_allclose(y_tlu, np.maximum(y, 0.3), rtol=1e-12)


def test_variance_norm_keeps_the_mean():
    x, _ = data()
    norm = vision.variance_norm(use_scale=False)
    p, s = norm.init(jax.random.key(0), x)
    assert p == {} and set(s) == {"var"}
    y, _ = norm.apply(p, s, x, training=True)
    xn = np.asarray(x)
    np.testing.assert_allclose(y, xn / np.sqrt(xn.var(axis=(0, 1)) + 1e-5), rtol=1e-10)
    # the mean survives (ratio of mean to std unchanged), unlike BatchNorm
    assert np.all(np.abs(np.mean(np.asarray(y), axis=(0, 1))) > 0.05)
    rms = vision.variance_norm(use_scale=False, centered=False)
    y_rms, _ = rms.apply(p, s, x, training=True)
    np.testing.assert_allclose(y_rms, xn / np.sqrt((xn**2).mean(axis=(0, 1)) + 1e-5), rtol=1e-10)
