"""Tests for geonorm_jax.norms.graph: every graph/geometric layer of the survey's Table 1.

Table-driven over ``CASES`` (every catalogue entry of the module, plus the variants: PairNorm
modes, survey readings, powers, context sources, DiffGroupNorm in training and eval). Each
case carries an independent NumPy reference written from the original paper, and the set
of axes its output depends on (other nodes of the same graph, other channels of the same
node, other graphs of the batch), which pins the reduced axes.

Tolerances: float64 comparisons with the NumPy references use rtol=atol=1e-9; float32
jit-vs-eager comparisons use 1e-6.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geonorm_jax.norms import graph
from geonorm_jax.testing import assert_equivariant

ENTRIES = {e.name: e for e in graph.CATALOG_ENTRIES}
SIZES = (5, 3, 2)  # real nodes per graph; padded to N = 5
B, N, C = 3, 5, 4


# ----------------------------------------------------------------------------- NumPy references
# Each takes float64 arrays: x [B, N, C], mask [B, N] bool, params/state dicts of arrays,
# ctx dict, kw (the constructor's keyword arguments), training; returns (y, new_state) with
# y defined at real nodes (padded entries are NaN and never compared).


def _empty(x):
    return np.full_like(x, np.nan)


def ref_graph_norm(x, mask, p, s, ctx, kw, training):
    eps = kw.get("epsilon", 1e-5)
    y = _empty(x)
    for b in range(x.shape[0]):
        xr = x[b, mask[b]]  # [n_b, C]
        if len(xr) == 0:
            continue
        mu = xr.mean(0)
        sub = xr - p["alpha"] * mu
        sigma = np.sqrt((sub**2).mean(0) + eps)
        y[b, mask[b]] = p["scale"] * sub / sigma + p["bias"]
    return y, s


def ref_pair_norm(x, mask, p, s, ctx, kw, training):
    eps, sc, mode = kw.get("epsilon", 1e-6), kw.get("scale", 1.0), kw.get("mode", "PN")
    y = _empty(x)
    for b in range(x.shape[0]):
        xr = x[b, mask[b]]
        if len(xr) == 0:
            continue
        col_mean = xr.mean(0)
        xc = xr - col_mean
        if mode == "PN":
            out = sc * xc / np.sqrt(eps + np.mean(np.sum(xc**2, axis=1)))
        elif mode == "PN-SI":
            out = sc * xc / np.sqrt(eps + np.sum(xc**2, axis=1, keepdims=True))
        else:
            out = sc * xr / np.sqrt(eps + np.sum(xr**2, axis=1, keepdims=True)) - col_mean
        y[b, mask[b]] = out
    return y, s


def _per_node_index_stats(x, mask):
    """mu_{b,v}, var_{b,v}: for each node index, over real (graph, channel) entries."""
    mu = np.zeros(x.shape[1])
    var = np.zeros(x.shape[1])
    for i in range(x.shape[1]):
        vals = x[mask[:, i], i, :].ravel()
        if len(vals):
            mu[i], var[i] = vals.mean(), vals.var()
    return mu, var


def ref_mean_subtraction(x, mask, p, s, ctx, kw, training):
    y = _empty(x)
    if kw.get("reading", "paper") == "survey":
        mu, _ = _per_node_index_stats(x, mask)
        y[mask] = (x - mu[None, :, None])[mask]
        return y, s
    for b in range(x.shape[0]):
        xr = x[b, mask[b]]
        if len(xr):
            y[b, mask[b]] = xr - xr.mean(0)
    return y, s


def ref_set_norm(x, mask, p, s, ctx, kw, training):
    eps = kw.get("epsilon", 1e-5)
    y = _empty(x)
    if kw.get("reading", "paper") == "survey":
        mu, var = _per_node_index_stats(x, mask)
        z = (x - mu[None, :, None]) / np.sqrt(var[None, :, None] + eps)
        y[mask] = (p["scale"] * z + p["bias"])[mask]
        return y, s
    for b in range(x.shape[0]):
        xr = x[b, mask[b]]
        if len(xr):
            z = (xr - xr.mean()) / np.sqrt(xr.var() + eps)  # over elements and channels
            y[b, mask[b]] = p["scale"] * z + p["bias"]
    return y, s


def ref_message_norm(x, mask, p, s, ctx, kw, training):
    sc = p["scale"][0] if kw.get("learn_scale", True) else kw.get("scale", 1.0)
    m = ctx["message"]
    h_norm = np.linalg.norm(x, axis=-1, keepdims=True)
    m_norm = np.linalg.norm(m, axis=-1, keepdims=True)
    return x + sc * h_norm * m / m_norm, s


def ref_diff_group_norm(x, mask, p, s, ctx, kw, training):
    lam, eps, momentum = kw.get("lam", 0.01), kw.get("epsilon", 1e-5), kw.get("momentum", 0.9)
    xr = x[mask]  # every real node of the batch, [R, C]
    logits = xr @ p["kernel"]
    assign = np.exp(logits - logits.max(-1, keepdims=True))
    assign /= assign.sum(-1, keepdims=True)  # [R, G]
    h = assign[:, :, None] * xr[:, None, :]  # [R, G, C]
    if training:
        mean, var = h.mean(0), h.var(0)
        new_state = {
            "mean": momentum * s["mean"] + (1 - momentum) * mean,
            "var": momentum * s["var"] + (1 - momentum) * var,
        }
    else:
        mean, var, new_state = s["mean"], s["var"], s
    bn = p["scale"] * (h - mean) / np.sqrt(var + eps) + p["bias"]
    y = _empty(x)
    y[mask] = xr + lam * bn.sum(1)
    return y, new_state


def ref_graph_size_norm(x, mask, p, s, ctx, kw, training):
    power = kw.get("power", 0.5)
    n = np.maximum(mask.sum(1), 1)[:, None, None]
    return x / n**power, s


def _ref_counts(x, mask, ctx):
    if "num_neighbors" in ctx:
        return ctx["num_neighbors"]
    counts = np.zeros(mask.shape)
    for b in range(mask.shape[0]):
        for i in range(mask.shape[1]):
            if "adjacency" in ctx:
                counts[b, i] = sum(
                    ctx["adjacency"][b, i, j] for j in range(mask.shape[1]) if mask[b, j]
                )
            else:
                counts[b, i] = mask[b].sum() - 1
    return counts


def ref_schnet(x, mask, p, s, ctx, kw, training):
    return x / np.maximum(_ref_counts(x, mask, ctx), 1)[..., None], s


def ref_avg_neighbors(x, mask, p, s, ctx, kw, training):
    avg = kw.get("avg_num_neighbors")
    if avg is None:
        avg = float(np.mean(_ref_counts(x, mask, ctx)[mask]))
    stored = float(s["avg_num_neighbors"])  # float32 in state
    np.testing.assert_allclose(stored, avg, rtol=1e-6)
    return x / stored ** kw["power"], s


# ----------------------------------------------------------------------------- cases


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    entry: str
    ref: Callable
    # Does y[0, 0, 0] depend on x at (0, 1, 0) other node, (0, 0, 1) other channel,
    # (1, 0, 0) other graph?
    coupling: tuple[bool, bool, bool]
    overrides: dict = dataclasses.field(default_factory=dict)
    ctx: str = "none"  # none | message | num_neighbors | adjacency
    training: bool = False
    per_graph: bool = True

    @property
    def kwargs(self):
        return {**ENTRIES[self.entry].kwargs, **self.overrides}

    def make(self):
        return ENTRIES[self.entry].make(**self.overrides)


CASES = [
    Case("graph_norm", "graph_norm", ref_graph_norm, (True, False, False)),
    Case("pair_norm_PN", "pair_norm", ref_pair_norm, (True, True, False), {"scale": 1.7}),
    Case(
        "pair_norm_PN-SI",
        "pair_norm",
        ref_pair_norm,
        (True, True, False),
        {"mode": "PN-SI", "scale": 0.8},
    ),
    Case("pair_norm_PN-SCS", "pair_norm", ref_pair_norm, (True, True, False), {"mode": "PN-SCS"}),
    Case(
        "mean_subtraction_paper",
        "mean_subtraction_norm",
        ref_mean_subtraction,
        (True, False, False),
    ),
    Case(
        "mean_subtraction_survey",
        "mean_subtraction_norm",
        ref_mean_subtraction,
        (False, True, True),
        {"reading": "survey"},
        per_graph=False,
    ),
    Case("message_norm", "message_norm", ref_message_norm, (False, True, False), ctx="message"),
    Case(
        "message_norm_fixed",
        "message_norm",
        ref_message_norm,
        (False, True, False),
        {"learn_scale": False, "scale": 2.0},
        ctx="message",
    ),
    Case(
        "diff_group_norm_train",
        "diff_group_norm",
        ref_diff_group_norm,
        (True, True, True),
        training=True,
        per_graph=False,
    ),
    Case("diff_group_norm_eval", "diff_group_norm", ref_diff_group_norm, (False, True, False)),
    Case("set_norm_paper", "set_norm", ref_set_norm, (True, True, False)),
    Case(
        "set_norm_survey",
        "set_norm",
        ref_set_norm,
        (False, True, True),
        {"reading": "survey"},
        per_graph=False,
    ),
    Case("graph_size_norm", "graph_size_norm", ref_graph_size_norm, (False, False, False)),
    Case(
        "graph_size_norm_survey",
        "graph_size_norm",
        ref_graph_size_norm,
        (False, False, False),
        {"power": 1.0},
    ),
    Case("schnet_mask", "schnet_neighbor_norm", ref_schnet, (False, False, False)),
    Case(
        "schnet_num_neighbors",
        "schnet_neighbor_norm",
        ref_schnet,
        (False, False, False),
        ctx="num_neighbors",
    ),
    Case(
        "schnet_adjacency",
        "schnet_neighbor_norm",
        ref_schnet,
        (False, False, False),
        ctx="adjacency",
    ),
    Case("mace_estimated", "mace_avg_neighbor_norm", ref_avg_neighbors, (False, False, False)),
    Case(
        "mace_given",
        "mace_avg_neighbor_norm",
        ref_avg_neighbors,
        (False, False, False),
        {"avg_num_neighbors": 7.5},
    ),
    Case(
        "allegro_estimated_adjacency",
        "allegro_avg_neighbor_norm",
        ref_avg_neighbors,
        (False, False, False),
        ctx="adjacency",
    ),
    Case(
        "allegro_given",
        "allegro_avg_neighbor_norm",
        ref_avg_neighbors,
        (False, False, False),
        {"avg_num_neighbors": 12.0},
    ),
]
IDS = [c.id for c in CASES]


def make_mask(sizes=SIZES, n=N):
    return jnp.arange(n)[None, :] < jnp.asarray(sizes)[:, None]


def make_context(kind, key, shape, dtype):
    b, n, c = shape
    if kind == "message":
        return {"message": jax.random.normal(key, shape, dtype)}
    if kind == "num_neighbors":
        return {"num_neighbors": jax.random.randint(key, (b, n), 0, 6).astype(dtype)}
    if kind == "adjacency":
        a = jax.random.bernoulli(key, 0.5, (b, n, n))
        a = (a | jnp.swapaxes(a, 1, 2)) & ~jnp.eye(n, dtype=bool)
        return {"adjacency": a.astype(dtype)}
    return {}


def setup(case, key, x, mask, randomize=True):
    """Build the norm, its context, and params/state (randomized so references are not trivial)."""
    k_ctx, k_init, k_p, k_s = jax.random.split(key, 4)
    norm = norm_of(case)
    ctx = make_context(case.ctx, k_ctx, x.shape, x.dtype)
    params, state = norm.init(k_init, x, mask=mask, **ctx)
    if randomize:
        leaves, tree = jax.tree.flatten(params)
        keys = jax.random.split(k_p, max(len(leaves), 1))[: len(leaves)]
        noisy = [
            p + 0.3 * jax.random.normal(k, p.shape, p.dtype)
            for p, k in zip(leaves, keys, strict=True)
        ]
        params = jax.tree.unflatten(tree, noisy)
        if case.entry == "diff_group_norm":
            km, kv = jax.random.split(k_s)
            state = {
                "mean": 0.1 * jax.random.normal(km, state["mean"].shape, state["mean"].dtype),
                "var": jax.random.uniform(kv, state["var"].shape, state["var"].dtype, 0.5, 1.5),
            }
    return norm, ctx, params, state


_NORMS: dict = {}
_APPLY: dict = {}
_GRAD: dict = {}


def norm_of(case):
    """One ``Norm`` per case, so that jit caches are shared between tests (keeps the file fast)."""
    if case.id not in _NORMS:
        _NORMS[case.id] = case.make()
    return _NORMS[case.id]


def apply_of(case):
    """``norm.apply`` under jit, cached per case: one compilation per input shape."""
    if case.id not in _APPLY:
        _APPLY[case.id] = jax.jit(norm_of(case).apply, static_argnames=("training",))
    return _APPLY[case.id]


def run(case, params, state, x, mask, ctx):
    return apply_of(case)(params, state, x, mask=mask, training=case.training, **ctx)


def np64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def data(key, dtype=jnp.float64, shape=(B, N, C)):
    return 1.5 * jax.random.normal(key, shape, dtype) + 0.5


# ----------------------------------------------------------------------------- catalogue


def test_every_entry_has_cases_and_metadata():
    assert {c.entry for c in CASES} == set(ENTRIES)
    for e in graph.CATALOG_ENTRIES:
        assert e.kind == "features" and e.family == "graph/geometric"
        assert e.paper and e.formula and e.reduced_axes and e.survey_row and e.notes
        assert e.make().kind == "features"
    assert ENTRIES["mace_avg_neighbor_norm"].constructor is graph.avg_num_neighbors_norm
    assert ENTRIES["allegro_avg_neighbor_norm"].constructor is graph.avg_num_neighbors_norm
    assert ENTRIES["mace_avg_neighbor_norm"].kwargs["power"] == 1.0
    assert ENTRIES["allegro_avg_neighbor_norm"].kwargs["power"] == 0.5
    assert set(graph.__all__) <= set(dir(graph))


# ----------------------------------------------------------------------------- table-driven


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_numpy_reference(case):
    key = jax.random.PRNGKey(1)
    x, mask = data(key), make_mask()
    norm, ctx, params, state = setup(case, jax.random.PRNGKey(2), x, mask)
    y, new_state = run(case, params, state, x, mask, ctx)
    m = np.asarray(mask)
    y_ref, state_ref = case.ref(
        np64(x), m, np64(params), np64(state), np64(ctx), case.kwargs, case.training
    )
    np.testing.assert_allclose(np.asarray(y)[m], y_ref[m], rtol=1e-9, atol=1e-9)
    for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(state_ref), strict=True):
        np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float32_shape_dtype_jit_matches_eager_no_recompile(case):
    key = jax.random.PRNGKey(3)
    x, mask = data(key, jnp.float32), make_mask()
    norm, ctx, params, state = setup(case, key, x, mask)
    traces = []

    def f(params, state, x, mask, ctx):
        traces.append(None)
        return norm.apply(params, state, x, mask=mask, training=case.training, **ctx)

    jf = jax.jit(f)
    y_jit, s_jit = jf(params, state, x, mask, ctx)
    y_eager, s_eager = f(params, state, x, mask, ctx)
    assert y_jit.shape == x.shape and y_jit.dtype == y_eager.dtype == jnp.float32
    assert jax.tree.structure(s_jit) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(s_jit), jax.tree.leaves(state), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
    assert np.all(np.isfinite(np.asarray(y_jit)))  # padded outputs finite too
    np.testing.assert_allclose(y_jit, y_eager, rtol=1e-6, atol=1e-6)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), s_jit, s_eager
    )
    n_traces = len(traces)
    ctx2 = jax.tree.map(lambda a: a * 0.5 + 1.0, ctx)
    jf(params, state, x + 1.0, make_mask((4, 2, 5)), ctx2)
    jf(params, s_jit, 2.0 * x, mask, ctx)
    assert len(traces) == n_traces == 2  # one trace under jit, one eager call


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_padded_values_do_not_change_real_outputs(case):
    key = jax.random.PRNGKey(4)
    x, mask = data(key), make_mask()
    norm, ctx, params, state = setup(case, key, x, mask)
    pad = ~mask
    noise = 100.0 * jax.random.normal(jax.random.PRNGKey(5), x.shape, x.dtype)
    x2 = jnp.where(pad[..., None], noise, x)
    ctx2 = dict(ctx)
    if "message" in ctx:
        ctx2["message"] = jnp.where(pad[..., None], noise, ctx["message"])
    if "num_neighbors" in ctx:
        ctx2["num_neighbors"] = jnp.where(pad, 9.0, ctx["num_neighbors"])
    if "adjacency" in ctx:  # edges to or from padded nodes
        either = pad[:, :, None] | pad[:, None, :]
        ctx2["adjacency"] = jnp.where(either, 1.0, ctx["adjacency"])
    y, s = run(case, params, state, x, mask, ctx)
    y2, s2 = run(case, params, state, x2, mask, ctx2)
    m = np.asarray(mask)
    np.testing.assert_allclose(np.asarray(y2)[m], np.asarray(y)[m], rtol=1e-10, atol=1e-10)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), s2, s)
    assert np.all(np.isfinite(np.asarray(y2)))


@pytest.mark.parametrize("case", [c for c in CASES if c.per_graph], ids=lambda c: c.id)
def test_padded_batch_equals_unpadded_graphs(case):
    key = jax.random.PRNGKey(6)
    x, mask = data(key), make_mask()
    norm, ctx, params, state = setup(case, key, x, mask)
    y, _ = run(case, params, state, x, mask, ctx)
    b, n = 1, SIZES[1]  # graph 1: 3 real nodes of 5 (one compilation keeps the file fast)
    ctx_b = {
        k: (v[b : b + 1, :n, :n] if k == "adjacency" else v[b : b + 1, :n]) for k, v in ctx.items()
    }
    y_b, _ = run(case, params, state, x[b : b + 1, :n], None, ctx_b)
    np.testing.assert_allclose(y_b[0], y[b, :n], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reduced_axes(case):
    """y[0, 0, 0] depends on another node / channel / graph exactly as the paper says."""
    key = jax.random.PRNGKey(7)
    x, mask = data(key), make_mask()
    norm, ctx, params, state = setup(case, key, x, mask)

    def out(x):
        return run(case, params, state, x, mask, ctx)[0][0, 0, 0]

    y0 = out(x)
    for where, expected in zip([(0, 1, 0), (0, 0, 1), (1, 0, 0)], case.coupling, strict=True):
        changed = abs(float(out(x.at[where].add(0.7))) - float(y0)) > 1e-8
        assert changed == expected, f"perturbing x{where}: changed={changed}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_permutation_equivariance_and_batch_independence(case):
    key = jax.random.PRNGKey(8)
    x, mask = data(key), make_mask()
    norm, ctx, params, state = setup(case, key, x, mask)
    names = sorted(ctx)
    kinds = {"message": "features", "num_neighbors": "mask", "adjacency": "edges"}

    def fn(x, mask, *ctx_values):
        c = dict(zip(names, ctx_values, strict=True))
        return run(case, params, state, x, mask, c)[0]

    groups = ("permutation", "batch") if case.per_graph else ("permutation",)
    assert_equivariant(
        fn,
        jax.random.PRNGKey(9),
        x,
        mask,
        *[ctx[k] for k in names],
        group=groups,
        kinds=("features", "mask", *[kinds[k] for k in names]),
        out_kinds=("features",),
        atol=1e-10,
        rtol=1e-10,
    )


def _degenerate(name):
    """(x, mask, which graphs get a zero message) in float32."""
    if name == "mixed":  # all-equal graph, zero graph, one real node, fully masked graph
        x = jnp.stack(
            [
                jnp.full((4, C), 3.0),
                jnp.zeros((4, C)),
                jnp.ones((4, C)),
                jnp.arange(4.0 * C).reshape(4, C),
            ]
        ).astype(jnp.float32)
        mask = jnp.array([[1, 1, 1, 1], [1, 1, 1, 1], [0, 1, 0, 0], [0, 0, 0, 0]], bool)
        return x, mask, jnp.array([False, True, False, False])
    if name == "one_node_all_equal":  # N = 1 and zero variance over every axis
        return jnp.full((2, 1, C), 2.0, jnp.float32), None, jnp.array([True, False])
    if name == "zeros_fully_masked_batch":
        x = jnp.zeros((4, 4, C), jnp.float32)  # same shapes as "mixed": shares its compilation
        return x, jnp.zeros((4, 4), bool), jnp.ones((4,), bool)
    raise AssertionError(name)


@pytest.mark.parametrize("degenerate", ["mixed", "one_node_all_equal", "zeros_fully_masked_batch"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_degenerate_inputs_finite_values_and_grads(case, degenerate):
    x, mask, zero_msg = _degenerate(degenerate)
    init_mask = None if degenerate == "zeros_fully_masked_batch" else mask
    norm, ctx, params, state = setup(case, jax.random.PRNGKey(10), x, init_mask)
    if "message" in ctx:
        ctx["message"] = jnp.where(zero_msg[:, None, None], 0.0, ctx["message"])
    w = jax.random.normal(jax.random.PRNGKey(11), x.shape, x.dtype)
    if case.id not in _GRAD:

        def loss(params, x, ctx, state, mask, w):
            y, s = norm.apply(params, state, x, mask=mask, training=case.training, **ctx)
            return jnp.sum(y * w), (y, s)

        _GRAD[case.id] = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))
    grads, (y, s) = _GRAD[case.id](params, x, ctx, state, mask, w)
    for leaf in jax.tree.leaves((y, s, grads, state)):
        assert np.all(np.isfinite(np.asarray(leaf))), degenerate
    assert y.dtype == jnp.float32


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bad_inputs_raise_value_error_naming_shape(case):
    key = jax.random.PRNGKey(12)
    x, mask = data(key, jnp.float32), make_mask()
    norm, ctx, params, state = setup(case, key, x, mask)
    with pytest.raises(ValueError, match=r"\(3, 20\)"):
        norm.init(key, x.reshape(3, 20), **ctx)
    with pytest.raises(ValueError, match=r"\(3, 20\)"):
        norm.apply(params, state, x.reshape(3, 20), **ctx)
    with pytest.raises(ValueError, match=r"\(3, 5, 4\)"):
        norm.apply(params, state, x.astype(jnp.int32), **ctx)
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        norm.apply(params, state, x, mask=mask[:, :4], **ctx)


# ----------------------------------------------------------------------------- specific pins


def test_message_norm_context_errors():
    norm = graph.message_norm()
    x = jnp.ones((2, 3, 4))
    params, state = norm.init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="message"):
        norm.apply(params, state, x)
    with pytest.raises(ValueError, match=r"\(2, 3, 5\)"):
        norm.apply(params, state, x, message=jnp.ones((2, 3, 5)))
    assert float(params["scale"][0]) == 1.0
    assert graph.message_norm(learn_scale=False).init(jax.random.PRNGKey(0), x)[0] == {}


def test_message_norm_properties():
    """||y - h|| = s ||h|| and y - h is parallel to m, per node (the paper's Eq.)."""
    key1, key2 = jax.random.split(jax.random.PRNGKey(1))
    x, m = data(key1), data(key2)
    norm = graph.message_norm(learn_scale=False, scale=0.5)
    y, _ = norm.apply({}, {}, x, message=m)
    d = np.asarray(y - x)
    np.testing.assert_allclose(np.linalg.norm(d, axis=-1), 0.5 * np.linalg.norm(x, axis=-1))
    cos = np.sum(d * np.asarray(m), -1) / np.linalg.norm(d, axis=-1) / np.linalg.norm(m, axis=-1)
    np.testing.assert_allclose(cos, 1.0, rtol=1e-12)


def test_neighbor_context_shape_errors():
    x = jnp.ones((2, 3, 4))
    state = {"avg_num_neighbors": jnp.ones((), jnp.float32)}
    for norm in (graph.schnet_neighbor_norm(), graph.avg_num_neighbors_norm(power=1.0)):
        for bad in ({"num_neighbors": jnp.ones((2, 4))}, {"adjacency": jnp.ones((2, 3, 4))}):
            shape = r"\(2, 4\)" if "num_neighbors" in bad else r"\(2, 3, 4\)"
            with pytest.raises(ValueError, match=shape):
                norm.init(jax.random.PRNGKey(0), x, **bad)
                norm.apply({}, state, x, **bad)  # schnet's init ignores context
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        graph.schnet_neighbor_norm().apply({}, {}, x, num_neighbors=jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="avg_num_neighbors"):
        graph.avg_num_neighbors_norm().apply({}, {}, x)


@pytest.mark.parametrize(
    "build",
    [
        lambda: graph.pair_norm(mode="PN-XX"),
        lambda: graph.mean_subtraction_norm(reading="other"),
        lambda: graph.set_norm(reading="other"),
        lambda: graph.diff_group_norm(num_groups=0),
        lambda: graph.graph_size_norm(power=-1.0),
        lambda: graph.avg_num_neighbors_norm(avg_num_neighbors=0.0),
        lambda: graph.avg_num_neighbors_norm(power=-0.5),
    ],
)
def test_bad_hyperparameters(build):
    with pytest.raises(ValueError):
        build()


def test_pair_norm_original_semantics():
    """PN: mean_i ||y_i||^2 = s^2 per graph; PN-SI: ||y_i|| = s; both centred per channel."""
    x, mask = data(jax.random.PRNGKey(2)), make_mask()
    m = np.asarray(mask)
    y, _ = graph.pair_norm(scale=2.0, epsilon=0.0).apply({}, {}, x, mask=mask)
    y_si, _ = graph.pair_norm(scale=2.0, mode="PN-SI", epsilon=0.0).apply({}, {}, x, mask=mask)
    for b in range(B):
        yb, ysb = np.asarray(y)[b, m[b]], np.asarray(y_si)[b, m[b]]
        np.testing.assert_allclose(np.mean(np.sum(yb**2, -1)), 4.0, rtol=1e-12)
        np.testing.assert_allclose(yb.mean(0), 0.0, atol=1e-12)  # centred per channel
        np.testing.assert_allclose(np.linalg.norm(ysb, axis=-1), 2.0, rtol=1e-12)


def test_graph_norm_alpha_zero_is_rms_and_alpha_one_is_instance_norm():
    x, mask = data(jax.random.PRNGKey(3)), make_mask()
    norm = graph.graph_norm(epsilon=0.0)
    params, _ = norm.init(jax.random.PRNGKey(0), x)
    y, _ = norm.apply(params, {}, x, mask=mask)
    y0, _ = norm.apply({**params, "alpha": jnp.zeros(C)}, {}, x, mask=mask)
    xr, yr, y0r = (np.asarray(a)[0, :5] for a in (x, y, y0))
    np.testing.assert_allclose(yr, (xr - xr.mean(0)) / xr.std(0), rtol=1e-10)
    np.testing.assert_allclose(y0r, xr / np.sqrt(np.mean(xr**2, 0)), rtol=1e-10)


def test_survey_readings_differ_from_papers():
    """The default follows the original paper; the survey's mu_{b,v} reading is different."""
    x, mask = data(jax.random.PRNGKey(4)), make_mask()
    for ctor in (graph.mean_subtraction_norm, graph.set_norm):
        paper, survey = ctor(), ctor(reading="survey")
        p, _ = paper.init(jax.random.PRNGKey(0), x)
        yp, _ = paper.apply(p, {}, x, mask=mask)
        ys, _ = survey.apply(p, {}, x, mask=mask)
        assert float(jnp.max(jnp.abs(yp - ys))) > 0.1
    assert ENTRIES["mean_subtraction_norm"].kwargs["reading"] == "paper"
    assert ENTRIES["set_norm"].kwargs["reading"] == "paper"
    # SetNorm (paper): zero mean and unit variance over each set's elements and channels.
    y, _ = graph.set_norm(use_scale=False, use_bias=False, epsilon=0.0).apply({}, {}, x, mask=mask)
    yr = np.asarray(y)[1, :3]
    np.testing.assert_allclose([yr.mean(), yr.var()], [0.0, 1.0], atol=1e-12)


def test_graph_size_norm_default_follows_original_code():
    x, mask = jnp.ones((2, 5, 2)), make_mask((4, 1), 5)
    y, _ = graph.graph_size_norm().apply({}, {}, x, mask=mask)
    np.testing.assert_allclose(np.asarray(y)[:, 0, 0], [0.5, 1.0])  # 1/sqrt(4), 1/sqrt(1)
    y1, _ = graph.graph_size_norm(power=1.0).apply({}, {}, x, mask=mask)
    np.testing.assert_allclose(np.asarray(y1)[:, 0, 0], [0.25, 1.0])  # survey: A/|X|
    assert ENTRIES["graph_size_norm"].kwargs["power"] == 0.5


def test_schnet_counts_clamped_and_precedence():
    x = jnp.ones((1, 3, 1))
    norm = graph.schnet_neighbor_norm()
    y, _ = norm.apply(
        {}, {}, x, num_neighbors=jnp.array([[0.0, 2.0, 4.0]]), adjacency=jnp.zeros((1, 3, 3))
    )
    np.testing.assert_allclose(np.asarray(y)[0, :, 0], [1.0, 0.5, 0.25])
    y, _ = norm.apply({}, {}, x, mask=jnp.array([[True, True, False]]))
    np.testing.assert_allclose(np.asarray(y)[0, :2, 0], [1.0, 1.0])  # n_real - 1 = 1


def test_avg_num_neighbors_estimated_once_and_fixed():
    x, mask = data(jax.random.PRNGKey(5)), make_mask()
    norm = graph.avg_num_neighbors_norm(power=1.0)
    _, state = norm.init(jax.random.PRNGKey(0), x, mask=mask)
    expected = (5 * 4 + 3 * 2 + 2 * 1) / 10  # fully connected, over real nodes {b, x}
    np.testing.assert_allclose(float(state["avg_num_neighbors"]), expected, rtol=1e-6)
    assert state["avg_num_neighbors"].dtype == jnp.float32
    mask1 = make_mask((1, 1, 1))
    y, new_state = norm.apply({}, state, 3.0 * x, mask=mask1, training=True)
    assert float(new_state["avg_num_neighbors"]) == float(state["avg_num_neighbors"])
    real = np.asarray(mask1)  # padded outputs are unspecified (computed from zeros)
    np.testing.assert_allclose(np.asarray(y)[real],
                               (3.0 * x / float(state["avg_num_neighbors"]))[real], rtol=1e-6)
    # No edges at all (N = 1): the estimate 0 is replaced by 1.
    _, s1 = norm.init(jax.random.PRNGKey(0), jnp.ones((2, 1, 3)))
    assert float(s1["avg_num_neighbors"]) == 1.0
    # Allegro: divide by sqrt.
    allegro = ENTRIES["allegro_avg_neighbor_norm"].make(avg_num_neighbors=16.0)
    _, s = allegro.init(jax.random.PRNGKey(0), x)
    np.testing.assert_allclose(allegro.apply({}, s, x)[0], x / 4.0, rtol=1e-7)


def test_diff_group_norm_running_stats():
    x, mask = data(jax.random.PRNGKey(6), jnp.float32), make_mask()
    norm = graph.diff_group_norm(num_groups=3)
    params, state = norm.init(jax.random.PRNGKey(0), x)
    assert params["kernel"].shape == (C, 3) and state["mean"].shape == (3, C)
    _, s_eval = norm.apply(params, state, x, mask=mask, training=False)
    jax.tree.map(np.testing.assert_array_equal, s_eval, state)
    _, s_train = norm.apply(params, state, x, mask=mask, training=True)
    assert float(jnp.max(jnp.abs(s_train["mean"] - state["mean"]))) > 1e-3
    _, s_empty = norm.apply(params, state, x, mask=jnp.zeros((B, N), bool), training=True)
    jax.tree.map(np.testing.assert_array_equal, s_empty, state)
    # lam = 0 is the identity.
    y, _ = graph.diff_group_norm(num_groups=3, lam=0.0).apply(params, state, x, training=True)
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("name", ["graph_norm", "set_norm", "diff_group_norm"])
def test_wrong_channel_count_names_expected_and_received(name):
    norm = ENTRIES[name].make()
    params, state = norm.init(jax.random.PRNGKey(0), jnp.ones((2, 3, 4)))
    with pytest.raises(ValueError, match=rf"{name}: '\w+' has 4 channels .*but the features "
                                         r"have 5; expected features \[batch, nodes, 4\], "
                                         r"received shape \(2, 3, 5\)"):
        norm.apply(params, state, jnp.ones((2, 3, 5)), training=True)
