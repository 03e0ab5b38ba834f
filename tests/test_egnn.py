"""Tests for the velocity EGNN (geonorm_jax.models.egnn): reference fidelity and equivariance."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geonorm_jax.models import EGNN, count_params, fully_connected_edges, make_egnn
from geonorm_jax.norms import catalog
from geonorm_jax.testing import assert_equivariant, equivariance_errors

B, N = 3, 6
KINDS = ("coordinates", "vectors", "features")  # x, v, charges
OUT = ("coordinates",)


def inputs(seed=0, dtype=jnp.float64, batch=B, nodes=N):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(batch, nodes, 3)) * 1.5, dtype)
    v = jnp.asarray(rng.normal(size=(batch, nodes, 3)) * 0.5, dtype)
    q = jnp.asarray(rng.choice([-1.0, 1.0], size=(batch, nodes, 1)), dtype)
    return x, v, q


def init_variables(model, *args, seed=1, **kwargs):
    """Variables with the shapes of ``model.init`` (traced, not compiled: fast) filled with
    random values of the scale of PyTorch's init, but with phi_x's last layer at full scale
    and norm parameters away from their identity init (so that symmetry-breaking terms and
    coordinate updates are not hidden by the initialisation)."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, **kwargs))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if "batch_stats" in name:
            value = np.ones(leaf.shape) if name.endswith("['var']") else np.zeros(leaf.shape)
        elif "'norm'" in name:
            value = 0.2 * rng.normal(size=leaf.shape) + name.endswith("['scale']")
        else:
            bound = 1 / np.sqrt(leaf.shape[0]) if leaf.ndim == 2 else 0.3
            value = rng.uniform(-bound, bound, size=leaf.shape)
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def model_fn(model, dtype=jnp.float64, seed=0, **call_kw):
    x, v, q = inputs(seed, dtype)
    variables = init_variables(model, x, v, q)
    fn = jax.jit(lambda x, v, q: model.apply(variables, x, v, q, **call_kw))
    return fn, (x, v, q), variables


# ---------------------------------------------------------------------------------------------
# Reference fidelity
# ---------------------------------------------------------------------------------------------


def test_param_count_equals_reference_egnn_vel():
    # Reference EGNN_vel(in_node_nf=1, in_edge_nf=2, hidden_nf=64, n_layers=4), PyTorch:
    H = 64
    embedding = 1 * H + H  # Linear(1, 64)                                  = 128
    edge_mlp = (2 * H + 1 + 2) * H + H + H * H + H  # Linear(131, 64), Linear(64, 64) = 12608
    node_mlp = (2 * H) * H + H + H * H + H  # Linear(128, 64), Linear(64, 64)       = 12416
    coord_mlp = H * H + H + H * 1  # Linear(64, 64), Linear(64, 1, bias=False)     = 4224
    coord_mlp_vel = H * H + H + H * 1 + 1  # Linear(64, 64), Linear(64, 1)        = 4225
    per_layer = edge_mlp + node_mlp + coord_mlp + coord_mlp_vel  # 33473
    reference = embedding + 4 * per_layer
    assert reference == 134020
    x, v, q = inputs(batch=1, nodes=3, dtype=jnp.float32)
    shapes = jax.eval_shape(lambda: EGNN().init(jax.random.key(0), x, v, q))
    assert count_params(shapes) == reference
    # A norm adds exactly its own parameters: per-particle GeoNorm g, b [N, 1] on layers 0..2.
    shapes = jax.eval_shape(lambda: make_egnn("geo_norm").init(jax.random.key(0), x, v, q))
    assert count_params(shapes) == reference + 3 * 2 * 3


def test_init_matches_pytorch_defaults():
    H = 64
    x, v, q = inputs(batch=1, nodes=3, dtype=jnp.float32)
    # one layer keeps the compilation short; the rbg key compiles faster than threefry
    params = jax.jit(EGNN(num_layers=1).init)(jax.random.key(0, impl="unsafe_rbg"), x, v, q)
    params = params["params"]
    layer = params["layer_0"]

    def check_uniform(a, bound):
        a = np.asarray(a)
        assert np.abs(a).max() <= bound
        assert np.abs(a).max() > 0.9 * bound  # fills the interval: U(-bound, bound)
        assert abs(a.std() - bound / np.sqrt(3)) < 0.1 * bound

    edge_bound = 1 / np.sqrt(2 * H + 3)  # Linear(2H + 1 + 2, H): fan_in = 131
    check_uniform(np.concatenate([layer["edge_w_hi"], layer["edge_w_hj"]]), edge_bound)
    check_uniform(layer["edge_mlp_out"]["kernel"], 1 / np.sqrt(H))
    check_uniform(layer["node_mlp_hidden"]["kernel"], 1 / np.sqrt(2 * H))
    check_uniform(layer["node_mlp_hidden"]["bias"], 1 / np.sqrt(2 * H))
    # last coord_mlp layer: xavier_uniform(gain=0.001), no bias
    check_uniform(layer["coord_mlp_out"]["kernel"], 0.001 * np.sqrt(6 / (H + 1)))
    assert set(layer["coord_mlp_out"]) == {"kernel"}
    assert np.abs(params["embedding"]["kernel"]).max() <= 1.0  # fan_in 1


