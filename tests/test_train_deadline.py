"""The trainer's wall-clock stop (``train(..., deadline=...)``) and resume across stops.

A run stopped by its deadline must checkpoint the epoch it stopped at whatever
``checkpoint_every`` is, report ``stopped == "deadline"`` with ``epochs_completed < epochs``,
and, resumed call after call, give exactly the per-epoch losses of an uninterrupted run. On the
tiny charged 5-body set of the ``test`` preset (seconds).
"""

from __future__ import annotations

import pytest

from geonorm_jax.train import config as cfg
from geonorm_jax.train import loop, setup


@pytest.fixture(scope="module")
def tiny_setup(isolated_cache):
    """5 epochs, evaluation every 2, interval checkpoints only every 4 (so a stop at epochs 1,
    2 or 3 has no interval checkpoint of its own unless the deadline writes one)."""
    config = cfg.merge(cfg.preset("test"), {"train": {
        "epochs": 5, "eval_every": 2, "checkpoint_every": 4, "keep_checkpoints": 1,
        "seeds": [30]}})
    return setup.build(config, cache_dir=isolated_cache)


KEYS = ("epoch", "step", "train_loss", "val_mse", "test_mse", "best_val", "best_epoch",
        "exploded")


def test_deadline_stops_checkpoints_and_resumes_exactly(tiny_setup, tmp_path):
    s = tiny_setup
    reference = loop.train(s.config, tmp_path / "ref", setup=s, progress=False)
    assert reference["stopped"] is None and reference["epochs_completed"] == 5

    run_dir = tmp_path / "stopped"
    # A deadline in the past: one epoch per call, then a checkpoint of that epoch and return.
    summary = loop.train(s.config, run_dir, setup=s, progress=False, deadline=0.0)
    assert summary["stopped"] == "deadline"
    assert summary["epochs_completed"] == 1 < summary["epochs"]
    assert (run_dir / "checkpoints" / "interval" / "1").is_dir()
    assert (run_dir / "summary.json").exists()
    calls = 1
    while summary["epochs_completed"] < 5:
        done = summary["epochs_completed"]
        summary = loop.train(s.config, run_dir, setup=s, progress=False, resume=True,
                             deadline=0.0)
        calls += 1
        assert summary["epochs_completed"] == done + 1
        if summary["epochs_completed"] < 5:
            assert summary["stopped"] == "deadline"
    assert calls == 5
    assert summary["stopped"] is None and not summary["interrupted"]

    resumed = loop.read_metrics(run_dir)
    expected = loop.read_metrics(tmp_path / "ref")
    assert [r["epoch"] for r in resumed] == [1, 2, 3, 4, 5]
    for a, b in zip(resumed, expected, strict=True):
        for key in KEYS:
            assert a.get(key) == b.get(key), (key, a["epoch"])
    assert summary["seeds"][0]["test_mse"] == reference["seeds"][0]["test_mse"]
    assert summary["seeds"][0]["best_epoch"] == reference["seeds"][0]["best_epoch"]


def test_future_deadline_runs_to_the_end(tiny_setup, tmp_path):
    import time

    s = tiny_setup
    summary = loop.train(s.config, tmp_path / "run", setup=s, progress=False,
                         deadline=time.time() + 3600)
    assert summary["stopped"] is None and summary["epochs_completed"] == 5
