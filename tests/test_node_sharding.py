"""Node-axis sharding of the edge-list EGNN (``geonorm_jax.parallel.nodes`` for the layout,
``geonorm_jax.models.sharding`` for the kernels).

In-process (one device): the edge partition layout, its validation errors, the chunked kNN.
One subprocess with 4 forced host devices (``XLA_FLAGS`` is read when JAX is imported, so it
cannot be set here) compares the node-sharded model with the single-device model: outputs and
parameter gradients of an MSE loss in float64, for no norm, GeoNorm (coordinates) with
GraphNorm (features); both take statistics over the nodes of a graph, i.e. across devices),
a padded batch of two graphs with random edges, and the sharded kNN builder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geonorm_jax import parallel as sh
from geonorm_jax.models import EGNN, knn_graph


def _random_edges(rng, batch, n, edges, masked=0.2):
    s = rng.integers(0, n, size=(batch, edges))
    r = rng.integers(0, n, size=(batch, edges))
    m = rng.random((batch, edges)) > masked
    return s, r, m


# ----------------------------------------------------------------------------- partition


@pytest.mark.parametrize("shards", [1, 2, 4])
def test_partition_edges_layout(shards):
    rng = np.random.default_rng(shards)
    batch, n = 3, 12
    s, r, m = _random_edges(rng, batch, n, 40)
    ps, pr, pm = sh.partition_edges(s, r, m, n, shards)
    assert ps.shape == pr.shape == pm.shape and ps.shape[0] == batch
    assert ps.dtype == pr.dtype == np.int32 and pm.dtype == bool
    per = ps.shape[1] // shards
    assert ps.shape[1] == shards * per
    block = n // shards
    for b in range(batch):
        # the real edges are the same multiset, each in the edge block of its receiver
        got = sorted(zip(ps[b][pm[b]].tolist(), pr[b][pm[b]].tolist(), strict=True))
        want = sorted(zip(s[b][m[b]].tolist(), r[b][m[b]].tolist(), strict=True))
        assert got == want
        edge_block = np.arange(ps.shape[1]) // per
        np.testing.assert_array_equal((pr[b] // block)[pm[b]], edge_block[pm[b]])
        # padding edges stay inside their block (valid indices, masked)
        np.testing.assert_array_equal(pr[b][~pm[b]] // block, edge_block[~pm[b]])
    # the budget is the fullest block
    counts = [((r[b] // block == d) & m[b]).sum() for b in range(batch) for d in range(shards)]
    assert per == max(counts)
    sh.check_partition(pr, pm, n, shards)  # passes
    # a fixed budget pads further
    ps2, _, pm2 = sh.partition_edges(s, r, m, n, shards, edges_per_shard=per + 3)
    assert ps2.shape == (batch, shards * (per + 3)) and pm2.sum() == pm.sum()


def test_knn_graph_already_has_the_layout():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 3)))
    s, r, e = knn_graph(x, 3)
    sh.check_partition(np.asarray(r), np.asarray(e), 16, 4)
    ps, pr, pm = sh.partition_edges(s, r, e, 16, 4)
    np.testing.assert_array_equal(ps, s)  # reordering is the identity
    np.testing.assert_array_equal(pr, r)
    np.testing.assert_array_equal(pm, e)


def test_wrong_layout_is_rejected():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 16, 3)))
    _, r, e = knn_graph(x, 3)
    rolled = np.roll(np.asarray(r), 12, axis=1)  # one edge block too far
    with pytest.raises(ValueError, match="node block"):
        sh.check_partition(rolled, np.asarray(e), 16, 4)
    with pytest.raises(ValueError, match="divisible by the number of shards 4; received 46"):
        sh.check_partition(np.asarray(r)[:, :46], None, 16, 4)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: sh.partition_edges([0, 1], [1, 0], None, 10, 4),
         "divisible by the number of shards 4; received 10 nodes"),
        (lambda: sh.partition_edges([0, 1], [1, 0, 2], None, 8, 4), r"\(2,\) and \(3,\)"),
        (lambda: sh.partition_edges([0, 9], [1, 0], None, 8, 4), r"\[0, 8\); received 9"),
        (lambda: sh.partition_edges([[0, 1]], [[1, 0]], [True, True], 8, 4),
         r"shape of senders \(1, 2\); received \(2,\)"),
        (lambda: sh.partition_edges(np.zeros((1, 1, 2), int), np.zeros((1, 1, 2), int), None,
                                    8, 4), r"received shape \(1, 1, 2\)"),
        (lambda: sh.partition_edges([0, 1, 2], [1, 1, 1], None, 8, 4, edges_per_shard=2),
         "at least 3.*received 2"),
        (lambda: sh.partition_edges([0], [1], None, 8, 0), "num_shards >= 1; received 0"),
        (lambda: sh.NodeSharding(sh.node_mesh(), axis="atoms"), "'atoms'.*received mesh axes"),
        (lambda: sh.NodeSharding("mesh"), "Mesh; received str"),
        (lambda: sh.node_mesh([]), "at least one device"),
    ],
)
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_pad_nodes_and_shard_graph_single_device():
    rng = np.random.default_rng(2)
    x, v, q = rng.normal(size=(2, 10, 3)), rng.normal(size=(2, 10, 3)), np.ones((2, 10, 1))
    xp, vp, qp, mp = sh.pad_nodes(4, x, v, q)
    assert xp.shape == (2, 12, 3) and qp.shape == (2, 12, 1)
    np.testing.assert_array_equal(xp[:, :10], x)
    assert mp[:, :10].all() and not mp[:, 10:].any() and not xp[:, 10:].any()
    ns = sh.node_sharding(jax.devices()[:1])
    s, r, m = _random_edges(rng, 2, 10, 20)
    inputs = sh.shard_graph(ns, x, v, q, s, r, m)
    assert set(inputs) == {"x", "v", "charges", "mask", "senders", "receivers", "edge_mask"}
    assert inputs["x"].shape == (2, 10, 3) and inputs["x"].sharding == ns.nodes  # 10 % 1 == 0
    with pytest.raises(ValueError, match=r"batch=2.*received 1 graph"):
        sh.shard_graph(ns, x, v, q, s[0], r[0], m[0])


def test_model_rejects_bad_sharded_inputs():
    ns = sh.node_sharding(jax.devices()[:1])
    rng = np.random.default_rng(0)
    x, v, q = (jnp.asarray(rng.normal(size=(2, 6, c))) for c in (3, 3, 1))
    model = EGNN(hidden=4, num_layers=1, graph="edges", node_sharding=ns)
    with pytest.raises(ValueError, match="dense graph cannot be sharded"):
        EGNN(hidden=4, num_layers=1, node_sharding=ns).init(jax.random.key(0), x, v, q)
    flat = jnp.zeros((12,), jnp.int32)
    with pytest.raises(ValueError, match=r"flat edges only for batch 1.*\(12,\)"):
        model.init(jax.random.key(0), x, v, q, senders=flat, receivers=flat)
    with pytest.raises(ValueError, match="NodeSharding or None; received str"):
        EGNN(node_sharding="nodes")


# ----------------------------------------------------------------------------- kNN


@pytest.mark.parametrize("row_chunk", [1, 5, 16, 100])
def test_knn_row_chunk_equals_unchunked(row_chunk):
    """Same arrays for a chunk of 1 row, a non-divisor of N, N and more than N."""
    rng = np.random.default_rng(row_chunk)
    x = jnp.asarray(rng.normal(size=(2, 16, 3)))
    mask = jnp.asarray(rng.random((2, 16)) > 0.2)
    cases = [(4, {}), (4, {"mask": mask}), (4, {"mask": mask, "cutoff": 1.0}), (20, {})]

    @jax.jit
    def both(x):
        return [(knn_graph(x, k, **kw), knn_graph(x, k, row_chunk=row_chunk, **kw))
                for k, kw in cases]

    for want, got in both(x):
        for a, b in zip(want, got, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not bool(jnp.array_equal(both(x)[1][1][0], both(x)[0][1][0]))  # the mask matters
    with pytest.raises(ValueError, match="row_chunk >= 1 or None; received 0"):
        knn_graph(x, 3, row_chunk=0)


def test_knn_row_chunk_bounds_memory():
    """The chunked kNN never materialises ``[B, N, N]``: its temp memory is far smaller."""
    x = jax.ShapeDtypeStruct((1, 2048, 3), jnp.float32)
    temp = lambda **kw: jax.jit(lambda x: knn_graph(x, 8, **kw)).lower(x).compile(
    ).memory_analysis().temp_size_in_bytes
    full, chunked = temp(), temp(row_chunk=128)
    assert full >= 2048 * 2048 * 4  # the [N, N] float32 distances
    assert chunked < full / 4


# ----------------------------------------------------------------------------- 4 devices

FOUR_DEVICES = textwrap.dedent(
    """
    import json

    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    from geonorm_jax import parallel as sh
    from geonorm_jax.models import EGNN, knn_graph
    from geonorm_jax.models import sharding as model_sharding
    from geonorm_jax.norms import catalog

    ns = sh.node_sharding()
    rng = np.random.default_rng(0)
    N, K = 128, 8
    x = jnp.asarray(rng.normal(size=(1, N, 3)) * 2.0)
    v = jnp.asarray(rng.normal(size=(1, N, 3)))
    q = jnp.asarray(rng.choice([-1.0, 1.0], size=(1, N, 1)))
    s, r, e = knn_graph(x, K)


    def init_variables(model, *args, **kwargs):
        shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, **kwargs))
        r = np.random.default_rng(1)
        fill = lambda a: jnp.asarray(r.uniform(-0.5, 0.5, a.shape), jnp.float64)
        return jax.tree_util.tree_map(fill, shapes)


    def step(model):
        def loss(p, x, v, q, s, r, e, mask=None):
            y = model.apply(p, x, v, q, mask, senders=s, receivers=r, edge_mask=e)
            if mask is not None:  # real nodes only (a sum: padding must not count)
                y = jnp.where(mask[..., None], y, 0.0)
            return jnp.sum(jnp.square(y - 0.5 * x)) / 100.0, y
        return jax.jit(jax.value_and_grad(loss, has_aux=True))


    def compare(m1, m4, args1, args4, cut=None):
        variables = init_variables(m1, *args1[:3], senders=args1[3], receivers=args1[4])
        c1 = step(m1).lower(variables, *args1).compile()
        c4 = step(m4).lower(variables, *args4).compile()
        (l1, y1), g1 = c1(variables, *args1)
        (l4, y4), g4 = c4(variables, *args4)
        y4n = np.asarray(y4)[:, :cut] if cut else np.asarray(y4)
        g1, g4 = jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g4)
        res = dict(
            out_err=float(np.abs(np.asarray(y1) - y4n).max()),
            out_scale=float(np.abs(np.asarray(y1)).max()),
            grad_err=max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                         for a, b in zip(g1, g4)),
            grad_scale=max(float(np.abs(np.asarray(a)).max()) for a in g1),
            loss=[float(l1), float(l4)],
            spec=list(y4.sharding.spec),
            devices=len(y4.sharding.device_set),
            shard_shapes=sorted({tuple(sh_.data.shape) for sh_ in y4.addressable_shards}),
            gather_4=("all-gather" in c4.as_text()), gather_1=("all-gather" in c1.as_text()),
        )
        return res, (variables, c4, y1)


    out = {"devices": ns.num_shards}
    args1 = (x, v, q, s, r, e)
    args4 = sh.shard_nodes(ns, *args1)
    kw = dict(hidden=16, num_layers=2, graph="edges", edge_chunk=100)  # 3 chunks per shard
    # GeoNorm (centroid and sigma over the nodes) and GraphNorm (mean and variance over the
    # nodes): statistics across devices, in one model to pay one compilation
    norms = dict(coord_norm=catalog.make("geo_norm"), feature_norm=catalog.make("graph_norm"))
    for name, extra in [("none", {}), ("norms", norms)]:
        m1 = EGNN(**kw, **extra)
        m4 = EGNN(**kw, **extra, node_sharding=ns)
        out[name], (variables, c4, y1) = compare(m1, m4, args1, args4)
        if name == "none":
            # a wrong partition (every edge block one block too far) changes the result
            # under jit and is rejected eagerly
            roll = lambda a: jnp.roll(a, N * K // 4, axis=1)
            bad = args4[:3] + sh.shard_nodes(ns, roll(s), roll(r), e)
            (_, y_bad), _ = c4(variables, *bad)
            out["wrong_err"] = float(np.abs(np.asarray(y_bad) - np.asarray(y1)).max())
            try:
                m4.apply(variables, *bad[:3], senders=bad[3], receivers=bad[4],
                         edge_mask=bad[5])
                out["wrong_eager"] = "no error"
            except ValueError as err:
                out["wrong_eager"] = str(err)

    # two graphs of 30 nodes (padded to 32 by shard_graph), random edges, a node mask
    B2, N2 = 2, 30
    x2, v2 = (jnp.asarray(rng.normal(size=(B2, N2, 3))) for _ in range(2))
    q2 = jnp.asarray(rng.choice([-1.0, 1.0], size=(B2, N2, 1)))
    mask2 = jnp.asarray(np.arange(N2)[None] < np.array([[N2], [N2 - 4]]))
    s2 = jnp.asarray(rng.integers(0, N2, (B2, 90)), jnp.int32)
    r2 = jnp.asarray(rng.integers(0, N2, (B2, 90)), jnp.int32)
    e2 = jnp.asarray(rng.random((B2, 90)) > 0.1)
    inputs = sh.shard_graph(ns, x2, v2, q2, s2, r2, e2, mask=mask2)
    names = ("x", "v", "charges", "senders", "receivers", "edge_mask", "mask")
    # (GeoNorm with shared parameters: the default's per-particle [N, 1] ones fix N)
    norms = dict(coord_norm=catalog.make("geo_norm_shared"), feature_norm=norms["feature_norm"])
    m1 = EGNN(**kw, **norms)
    m4 = EGNN(**kw, **norms, node_sharding=ns)
    out["padded"], _ = compare(m1, m4, (x2, v2, q2, s2, r2, e2, mask2),
                               tuple(inputs[k] for k in names), cut=N2)
    out["padded"]["budget"] = int(inputs["senders"].shape[1])

    # kNN built per node block equals the single-device builder
    got = model_sharding.knn_graph(ns, args4[0], K, row_chunk=12)
    out["knn_equal"] = all(bool(jnp.array_equal(a, b)) for a, b in zip(got, (s, r, e)))
    out["knn_spec"] = list(got[0].sharding.spec)
    print(json.dumps(out))
    """
)


def test_four_devices_equal_one_device():
    """Node-sharded over 4 (virtual CPU) devices == one device in float64.

    Outputs to 1e-10 and MSE-loss parameter gradients to 1e-9 (relative to their largest
    entry), for the plain EGNN, for GeoNorm (coordinates) + GraphNorm (features) whose node
    statistics span devices, and for a padded batch of two graphs with random edges.
    """
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        "--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0"
    )
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-c", FOUR_DEVICES], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4
    for name in ("none", "norms", "padded"):
        res = out[name]
        assert res["out_scale"] > 0.1 and res["grad_scale"] > 1e-3, (name, res)
        assert res["out_err"] <= 1e-10 * res["out_scale"], (name, res)
        assert res["grad_err"] <= 1e-9 * max(res["grad_scale"], 1.0), (name, res)
        np.testing.assert_allclose(res["loss"][0], res["loss"][1], rtol=1e-12)
        # really split: sharded over the node axis on 4 devices, with an all-gather
        assert res["spec"] == [None, "nodes"] and res["devices"] == 4, res
        assert res["gather_4"] and not res["gather_1"], res
    assert out["none"]["shard_shapes"] == [[1, 32, 3]]  # 128 nodes / 4
    assert out["padded"]["shard_shapes"] == [[2, 8, 3]]  # 30 nodes padded to 32
    # the test can fail: a wrong partition changes the output, and is rejected eagerly
    assert out["wrong_err"] > 1e-3 * out["none"]["out_scale"]
    assert "node block" in out["wrong_eager"], out["wrong_eager"]
    assert out["knn_equal"] and out["knn_spec"] == [None, "nodes"]
