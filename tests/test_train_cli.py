"""Trainer tests in subprocesses: the CLI end to end, resume after SIGKILL, 4 devices = 1.

Each subprocess pays the JAX import and compilation, so there are only five: one
uninterrupted CLI run (also the reference for the resume test), one run killed with SIGKILL,
its resume, and one process that trains on 1 and on 4 (virtual CPU) devices.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from geonorm_jax import cli
from geonorm_jax.train import config as cfg
from geonorm_jax.train import loop

# ``python SLOW_EPOCHS SECONDS ARGS...``: the CLI with a pause after every epoch.
SLOW_EPOCHS = Path(__file__).with_name("_slow_epochs.py")
EPOCHS = "8"
TRAIN_FLAGS = ["--test", "--epochs", EPOCHS, "--checkpoint-every", "1", "--no-progress"]


def _env(cache_dir, **extra) -> dict:
    env = dict(os.environ)
    env["GEONORM_JAX_CACHE"] = str(cache_dir)
    env.pop("XLA_FLAGS", None)
    env.update(extra)
    return env


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "geonorm_jax.cli", *args]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, cache_dir):
    """``geonorm-jax train --test --epochs 8`` run to completion in a subprocess."""
    run_dir = tmp_path_factory.mktemp("cli") / "full"
    proc = subprocess.run(_cli("train", *TRAIN_FLAGS, "--out", str(run_dir)),
                          env=_env(cache_dir), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return run_dir, proc


def test_cli_end_to_end_writes_every_output(full_run, cache_dir, tmp_path, capsys):
    run_dir, proc = full_run
    # config.json: the test preset with the flags applied, loadable
    config = cfg.load_config(run_dir / "config.json")
    assert config == cfg.merge(cfg.preset("test"),
                               {"train": {"epochs": 8, "checkpoint_every": 1}})
    # metrics.jsonl: one line per epoch, evaluations every 2 epochs
    records = loop.read_metrics(run_dir)
    assert [r["epoch"] for r in records] == list(range(1, 9))
    assert [r["epoch"] for r in records if "val_mse" in r] == [2, 4, 6, 8]
    assert all(np.isfinite(r["train_loss"][0]) for r in records)
    # checkpoints: the last 3 interval checkpoints and the best one
    interval = sorted(int(p.name) for p in (run_dir / "checkpoints" / "interval").iterdir())
    assert interval == [6, 7, 8]
    assert len(list((run_dir / "checkpoints" / "best").iterdir())) == 1
    # curves.png is a PNG
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # summary.json and the printed table
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs_completed"] == 8 and not summary["interrupted"]
    assert summary["seeds"][0]["test_mse"] > 0
    assert "test MSE" in proc.stdout and "run directory" in proc.stdout
    # eval --rte prints the 8 columns and writes rte.json; plot overlays runs
    # the run's own data (its cache): another cache may hold other bytes under the same name,
    # which eval refuses (data.json)
    assert cli.main(["eval", str(run_dir), "--rte", "--cache-dir", str(cache_dir)]) == 0
    out = capsys.readouterr().out
    for column in ("mean_R_err", "median_R_err", "max_R_err", "delta_R_err",
                   "mean_T_err", "median_T_err", "max_T_err", "delta_T_err"):
        assert column in out
    rte = json.loads((run_dir / "rte.json").read_text())
    assert abs(rte["rte"][0]["delta_T_err"]) < 1e-4 * rte["rte"][0]["mse"]  # GeoNorm
    png = tmp_path / "overlay.png"
    assert cli.main(["plot", str(run_dir), str(run_dir), "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_help_is_complete_for_every_subcommand(capsys):
    for command, words in (
        ("train", ["--preset", "--resume", "--seeds", "--norm", "--norm-place", "--lr",
                   "--epochs", "--batch-size", "--layers", "--particles", "--out", "--config",
                   "--train-samples", "--eval-every", "--data-dir", "quick", "egnn-5body",
                   "geonorm-paper"]),
        ("eval", ["RUN_DIR", "--rte", "--draws", "--translation-scale"]),
        ("plot", ["RUN_DIR", "--out"]),
    ):
        with pytest.raises(SystemExit) as exc:
            cli.main([command, "--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        for word in words:
            assert word in text, (command, word)


def test_resume_after_sigkill_equals_uninterrupted_run(full_run, tmp_path, cache_dir):
    run_dir = tmp_path / "killed"
    slow = [sys.executable, str(SLOW_EPOCHS), "0.4", "train", *TRAIN_FLAGS, "--out", str(run_dir)]
    proc = subprocess.Popen(slow, env=_env(cache_dir), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    interval = run_dir / "checkpoints" / "interval"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            steps = [p.name for p in interval.iterdir() if p.name.isdigit()] \
                if interval.is_dir() else []
            if len(steps) >= 3:  # epochs 1..3 saved: kill in the middle of the run
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed_at = max(int(p.name) for p in interval.iterdir() if p.name.isdigit())
    assert killed_at < int(EPOCHS)
    resumed = subprocess.run(_cli("train", "--resume", str(run_dir), "--no-progress"),
                             env=_env(cache_dir), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    after = loop.read_metrics(run_dir)
    reference = loop.read_metrics(full_run[0])
    assert [r["epoch"] for r in after] == list(range(1, 9))
    for a, b in zip(after, reference, strict=True):
        for key in ("train_loss", "val_mse", "test_mse", "best_epoch", "step"):
            assert a.get(key) == b.get(key), (key, a["epoch"], killed_at)


FOUR_DEVICES = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from geonorm_jax.train import config as cfg, loop, setup, step
    assert len(jax.devices()) == 4, jax.devices()
    out = {}
    for devices in (1, 4):
        config = cfg.merge(cfg.preset("test"), {
            "model": {"norm": "batch_norm", "norm_place": "feature"},
            "train": {"epochs": 3, "eval_every": 1, "devices": devices, "batch_size": 8,
                      "eval_batch_size": 12}})
        s = setup.build(config)
        # one gradient evaluation from the same initial state on the same batch
        state = jax.tree.map(lambda x: x[0], s.init_state())
        batch = {k: v[:8] for k, v in s.data["train"].items()}
        def loss(params):
            pred, stats = s.apply(params, state.batch_stats, s.constrain(batch), True)
            return step.mse(pred, batch["target"]), stats
        grad_fn = s.jit(jax.value_and_grad(loss, has_aux=True))
        (value, stats), grads = grad_fn(state.params)
        hlo = grad_fn.lower(state.params).compile().as_text()
        # a whole run
        summary = loop.train(config, sys.argv[1] + f"/d{devices}", setup=s, progress=False)
        out[devices] = {
            "devices": summary["devices"],
            "all_reduce": "all-reduce" in hlo,
            "loss": float(value),
            "grads": np.asarray(grads).tolist(),
            "stats": [np.asarray(x).tolist() for x in jax.tree.leaves(stats)],
            "metrics": loop.read_metrics(sys.argv[1] + f"/d{devices}"),
        }
    print(json.dumps(out))
    """
)


