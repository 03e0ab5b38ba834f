"""Issue 27, trainer and CLI side: readers never write, lost history and edited configurations
are refused on resume, seeds do not alias, flags of the other task are refused, bad inputs end
in one clear line, and molecular energies keep float64 precision until the per-species shift
is removed (a constant of -1e5 eV changes nothing); coincident atoms and a cutoff without
neighbours are named before training."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from geonorm_jax import cli, train
from geonorm_jax.train import config as cfg
from geonorm_jax.train.checkpoint import ReadOnlyCheckpointsError, RunCheckpoints
from geonorm_jax.train.eval_run import evaluate_run
from geonorm_jax.train.rundir import CONFIG_RECORD, METRICS, read_metrics, resume_records
from geonorm_jax.train.state import seed_key


def _one_line_error(capsys, argv) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------------------------------------
# One clear line: config files, seeds, flags of the other task, data sizes, plot
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, kind", [("[1, 2]", "list"), ('"x"', "string"), ("3", "number")])
def test_a_config_file_that_is_not_an_object_is_one_line(tmp_path, capsys, text, kind):
    path = tmp_path / "c.json"
    path.write_text(text)
    err = _one_line_error(capsys, ["train", "--config", str(path), "--out", str(tmp_path / "r")])
    assert f"{path}: expected a JSON object" in err and f"received a JSON {kind}" in err
    with pytest.raises(ValueError, match="expected an object of config keys"):
        cfg.merge(cfg.RunConfig(), [1, 2])
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("seed", [2**32, 2**32 + 30, 2**64 - 1, -1])
def test_seeds_outside_32_bits_are_refused_not_aliased(seed):
    config = cfg.merge(cfg.preset("test"), {"train": {"seeds": [30, seed]}})
    with pytest.raises(ValueError, match=r"train.seeds\[1\]: expected an integer in 0..2\*\*32-1"):
        cfg.validate(config)
    with pytest.raises(ValueError, match="seed: expected an integer in 0..2"):
        seed_key(seed)
    for key in ("data_seed", "split_seed"):
        bad = cfg.merge(cfg.preset("allegro-uracil"), {"molecules": {key: seed}})
        with pytest.raises(ValueError, match=f"molecules.{key}"):
            cfg.validate(bad)


def test_the_largest_32_bit_seed_is_accepted():
    cfg.validate(cfg.merge(cfg.preset("test"), {"train": {"seeds": [0, 2**32 - 1]}}))
    assert seed_key(2**32 - 1).shape == (2,)


@pytest.mark.parametrize("argv, flag", [
    (["--test", "--data-file", "x.npz"], "--data-file"),
    (["--test", "--molecule", "ethanol"], "--molecule"),
    (["--test", "--train-frames", "10"], "--train-frames"),
    (["--test", "--no-target-norm"], "--no-target-norm"),
    (["--model", "schnet", "--particles", "10"], "--particles"),
    (["--model", "schnet", "--train-samples", "10"], "--train-samples"),
])
def test_flags_of_the_other_task_are_refused(tmp_path, capsys, argv, flag):
    err = _one_line_error(capsys, ["train", *argv, "--out", str(tmp_path / "r")])
    assert f"error: {flag}: applies to the" in err and "task only" in err, err
    assert not (tmp_path / "r").exists()


def test_train_samples_in_a_molecular_config_is_refused():
    config = cfg.merge(cfg.preset("schnet-uracil"), {"train": {"train_samples": 10}})
    with pytest.raises(ValueError, match="train.train_samples: expected null for the molecules"):
        cfg.validate(config)


def test_a_value_outside_a_union_names_every_accepted_form():
    with pytest.raises(ValueError, match=r"molecules.target_norm: expected true/false or "
                                         r"'shift', got 'bogus'"):
        cfg.merge(cfg.preset("schnet-uracil"), {"molecules": {"target_norm": "bogus"}})


def test_an_impossible_particle_count_is_refused_before_generation(tmp_path, capsys):
    err = _one_line_error(capsys, ["train", "--test", "--particles", "1000000000",
                                   "--out", str(tmp_path / "r")])
    assert "data.particles: 1000000000 particles" in err and "GiB" in err, err
    assert not (tmp_path / "r").exists()
    cfg.validate(cfg.preset("knn-500"))  # the large presets pass
    cfg.validate(cfg.preset("geonorm-paper"))


def test_plot_errors_are_one_line(tmp_path, capsys):
    empty, fresh, torn, bad = (tmp_path / n for n in ("empty", "fresh", "torn", "bad"))
    for d in (empty, fresh, torn, bad):
        d.mkdir()
    (fresh / "config.json").write_text("{}")
    (torn / METRICS).write_text("")
    (bad / METRICS).write_text('{"epoch": 1}\n')
    out = ["--out", str(tmp_path / "c.png")]
    assert "not a run directory" in _one_line_error(capsys, ["plot", str(empty), *out])
    assert "no epoch has finished yet" in _one_line_error(capsys, ["plot", str(fresh), *out])
    assert "no epoch records" in _one_line_error(capsys, ["plot", str(torn), *out])
    assert "record 1 is not an epoch record" in _one_line_error(capsys, ["plot", str(bad), *out])


# ---------------------------------------------------------------------------------------------
# Run directories: history, edited config, readers (a tiny N-body run, a few seconds)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A 4-epoch test run stopped (deadline) after epoch 2: checkpoints 1 and 2, metrics 1..2."""
    config = cfg.merge(cfg.preset("test"), {"train": {"eval_every": 1}})
    run = tmp_path_factory.mktemp("round3") / "run"
    train.train(config, run, progress=False, deadline=0.0)
    summary = train.train(config, run, resume=True, progress=False, deadline=0.0)
    assert summary["stopped"] == "deadline" and summary["epochs_completed"] == 2
    return config, run