def silu(a):
    return a * 0.5 * (1.0 + np.tanh(0.5 * a))


def numpy_egnn_vel(params, x, v, q, num_layers):
    """Reference EGNN_vel (gcl.py E_GCL_vel) with loops over edges i != j, float64 NumPy."""
    P = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    x, v, q = (np.asarray(a, np.float64) for a in (x, v, q))
    lin = lambda p, a: a @ p["kernel"] + p.get("bias", 0.0)
    out = []
    for b in range(x.shape[0]):
        n = x.shape[1]
        xb, vb, qb = x[b].copy(), v[b], q[b, :, 0]
        x0 = xb.copy()
        h = lin(P["embedding"], np.linalg.norm(vb, axis=1, keepdims=True))
        for layer in range(num_layers):
            p = P[f"layer_{layer}"]
            # Linear(2H + 1 + 2, H) with the stacked kernel [W_hi; W_hj; w_radial; W_attr]
            w1 = np.concatenate([p["edge_w_hi"], p["edge_w_hj"], p["edge_w_radial"],
                                 p["edge_w_attr"]])
            trans_sum, m_sum = np.zeros((n, 3)), np.zeros((n, h.shape[1]))
            for i in range(n):
                for j in range(n):
                    if i == j:
                        continue
                    diff = xb[i] - xb[j]
                    radial = diff @ diff
                    e_ij = [qb[i] * qb[j], np.sum((x0[i] - x0[j]) ** 2)]
                    inp = np.concatenate([h[i], h[j], [radial], e_ij])
                    m = silu(lin(p["edge_mlp_out"], silu(inp @ w1 + p["edge_bias"])))
                    phi = lin(p["coord_mlp_out"], silu(lin(p["coord_mlp_hidden"], m)))
                    trans_sum[i] += np.clip(diff * phi, -100, 100)
                    m_sum[i] += m
            xb = xb + trans_sum / (n - 1)  # coords_agg = "mean"
            xb = xb + lin(p["vel_mlp_out"], silu(lin(p["vel_mlp_hidden"], h))) * vb
            node_in = np.concatenate([h, m_sum], axis=1)
            h = h + lin(p["node_mlp_out"], silu(lin(p["node_mlp_hidden"], node_in)))
        out.append(xb)
    return np.stack(out)


@pytest.mark.parametrize("graph", ["dense", "edges"])
def test_matches_numpy_reference(graph):
    model = EGNN(hidden=8, num_layers=2)
    x, v, q = inputs(batch=2, nodes=4)
    variables = init_variables(model, x, v, q)
    kw = {}
    if graph == "edges":
        s, r, e = fully_connected_edges(4, 2)
        kw = dict(senders=s, receivers=r, edge_mask=e)
    y = jax.jit(model.apply)(variables, x, v, q, **kw)
    y_ref = numpy_egnn_vel(variables["params"], x, v, q, 2)
    np.testing.assert_allclose(np.asarray(y), y_ref, rtol=1e-10, atol=1e-10)
    assert np.abs(y_ref - np.asarray(x)).max() > 0.1  # the model does move the particles


# ---------------------------------------------------------------------------------------------
# Equivariance (assert_equivariant with kinds x: coordinates, v: vectors, charges: features)
# ---------------------------------------------------------------------------------------------

PERMUTATION_EQUIVARIANT = {None, "geo_norm_shared", "layer_norm"}


@pytest.mark.parametrize("name,place,dtype,tol", [
    (None, "coord", jnp.float64, 1e-9),
    (None, "coord", jnp.float32, 1e-4),
    ("geo_norm_shared", "coord", jnp.float64, 1e-9),
    ("geo_norm_shared", "coord", jnp.float32, 1e-4),
    ("geo_norm_system", "coord", jnp.float64, 1e-9),  # per-particle g, b: not permutation
    ("layer_norm", "feature", jnp.float64, 1e-9),
    ("quaternion_rms_norm", "update", jnp.float64, 1e-9),
])
def test_equivariance(name, place, dtype, tol):
    fn, args, _ = model_fn(make_egnn(name, place, hidden=16, num_layers=2), dtype)
    assert fn(*args).dtype == dtype
    groups = ("E3", "permutation", "batch") if name in PERMUTATION_EQUIVARIANT else "E3"
    assert_equivariant(fn, jax.random.key(3), *args, group=groups, kinds=KINDS,
                       out_kinds=OUT, atol=tol, rtol=tol)


