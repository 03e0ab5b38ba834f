"""The flat node layout of e3nn-jax and jraph for every irreps layer of the catalogue.

Every catalogue layer whose ``init`` accepts an ``e3nn.IrrepsArray`` (found from the catalogue,
so a new one is tested without being listed here) takes nodes ``[num_nodes, irreps]`` with
``segment_ids`` + ``num_graphs`` or ``n_node``, a trailing padding graph marked by a node mask
(as ``jraph.pad_with_graphs`` and ``jraph.get_node_padding_mask`` make them), and gives at
every real node what it gives on this library's padded ``[batch, nodes, irreps]`` layout with
a mask: float64, to 1e-12, running statistics included; it is O(3)-equivariant there
(``e3nn_jax.utils.assert_equivariant``), and the padding graph changes no real output and
leaves every output finite. Layers that read context (``entry.context``: atom positions,
species) get it in both layouts: ``positions [batch, nodes, 3]`` / ``[num_nodes, 3]`` with
the edges of the padded layout's dense graph as jraph's ``senders``/``receivers`` (and
padding edges pointing at the last padding node, as ``jraph.pad_with_graphs`` adds them),
``species [batch, nodes]`` / ``[num_nodes]``; the positions rotate with the features in the
equivariance test.
"""

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geonorm_jax.audit.cases import perturb_like_trained
from geonorm_jax.norms.catalog import CATALOG

IRREPS = e3nn.Irreps("2x0e + 0o + 3x1o + 2x1e + 2x2e")
REAL = np.array([5, 2, 6])  # real nodes of each graph; the padded layout has N = 6
B, N = 3, 6
PAD_NODES = 3  # the padding graph at the end of the flat batch, as jraph.pad_with_graphs adds
PAD_EDGES = 4  # jraph's padding edges: sender = receiver = the last padding node


def _accepts_irreps(entry) -> bool:
    x = e3nn.IrrepsArray(IRREPS, jnp.ones((B, N, IRREPS.dim)))
    try:
        entry.make().init(jax.random.PRNGKey(0), x)
    except (ValueError, TypeError):
        return False
    return True


IRREPS_LAYERS = [e for e in CATALOG if e.kind == "vectors" and _accepts_irreps(e)]
FLAT_IRREPS = [e for e in IRREPS_LAYERS if "flat" in e.layouts]


def _batch_statistics(entry) -> bool:
    """Whether the layer's statistics pool the whole batch (the catalogue's reduced axes
    start with ``b``): a padding graph then has to be marked, as jraph's node mask does."""
    return "b" in entry.reduced_axes.split()[0].split(",")


def _padded(seed=0, dim=IRREPS.dim):
    rng = np.random.default_rng(seed)
    x = 1.5 * rng.standard_normal((B, N, dim)) + rng.standard_normal((1, 1, dim))
    mask = np.arange(N)[None, :] < REAL[:, None]
    return x, mask


def _flatten(x, mask, pad_value=0.0):
    """Real nodes graph after graph, then a padding graph of ``PAD_NODES`` nodes; the
    counts, the ids and the node mask (False on the padding graph)."""
    pad = pad_value if np.ndim(pad_value) else np.full((PAD_NODES,) + x.shape[2:], pad_value)
    nodes = np.concatenate([x[mask], pad])
    n_node = np.concatenate([REAL, [PAD_NODES]])
    segment_ids = np.repeat(np.arange(len(n_node)), n_node)
    node_mask = np.arange(len(nodes)) < REAL.sum()
    return nodes, n_node, segment_ids, node_mask


def _dense_graph_edges():
    """Every ordered pair of distinct real atoms of each graph (the padded layout's default
    graph), receiver-major, then ``PAD_EDGES`` edges at the last padding node."""
    offsets = np.concatenate([[0], np.cumsum(REAL)[:-1]])
    pairs = [(o + i, o + j) for o, n in zip(offsets, REAL, strict=True)
             for i in range(n) for j in range(n) if i != j]
    last = int(REAL.sum()) + PAD_NODES - 1
    receivers, senders = np.array(pairs + [(last, last)] * PAD_EDGES).T
    return {"senders": jnp.asarray(senders), "receivers": jnp.asarray(receivers)}