def _copy(run, tmp_path):
    dest = tmp_path / "copy"
    shutil.copytree(run, dest)
    return dest


def test_resume_refuses_a_missing_metrics_file(stopped_run, tmp_path):
    config, run = stopped_run
    run = _copy(run, tmp_path)
    (run / METRICS).unlink()
    with pytest.raises(ValueError, match=r"metrics.jsonl is missing but the checkpoint of epoch "
                                         r"2 exists"):
        train.train(config, run, resume=True, progress=False)
    assert not (run / METRICS).exists()  # nothing written


def test_resume_refuses_a_damaged_line_and_lost_epochs(stopped_run, tmp_path):
    config, run = stopped_run
    run = _copy(run, tmp_path)
    lines = (run / METRICS).read_text().splitlines()
    (run / METRICS).write_text(lines[0][:20] + "\n" + lines[1] + "\n")
    with pytest.raises(ValueError, match=r"line 1 of 2 is damaged"):
        train.train(config, run, resume=True, progress=False)
    (run / METRICS).write_text(lines[1] + "\n")
    with pytest.raises(ValueError, match=r"has no record of epoch 1, but the checkpoint"):
        resume_records(run, 2)


def test_resume_repairs_only_a_torn_last_line_after_the_checkpoint(stopped_run, tmp_path):
    config, run = stopped_run
    run = _copy(run, tmp_path)
    lines = (run / METRICS).read_text().splitlines()
    # the trainer killed while writing epoch 3's line (its checkpoint never written)
    (run / METRICS).write_text("\n".join(lines) + '\n{"epoch": 3, "train_lo')
    assert [r["epoch"] for r in resume_records(run, 2)] == [1, 2]
    # ... but a torn last line that was epoch 2's own record is history lost
    (run / METRICS).write_text(lines[0] + "\n" + lines[1][:30])
    with pytest.raises(ValueError, match=r"no record of epoch 2.*its last line, 2, is torn"):
        resume_records(run, 2)
    (run / METRICS).write_text("\n".join(lines) + '\n{"epoch": 3, "train_lo')
    summary = train.train(config, run, resume=True, progress=False)
    assert summary["epochs_completed"] == 4
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2, 3, 4]


def test_an_edited_config_json_is_refused_naming_the_field(stopped_run, tmp_path, capsys):
    config, run = stopped_run
    run = _copy(run, tmp_path)
    assert (run / CONFIG_RECORD).is_file()
    saved = json.loads((run / "config.json").read_text())
    saved["model"]["hidden"] = 32
    (run / "config.json").write_text(json.dumps(saved))
    err = _one_line_error(capsys, ["train", "--resume", str(run), "--no-progress"])
    assert "was changed after the run started" in err and "model.hidden: 16 != 32" in err, err
    assert len(err) < 600
    err = _one_line_error(capsys, ["eval", str(run)])
    assert "model.hidden: 16 != 32" in err
    saved["model"]["hidden"] = 16
    (run / "config.json").write_text(json.dumps(saved, indent=4))  # reformatted: the same
    assert evaluate_run(run)["seeds"] == [30]


def test_readers_open_checkpoints_read_only_and_leave_temporaries(stopped_run, tmp_path):
    config, run = stopped_run
    run = _copy(run, tmp_path)
    # a step the trainer is writing right now (orbax's temporary directory)
    tmp = run / "checkpoints" / "interval" / "3.orbax-checkpoint-tmp-1234567"
    (tmp / "state").mkdir(parents=True)
    (tmp / "state" / "partial").write_bytes(b"x" * 10)
    before = sorted(p.relative_to(run).as_posix() for p in run.rglob("*"))
    result = evaluate_run(run)
    assert len(result["test_mse"]) == 1
    from geonorm_jax.train.eval_run import best_variables
    from geonorm_jax.train.setup import build

    best_variables(build(config), run)
    assert tmp.is_dir() and (tmp / "state" / "partial").read_bytes() == b"x" * 10
    after = sorted(p.relative_to(run).as_posix() for p in run.rglob("*"))
    assert after == before  # nothing written, nothing removed
    ck = RunCheckpoints(run)
    for call in (lambda: ck.save(9, None, {}), lambda: ck.save_best(9, None, {}),
                 lambda: ck.quarantine("interval", 1)):
        with pytest.raises(ReadOnlyCheckpointsError, match="open read-only"):
            call()
    ck.close()
    assert RunCheckpoints(tmp_path / "nothing").latest_epoch() is None
    assert not (tmp_path / "nothing").exists()  # a reader creates no directory


