"""``mace_density_norm`` and ``species_neighbor_norm`` on the flat layout of e3nn-jax and jraph:
nodes ``[num_nodes, irreps]``, ``positions [num_nodes, 3]``, ``species [num_nodes]`` and edges
``senders``/``receivers [num_edges]`` (with ``edge_mask``, or jraph's padding edges at a
padding node). On the edges of the padded layout's graph (an adjacency, or the pairs within
MACE's cutoff) every real output equals the padded layout's, float64 to 1e-12.
"""

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geonorm_jax.norms import molecular as mol

IRREPS = e3nn.Irreps("2x0e + 3x1o + 2e")
B, N = 3, 6
REAL = np.array([5, 2, 6])
MASK = np.arange(N)[None, :] < REAL[:, None]
N_REAL = int(REAL.sum())
TOL = {"rtol": 1e-12, "atol": 1e-12}


def _nodes(seed, spread=1.5):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, N, IRREPS.dim))
    pos = spread * rng.standard_normal((B, N, 3))
    return x, pos


def _flat_index():
    """``[B, N]`` -> index of the real node in the flat layout (graph after graph), -1 at
    padded nodes."""
    idx = np.full((B, N), -1)
    idx[MASK] = np.arange(N_REAL)
    return idx


def _edges_of(keep):
    """Senders and receivers of the pairs ``keep[b, i, j]`` (receiver ``i``, sender ``j``)
    between real nodes, in the flat node order; also the ``(b, i, j)`` of each edge."""
    idx = _flat_index()
    b, i, j = np.nonzero(keep & MASK[:, :, None] & MASK[:, None, :])
    return idx[b, j], idx[b, i], (b, i, j)


def _irreps(a):
    return e3nn.IrrepsArray(IRREPS, jnp.asarray(a))


def _flat_layout():
    return {"n_node": jnp.asarray(REAL)}


def _padded_mace(x, params, **context):
    y, _ = mol.mace_density_norm().apply(params, {}, _irreps(x), mask=jnp.asarray(MASK),
                                         **context)
    return np.asarray(y.array)[MASK]


# ------------------------------------------------------------------------------------- MACE


@pytest.mark.parametrize("variant", ["edge_list", "edge_mask", "self_loops_and_outside"])
def test_mace_edge_features_along_the_edges_equal_the_padded_adjacency(variant):
    x, _ = _nodes(0)
    rng = np.random.default_rng(1)
    e = rng.standard_normal((B, N, N, 5))
    adj = rng.random((B, N, N)) > 0.4
    params = {"density_weight": jnp.asarray(rng.standard_normal(5))}
    want = _padded_mace(x, params, edge_features=jnp.asarray(e), adjacency=jnp.asarray(adj))

    if variant == "edge_mask":  # every pair, the adjacency as edge_mask
        senders, receivers, (b, i, j) = _edges_of(np.ones((B, N, N), bool))
        extra = {"edge_mask": jnp.asarray(adj[b, i, j])}
    else:
        senders, receivers, (b, i, j) = _edges_of(adj)
        extra = {}
    feats = e[b, i, j]
    if variant == "self_loops_and_outside":  # never enter: j != i, and indices past the nodes
        k = len(senders)
        senders = np.concatenate([senders, np.arange(N_REAL), [N_REAL + 7, 0]])
        receivers = np.concatenate([receivers, np.arange(N_REAL), [0, -1]])
        feats = np.concatenate([feats, rng.standard_normal((len(senders) - k, 5))])
        assert np.any(adj[:, np.arange(N), np.arange(N)])  # the padded layout drops them too
    y, _ = mol.mace_density_norm().apply(
        params, {}, _irreps(x[MASK]), senders=jnp.asarray(senders),
        receivers=jnp.asarray(receivers), edge_features=jnp.asarray(feats), **extra,
        **_flat_layout())
    np.testing.assert_allclose(np.asarray(y.array), want, **TOL)
    assert not np.allclose(want, x[MASK])  # the density was not 0


def test_mace_positions_along_a_radius_graph_equal_the_padded_layout():
    """e3nn-jax models pass the pairs within the cutoff; those beyond contribute 0 in the
    padded layout, so both agree."""
    x, pos = _nodes(2, spread=3.0)
    params = {"density_weight": jnp.asarray(np.random.default_rng(3).standard_normal(8))}
    want = _padded_mace(x, params, positions=jnp.asarray(pos))
    r = np.linalg.norm(pos[:, :, None] - pos[:, None], axis=-1)
    senders, receivers, _ = _edges_of((r < 5.0) & ~np.eye(N, dtype=bool))
    everything, _, _ = _edges_of(~np.eye(N, dtype=bool))
    assert 0 < len(senders) < len(everything)  # the cutoff removed pairs
    y, _ = mol.mace_density_norm().apply(
        params, {}, _irreps(x[MASK]), positions=jnp.asarray(pos[MASK]),
        senders=jnp.asarray(senders), receivers=jnp.asarray(receivers), **_flat_layout())
    np.testing.assert_allclose(np.asarray(y.array), want, **TOL)


