"""The model registry: one spec per model, one vocabulary for the shared knobs, the CLI listing,
and the train/eval switch passed the same way to every model."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _molecules import ethanol_inputs

from geonorm_jax import cli
from geonorm_jax.models import EGNN, SchNet, registry
from geonorm_jax.models.layers import merge_training
from geonorm_jax.norms import catalog


def test_models_json_lists_the_four_models_with_knobs_and_places(capsys):
    assert cli.main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"egnn", "allegro", "schnet", "gemnet"} <= set(rows)
    expect = {"egnn": (64, 4, None), "allegro": (64, 2, 5.0), "schnet": (64, 3, 5.0),
              "gemnet": (128, 4, 5.0)}
    for name, (hidden, layers, cutoff) in expect.items():
        d = rows[name]["defaults"]
        assert (d["hidden"], d["num_layers"], d["cutoff"]) == (hidden, layers, cutoff), name
        assert rows[name]["norm_places"] and rows[name]["citation"]
    assert rows["egnn"]["task"] == "nbody" and rows["gemnet"]["task"] == "molecules"
    assert [p["name"] for p in rows["allegro"]["norm_places"]] == ["latent", "tensor"]
    assert rows["gemnet"]["knobs"]["hidden"] == ["emb_size_atom", "emb_size_edge"]
    assert cli.main(["models"]) == 0
    assert "4 models" in capsys.readouterr().out or len(rows) > 4


def test_knobs_map_onto_each_model_and_published_names_are_aliases():
    gemnet = registry.get("gemnet")
    kw = gemnet.resolve(hidden=16, num_layers=2, cutoff=4.0)
    assert (kw["emb_size_atom"], kw["emb_size_edge"], kw["num_blocks"], kw["cutoff"]) == \
        (16, 16, 2, 4.0)
    assert kw["emb_size_trip"] == 64  # the rest stays published (GEMNET_T_MD17)
    schnet = registry.get("schnet")
    assert schnet.resolve(model_kwargs={"features": 32})["features"] == 32  # alias of hidden
    assert schnet.resolve(hidden=32, model_kwargs={"features": 32})["features"] == 32
    with pytest.raises(ValueError, match=r"hidden of 'schnet' is given twice.*model.hidden = 32"
                                         r", model.model_kwargs\['features'\] = 16"):
        schnet.resolve(hidden=32, model_kwargs={"features": 16})
    with pytest.raises(ValueError, match=r"\['featurs'\] are not arguments of SchNet"):
        schnet.resolve(model_kwargs={"featurs": 16})
    assert schnet.resolve(builtin_norm=False)["neighbor_normalization"] is False
    assert schnet.resolve()["neighbor_normalization"] is True  # the survey's A/N_v
    # a size that fixes the built-in normalization keeps it; contradicting it is an error
    assert schnet.resolve(size="schnetpack")["neighbor_normalization"] is False
    assert schnet.resolve(size="schnetpack", builtin_norm=False)["readout_activation"] == "silu"
    with pytest.raises(ValueError, match=r"builtin_norm = True: size 'schnetpack' of 'schnet' "
                                         r"sets neighbor_normalization = False"):
        schnet.resolve(size="schnetpack", builtin_norm=True)
    assert schnet.resolve(size="tiny", builtin_norm=False)["neighbor_normalization"] is False
    with pytest.raises(ValueError, match="'egnn' has no built-in normalization"):
        registry.get("egnn").resolve(builtin_norm=False)
    # training statistics reach only the models that declare them
    data = {"avg_num_neighbors": 3.0, "max_atomic_number": 8}
    assert "avg_num_neighbors" not in schnet.resolve(data=data)
    assert registry.get("allegro").resolve(data=data)["avg_num_neighbors"] == 3.0
    with pytest.raises(ValueError, match="size 'huge' of 'allegro'"):
        registry.get("allegro").resolve(size="huge")


def test_specs_build_models_with_a_norm_at_a_place_and_refuse_wrong_ones():
    spec = registry.get("schnet")
    model = spec.build(spec.resolve(size="tiny"), catalog.make("layer_norm"))
    assert isinstance(model, SchNet) and model.feature_norm.name == "layer_norm"
    assert spec.build(spec.resolve(size="tiny"), catalog.make("layer_norm"),
                      "aggregate").aggregate_norm is not None
    with pytest.raises(ValueError, match="place: expected one of"):
        spec.build(spec.resolve(), catalog.make("layer_norm"), "coord")
    with pytest.raises(ValueError, match="the SchNet takes features norms"):
        spec.build(spec.resolve(), catalog.make("geo_norm"))
    assert isinstance(registry.get("egnn").build(registry.get("egnn").resolve()), EGNN)


def test_register_refuses_a_taken_name_and_bad_specs():
    spec = registry.get("schnet")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.ModelSpec(name="schnet", task="molecules", module=SchNet,
                                             placement=spec.placement, knobs=spec.knobs,
                                             defaults={"features": 8}))
    with pytest.raises(ValueError, match=r"\['hidden', 'num_layers'\] are not arguments"):
        registry.ModelSpec(name="x", task="molecules", module=SchNet, placement=spec.placement)
    with pytest.raises(ValueError, match="ModelSpec.task: expected one of"):
        registry.ModelSpec(name="x", task="images", module=SchNet, placement=spec.placement)
    with pytest.raises(ValueError, match=r"\['num_layers', 'width'\] are not arguments"):
        registry.ModelSpec(name="x", task="molecules", module=SchNet, placement=spec.placement,
                           knobs={"hidden": ("width",)})
    with pytest.raises(ValueError, match="model.name: expected one of"):
        registry.get("schnett")
    mine = registry.register(registry.ModelSpec(
        name="schnet_small", task="molecules", module=SchNet, placement=spec.placement,
        knobs=spec.knobs, defaults={"features": 8, "num_interactions": 1}))
    try:
        assert "schnet_small" in registry.names("molecules")
        assert mine.knob_defaults() == {"hidden": 8, "num_layers": 1, "cutoff": 5.0}
    finally:
        registry.unregister("schnet_small")
    assert "schnet_small" not in registry.names()


def test_training_is_passed_the_same_way_to_every_model():
    assert merge_training(None, None) is False
    assert merge_training(True, None) is True and merge_training(None, True) is True
    assert merge_training(True, True) is True
    with pytest.raises(ValueError, match="training: given as attribute"):
        merge_training(False, True)
    pos, z = ethanol_inputs(2)
    for name in ("allegro", "schnet", "gemnet"):
        spec = registry.get(name)
        kwargs = spec.resolve(size="tiny", data={"avg_num_neighbors": 8.0,
                                                 "max_atomic_number": 8})
        model = spec.build(kwargs, catalog.make("batch_norm"))
        batch = {"positions": pos.astype(jnp.float32), "atomic_numbers": z}
        variables = spec.init(model, jax.random.key(0), batch)
        by_arg, stats_arg = spec.predict(model, variables, batch, training=True)
        by_attr, stats_attr = spec.predict(model.clone(training=True), variables, batch, True)
        np.testing.assert_array_equal(by_arg["energy"], by_attr["energy"])
        before = jax.tree.leaves(variables["batch_stats"]["batch_stats"])
        after = jax.tree.leaves(stats_arg["batch_stats"])
        assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True)), name
        evaluated, same = spec.predict(model, variables, batch, training=False)
        assert jax.tree.leaves(same["batch_stats"])[0] is before[0]
        assert not np.allclose(evaluated["energy"], by_arg["energy"])  # running vs batch stats