def _relative_errors(name, place="coord"):
    fn, args, _ = model_fn(make_egnn(name, place, hidden=16, num_layers=2))
    errs = equivariance_errors(fn, jax.random.key(5), *args, group="all", kinds=KINDS,
                               out_kinds=OUT)
    return {g: e / s for g, (e, s) in errs.items()}


@pytest.mark.parametrize("name,broken,kept", [
    # per-particle GeoNorm: particle i always gets g_i, b_i (the paper admits this)
    ("geo_norm", {"permutation"}, {"SO3", "O3", "translation", "batch"}),
    # ScaleNorm rescales about the frame's origin (Lemma 2)
    ("scale_norm_l2", {"translation", "permutation"}, {"SO3", "O3", "batch"}),
    # LayerNorm over the 3 coordinates (Lemma 1)
    ("layer_norm_coords", {"SO3", "O3", "translation"}, {"batch"}),
])
def test_broken_symmetries(name, broken, kept):
    rel = _relative_errors(name)
    for g in broken:
        assert rel[g] > 1e-3, (g, rel)
    for g in kept:
        assert rel[g] < 1e-9, (g, rel)


@functools.cache
def plain_output():
    fn, args, variables = model_fn(EGNN(hidden=8, num_layers=2))
    return np.asarray(fn(*args)), variables


@pytest.mark.parametrize("options", [
    dict(norm_diff=True, norm_diff_epsilon=1e-8, tanh=True, coords_range=3.0),
    dict(attention=True, coords_agg="sum"),  # (sum with tanh * 3 reaches the +-100 clamp)
])
def test_options_keep_equivariance(options):
    fn, args, variables = model_fn(EGNN(hidden=8, num_layers=2, **options))
    assert_equivariant(fn, jax.random.key(6), *args, group="all", kinds=KINDS, out_kinds=OUT,
                       atol=1e-9, rtol=1e-9)
    y_plain, plain_variables = plain_output()
    if "attention" not in options:  # same parameters as the plain model, different function
        chex.assert_trees_all_equal(variables, plain_variables)
        assert np.abs(np.asarray(fn(*args)) - y_plain).max() > 1e-6


# ---------------------------------------------------------------------------------------------
# Padding, numerics, jit
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,place,graph", [
    ("geo_norm_shared", "coord", "dense"),
    ("layer_norm", "feature", "edges"),
])
def test_padding_matches_unpadded_graphs(name, place, graph):
    model = make_egnn(name, place, hidden=8, num_layers=2)
    sizes, n_max = (3, 6), 6
    x, v, q = inputs(seed=2, batch=len(sizes), nodes=n_max)
    mask = jnp.arange(n_max)[None, :] < jnp.asarray(sizes)[:, None]
    # garbage (NaN) in the padding must not leak into real nodes
    x, v, q = (jnp.where(mask[..., None], a, jnp.nan) for a in (x, v, q))
    variables = init_variables(model, x, v, q, mask)
    kw = {}
    if graph == "edges":
        s, r, e = fully_connected_edges(n_max, len(sizes))
        kw = dict(senders=s, receivers=r, edge_mask=e)
    apply = jax.jit(model.apply)
    y = apply(variables, x, v, q, mask, **kw)
    assert np.all(np.isfinite(np.asarray(y)))
    assert float(jnp.abs(y - x)[1].max()) > 0.05
    # graph 0 alone, unpadded (graph 1 is full: the "batch" equivariance tests cover it)
    n = sizes[0]
    one = apply(variables, x[:1, :n], v[:1, :n], q[:1, :n])
    np.testing.assert_allclose(np.asarray(y[0, :n]), np.asarray(one[0]), rtol=1e-10,
                               atol=1e-10)


def test_gradients_finite_at_coincident_particles():
    x, v, q = inputs(dtype=jnp.float32)
    x = x.at[:, 1].set(x[:, 0]).at[2].set(0.0)  # a coincident pair; graph 2 all at one point
    v = v.at[2, 0].set(0.0)  # and a zero velocity (||v|| has no gradient at 0)
    model = make_egnn("geo_norm_shared", hidden=8, num_layers=2, norm_diff=True,
                      norm_diff_epsilon=1e-8)
    variables = init_variables(model, x, v, q)

    def loss(params, x, v):
        y = model.apply({"params": params}, x, v, q)
        return jnp.sum(y**2)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(variables["params"], x, v)
    for leaf in jax.tree_util.tree_leaves(grads):
        assert np.all(np.isfinite(np.asarray(leaf)))