def _jraph_batch(x, pos, species=None):
    """The real atoms as a ``jraph.GraphsTuple`` of fully connected graphs, padded by
    ``jraph.pad_with_graphs`` (its padding edges join the first padding node to itself)."""
    jraph = pytest.importorskip("jraph")
    senders, receivers, _ = _edges_of(~np.eye(N, dtype=bool))
    nodes = {"x": x[MASK], "pos": pos[MASK]}
    if species is not None:
        nodes["species"] = species[MASK]
    graph = jraph.GraphsTuple(
        nodes=nodes, edges=None, senders=senders.astype(np.int32),
        receivers=receivers.astype(np.int32), n_node=REAL.astype(np.int32),
        n_edge=np.bincount(np.searchsorted(np.cumsum(REAL), receivers, side="right"),
                           minlength=B).astype(np.int32),
        globals=None)
    padded = jraph.pad_with_graphs(graph, n_node=N_REAL + 4, n_edge=len(senders) + 5,
                                   n_graph=B + 2)
    return padded, np.asarray(jraph.get_node_padding_mask(padded))


def test_mace_on_a_jraph_padded_graphs_tuple():
    x, pos = _nodes(4)
    params = {"density_weight": jnp.asarray(np.random.default_rng(5).standard_normal(8))}
    want = _padded_mace(x, params, positions=jnp.asarray(pos))
    g, node_mask = _jraph_batch(x, pos)
    y, _ = mol.mace_density_norm().apply(
        params, {}, _irreps(g.nodes["x"]), mask=jnp.asarray(node_mask),
        n_node=jnp.asarray(g.n_node), positions=jnp.asarray(g.nodes["pos"]),
        senders=jnp.asarray(g.senders), receivers=jnp.asarray(g.receivers))
    y = np.asarray(y.array)
    np.testing.assert_allclose(y[:N_REAL], want, **TOL)
    assert np.all(np.isfinite(y)) and np.all(y[N_REAL:] == 0)


def test_mace_flat_is_equivariant_and_invariant_to_translating_the_positions():
    x, pos = _nodes(6)
    senders, receivers, _ = _edges_of(~np.eye(N, dtype=bool))
    norm = mol.mace_density_norm()
    edges = {"senders": jnp.asarray(senders), "receivers": jnp.asarray(receivers),
             **_flat_layout()}
    params, _ = norm.init(jax.random.PRNGKey(0), _irreps(x[MASK]), positions=pos[MASK],
                          **edges)

    def fun(a, p):
        return norm.apply(params, {}, a, positions=p, **edges)[0]

    p = e3nn.IrrepsArray("1o", jnp.asarray(pos[MASK]))
    e3nn.utils.assert_equivariant(fun, jax.random.PRNGKey(1), _irreps(x[MASK]), p,
                                  atol=1e-10, rtol=1e-10)
    y0 = fun(_irreps(x[MASK]), p).array
    shifted = e3nn.IrrepsArray("1o", p.array + jnp.array([3.0, -1.0, 2.0]))
    y1 = fun(_irreps(x[MASK]), shifted).array
    np.testing.assert_allclose(y1, y0, **TOL)
    assert not np.allclose(y0, x[MASK])


def test_mace_gradients_in_the_positions_skip_nan_padding_and_equal_the_padded_ones():
    x, pos = _nodes(7)
    params = {"density_weight": jnp.asarray(np.random.default_rng(8).standard_normal(8))}
    norm = mol.mace_density_norm()
    senders, receivers, _ = _edges_of(~np.eye(N, dtype=bool))
    pad = 2
    last = N_REAL + pad - 1  # jraph-style padding edges at a padding node full of NaN,
    senders = np.concatenate([senders, [last] * 3, [last, N_REAL]])
    receivers = np.concatenate([receivers, [last] * 3, [0, 3]])  # and two into real atoms
    xf = np.concatenate([x[MASK], np.full((pad, IRREPS.dim), np.nan)])
    node_mask = jnp.asarray(np.arange(N_REAL + pad) < N_REAL)

    def flat_loss(p):
        y, _ = norm.apply(params, {}, _irreps(xf), mask=node_mask, n_node=jnp.array(
            [*REAL, pad]), positions=p, senders=jnp.asarray(senders),
            receivers=jnp.asarray(receivers))
        return jnp.sum(jnp.where(node_mask[:, None], y.array, 0.0) ** 2)

    def padded_loss(p):
        y, _ = norm.apply(params, {}, _irreps(x), mask=jnp.asarray(MASK), positions=p)
        return jnp.sum(jnp.where(jnp.asarray(MASK)[..., None], y.array, 0.0) ** 2)

    pf = np.concatenate([pos[MASK], np.full((pad, 3), np.nan)])
    g = np.asarray(jax.grad(flat_loss)(jnp.asarray(pf)))
    assert np.all(np.isfinite(g)) and np.all(g[N_REAL:] == 0)
    want = np.asarray(jax.grad(padded_loss)(jnp.asarray(pos)))[MASK]
    np.testing.assert_allclose(g[:N_REAL], want, rtol=1e-10, atol=1e-12)
    assert np.any(want != 0)


