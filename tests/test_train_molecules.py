"""The molecular task in the one training loop: real GFN2-xTB water frames (generated in a
few seconds, written as a revised-MD17 file), Allegro and SchNet trained through
``train.train`` and ``geonorm-jax train``, resume, evaluation, the loss and the switches."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("tblite")
pytest.importorskip("rdkit")
pytest.importorskip("ase")

from geonorm_jax import cli, train  # noqa: E402
from geonorm_jax.data.molecules import (  # noqa: E402
    KCAL_PER_MOL_EV,
    MoleculeConfig,
    molecular_dataset,
)
from geonorm_jax.train import config as cfg  # noqa: E402
from geonorm_jax.train.tasks import MolecularTask, get_task  # noqa: E402
from geonorm_jax.train.tasks.molecules import model_kwargs  # noqa: E402

TINY_ALLEGRO = {"num_channels": 2, "latent_hidden": [8], "two_body_hidden": [8],
                "embed_dim": 4, "edge_energy_hidden": [4]}


@pytest.fixture(scope="module")
def water_file(tmp_path_factory):
    """24 GFN2-xTB Langevin frames of water in the revised-MD17 layout (eV, eV/Å)."""
    root = tmp_path_factory.mktemp("water")
    data = molecular_dataset(MoleculeConfig(molecule="water", frames=24, trajectories=2,
                                            stride=4, equilibration=6), root / "cache")
    path = root / "rmd17_water.npz"
    np.savez(path, coords=data.positions, energies=data.energies / KCAL_PER_MOL_EV,
             forces=data.forces / KCAL_PER_MOL_EV, nuclear_charges=data.atomic_numbers)
    return path, data


def _config(path, model="allegro", **model_overrides):
    kwargs = TINY_ALLEGRO if model == "allegro" else {"num_rbf": 8}
    return cfg.merge(cfg.preset(f"{model}-uracil"), {
        "molecules": {"dataset": "file", "data_file": str(path), "train": 12, "valid": 4,
                      "test": 8},
        "model": {"hidden": 8, "num_layers": 1, "model_kwargs": kwargs, **model_overrides},
        "train": {"epochs": 2, "batch_size": 4, "seeds": [0, 1], "eval_every": 1,
                  "checkpoint_every": 1, "eval_batch_size": 8, "fast_compile": True},
    })


def test_allegro_trains_resumes_and_evaluates_on_md17_file(water_file, tmp_path):
    path, data = water_file
    config = _config(path)
    summary = train.train(config, tmp_path / "run", progress=False)
    records = train.read_metrics(tmp_path / "run")
    assert [r["epoch"] for r in records] == [1, 2]
    for key in ("val_energy_mae", "test_energy_mae", "val_force_mae", "test_force_mae"):
        assert len(records[-1][key]) == 2 and all(np.isfinite(records[-1][key]))
    info = summary["task_info"]
    assert info["frames"] == {"train": 12, "valid": 4, "test": 8}
    assert info["source"] == "rmd17_water.npz" and info["atoms"] == 3
    assert 1.9 < info["avg_num_neighbors"] <= 2.0  # water: every atom sees the other two
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert "data" not in saved and saved["task"] == "molecules"

    # evaluation of the best parameters reproduces the recorded test metrics
    result = train.evaluate_run(tmp_path / "run")
    best = [s["best_epoch"] for s in summary["seeds"]]
    by_epoch = {r["epoch"]: r for r in records}
    for i, e in enumerate(best):
        np.testing.assert_allclose(result["test_force_mae"][i],
                                   by_epoch[e]["test_force_mae"][i], rtol=1e-5)
    with pytest.raises(ValueError, match="nbody task only"):
        train.evaluate_run(tmp_path / "run", rte=True)

    # a run stopped after epoch 1 and resumed equals the uninterrupted one
    stopped = train.train(config, tmp_path / "half", progress=False, deadline=0.0)
    assert stopped["stopped"] == "deadline" and stopped["epochs_completed"] == 1
    train.train(config, tmp_path / "half", resume=True, progress=False)
    resumed = train.read_metrics(tmp_path / "half")
    for a, b in zip(records, resumed, strict=True):
        assert a["train_loss"] == b["train_loss"] and a["test_force_mae"] == b["test_force_mae"]


def test_cli_trains_schnet_on_a_data_file(water_file, tmp_path, capsys):
    path, _ = water_file
    out = tmp_path / "schnet"
    code = cli.main(["train", "--model", "schnet", "--data-file", str(path),
                     "--train-frames", "12", "--valid-frames", "4", "--hidden", "8",
                     "--num-layers", "1", "--epochs", "1", "--batch-size", "4", "--seeds", "0",
                     "--no-builtin-norm",
                     "--out", str(out), "--no-progress"])
    assert code == 0
    text = capsys.readouterr().out
    assert "test force mae" in text
    saved = cfg.load_config(out / "config.json")
    assert saved.model.name == "schnet" and saved.model.builtin_norm is False
    assert saved.molecules.data_file == str(path)


def test_loss_and_metrics_match_a_numpy_computation():
    rng = np.random.default_rng(0)
    z = np.array([[8, 1, 1, 0], [6, 1, 0, 0]])  # two frames, padded atom slots
    batch = {"atomic_numbers": jnp.asarray(z), "energies": jnp.asarray(rng.normal(size=2)),
             "forces": jnp.asarray(rng.normal(size=(2, 4, 3)))}
    pred = {"energy": jnp.asarray(rng.normal(size=2)),
            "forces": jnp.asarray(rng.normal(size=(2, 4, 3)))}
    task = MolecularTask(energy_weight=0.3, force_weight=2.0)
    mask = z > 0
    n = mask.sum(1)
    de = np.asarray(pred["energy"] - batch["energies"])
    df = np.asarray(pred["forces"] - batch["forces"])[mask]  # real atoms only
    expect = 0.3 * np.mean((de / n) ** 2) + 2.0 * np.mean(df**2)
    np.testing.assert_allclose(float(task.loss(pred, batch)), expect, rtol=1e-6)
    m = task.sample_metrics(pred, batch)
    np.testing.assert_allclose(np.asarray(m["energy_mae"]), 1e3 * np.abs(de), rtol=1e-6)
    f0 = np.abs(np.asarray(pred["forces"] - batch["forces"])[0, :3]).mean()
    np.testing.assert_allclose(float(m["force_mae"][0]), 1e3 * f0, rtol=1e-6)


def test_normalization_switches_reach_the_models():
    info = {"avg_num_neighbors": 9.5, "species_shift": [0.0, -13.6], "species_scale": 1.5,
            "max_z": 8}
    on = cfg.preset("allegro-uracil")
    kw = model_kwargs(on, info)
    assert kw["env_normalization"] == "sqrt" and kw["avg_num_neighbors"] == 9.5
    assert kw["species_shift"] == (0.0, -13.6) and kw["species_scale"] == 1.5
    off = cfg.merge(on, {"molecules": {"target_norm": False}, "model": {"builtin_norm": False}})
    kw = model_kwargs(off, info)
    assert kw["env_normalization"] == "none" and "species_shift" not in kw
    s = model_kwargs(cfg.merge(cfg.preset("schnet-uracil"),
                               {"model": {"builtin_norm": False}}), info)
    assert s["neighbor_normalization"] is False and s["features"] == 64
    g = model_kwargs(cfg.merge(cfg.preset("gemnet-uracil"),
                               {"model": {"builtin_norm": False}}), info)
    assert g["scale_factors"] is False and g["residual_scaling"] is False
    assert g["emb_size_atom"] == g["emb_size_edge"] == 128 and "avg_num_neighbors" not in g


def test_the_cutoff_has_one_source(water_file):
    """``model.cutoff`` and the model's own spelling in ``model_kwargs`` give the same run: the
    neighbour statistics are fitted with exactly the cutoff the model receives."""
    path, _ = water_file
    infos = []
    for overrides in ({"cutoff": 1.2}, {"model_kwargs": {**TINY_ALLEGRO, "cutoff": 1.2}}):
        config = _config(path, **overrides)
        task = get_task(config)
        _, info = task.load(config)
        model = task.build_model(config, info)
        assert model.cutoff == info["cutoff"] == 1.2
        infos.append(info)
    # water within 1.2 Å: O sees both H (0.96 Å), each H only O (H-H 1.5 Å): N̄ = 4/3
    assert infos[0]["avg_num_neighbors"] == infos[1]["avg_num_neighbors"]
    assert abs(infos[0]["avg_num_neighbors"] - 4 / 3) < 0.05
    both = _config(path, cutoff=1.2, model_kwargs={**TINY_ALLEGRO, "cutoff": 3.0})
    with pytest.raises(ValueError, match=r"cutoff of 'allegro' is given twice.*model.cutoff = "
                                         r"1.2, model.model_kwargs\['cutoff'\] = 3.0"):
        get_task(both).check(both)


def test_molecular_config_errors_name_the_key(tmp_path):
    base = cfg.preset("allegro-uracil")
    with pytest.raises(ValueError, match="model.name"):
        cfg.validate(cfg.merge(base, {"model": {"name": "egnn"}}))
    with pytest.raises(ValueError, match="molecules.data_file"):
        train.build(cfg.merge(base, {"molecules": {"dataset": "file",
                                                   "data_file": str(tmp_path / "no.npz")}}))
    with pytest.raises(ValueError, match="place: expected one of"):
        get_task(base).check(cfg.merge(base, {"model": {"norm": "layer_norm",
                                                        "norm_place": "coord"}}))
    with pytest.raises(ValueError, match="molecules.energy_weight"):
        get_task(base).check(cfg.merge(base, {"molecules": {"energy_weight": -1.0}}))


def test_nbody_config_json_keeps_its_sections(tmp_path):
    cfg.save_config(cfg.preset("quick"), tmp_path / "config.json")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert "molecules" not in saved and saved["task"] == "nbody" and "data" in saved
    assert cfg.load_config(tmp_path / "config.json") == cfg.preset("quick")


def test_gemnet_fits_its_scale_factors_per_seed_and_trains(water_file, tmp_path):
    path, _ = water_file
    tiny = {"emb_size_trip": 4, "emb_size_rbf": 4, "emb_size_cbf": 4, "emb_size_bil_trip": 4,
            "num_spherical": 3, "num_radial": 4}
    config = cfg.merge(_config(path, "allegro"), {
        "model": {"name": "gemnet", "hidden": 8, "num_layers": 1, "model_kwargs": tiny},
        "train": {"epochs": 1}})
    s = train.build(config)
    state = s.init_state()
    factors = state.batch_stats["scale_factors"]
    values = np.concatenate([np.asarray(v).reshape(2, -1) for v in
                             jax.tree.leaves(factors)], axis=1)
    assert values.shape[1] > 3 and not np.allclose(values, 1.0)  # fitted, not the init 1
    assert not np.allclose(values[0], values[1])  # each seed fits its own initialization
    summary = train.train(config, tmp_path / "gemnet", progress=False)
    assert np.isfinite(summary["seeds"][0]["test_force_mae"])
    off = cfg.merge(config, {"model": {"scale_norm": False}})
    assert "scale_factors" not in train.build(off).init_state().batch_stats


def test_a_triplet_budget_the_data_exceeds_is_refused_before_training(water_file, tmp_path):
    path, _ = water_file
    config = cfg.merge(_config(path, model="gemnet"), {
        "model": {"model_kwargs": {"max_neighbors": 1}}})
    with pytest.raises(ValueError, match=r"GemNetT.max_neighbors: frame \d+, atom \d+ has 2 "
                                         r"neighbours .* received 1"):
        train.train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_schnet_trains_with_bfloat16_products_from_a_config(water_file, tmp_path):
    """``model_kwargs={"matmul_dtype": "bfloat16"}`` reaches the model through a run
    configuration (a JSON-able string), trains to finite metrics and is saved as given."""
    path, _ = water_file
    config = _config(path, "schnet", model_kwargs={"num_rbf": 8, "matmul_dtype": "bfloat16"})
    config = cfg.merge(config, {"train": {"epochs": 1, "seeds": [0]}})
    train.train(config, tmp_path / "run", progress=False)
    record = train.read_metrics(tmp_path / "run")[-1]
    assert np.isfinite(record["train_loss"]).all() and np.isfinite(record["test_force_mae"]).all()
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["model_kwargs"]["matmul_dtype"] == "bfloat16"