def test_jit_matches_eager_and_no_recompilation():
    model = EGNN(hidden=4, num_layers=1)
    x, v, q = inputs(dtype=jnp.float32)
    variables = init_variables(model, x, v, q)
    traces = []

    @jax.jit
    def fn(variables, x, v, q):
        traces.append(1)
        return model.apply(variables, x, v, q)

    chex.assert_trees_all_close(fn(variables, x, v, q), model.apply(variables, x, v, q),
                                atol=1e-5, rtol=1e-5)
    x2, v2, q2 = inputs(seed=7, dtype=jnp.float32)
    fn(init_variables(model, x, v, q, seed=5), x2, v2, q2)
    assert len(traces) == 1


def test_remat_same_values_and_gradients():
    x, v, q = inputs(dtype=jnp.float32)
    variables = init_variables(EGNN(hidden=8, num_layers=2), x, v, q)

    def loss(params, remat):
        y = EGNN(hidden=8, num_layers=2, remat=remat).apply({"params": params}, x, v, q)
        return jnp.sum(jnp.sin(y))

    grads = jax.jit(lambda p: (jax.grad(loss)(p, False), jax.grad(loss)(p, True)))
    g0, g1 = grads(variables["params"])
    chex.assert_trees_all_close(g0, g1, atol=1e-5, rtol=1e-5)


def test_training_flag_updates_batch_stats():
    model = make_egnn("batch_norm", "feature", hidden=8, num_layers=2)
    x, v, q = inputs(dtype=jnp.float32)
    variables = init_variables(model, x, v, q, training=True)
    stats0 = variables["batch_stats"]
    apply = jax.jit(
        lambda variables, training: model.apply(variables, x, v, q, training=training,
                                                mutable=["batch_stats"]),
        static_argnums=1,
    )
    _, upd = apply(variables, True)
    _, same = apply(variables, False)
    changed = jax.tree_util.tree_map(lambda a, b: bool(np.any(a != b)), stats0,
                                     upd["batch_stats"])
    assert all(jax.tree_util.tree_leaves(changed))
    chex.assert_trees_all_equal(stats0, same["batch_stats"])


# ---------------------------------------------------------------------------------------------
# Construction and bad input
# ---------------------------------------------------------------------------------------------


def test_make_egnn_places():
    geo = catalog.make("geo_norm_shared")
    assert make_egnn(geo).coord_norm is geo
    assert make_egnn("scale_norm_l2", "update").update_norm.name == "scale_norm_l2"
    assert make_egnn("layer_norm", "feature").feature_norm.name == "layer_norm"
    assert make_egnn(None, num_layers=2).coord_norm is None
    with pytest.raises(ValueError, match="place"):
        make_egnn("geo_norm", "edges")
    with pytest.raises(ValueError, match="unknown normalization"):
        make_egnn("no_such_norm")


@pytest.mark.parametrize("name,place", [
    ("weight_norm", "coord"),
    ("layer_norm", "coord"),
    ("geo_norm", "feature"),
    ("spectral_norm", "update"),
    ("batch_norm", "update"),
])
def test_wrong_kind_of_norm_raises(name, place):
    norm = catalog.make(name)
    with pytest.raises(ValueError, match=f"of kind '{norm.kind}'"):
        make_egnn(norm, place)


def test_bad_inputs_raise_value_error():
    model = EGNN(hidden=8, num_layers=1)
    x, v, q = inputs(dtype=jnp.float32)
    variables = init_variables(model, x, v, q)
    apply = lambda *a, **k: model.apply(variables, *a, **k)
    mask = jnp.ones((B, N), bool)
    cases = [
        ((x[..., :2], v[..., :2], q), r"x: expected coordinates \[batch, nodes, 3\].*\(3, 6, 2\)"),
        ((x, v[:, :4], q), r"v: expected.*\(3, 4, 3\)"),
        ((x, v, q[..., 0]), r"charges: expected.*\(3, 6\)"),
        ((x, v, q, mask[:, :5]), r"mask: expected.*\(3, 5\)"),
        ((x, v, q, mask.astype(jnp.float32)), r"mask: expected a bool"),
        ((x[0], v[0], q[0]), r"x: expected coordinates.*\(6, 3\)"),
    ]
    for args, match in cases:
        with pytest.raises(ValueError, match=match):
            apply(*args)
    s, r, e = fully_connected_edges(N, B)
    with pytest.raises(ValueError, match="senders"):
        apply(x, v, q, senders=s)
    with pytest.raises(ValueError, match="edge_mask"):
        apply(x, v, q, senders=s, receivers=r, edge_mask=e[:, :3])
    with pytest.raises(ValueError, match="graph='edges'"):
        EGNN(hidden=8, num_layers=1, graph="edges").apply(variables, x, v, q)
