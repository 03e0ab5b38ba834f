"""Data provenance, the data check before training, explosion reporting and CLI values.

Nothing here compiles a model: provenance is refused before compiling, the loop's explosion
handling runs on a stub epoch function, and the CLI errors come from validation."""

from __future__ import annotations

import copy
import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geonorm_jax import cli
from geonorm_jax import data as data_lib
from geonorm_jax.train import config as cfg
from geonorm_jax.train import loop, setup
from geonorm_jax.train.config import save_config
from geonorm_jax.train.eval_run import evaluate_run
from geonorm_jax.train.provenance import (
    DATA_JSON,
    DataMismatchError,
    check_finite,
    check_provenance,
    write_provenance,
)
from geonorm_jax.train.rundir import summarize
from geonorm_jax.train.state import TrainState


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def built(cache_dir):
    return setup.build(cfg.preset("test"), cache_dir=cache_dir)


@pytest.fixture(scope="module")
def other_data(tmp_path_factory, built):
    """The test preset's data generated with another seed and interaction strength."""
    other = data_lib.DataConfig.from_dict({**built.config.data.__dict__, "seed": 44,
                                           "interaction_strength": 0.5})
    return data_lib.write_dataset(other, tmp_path_factory.mktemp("other") / "d", progress=False)


@pytest.fixture
def run_dir(tmp_path, built):
    """A run directory as train() leaves it before the first epoch: config and data.json."""
    run = tmp_path / "run"
    run.mkdir()
    save_config(built.config, run / "config.json")
    write_provenance(run, built.provenance)
    return run


# ---------------------------------------------------------------------------------------------
# Provenance
# ---------------------------------------------------------------------------------------------


def test_data_json_records_hash_and_source(built, cache_dir):
    rec = built.provenance
    assert rec["task"] == "nbody" and len(rec["sha256"]) == 64
    assert rec["source"]["config"]["seed"] == 43 and "/" not in rec["source"]["name"]
    assert rec["splits"]["train"]["loc"]["shape"] == [40, 5, 3]
    # the same files given as --data-dir hash the same
    path = data_lib.get_dataset(built.config.data, cache_dir=cache_dir)
    again = setup.build(built.config, data_dir=path)
    assert again.provenance["sha256"] == rec["sha256"]


def test_eval_and_resume_refuse_other_data(built, other_data, run_dir):
    before = sorted(p.name for p in run_dir.rglob("*"))
    with pytest.raises(DataMismatchError, match="cannot evaluate .* the data differs"):
        evaluate_run(run_dir, data_dir=other_data)
    with pytest.raises(DataMismatchError, match="cannot resume .* seed 43 != 44"):
        loop.train(built.config, run_dir, resume=True, data_dir=other_data, progress=False)
    assert sorted(p.name for p in run_dir.rglob("*")) == before


def test_run_without_data_json_passes_with_a_note(built, run_dir):
    (run_dir / DATA_JSON).unlink()
    out = io.StringIO()
    assert check_provenance(run_dir, built.provenance, "resume", out) is False
    assert out.getvalue().count("\n") == 1 and "no data.json" in out.getvalue()


# ---------------------------------------------------------------------------------------------
# The data check before training
# ---------------------------------------------------------------------------------------------


def test_train_refuses_non_finite_data_naming_split_field_and_sample(built, tmp_path):
    s = copy.copy(built)
    train = dict(s.data["train"])
    train["target"] = train["target"].at[7, 2, 1].set(jnp.inf)
    s.data = {**s.data, "train": train}
    with pytest.raises(ValueError, match=r"split 'train' field 'target' .*inf.* sample 7 "):
        loop.train(s.config, tmp_path / "run", setup=s, progress=False)
    assert not (tmp_path / "run").exists()


def test_check_finite_counts_affected_samples():
    data = {"valid": {"x": np.ones((5, 2)), "z": np.array([1, 2, 3, 4, 5])}}
    data["valid"]["x"][[1, 3], 0] = np.nan
    with pytest.raises(ValueError, match=r"'valid' field 'x' .* sample 1 \(2 of 5 samples"):
        check_finite(data)


def test_molecular_data_with_nan_names_member_and_frame(tmp_path):
    from geonorm_jax.train.tasks.molecules import MolecularTask

    rng = np.random.default_rng(0)
    coords, forces = rng.normal(size=(60, 4, 3)) * 1.5, rng.normal(size=(60, 4, 3))
    forces[17, 2, 1] = np.nan
    path = tmp_path / "mol.npz"
    np.savez(path, coords=coords, energies=rng.normal(size=60), forces=forces,
             nuclear_charges=np.array([6, 1, 1, 8]))
    config = cfg.merge(cfg.preset("schnet-uracil"), {
        "molecules": {"dataset": "file", "data_file": str(path), "train": 30, "valid": 10},
        "train": {"batch_size": 5}})
    with pytest.raises(ValueError, match=r"'mol.npz': member 'forces' .* at frame 17"):
        MolecularTask().load(config)


# ---------------------------------------------------------------------------------------------
# Explosions and the summary
# ---------------------------------------------------------------------------------------------


def _record(epoch, exploded, test):
    return {"epoch": epoch, "train_loss": [0.1] * len(test), "exploded": exploded,
            "exploded_at": [3 if e else -1 for e in exploded], "val_mse": test,
            "test_mse": test, "best_val": test, "best_epoch": [epoch] * len(test)}


