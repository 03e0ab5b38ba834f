"""Tests for the EGNN's edge-list path, graph builders and chunked edge computation."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geonorm_jax.models import EGNN, fully_connected_edges, knn_graph
from geonorm_jax.models.edges import flatten_edges

B, N = 3, 7


def inputs(seed=0, dtype=jnp.float32, batch=B, nodes=N):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(batch, nodes, 3)) * 1.5, dtype)
    v = jnp.asarray(rng.normal(size=(batch, nodes, 3)) * 0.5, dtype)
    q = jnp.asarray(rng.choice([-1.0, 1.0], size=(batch, nodes, 1)), dtype)
    return x, v, q


def init_variables(model, *args, seed=1, **kwargs):
    """Random variables with the shapes of ``model.init`` (traced only, so fast to build)."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, **kwargs))
    rng = np.random.default_rng(seed)

    def fill(leaf):
        bound = 1 / np.sqrt(leaf.shape[0]) if leaf.ndim == 2 else 0.3
        return jnp.asarray(rng.uniform(-bound, bound, size=leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map(fill, shapes)


def test_fully_connected_edges():
    s, r, e = fully_connected_edges(4)
    pairs = set(zip(np.asarray(r).tolist(), np.asarray(s).tolist(), strict=True))
    assert pairs == {(i, j) for i in range(4) for j in range(4) if i != j}
    assert np.all(np.diff(np.asarray(r)) >= 0)  # sorted by receiver
    assert s.shape == (12,) and bool(e.all())
    sb, rb, eb = fully_connected_edges(4, 2)
    assert sb.shape == rb.shape == eb.shape == (2, 12)
    fs, fr, fe = flatten_edges(sb, rb, eb, 4)
    np.testing.assert_array_equal(fs, np.concatenate([s, s + 4]))
    np.testing.assert_array_equal(fr, np.concatenate([r, r + 4]))


def test_knn_graph_matches_brute_force():
    x, _, _ = inputs(seed=3, batch=2, nodes=9)
    mask = jnp.asarray([[True] * 9, [True] * 6 + [False] * 3])
    k = 3
    s, r, e = knn_graph(x, k, mask)
    assert s.shape == r.shape == e.shape == (2, 9 * k)
    xn, mn = np.asarray(x), np.asarray(mask)
    for b in range(2):
        for i in range(9):
            got = np.asarray(s[b, i * k:(i + 1) * k])[np.asarray(e[b, i * k:(i + 1) * k])]
            if not mn[b, i]:
                assert got.size == 0  # padded receivers get no edges
                continue
            d = np.sum((xn[b] - xn[b, i]) ** 2, axis=-1)
            d[i] = np.inf
            d[~mn[b]] = np.inf
            expected = np.argsort(d)[:k]
            assert set(got.tolist()) == set(expected.tolist())
            np.testing.assert_array_equal(np.asarray(r[b, i * k:(i + 1) * k]), i)


def test_knn_graph_budget_larger_than_graph_and_cutoff():
    x, _, _ = inputs(batch=1, nodes=4)
    s, r, e = knn_graph(x, 6)  # only 3 neighbours exist
    assert s.shape == (1, 24)
    assert int(e.sum()) == 4 * 3
    _, _, e_cut = knn_graph(x, 3, cutoff=0.0)
    assert not bool(e_cut.any())
    with pytest.raises(ValueError, match=r"\(1, 4\)"):
        knn_graph(x[..., 0], 2)


def _close(a, b, tol=1e-5):
    chex.assert_trees_all_close(a, b, atol=tol, rtol=tol)


def test_dense_and_edge_list_agree_on_fully_connected_graph():
    model = EGNN(hidden=16, num_layers=2)
    x, v, q = inputs()
    mask = jnp.ones((B, N), bool).at[1, 5:].set(False)
    variables = init_variables(model, x, v, q, mask)
    s, r, e = fully_connected_edges(N, B)

    def loss(variables, x, **edges):
        y = model.apply(variables, x, v, q, mask, **edges)
        return jnp.sum(jnp.sin(y) * mask[..., None]), y

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
    (_, y_dense), g_dense = grad(variables, x)
    (_, y_edges), g_edges = grad(variables, x, senders=s, receivers=r, edge_mask=e)
    assert float(jnp.abs(y_dense - x).max()) > 0.05
    _close(y_dense * mask[..., None], y_edges * mask[..., None])
    _close(g_dense, g_edges, 1e-4)
    # the flat layout [B E] over B N nodes gives the same function
    fs, fr, fe = flatten_edges(s, r, e, N)
    (_, y_flat), _ = grad(variables, x, senders=fs, receivers=fr, edge_mask=fe)
    _close(y_flat * mask[..., None], y_edges * mask[..., None])


def test_edge_mask_drops_edges():
    # Masking every edge into node 0 leaves node 0 with only its velocity update.
    model = EGNN(hidden=8, num_layers=1)
    x, v, q = inputs()
    variables = init_variables(model, x, v, q)
    s, r, e = fully_connected_edges(N, B)
    apply = jax.jit(model.apply)
    y_all = apply(variables, x, v, q, senders=s, receivers=r, edge_mask=e)
    x_moved = x.at[:, 1:].add(1.0)  # move every other node
    y_cut = apply(variables, x_moved, v, q, senders=s, receivers=r, edge_mask=e & (r != 0))
    y_full = apply(variables, x_moved, v, q, senders=s, receivers=r, edge_mask=e)
    _close(y_cut[:, 0], apply(variables, x, v, q, senders=s, receivers=r,
                              edge_mask=e & (r != 0))[:, 0])
    assert float(jnp.abs(y_full[:, 0] - y_all[:, 0]).max()) > 1e-4


@pytest.mark.parametrize("graph", ["dense", "edges"])
def test_chunked_edges_match_unchunked(graph):
    x, v, q = inputs(batch=4)
    mask = jnp.ones((4, N), bool).at[2, 4:].set(False)
    variables = init_variables(EGNN(hidden=8, num_layers=2), x, v, q)
    edges = {}
    if graph == "edges":
        s, r, e = knn_graph(x, 4, mask)
        edges = dict(senders=s, receivers=r, edge_mask=e)

    def loss(variables, chunk):
        y = EGNN(hidden=8, num_layers=2, edge_chunk=chunk).apply(variables, x, v, q, mask,
                                                                 **edges)
        return jnp.sum(jnp.sin(y) * mask[..., None]), y

    grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
    # dense: N^2 = 49 edges per graph -> 4 chunks of 1 graph; edges: 112 -> 3 chunks of 40
    (_, y0), g0 = grad(variables, None)
    for chunk in {"dense": (49,), "edges": (40,)}[graph]:
        (_, y1), g1 = grad(variables, chunk)
        _close(y0 * mask[..., None], y1 * mask[..., None])
        _close(g0, g1, 1e-4)
