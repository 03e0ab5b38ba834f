"""The EGNN's execution plan (``edge_chunk="auto"``): the planner's choices, and that chunked
and unchunked steps give the same loss and gradients (float64)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geonorm_jax.models import EGNN, knn_graph
from geonorm_jax.models import egnn_kernels as kernels
from geonorm_jax.models import execution_plan as ep

H = 8


def test_cpu_plan_chunks_large_graphs_and_keeps_small_ones_whole():
    assert jax.default_backend() == "cpu"
    small = ep.plan_edges(1000, 64, jnp.float32, layers=5)
    assert small.chunk is None and small.backend == "cpu" and small.num_chunks == 1
    # the N-body default (N = 5, B = 100): 2500 edges run at once, as before the plan
    assert ep.plan_edges(100 * 5 * 5, 64, jnp.float32, layers=4, granule=5).chunk is None
    big = ep.plan_edges(50 * 100 * 100, 64, jnp.float32, layers=5, granule=100)
    assert big.chunk == 8100  # CPU_CHUNK rounded down to whole receiver rows of N = 100
    assert big.num_chunks == 62 and "CPU" in big.reason
    # on the CPU the chunks are recomputed in full (saving their products was slower)
    assert not big.save_dots and "recomputed" in big.describe()
    # the EGNN's own plan, and the chunk its layers run with
    model = EGNN(hidden=64, num_layers=5)
    assert model.edge_chunk == "auto"
    plan = model.edge_plan(50 * 100 * 100, nodes=100)
    assert plan.chunk == 5000 and not plan.save_dots
    settings = model.layer_settings(num_edges=50 * 100 * 100, nodes=100)
    assert settings.edge_chunk == 5000 and not settings.save_dots
    assert model.layer_settings(num_edges=4 * 7 * 7, nodes=7).edge_chunk is None
    # an explicit chunk is recomputed in full; chunks of a graph or more are whole graphs
    explicit = EGNN(hidden=64, num_layers=5, edge_chunk=16384)
    assert explicit.edge_plan(50 * 100 * 100, nodes=100).chunk == 10000
    assert not explicit.layer_settings(num_edges=50 * 100 * 100, nodes=100).save_dots


def test_products_are_saved_only_on_accelerators_where_they_fit():
    edges = 50 * 100 * 100
    kw = dict(layers=5, granule=100, backend="gpu")
    # 2 GiB for the plan: unchunked (7.3 GiB) does not fit; 131000-edge chunks do, and the
    # 5 layers x 5e5 edges x (2 H + 2) float32 products (1.2 GiB) fit beside one chunk
    fits = ep.plan_edges(edges, 64, jnp.float32, budget_bytes=4 * 2**30, **kw)
    assert fits.chunk == 131000 and fits.save_dots and "products saved" in fits.describe()
    tight = ep.plan_edges(edges, 64, jnp.float32, budget_bytes=2 * 2**30, **kw)
    assert tight.chunk == 131000 and not tight.save_dots and "do not fit" in tight.reason
    remat = ep.plan_edges(edges, 64, jnp.float32, remat=True, budget_bytes=2**30, **kw)
    assert remat.chunk is not None and not remat.save_dots  # nn.remat recomputes anyway
    cpu = ep.plan_edges(edges, 64, jnp.float32, layers=5, granule=100,
                        budget_bytes=64 * 2**30)
    assert cpu.chunk == 8100 and not cpu.save_dots  # the CPU never saves them


@pytest.mark.parametrize("batch, n, chunk, expected", [
    (50, 100, 16384, (100, 1)), (50, 100, 8192, (50, 1)), (50, 100, 2048, (20, 1)),
    (50, 100, None, (100, 50)),
    (4, 7, 14, (1, 1)), (4, 7, 49 * 3, (7, 2)), (6, 10, 10**6, (10, 6))])
def test_dense_blocks(batch, n, chunk, expected):
    assert kernels.dense_blocks(batch, n, chunk) == expected


def test_saved_products_are_not_recomputed_and_give_the_same_gradients():
    """With ``save_dots`` the backward pass of the chunked edge block runs fewer matrix
    products (none of the forward ones again) and the gradients are unchanged (float64)."""
    key = jax.random.key(3)
    ks = jax.random.split(key, 4)
    b, n = 2, 7
    x = jax.random.normal(ks[0], (b, n, 3), jnp.float64)
    a = jax.random.normal(ks[1], (b, n, H), jnp.float64)
    bb = jax.random.normal(ks[2], (b, n, H), jnp.float64)
    attr = jax.random.normal(ks[3], (b, n, n, 2), jnp.float64)
    mask = jnp.ones((b, n, n), jnp.float64)
    w = lambda k, shape: 0.3 * jax.random.normal(jax.random.key(k), shape, jnp.float64)
    p = {"edge_w_radial": w(1, (1, H)), "edge_w_attr": w(2, (2, H)),
         "edge_mlp_out": {"kernel": w(3, (H, H)), "bias": w(4, (H,))},
         "coord_mlp_hidden": {"kernel": w(5, (H, H)), "bias": w(6, (H,))},
         "coord_mlp_out": {"kernel": w(7, (H, 1))}}

    def loss(p, save_dots, chunk):
        cfg = kernels.EdgeKernelConfig(edge_chunk=chunk, save_dots=save_dots)
        trans, m = kernels.dense_edges(p, a, bb, x, attr, mask, cfg)
        return jnp.sum(trans**2) + jnp.sum(jnp.sin(m))

    grad = jax.jit(jax.grad(loss), static_argnums=(1, 2))
    ref = grad(p, False, None)
    count = {}
    for save in (False, True):
        g = grad(p, save, 14)  # 14 edges: blocks of 2 receiver rows... of a prime N: 1 row
        for u, v in zip(jax.tree_util.tree_leaves(ref), jax.tree_util.tree_leaves(g),
                        strict=True):
            np.testing.assert_allclose(np.asarray(v), np.asarray(u), rtol=1e-10, atol=1e-12)
        hlo = grad.lower(p, save, 14).compile().as_text()
        count[save] = hlo.count(" dot(")
    assert count[True] < count[False], count


def test_cpu_plan_shrinks_chunks_to_a_small_budget():
    per_edge = ep.edge_bytes(64, 4)
    plan = ep.plan_edges(10**6, 64, jnp.float32, budget_bytes=2 * 1000 * per_edge)
    assert plan.chunk == 1000 and plan.memory_source == "argument"


def test_accelerator_plan_runs_unchunked_when_it_fits_else_largest_power_of_two():
    per_edge = ep.edge_bytes(64, 4)
    edges = 50 * 100 * 100
    fits = ep.plan_edges(edges, 64, jnp.float32, layers=5, backend="gpu",
                         budget_bytes=4 * 5 * edges * per_edge)
    assert fits.chunk is None and "fit" in fits.reason
    tight = ep.plan_edges(edges, 64, jnp.float32, layers=5, backend="gpu",
                          budget_bytes=2 * 5 * edges * per_edge // 2)  # half of it fits
    assert tight.chunk is not None and tight.chunk & (tight.chunk - 1) == 0
    assert tight.chunk * per_edge <= tight.budget_bytes and tight.num_chunks >= 2
    small = ep.plan_edges(edges, 64, jnp.float32, layers=5, backend="gpu",
                          budget_bytes=2 * 10**4 * per_edge)
    assert small.chunk == 8192  # the largest power of two <= 10^4 edges
    # remat: one layer's edges live at a time, so 1/L of the memory suffices
    remat = ep.plan_edges(edges, 64, jnp.float32, layers=5, remat=True, backend="gpu",
                          budget_bytes=2 * 5 * edges * per_edge // 2)
    assert remat.chunk is None and remat.live_layers == 1
    # dense graphs: whole graphs per chunk
    graphs = ep.plan_edges(edges, 64, jnp.float32, layers=5, backend="gpu", granule=10**4,
                           budget_bytes=2 * 5 * edges * per_edge // 2)
    assert graphs.chunk % 10**4 == 0


def test_device_memory_is_read_where_reported(monkeypatch):
    class Device:
        def memory_stats(self):
            return {"bytes_limit": 10 * 2**30, "bytes_in_use": 2 * 2**30}

    assert ep.available_bytes(device=Device()) == (8 * 2**30, "device")
    monkeypatch.setenv(ep.BUDGET_ENV, "0.5")
    assert ep.available_bytes(device=Device()) == (2**29, "environment")
    monkeypatch.setenv(ep.BUDGET_ENV, "lots")
    with pytest.raises(ValueError, match="expected a positive number of GB; received 'lots'"):
        ep.available_bytes()
    monkeypatch.delenv(ep.BUDGET_ENV)
    assert ep.available_bytes()[1] == "default"  # the CPU reports no limit
    with pytest.raises(ValueError, match="budget_bytes: expected > 0; received -1"):
        ep.available_bytes(-1)


@pytest.mark.parametrize("bad", ["fast", 0, -5, 2.5, True])
def test_bad_edge_chunk_is_refused(bad):
    with pytest.raises(ValueError, match="edge_chunk: expected 'auto', None or an integer"):
        EGNN(edge_chunk=bad)


def _inputs(batch=4, nodes=7):
    key = jax.random.key(0)
    kx, kv, kq = jax.random.split(key, 3)
    x = jax.random.normal(kx, (batch, nodes, 3), jnp.float64)
    v = jax.random.normal(kv, (batch, nodes, 3), jnp.float64)
    q = jnp.sign(jax.random.normal(kq, (batch, nodes, 1), jnp.float64))
    mask = jnp.ones((batch, nodes), bool).at[2, 4:].set(False)
    return x, v, q, mask


@pytest.mark.parametrize("graph", ["dense", "edges"])
def test_chunked_and_unchunked_steps_give_the_same_loss_and_gradients(graph):
    x, v, q, mask = _inputs()
    edges = {}
    if graph == "edges":
        s, r, e = knn_graph(x, 4, mask)
        edges = dict(senders=s, receivers=r, edge_mask=e)
    target = x + 0.1
    variables = EGNN(hidden=H, num_layers=2, edge_chunk=None).init(jax.random.key(1), x, v, q,
                                                                   mask, **edges)
    variables = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), variables)

    def loss(params, model):
        y = model.apply({"params": params}, x, v, q, mask, **edges)
        return jnp.mean(jnp.where(mask[..., None], jnp.square(y - target), 0.0))

    num_edges = 4 * 7 * 7 if graph == "dense" else edges["senders"].size
    per_edge = ep.edge_bytes(H, 8)
    # a budget of ~2 graphs (dense) / ~40 edges (list) per chunk: auto chunks on the CPU
    auto = EGNN(hidden=H, num_layers=2, memory_budget=2 * (2 * 49 if graph == "dense" else 40)
                * per_edge)
    plan = auto.edge_plan(num_edges, jnp.float64, nodes=7 if graph == "dense" else None)
    assert plan.chunk is not None and plan.num_chunks >= 2, plan
    models = {"none": EGNN(hidden=H, num_layers=2, edge_chunk=None), "auto": auto,
              "int": EGNN(hidden=H, num_layers=2, edge_chunk=49 if graph == "dense" else 30),
              "rows": EGNN(hidden=H, num_layers=2, edge_chunk=14)}  # dense: row blocks
    step = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    out = {k: step(variables["params"], m) for k, m in models.items()}
    hlo = {k: step.lower(variables["params"], m).as_text() for k, m in models.items()}
    assert "while" not in hlo["none"] and "while" in hlo["auto"]  # auto did chunk
    l0, g0 = out["none"]
    assert float(l0) > 1e-3
    for name in ("auto", "int", "rows"):
        l1, g1 = out[name]
        np.testing.assert_allclose(float(l1), float(l0), rtol=1e-10, atol=0)
        for a, b in zip(jax.tree_util.tree_leaves(g0), jax.tree_util.tree_leaves(g1),
                        strict=True):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-10, atol=1e-12)