def _context(entry, seed=0, pad_value=0.0):
    """``(padded, flat)`` context for ``entry.context``: positions (spread 1.5, so most
    pairs lie within MACE's 5 Å cutoff) with the dense graph's edges in the flat layout, and
    atom types in ``[0, 3)`` held as floats; ``pad_value`` fills the padding graph."""
    rng = np.random.default_rng(100 + seed)
    _, mask = _padded(seed)
    padded, flat = {}, {}
    for key in entry.context:
        if key == "positions":
            value = 1.5 * rng.standard_normal((B, N, 3))
            flat.update(_dense_graph_edges())
        elif key == "species":
            value = rng.integers(0, 3, (B, N)).astype(np.float64)
        else:
            raise NotImplementedError(f"{entry.name}: no flat test context for {key!r}")
        padded[key] = jnp.asarray(value)
        flat[key] = jnp.asarray(_flatten(value, mask, pad_value)[0])
    return padded, flat


def _wrap(a, vectors: bool):
    """``a [..., D]`` as the layer's input: an IrrepsArray, or vectors ``[..., C, 3]`` (then
    ``a``'s last axis is ``3 C``)."""
    a = jnp.asarray(a)
    return a.reshape(a.shape[:-1] + (-1, 3)) if vectors else e3nn.IrrepsArray(IRREPS, a)


def _array(y):
    return np.asarray(y.array if isinstance(y, e3nn.IrrepsArray) else y)


def _setup(entry, vectors, seed=0):
    dim = 12 if vectors else IRREPS.dim
    x, mask = _padded(seed, dim)
    norm = entry.make()
    xp, mp = _wrap(x, vectors), jnp.asarray(mask)
    params, state = norm.init(jax.random.PRNGKey(0), xp, mask=mp, **_context(entry, seed)[0])
    rng = np.random.default_rng(seed + 1)
    params = perturb_like_trained(rng, params)
    state = perturb_like_trained(rng, state)
    return norm, x, mask, params, state


def test_the_irreps_layers_are_found_from_the_catalogue():
    names = {e.name for e in IRREPS_LAYERS}
    assert {"equivariant_layer_norm", "e3nn_batch_norm", "e3nn_instance_norm", "norm_se3",
            "norm_activation", "ev_norm", "vector_neuron_batch_norm", "mace_density_norm",
            "species_neighbor_norm"} <= names