def test_test_mse_mean_is_over_surviving_seeds():
    config = cfg.merge(cfg.preset("test"), {"train": {"seeds": [1, 2, 3], "epochs": 2}})
    records = [_record(1, [False, False, False], [1.0, 0.98, 0.5]),
               _record(2, [False, False, True], [1.0, 0.98, 5e3])]
    records[1]["best_epoch"] = [2, 2, 1]
    summary = summarize(config, records)
    assert summary["num_exploded"] == 1 and summary["num_surviving"] == 2
    assert summary["test_mse_mean"] == pytest.approx(0.99)
    assert summary["test_mse_mean_all"] == pytest.approx((1.0 + 0.98 + 0.5) / 3)
    assert summary["seeds"][2]["best_epoch"] == 1


def test_an_exploded_seed_keeps_its_best_from_before():
    one = lambda v: jnp.asarray(v)
    state = TrainState(params=one([1.0]), batch_stats={}, opt_state={}, step=one(0),
                       key=one([0, 0]), exploded=one(True), exploded_at=one(5),
                       best_params=one([0.0]), best_batch_stats={}, best_val=one(1.0),
                       best_epoch=one(2))
    new, improved = setup._update_best(state, one(0.5), one(4))
    assert not bool(improved) and int(new.best_epoch) == 2 and float(new.best_val) == 1.0
    new, improved = setup._update_best(state._replace(exploded=one(False)), one(0.5), one(4))
    assert bool(improved) and int(new.best_epoch) == 4


def _exploding(built):
    """``built`` whose every seed explodes in epoch 1: seed 30 with a NaN loss at its second
    step, seed 40 with a loss above the threshold at its third (no model is compiled)."""
    s = copy.copy(built)
    s.config = cfg.merge(built.config, {"train": {"seeds": [30, 40], "epochs": 6}})
    n, steps = 2, built.steps_per_epoch

    def init_state():
        z = np.zeros(n, np.float32)
        return TrainState(params=np.zeros((n, 3), np.float32), batch_stats={}, opt_state={},
                          step=np.zeros(n, np.int32), key=np.zeros((n, 2), np.uint32),
                          exploded=np.zeros(n, bool), exploded_at=np.full(n, -1, np.int32),
                          best_params=np.zeros((n, 3), np.float32), best_batch_stats={},
                          best_val=z + np.inf, best_epoch=np.full(n, -1, np.int32))

    def epoch_fn(state, data):
        losses = np.full((n, steps), 0.5, np.float32)
        losses[0, 1], losses[1, 2] = np.nan, 5e3
        first = np.asarray(state.step) + np.array([1, 2])
        at = np.where(np.asarray(state.exploded), np.asarray(state.exploded_at), first)
        applied = np.arange(steps)[None, :] < np.array([1, 2])[:, None]
        return state._replace(step=np.asarray(state.step) + steps, exploded=np.ones(n, bool),
                              exploded_at=at.astype(np.int32)), losses, applied

    s.init_state = init_state
    s.epoch_fn = epoch_fn
    s.metrics_fn = lambda p, bs, d: ({"mse": jnp.ones((n, 4))}, None)
    s.update_best_fn = jax.vmap(setup._update_best, in_axes=(0, 0, None))
    return s


def test_all_exploded_stops_early_and_says_why(built, tmp_path):
    s = _exploding(built)
    out = io.StringIO()
    summary = loop.train(s.config, tmp_path / "run", setup=s, progress=False, stream=out)
    assert summary["stopped"] == "all_exploded" and summary["epochs_completed"] == 1
    assert "every seed exploded" in out.getvalue()
    seed30, seed40 = summary["seeds"]
    assert seed30["exploded_cause"] == seed40["exploded_cause"] == "model"
    assert "non-finite loss" in seed30["exploded_reason"]
    assert "above train.explosion_threshold" in seed40["exploded_reason"]
    assert summary["test_mse_mean"] is None and summary["num_exploded"] == 2
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["stopped"] == "all_exploded"
    assert (tmp_path / "run" / "checkpoints" / "interval" / "1").is_dir()


def test_explosion_on_non_finite_data_is_blamed_on_the_data(built):
    s = copy.copy(built)
    train = dict(s.data["train"])
    train["loc"] = train["loc"].at[3].set(jnp.nan)
    s.data = {**s.data, "train": train}
    causes = loop._explosion_causes(s, np.array([True]), [4], 0,
                                    np.full((1, 4), np.nan, np.float32))
    assert causes[0]["cause"] == "data" and "sample 3" in causes[0]["reason"]


# ---------------------------------------------------------------------------------------------
# CLI values
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags, needle", [
    (["--epochs", "-1"], "train.epochs: expected an integer >= 1, got -1"),
    (["--lr", "-1e-3"], "optimizer.lr: expected a positive number, got -0.001"),
    (["--lr", "-inf"], "optimizer.lr: expected a positive number"),
])
def test_negative_values_reach_validation(flags, needle, tmp_path, capsys):
    rc = cli.main(["train", "--test", "--no-progress", "--out", str(tmp_path / "r"), *flags])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err, err
    assert not (tmp_path / "r").exists()


def test_data_generate_with_too_few_steps_names_the_flags(tmp_path, capsys):
    rc = cli.main(["data", "generate", "--steps", "200", "--sample-freq", "100",
                   "--out", str(tmp_path / "d"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "--steps" in err and "--sample-freq" in err and "out of range" not in err
    assert not (tmp_path / "d").exists()
