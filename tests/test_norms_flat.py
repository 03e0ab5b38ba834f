"""Flat graph layouts: every catalogue layer that declares ``"flat"`` in ``NormInfo.layouts``
gives, on nodes ``[total_nodes, ...]`` with ``segment_ids``/``n_node`` (a jraph-style batch
with a padding graph), the outputs it gives on the padded ``[batch, nodes, ...]`` layout with
a mask, at every real node (float64, to 1e-12).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geonorm_jax.audit.cases import perturb_like_trained
from geonorm_jax.norms import base
from geonorm_jax.norms.catalog import CATALOG

# scalar features here; the vector and irreps layers' flat layout: test_norms_irreps_flat.py
FLAT = [e for e in CATALOG if "flat" in e.layouts and e.kind == "features"]
REAL = np.array([5, 2, 6])  # real nodes of each graph; the padded layout has N = 6
B, N, C = 3, 6, 4
PAD_NODES = 3  # a padding graph at the end of the flat batch, as jraph.pad_with_graphs adds


def _padded(seed=0):
    rng = np.random.default_rng(seed)
    x = 1.5 * rng.standard_normal((B, N, C)) + rng.standard_normal((1, 1, C))
    mask = np.arange(N)[None, :] < REAL[:, None]
    return x, mask


def _flatten(x, mask, pad_value=0.0):
    """Real nodes graph after graph, then a padding graph of ``PAD_NODES`` nodes."""
    nodes = np.concatenate([x[mask], np.full((PAD_NODES,) + x.shape[2:], pad_value)])
    n_node = np.concatenate([REAL, [PAD_NODES]])
    segment_ids = np.repeat(np.arange(len(n_node)), n_node)
    return nodes, n_node, segment_ids


def test_the_layers_the_issue_names_accept_the_flat_layout():
    names = {e.name for e in FLAT}
    assert {"graph_norm", "pair_norm", "set_norm", "instance_norm", "graph_size_norm",
            "schnet_neighbor_norm", "mace_avg_neighbor_norm",
            "allegro_avg_neighbor_norm"} <= names


@pytest.mark.parametrize("how", ["segment_ids", "n_node", "jit"])
@pytest.mark.parametrize("entry", FLAT, ids=lambda e: e.name)
def test_flat_layout_equals_padded_layout(entry, how):
    x, mask = _padded()
    norm = entry.make()
    xj, mj = jnp.asarray(x), jnp.asarray(mask)
    params, state = norm.init(jax.random.PRNGKey(0), xj, mask=mj)
    params = perturb_like_trained(np.random.default_rng(1), params)
    y_pad, st_pad = norm.apply(params, state, xj, mask=mj, training=True)

    nodes, n_node, segment_ids = _flatten(x, mask, pad_value=np.nan if how == "jit" else 7.0)
    if how == "segment_ids":
        layout = {"segment_ids": jnp.asarray(segment_ids), "num_graphs": len(n_node)}
    else:
        layout = {"n_node": jnp.asarray(n_node)}
    flat_state = state
    if entry.running_state:  # estimated in init: the flat init must give the same estimate
        _, flat_state = norm.init(jax.random.PRNGKey(0), jnp.asarray(nodes[:-PAD_NODES]),
                                  n_node=jnp.asarray(REAL))
        for k in state:
            np.testing.assert_allclose(flat_state[k], state[k], rtol=1e-12)
    if how == "jit":
        mask_flat = jnp.arange(len(nodes)) < int(REAL.sum())  # and mark the padding graph
        fn = jax.jit(lambda p, s, a, nn: norm.apply(p, s, a, mask=mask_flat, n_node=nn,
                                                     training=True))
        y_flat, st_flat = fn(params, flat_state, jnp.asarray(nodes), layout["n_node"])
    else:
        y_flat, st_flat = norm.apply(params, flat_state, jnp.asarray(nodes), training=True,
                                     **layout)
    assert y_flat.shape == nodes.shape
    np.testing.assert_allclose(np.asarray(y_flat)[:-PAD_NODES], np.asarray(y_pad)[mask],
                               rtol=1e-12, atol=1e-12)
    assert np.all(np.isfinite(np.asarray(y_flat)[:-PAD_NODES]))
    for k in st_pad:
        np.testing.assert_allclose(st_flat[k], st_pad[k], rtol=1e-12)


def test_neighbour_counts_in_the_flat_layout():
    x, mask = _padded()
    nodes, n_node, _ = _flatten(x, mask)
    norm = next(e for e in FLAT if e.name == "schnet_neighbor_norm").make()
    counts = np.arange(len(nodes)) % 4
    y, _ = norm.apply({}, {}, jnp.asarray(nodes), n_node=jnp.asarray(n_node),
                      num_neighbors=jnp.asarray(counts, jnp.float64))
    np.testing.assert_allclose(y, nodes / np.maximum(counts, 1)[:, None], rtol=1e-12)
    with pytest.raises(ValueError, match=r"num_neighbors: expected \[total_nodes\] = \(16,\); "
                                         r"received shape \(3, 6\)"):
        norm.apply({}, {}, jnp.asarray(nodes), n_node=jnp.asarray(n_node),
                   num_neighbors=jnp.ones((3, 6)))
    with pytest.raises(ValueError, match=r"adjacency: a dense \[batch, nodes, nodes\] "
                                         r"adjacency needs the padded layout"):
        norm.apply({}, {}, jnp.asarray(nodes), n_node=jnp.asarray(n_node),
                   adjacency=jnp.ones((3, 6, 6)))


def test_layout_errors_name_the_expected_and_received_values():
    x = jnp.ones((10, 4))
    with pytest.raises(ValueError, match=r"segment_ids needs num_graphs, a static Python int"):
        base.graph_layout(x, segment_ids=jnp.zeros(10, jnp.int32))
    with pytest.raises(ValueError, match=r"segment_ids: expected \[total_nodes\] = \(10,\) of "
                                         r"an integer dtype; received shape \(9,\)"):
        base.graph_layout(x, segment_ids=jnp.zeros(9, jnp.int32), num_graphs=2)
    with pytest.raises(ValueError, match=r"mask: expected a node mask \[total_nodes\] = \(10,\)"):
        base.graph_layout(x, jnp.ones((2, 5), bool), n_node=jnp.array([5, 5]))
    with pytest.raises(ValueError, match=r"expected segment_ids= or n_node=, not both"):
        base.graph_layout(x, segment_ids=jnp.zeros(10, jnp.int32), n_node=jnp.array([10]))
    norm = next(e for e in FLAT if e.name == "graph_norm").make()
    params, _ = norm.init(jax.random.PRNGKey(0), jnp.ones((2, 5, 4)))
    with pytest.raises(ValueError, match=r"expected flat scalar features \[total_nodes, "
                                         r"channels\]; received shape \(2, 5, 4\)"):
        norm.apply(params, {}, jnp.ones((2, 5, 4)), n_node=jnp.array([5, 5]))
    set_survey = next(e for e in CATALOG if e.name == "set_norm").make(reading="survey")
    with pytest.raises(ValueError, match=r"reading='survey' reduces over the batch axis"):
        set_survey.apply({}, {}, x, n_node=jnp.array([5, 5]))


def test_nodes_past_the_counts_and_out_of_range_ids_are_padding():
    x, mask = _padded()
    nodes, n_node, segment_ids = _flatten(x, mask)
    norm = next(e for e in FLAT if e.name == "graph_norm").make()
    params, _ = norm.init(jax.random.PRNGKey(0), jnp.asarray(x))
    want, _ = norm.apply(params, {}, jnp.asarray(x), mask=jnp.asarray(mask))
    # only the real graphs counted: the trailing padding nodes belong to no graph
    y1, _ = norm.apply(params, {}, jnp.asarray(nodes), n_node=jnp.asarray(REAL))
    ids = np.where(segment_ids == len(REAL), -1, segment_ids)  # PyG-style: -1 = no graph
    y2, _ = norm.apply(params, {}, jnp.asarray(nodes), segment_ids=jnp.asarray(ids),
                       num_graphs=len(REAL))
    for y in (y1, y2):
        np.testing.assert_allclose(np.asarray(y)[:-PAD_NODES], np.asarray(want)[mask],
                                   rtol=1e-12)
        assert np.all(np.isfinite(np.asarray(y)))