# ---------------------------------------------------------------------------------------------
# Molecules: float64 energies until the shift is removed; data checks before training
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def water(tmp_path_factory):
    """24 GFN2-xTB frames of water (eV, eV/Å), float64."""
    for module in ("tblite", "rdkit", "ase"):
        pytest.importorskip(module)
    from geonorm_jax.data.molecules import MoleculeConfig, molecular_dataset

    root = tmp_path_factory.mktemp("water3")
    data = molecular_dataset(MoleculeConfig(molecule="water", frames=24, trajectories=2,
                                            stride=4, equilibration=6), root / "cache")
    return root, data


def _water_file(root, data, name, *, offset=0.0, positions=None):
    from geonorm_jax.data.molecules import KCAL_PER_MOL_EV

    path = root / f"{name}.npz"
    pos = data.positions if positions is None else positions
    np.savez(path, coords=pos, energies=(data.energies + offset) / KCAL_PER_MOL_EV,
             forces=data.forces / KCAL_PER_MOL_EV, nuclear_charges=data.atomic_numbers)
    return path


def _schnet(path, **model):
    return cfg.merge(cfg.preset("schnet-uracil"), {
        "molecules": {"dataset": "file", "data_file": str(path), "train": 12, "valid": 4,
                      "test": 8},
        "model": {"hidden": 8, "num_layers": 1, "model_kwargs": {"num_rbf": 8}, **model},
        "train": {"epochs": 2, "batch_size": 4, "seeds": [0], "eval_every": 1,
                  "checkpoint_every": 1, "eval_batch_size": 8, "fast_compile": True},
    })


def test_a_constant_of_minus_1e5_ev_does_not_change_the_energy_error(water, tmp_path):
    """DFT-size total energies: the float64 shift is removed before the float32 cast, so the
    energy MAE equals that of the same data without the constant to 1e-6 eV."""
    root, data = water
    plain = _water_file(root, data, "plain")
    shifted = _water_file(root, data, "shifted", offset=-1e5)
    mae = {}
    for name, path in (("plain", plain), ("shifted", shifted)):
        s = train.build(_schnet(path))
        assert s.info["energy_targets"] == "residual"
        assert float(np.max(np.abs(np.asarray(s.data["train"]["energies"])))) < 10.0
        summary = train.train(_schnet(path), tmp_path / name, progress=False, setup=s)
        mae[name] = (summary["seeds"][0]["test_energy_mae"], summary["test_mse_mean"])
        # the potential users get predicts total energies (float64: exact totals)
    assert abs(mae["plain"][0] - mae["shifted"][0]) < 1e-3, mae  # meV: 1e-6 eV
    assert mae["shifted"][0] < 1e4  # the -1e5 eV were not learnt as an error
    np.testing.assert_allclose(mae["plain"][1], mae["shifted"][1], rtol=1e-5)


def test_the_potential_of_a_residual_run_predicts_total_energies(water, tmp_path):
    import jax

    from geonorm_jax.potentials import load_potential

    root, data = water
    path = _water_file(root, data, "shifted", offset=-1e5)
    config = cfg.merge(_schnet(path), {"train": {"epochs": 1}})
    train.train(config, tmp_path / "run", progress=False)
    assert jax.config.jax_enable_x64  # tests/conftest.py
    pot = load_potential(tmp_path / "run", dtype=jax.numpy.float64)
    e, _ = pot.energy_and_forces(np.asarray(data.positions[:4]))
    # a 1-epoch model: far from exact, but a total energy near -1e5 eV, not a residual
    assert np.all(np.abs(np.asarray(e) - (data.energies[:4] - 1e5)) < 50.0), e


def test_coincident_atoms_are_named_before_training(water, tmp_path):
    root, data = water
    pos = np.array(data.positions)
    pos[5, 2] = pos[5, 0]  # atom 2 on atom 0 in frame 5
    path = _water_file(root, data, "coincident", positions=pos)
    with pytest.raises(ValueError, match=r"atoms 0 \(Z=8\) and 2 \(Z=1\) of frame 5 \(\w+ split\)"
                                         r" are 0 Å apart"):
        train.build(_schnet(path))
    with pytest.raises(ValueError, match="frame 5"):
        train.train(_schnet(path), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("model", ["schnet", "gemnet"])
def test_a_cutoff_without_neighbours_is_refused_naming_the_distance(water, model):
    root, data = water
    path = _water_file(root, data, "plain")
    config = cfg.merge(_schnet(path, cutoff=0.1), {"model": {"name": model,
                                                             "model_kwargs": {}}})
    with pytest.raises(ValueError, match=r"model.cutoff 0.1 Å: atom \d \(Z=\d\) \(3 atoms in "
                                         r"all\) has no neighbour within the cutoff.*closest it "
                                         r"comes to another atom is 0.9\d* Å"):
        train.build(config)