def test_mace_flat_without_edge_context_is_the_identity_on_real_nodes():
    x, _ = _nodes(9)
    xf = np.concatenate([x[MASK], np.full((2, IRREPS.dim), np.nan)])
    y, _ = mol.mace_density_norm().apply(
        {"density_weight": jnp.ones(8)}, {}, _irreps(xf), n_node=jnp.asarray(REAL))
    np.testing.assert_array_equal(np.asarray(y.array), np.nan_to_num(xf, nan=0.0))


# ------------------------------------------------------------------------------------- NequIP


def _species(seed):
    return np.random.default_rng(seed).integers(0, 3, (B, N))


@pytest.mark.parametrize("graph", ["adjacency", "fully_connected", "jraph"])
def test_species_neighbor_init_estimate_equals_the_padded_one(graph):
    x, pos = _nodes(10)
    z = _species(11)
    norm = mol.species_neighbor_norm(num_species=3)
    flat = {"species": jnp.asarray(z[MASK]), **_flat_layout()}
    padded = {"species": jnp.asarray(z), "mask": jnp.asarray(MASK)}
    if graph == "adjacency":
        adj = np.random.default_rng(12).random((B, N, N)) > 0.5
        senders, receivers, _ = _edges_of(adj)
        padded["adjacency"] = jnp.asarray(adj)
        flat.update(senders=jnp.asarray(senders), receivers=jnp.asarray(receivers))
    elif graph == "jraph":  # jraph's padding edges count for no atom
        g, node_mask = _jraph_batch(x, pos, z)
        flat = {"species": jnp.asarray(g.nodes["species"]), "n_node": jnp.asarray(g.n_node),
                "mask": jnp.asarray(node_mask), "senders": jnp.asarray(g.senders),
                "receivers": jnp.asarray(g.receivers)}
        x_flat = g.nodes["x"]
    _, want = norm.init(None, _irreps(x), **padded)
    _, got = norm.init(None, _irreps(x_flat if graph == "jraph" else x[MASK]), **flat)
    np.testing.assert_array_equal(got["avg_num_neighbors"], want["avg_num_neighbors"])
    # a hand count: each type's mean number of kept edges into its atoms
    if graph == "adjacency":
        counts = np.bincount(receivers, minlength=N_REAL)
        ref = [counts[z[MASK] == t].mean() for t in range(3)]
        np.testing.assert_allclose(got["avg_num_neighbors"], ref, rtol=1e-6)


def test_species_neighbor_flat_lookup_equals_nequip():
    x, _ = _nodes(13)
    z = _species(14)[MASK].astype(np.int32)
    avg = np.array([4.0, 9.0, 16.0])
    norm = mol.species_neighbor_norm(avg_num_neighbors=tuple(avg))
    _, state = norm.init(None, _irreps(x[MASK]), species=z, **_flat_layout())
    y, _ = norm.apply({}, state, _irreps(x[MASK]), species=jnp.asarray(z), **_flat_layout())
    np.testing.assert_allclose(np.asarray(y.array), x[MASK] / np.sqrt(avg)[z][:, None],
                               rtol=1e-6)


# ------------------------------------------------------------------------------------- errors


def _flat_call(layer, **context):
    x, pos = _nodes(15)
    norm = (mol.mace_density_norm() if layer == "mace"
            else mol.species_neighbor_norm(avg_num_neighbors=(1.0, 2.0)))
    params, state = ({"density_weight": jnp.ones(8)}, {}) if layer == "mace" else (
        {}, {"avg_num_neighbors": jnp.array([1.0, 2.0])})
    base = {"senders": jnp.array([0, 1]), "receivers": jnp.array([1, 0]),
            "species": jnp.zeros(N_REAL, jnp.int32), **_flat_layout()}
    base.update(context)
    ctx = {k: v for k, v in base.items() if v is not None}
    return norm.apply(params, state, _irreps(x[MASK]), **ctx)