@pytest.mark.parametrize("entry", IRREPS_LAYERS, ids=lambda e: e.name)
def test_every_irreps_layer_declares_the_flat_layout(entry):
    assert "flat" in entry.layouts


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("how", ["segment_ids", "n_node", "jit", "vectors"])
@pytest.mark.parametrize("entry", FLAT_IRREPS, ids=lambda e: e.name)
def test_flat_layout_equals_padded_layout(entry, how, training):
    vectors = how == "vectors"
    norm, x, mask, params, state = _setup(entry, vectors)
    ctx_pad, _ = _context(entry)
    y_pad, st_pad = norm.apply(params, state, _wrap(x, vectors), mask=jnp.asarray(mask),
                               training=training, **ctx_pad)
    # NaN in the padding graph: the node mask keeps it out of every statistic and output
    nodes, n_node, segment_ids, node_mask = _flatten(x, mask, pad_value=np.nan)
    _, ctx = _context(entry, pad_value=np.nan)
    layout = ({"segment_ids": jnp.asarray(segment_ids), "num_graphs": len(n_node)}
              if how == "segment_ids" else {"n_node": jnp.asarray(n_node)})
    if how == "jit":
        fn = jax.jit(lambda p, s, a, m, nn, c: norm.apply(p, s, a, mask=m, n_node=nn,
                                                          training=training, **c))
        y_flat, st_flat = fn(params, state, _wrap(nodes, False), jnp.asarray(node_mask),
                             layout["n_node"], ctx)
    else:
        y_flat, st_flat = norm.apply(params, state, _wrap(nodes, vectors),
                                     mask=jnp.asarray(node_mask), training=training, **layout,
                                     **ctx)
    yf, yp = _array(y_flat), _array(y_pad)
    assert yf.shape == _array(_wrap(nodes, vectors)).shape
    if isinstance(y_pad, e3nn.IrrepsArray):
        assert y_flat.irreps == y_pad.irreps
    np.testing.assert_allclose(yf[:-PAD_NODES], yp[mask], rtol=1e-12, atol=1e-12)
    assert np.all(np.isfinite(yf))
    assert jax.tree_util.tree_structure(st_flat) == jax.tree_util.tree_structure(st_pad)
    for a, b in zip(jax.tree_util.tree_leaves(st_flat), jax.tree_util.tree_leaves(st_pad),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("entry", FLAT_IRREPS, ids=lambda e: e.name)
def test_flat_init_equals_padded_init(entry):
    x, mask = _padded()
    norm = entry.make()
    nodes, n_node, _, node_mask = _flatten(x, mask)
    ctx_pad, ctx = _context(entry)
    p_pad, s_pad = norm.init(jax.random.PRNGKey(0), _wrap(x, False), mask=jnp.asarray(mask),
                             **ctx_pad)
    p_flat, s_flat = norm.init(jax.random.PRNGKey(0), _wrap(nodes, False),
                               mask=jnp.asarray(node_mask), n_node=jnp.asarray(n_node), **ctx)
    for a, b in zip(jax.tree_util.tree_leaves((p_flat, s_flat)),
                    jax.tree_util.tree_leaves((p_pad, s_pad)), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("entry", FLAT_IRREPS, ids=lambda e: e.name)
def test_padding_graph_changes_no_real_output(entry):
    norm, x, mask, params, state = _setup(entry, False, seed=3)
    ctx_pad, ctx = _context(entry, seed=3, pad_value=1e3)
    y_pad, _ = norm.apply(params, state, _wrap(x, False), mask=jnp.asarray(mask),
                          training=True, **ctx_pad)
    big = 1e3 * np.random.default_rng(4).standard_normal((PAD_NODES, IRREPS.dim))
    nodes, n_node, segment_ids, node_mask = _flatten(x, mask, pad_value=big)
    variants = [
        # nodes past sum(n_node) belong to no graph
        {"n_node": jnp.asarray(REAL)},
        # PyG-style: id -1 is no graph
        {"segment_ids": jnp.asarray(np.where(node_mask, segment_ids, -1)),
         "num_graphs": len(REAL)},
        # jraph: the padding graph, marked by the node mask
        {"n_node": jnp.asarray(n_node), "mask": jnp.asarray(node_mask)},
    ]
    if not _batch_statistics(entry):
        # a per-node or per-graph statistic: the unmarked padding graph is a graph of its own
        variants.append({"n_node": jnp.asarray(n_node)})
    for layout in variants:
        y, _ = norm.apply(params, state, _wrap(nodes, False), training=True, **layout, **ctx)
        y = _array(y)
        np.testing.assert_allclose(y[:-PAD_NODES], _array(y_pad)[mask], rtol=1e-12,
                                   atol=1e-12, err_msg=str(sorted(layout)))
        assert np.all(np.isfinite(y)), sorted(layout)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("entry", FLAT_IRREPS, ids=lambda e: e.name)
def test_flat_layout_is_equivariant(entry, training):
    norm, x, mask, params, state = _setup(entry, False, seed=5)
    nodes, n_node, _, node_mask = _flatten(x, mask)
    _, ctx = _context(entry, seed=5)
    # positions rotate with the features (an IrrepsArray 1o); the rest of the context is fixed
    rotated = {k: e3nn.IrrepsArray("1o", ctx.pop(k)) for k in ("positions",) if k in ctx}

    def fun(a, *pos):
        y, _ = norm.apply(params, state, a, mask=jnp.asarray(node_mask),
                          n_node=jnp.asarray(n_node), training=training, **ctx,
                          **dict(zip(rotated, pos, strict=True)))
        return y

    e3nn.utils.assert_equivariant(fun, jax.random.PRNGKey(7), _wrap(nodes, False),
                                  *rotated.values(), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("entry", FLAT_IRREPS, ids=lambda e: e.name)
def test_wrong_layouts_name_the_expected_and_received_shapes(entry):
    norm, x, mask, params, state = _setup(entry, False)
    nodes, n_node, _, _ = _flatten(x, mask)
    with pytest.raises(ValueError, match=r"\[num_nodes, irreps\].*received IrrepsArray shape "
                                         rf"\(3, 6, {IRREPS.dim}\)"):
        norm.apply(params, state, _wrap(x, False), n_node=jnp.asarray(n_node))
    with pytest.raises(ValueError, match=r"\[batch, nodes, irreps\].*received IrrepsArray "
                                         rf"shape \(16, {IRREPS.dim}\).*needs segment_ids="):
        norm.apply(params, state, _wrap(nodes, False))
    with pytest.raises(ValueError, match=r"\[num_nodes, channels, 3\].*received shape "
                                         r"\(3, 6, 4, 3\)"):
        norm.apply(params, state, jnp.ones((3, 6, 4, 3)), n_node=jnp.asarray(n_node))
    with pytest.raises(ValueError, match=r"mask: expected a node mask \[total_nodes\] = "
                                         r"\(16,\) in the flat layout; received shape \(3, 6\)"):
        norm.apply(params, state, _wrap(nodes, False), mask=jnp.asarray(mask),
                   n_node=jnp.asarray(n_node))
    with pytest.raises(ValueError, match=r"segment_ids needs num_graphs"):
        norm.apply(params, state, _wrap(nodes, False),
                   segment_ids=jnp.zeros(len(nodes), jnp.int32))


@pytest.mark.parametrize("name", ["e3nn_batch_norm", "e3nn_instance_norm", "ev_norm"])
def test_linen_and_nnx_wrappers_forward_the_flat_layout(name):
    from flax import nnx

    from geonorm_jax import linen
    from geonorm_jax.nnx import NormModule

    norm, x, mask, _, _ = _setup(next(e for e in CATALOG if e.name == name), False)
    nodes, n_node, _, node_mask = _flatten(x, mask)
    xf, kw = _wrap(nodes, False), {"mask": jnp.asarray(node_mask), "n_node": jnp.asarray(n_node)}
    params, state = norm.init(jax.random.PRNGKey(0), xf, **kw)
    want, want_state = norm.apply(params, state, xf, training=True, **kw)

    layer = linen.NormLayer(norm)
    variables = layer.init(jax.random.PRNGKey(0), xf, **kw)
    y, updates = layer.apply(variables, xf, training=True, mutable=["batch_stats"], **kw)
    np.testing.assert_allclose(y.array, want.array, rtol=1e-12, atol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(updates), jax.tree_util.tree_leaves(want_state),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)

    module = NormModule(norm, xf, rngs=nnx.Rngs(0), **kw)
    y = module(xf, **kw)
    np.testing.assert_allclose(y.array, want.array, rtol=1e-12, atol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(module.variables()[1]),
                    jax.tree_util.tree_leaves(want_state), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("name", ["e3nn_instance_norm", "ev_norm", "quaternion_rms_norm"])
def test_other_graph_sizes_in_the_same_node_budget_do_not_recompile(name):
    norm, x, mask, params, state = _setup(next(e for e in CATALOG if e.name == name), False)
    nodes, n_node, _, node_mask = _flatten(x, mask)
    fn = jax.jit(lambda a, m, nn: norm.apply(params, state, a, mask=m, n_node=nn)[0])
    xf, mf = _wrap(nodes, False), jnp.asarray(node_mask)
    y1 = fn(xf, mf, jnp.asarray(n_node))
    y2 = fn(xf, mf, jnp.asarray([2, 5, 6, PAD_NODES]))  # other graphs, same budget
    assert fn._cache_size() == 1
    assert not np.allclose(_array(y1)[:2], _array(y2)[:2])  # the counts were read


@pytest.mark.parametrize("entry", FLAT_IRREPS, ids=lambda e: e.name)
def test_nan_in_the_padding_graph_reaches_no_gradient(entry):
    norm, x, mask, params, state = _setup(entry, False, seed=9)
    nodes, n_node, _, node_mask = _flatten(x, mask, pad_value=np.nan)
    _, ctx = _context(entry, seed=9, pad_value=np.nan)
    real = int(REAL.sum())

    def loss(a):
        y, _ = norm.apply(params, state, e3nn.IrrepsArray(IRREPS, a),
                          mask=jnp.asarray(node_mask), n_node=jnp.asarray(n_node),
                          training=True, **ctx)
        return jnp.sum(jnp.square(jnp.where(jnp.asarray(node_mask)[:, None], y.array, 0.0)))

    g = np.asarray(jax.grad(loss)(jnp.asarray(nodes)))
    assert np.all(np.isfinite(g))
    assert np.any(g[:real] != 0) and np.all(g[real:] == 0)