def test_four_devices_equal_one_device(tmp_path, cache_dir):
    """Data parallel over 4 virtual CPU devices equals 1 device.

    One step: loss, gradients and the updated BatchNorm running statistics agree to float32
    rounding (statistics computed per device would differ by far more: 2 samples vs 8).
    Whole runs: the train losses agree to 1e-5. Validation MSE uses the running statistics
    and parameters that Adam moved along directions with zero gradient (a bias before
    BatchNorm): there Adam's ``g / sqrt(v)`` turns summation-order noise into steps of size
    ``lr``, so it only agrees to 1e-2.
    """
    env = _env(cache_dir, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", FOUR_DEVICES, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    one, four = out["1"], out["4"]
    assert (one["devices"], four["devices"]) == (1, 4)
    assert four["all_reduce"] and not one["all_reduce"]  # really split across devices
    np.testing.assert_allclose(one["loss"], four["loss"], rtol=1e-6)
    g1, g4 = np.asarray(one["grads"]), np.asarray(four["grads"])
    np.testing.assert_allclose(g1, g4, rtol=1e-4, atol=1e-6 * np.abs(g1).max())
    assert len(one["stats"]) > 0
    for a, b in zip(one["stats"], four["stats"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # the statistics moved away from their initial values (mean 0, var 1)
    assert all(np.abs(np.asarray(s) - round(float(np.mean(s)))).max() > 1e-3
               for s in one["stats"])
    for a, b in zip(one["metrics"], four["metrics"], strict=True):
        np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-5)
        np.testing.assert_allclose(a["val_mse"], b["val_mse"], rtol=1e-2)
