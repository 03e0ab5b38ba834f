"""Where a norm goes (``geonorm_jax.models.placement``), the EGNN's kNN graph, the config and
CLI names shared with the model, the edge kernels' own config, and ``geonorm_jax.parallel``'s
one argument order."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geonorm_jax import cli, parallel
from geonorm_jax.models import EGNN, EGNN_PLACEMENT, NormPlace, NormPlacement, knn_graph, make_egnn
from geonorm_jax.models import egnn_kernels as kernels
from geonorm_jax.models import sharding as model_sharding
from geonorm_jax.norms import catalog
from geonorm_jax.train import config as cfg
from geonorm_jax.train import setup
from geonorm_jax.train.cli import config_from_args

B, N = 2, 9


def inputs(seed=0, dtype=jnp.float64):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(B, N, 3)) * 1.5, dtype)
    v = jnp.asarray(rng.normal(size=(B, N, 3)) * 0.5, dtype)
    q = jnp.asarray(rng.choice([-1.0, 1.0], size=(B, N, 1)), dtype)
    return x, v, q


# ----------------------------------------------------------------------------- placement


def test_egnn_placement_defaults_and_kinds():
    assert EGNN.placement is EGNN_PLACEMENT
    assert EGNN_PLACEMENT.names() == ("coord", "update", "feature")
    assert EGNN_PLACEMENT.fields() == ("coord_norm", "update_norm", "feature_norm")
    assert [EGNN_PLACEMENT.default_place(k) for k in ("coordinates", "vectors", "features")] \
        == ["coord", "update", "feature"]
    assert "coordinates" in EGNN_PLACEMENT.place("update").kinds  # may normalize the update
    with pytest.raises(ValueError, match="'weights' normalization; the EGNN takes"):
        EGNN_PLACEMENT.default_place("weights", "weight_norm")
    with pytest.raises(ValueError, match=r"expected one of \('coord', 'update', 'feature'\)"):
        EGNN_PLACEMENT.place("edges")
    with pytest.raises(ValueError, match="coord_norm: expected a geonorm_jax Norm"):
        EGNN_PLACEMENT.check("geo_norm", "coord")


def test_a_model_declares_its_own_places():
    mine = NormPlacement("Toy", (NormPlace("vector", ("vectors",), "v [B, N, C, 3]"),),
                         defaults=(("vectors", "vector"),))
    assert mine.place("vector").field == "vector_norm"
    mine.check(catalog.make("gvp_vector_layer_norm"), "vector")
    with pytest.raises(ValueError, match="vector_norm: expected a Norm of kind 'vectors'"):
        mine.check(catalog.make("layer_norm"), "vector")
    with pytest.raises(ValueError, match="distinct place names"):
        NormPlacement("Toy", (NormPlace("a", ("features",)), NormPlace("a", ("vectors",))))
    with pytest.raises(ValueError, match="does not accept that kind"):
        NormPlacement("Toy", (NormPlace("a", ("features",)),), defaults=(("vectors", "a"),))


@pytest.mark.parametrize("name", ["geo_norm", "gvp_vector_layer_norm", "layer_norm"])
def test_trainer_and_make_egnn_ask_the_model(name):
    kind = catalog.get(name).kind
    run = lambda **model: cfg.merge(cfg.RunConfig(), {"model": model})  # noqa: E731
    place = setup.norm_place(run(norm=name))
    assert place == EGNN.placement.default_place(kind)
    model = make_egnn(name, place=None)
    assert getattr(model, f"{place}_norm").name == name
    others = [f for f in EGNN.placement.fields() if f != f"{place}_norm"]
    assert all(getattr(model, f) is None for f in others)
    assert setup.norm_place(run(norm=name, norm_place="update")) == "update"


# ----------------------------------------------------------------------------- the kNN graph


@pytest.mark.parametrize("masked", [False, True])
def test_knn_graph_inside_the_model_equals_given_edges(masked):
    x, v, q = inputs()
    mask = jnp.asarray([[True] * N, [True] * (N - 2) + [False] * 2]) if masked else None
    knn = EGNN(hidden=8, num_layers=2, graph="knn", neighbors=3, cutoff=3.0)
    given = EGNN(hidden=8, num_layers=2, graph="edges")
    s, r, e = knn_graph(jnp.where(mask[..., None], x, 0.0) if masked else x, 3, mask, 3.0)
    variables = given.init(jax.random.key(0), x, v, q, mask, senders=s, receivers=r,
                           edge_mask=e)
    assert jax.tree.structure(knn.init(jax.random.key(0), x, v, q, mask)) == \
        jax.tree.structure(variables)
    want = given.apply(variables, x, v, q, mask, senders=s, receivers=r, edge_mask=e)
    got = knn.apply(variables, x, v, q, mask)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12, atol=1e-12)
    dense = EGNN(hidden=8, num_layers=2).apply(variables, x, v, q, mask)
    assert float(jnp.max(jnp.abs(dense - want))) > 1e-6  # 3 neighbours is not the full graph
    with pytest.raises(ValueError, match="neighbors: expected an integer >= 1; received 0"):
        EGNN(graph="knn", neighbors=0)
    with pytest.raises(ValueError, match="'dense', 'knn' or 'edges'; received 'radius'"):
        EGNN(graph="radius")


# ----------------------------------------------------------------------------- edge kernels


def test_edge_kernels_take_their_own_config():
    rng = np.random.default_rng(0)
    h = 4
    x = jnp.asarray(rng.normal(size=(1, 5, 3)))
    a, b = (jnp.asarray(rng.normal(size=(1, 5, h))) for _ in range(2))
    s, r = (jnp.asarray(i) for i in np.nonzero(~np.eye(5, dtype=bool))[::-1])
    attr = jnp.asarray(rng.normal(size=(s.size, 2)))
    p = {"edge_w_radial": jnp.ones((1, h)), "edge_w_attr": jnp.ones((2, h)),
         "edge_mlp_out": {"kernel": jnp.asarray(rng.normal(size=(h, h)))},
         "coord_mlp_hidden": {"kernel": jnp.asarray(rng.normal(size=(h, h)))},
         "coord_mlp_out": {"kernel": jnp.asarray(rng.normal(size=(h, 1)))}}
    em = jnp.ones(s.shape)
    run = lambda **kw: kernels.list_edges(p, a, b, x, attr, s, r, em,
                                          kernels.EdgeKernelConfig(**kw))
    whole, chunked = run(), run(edge_chunk=3)
    for u, w in zip(whole, chunked, strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(w), rtol=1e-12)
    tanh = run(tanh=True, coords_range=1e-3)[0]
    assert float(jnp.max(jnp.abs(tanh))) < float(jnp.max(jnp.abs(whole[0])))


# ----------------------------------------------------------------------------- config and CLI


def test_old_config_key_layers_still_loads(tmp_path):
    old = cfg.to_dict(cfg.preset("test"))
    old["model"]["layers"] = old["model"].pop("num_layers") + 1
    (tmp_path / "config.json").write_text(json.dumps(old))
    loaded = cfg.load_config(tmp_path / "config.json")
    assert loaded.model.num_layers == cfg.preset("test").model.num_layers + 1
    assert "num_layers" in cfg.to_dict(loaded)["model"]
    assert "layers" not in cfg.to_dict(loaded)["model"]
    with pytest.raises(ValueError, match="model.layers and model.num_layers"):
        cfg.merge(cfg.RunConfig(), {"model": {"layers": 2, "num_layers": 3}})


@pytest.mark.parametrize("flag", ["--num-layers", "--layers"])
def test_cli_layers_flag_and_its_older_spelling(flag):
    args = cli.build_parser().parse_args(["train", "--test", flag, "3", "--graph", "knn"])
    config, _ = config_from_args(args)
    assert config.model.num_layers == 3 and config.model.model_kwargs == {"graph": "knn"}
    model = setup.build_model(config)
    assert (model.num_layers, model.graph, model.neighbors) == (3, "knn", 32)
    args = cli.build_parser().parse_args(["train", "--preset", "knn-500", "--neighbors", "8"])
    config, _ = config_from_args(args)  # a flag adds to the preset's model_kwargs
    assert config.model.model_kwargs == {"graph": "knn", "neighbors": 8}


def test_config_places_are_the_models():
    bad = cfg.merge(cfg.RunConfig(), {"model": {"norm_place": "edges"}})
    with pytest.raises(ValueError, match="place: expected one of .*'coord'.*received 'edges'"):
        setup.norm_place(bad)
    for place in EGNN.placement.names():
        config = cfg.merge(cfg.RunConfig(), {"model": {"norm_place": place}})
        assert setup.norm_place(config) == place


def test_a_place_of_another_model_is_refused_when_the_run_is_built():
    config = cfg.merge(cfg.preset("test"), {"model": {"norm": "layer_norm",
                                                      "norm_place": "latent"}})
    with pytest.raises(ValueError, match="place: expected one of"):
        setup.build(config)


# ----------------------------------------------------------------------------- parallel


def test_replicate_takes_where_first_for_both_meshes():
    tree = {"a": np.arange(6.0).reshape(2, 3), "b": np.int32(4)}
    ns = parallel.node_sharding(jax.devices()[:1])
    for where in (parallel.make_mesh(1), ns):
        out = parallel.replicate(where, tree)
        assert out["a"].sharding.is_fully_replicated
        np.testing.assert_array_equal(np.asarray(out["a"]), tree["a"])
        assert out["a"].sharding == parallel.replicated(where)
    with pytest.raises(ValueError, match="Mesh or a NodeSharding; received dict"):
        parallel.replicate(tree, ns)
    # one home: the model side holds only the kernels that need the EGNN
    assert not hasattr(model_sharding, "replicate")