@pytest.mark.parametrize("layer, context, match", [
    ("mace", {"positions": jnp.ones((13, 3)), "senders": None, "receivers": None},
     r"reads positions= along the edges senders= and receivers= \[num_edges\]"),
    ("mace", {"positions": jnp.ones((3, 6, 3))},
     r"positions: expected \[num_nodes, 3\] = \(13, 3\).*received shape \(3, 6, 3\)"),
    ("mace", {"edge_features": jnp.ones((3, 8))},
     r"edge_features: expected \[num_edges, F\] = \(2, F\).*received shape \(3, 8\)"),
    ("mace", {"positions": jnp.ones((13, 3)), "senders": jnp.array([0.0, 1.0])},
     r"senders: expected node indices \[num_edges\] of an integer dtype; received shape "
     r"\(2,\) with dtype float"),
    ("mace", {"positions": jnp.ones((13, 3)), "receivers": jnp.array([0, 1, 2])},
     r"senders and receivers of one shape \[num_edges\]; received \(2,\) and \(3,\)"),
    ("mace", {"positions": jnp.ones((13, 3)), "receivers": None},
     r"expected both senders= and receivers= \[num_edges\]; received only senders="),
    ("mace", {"positions": jnp.ones((13, 3)), "edge_mask": jnp.ones(5, bool)},
     r"edge_mask \[num_edges\] = \(2,\); received shape \(5,\)"),
    ("mace", {"positions": jnp.ones((13, 3)), "adjacency": jnp.ones((3, 6, 6))},
     r"adjacency=\[batch, nodes, nodes\] is the padded layout's.*received adjacency of "
     r"shape \(3, 6, 6\)"),
    ("species", {"species": jnp.zeros((3, 6))},
     r"species: expected \[num_nodes\] = \(13,\).*received shape \(3, 6\)"),
    ("species", {"species": None}, r"expected species=\[num_nodes\] for 2 per-type values"),
    ("species", {"adjacency": jnp.ones((3, 6, 6))}, r"is the padded layout's"),
])
def test_bad_flat_context_names_the_expected_and_received(layer, context, match):
    with pytest.raises(ValueError, match=match):
        _flat_call(layer, **context)


@pytest.mark.parametrize("layer", ["mace", "species"])
def test_flat_edges_given_to_the_padded_layout_are_rejected(layer):
    x, pos = _nodes(16)
    norm = mol.mace_density_norm() if layer == "mace" else mol.species_neighbor_norm()
    with pytest.raises(ValueError, match=r"senders/receivers= are edges of the flat layout.*"
                                         r"takes adjacency=\[batch, nodes, nodes\]"):
        norm.init(jax.random.PRNGKey(0), _irreps(x), positions=pos,
                  senders=jnp.array([0]), receivers=jnp.array([1]))


def test_plain_flat_arrays_name_the_flat_layouts():
    with pytest.raises(ValueError, match=r"vectors \[num_nodes, channels, 3\] or features "
                                         r"\[num_nodes, channels\].*received shape \(13, 4, 2\)"):
        mol.mace_density_norm().apply({"density_weight": jnp.ones(8)}, {},
                                      jnp.ones((13, 4, 2)), **_flat_layout())
    # vectors and features are accepted
    for shape in [(13, 4, 3), (13, 5)]:
        y, _ = mol.species_neighbor_norm(avg_num_neighbors=4.0).apply(
            {}, {"avg_num_neighbors": jnp.array([4.0])}, jnp.ones(shape), **_flat_layout())
        np.testing.assert_allclose(y, np.full(shape, 0.5), **TOL)


def test_linen_and_nnx_wrappers_forward_the_flat_edges():
    from flax import nnx

    from geonorm_jax import linen
    from geonorm_jax.nnx import NormModule

    x, pos = _nodes(17)
    senders, receivers, _ = _edges_of(~np.eye(N, dtype=bool))
    xf = _irreps(x[MASK])
    kw = {"positions": jnp.asarray(pos[MASK]), "senders": jnp.asarray(senders),
          "receivers": jnp.asarray(receivers), **_flat_layout()}
    norm = mol.mace_density_norm()
    layer = linen.MACEDensityNorm()
    variables = layer.init(jax.random.PRNGKey(0), xf, **kw)
    want, _ = norm.apply(variables["params"]["norm"], {}, xf, **kw)
    np.testing.assert_allclose(layer.apply(variables, xf, **kw).array, want.array, **TOL)
    assert not np.allclose(want.array, x[MASK])
    module = NormModule(norm, xf, rngs=nnx.Rngs(0), **kw)
    want, _ = norm.apply(module.variables()[0], {}, xf, **kw)
    np.testing.assert_allclose(module(xf, **kw).array, want.array, **TOL)
