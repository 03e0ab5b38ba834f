"""One tiny training run end to end, for the dependency-floors job (``.ci/floors``).

Together with the import, norm, Linen/NNX/Equinox and checkpoint tests it touches every
required dependency at its lowest allowed version: the trainer (optax, flax), its progress
bar (tqdm), its checkpoints (orbax-checkpoint), the loss-curve plot (matplotlib) and a chex
assertion. Marked slow (about 15 s of CPU): the floors job selects it with ``-m slow``.
Restoring checkpoints is tested in test_reliability_checkpoints.py.
"""

from __future__ import annotations

import io
import math

import chex
import numpy as np
import pytest

from geonorm_jax.train import config as cfg
from geonorm_jax.train import loop
from geonorm_jax.train.checkpoint import RunCheckpoints
from geonorm_jax.train.plot import plot_runs


@pytest.mark.slow
def test_tiny_run_trains_checkpoints_and_plots(tmp_path, isolated_cache):
    config = cfg.merge(cfg.preset("test"), {"train": {"epochs": 2, "eval_every": 1,
                                                       "checkpoint_every": 1, "seeds": [3]}})
    stream = io.StringIO()
    summary = loop.train(config, tmp_path / "run", cache_dir=isolated_cache, progress=True,
                         stream=stream)
    assert stream.getvalue(), "the progress bar wrote nothing"
    assert summary["epochs_completed"] == 2 and summary["num_exploded"] == 0, summary
    [seed] = summary["seeds"]
    assert math.isfinite(seed["best_val_mse"]) and seed["best_val_mse"] > 0, seed
    chex.assert_tree_all_finite(np.asarray([seed["best_val_mse"], seed["test_mse"]]))
    ck = RunCheckpoints(tmp_path / "run")
    assert ck.latest_epoch() == 2, ck.latest_epoch()
    ck.close()
    png = plot_runs([tmp_path / "run"], tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
