"""One training cell of an experiment and what is measured on it.

A *cell* is one training run (usually several seeds vmapped together) of
:func:`geonorm_jax.train.train`. :func:`make_config` builds its configuration,
:func:`run_cell` trains it (or reuses / resumes its run directory) and collects the per-seed
numbers, :func:`curves` extracts the training curves, and :func:`equivariance_errors` measures
the trained models' equivariance with :mod:`geonorm_jax.testing`. The bookkeeping around cells
(resume, results JSON) is :mod:`experiments.common`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from experiments.common import ROOT, finite, read_json

__all__ = ["TEST_DATA", "make_config", "run_cell", "curves", "equivariance_errors"]

# Short trajectories for the ``test`` presets (seconds): 600 steps, frames 2 -> 4.
TEST_DATA = {"steps": 600, "sample_freq": 100, "frame_in": 2, "frame_out": 4}


def curves(records: list[dict], seeds: list[int]) -> dict:
    """Per-seed training curves from ``metrics.jsonl`` records.

    Returns ``{"epoch": [...], "train_loss": {seed: [...]}, "eval_epoch": [...],
    "val_mse": {seed: [...]}, "test_mse": {seed: [...]}}`` (``None`` after an explosion).
    """
    evals = [r for r in records if "val_mse" in r]
    out = {
        "epoch": [r["epoch"] for r in records],
        "eval_epoch": [r["epoch"] for r in evals],
        "train_loss": {},
        "val_mse": {},
        "test_mse": {},
    }
    for i, seed in enumerate(seeds):
        out["train_loss"][str(seed)] = [r["train_loss"][i] for r in records]
        out["val_mse"][str(seed)] = [r["val_mse"][i] for r in evals]
        out["test_mse"][str(seed)] = [r["test_mse"][i] for r in evals]
    return out


def _portable(path: Path) -> str:
    """``path`` relative to the repository root when inside it (results carry no machine paths)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return Path(path).name


def run_cell(config, run_dir: Path, *, cache=None) -> dict:
    """Train ``config`` into ``run_dir`` (resuming a checkpoint there) and collect its numbers.

    Returns ``{"config", "summary", "curves", "per_seed"}`` where ``per_seed`` lists for each
    seed: best-validation test MSE, final and best (minimum) test MSE over evaluations,
    explosion flag and epoch.
    """
    from geonorm_jax import train

    run_dir = Path(run_dir)
    summary = None
    if (run_dir / "summary.json").exists():
        try:
            saved = train.load_config(run_dir / "config.json")
            if not train.config.diff(saved, config):
                summary = read_json(run_dir / "summary.json")
                if summary.get("epochs_completed") != config.train.epochs:
                    summary = None
        except (ValueError, json.JSONDecodeError):
            summary = None
    if summary is None:
        resume = (run_dir / "config.json").exists() and (run_dir / "checkpoints").exists()
        if resume:
            try:
                summary = train.train(config, run_dir, resume=True, cache_dir=cache,
                                      progress=False)
            except ValueError:
                shutil.rmtree(run_dir, ignore_errors=True)
                resume = False
        if not resume:
            if run_dir.exists():
                shutil.rmtree(run_dir)
            summary = train.train(config, run_dir, cache_dir=cache, progress=False)
    seeds = list(config.train.seeds)
    records = train.read_metrics(run_dir)
    cur = curves(records, seeds)
    per_seed = []
    for i, s in enumerate(summary["seeds"]):
        tests = [t for t in cur["test_mse"][str(seeds[i])] if finite(t)]
        per_seed.append({
            "seed": s["seed"],
            "test_mse_at_best_val": s["test_mse"],
            "best_val_mse": s["best_val_mse"],
            "best_epoch": s["best_epoch"],
            "final_test_mse": cur["test_mse"][str(seeds[i])][-1] if tests else None,
            "best_test_mse": min(tests) if tests else None,
            "final_train_loss": s["final_train_loss"],
            "exploded": s["exploded"],
            "exploded_epoch": s["exploded_epoch"],
        })
    return {
        "config": train.to_dict(config),
        "run_dir": _portable(run_dir),
        "summary": {k: v for k, v in summary.items() if k != "seeds"},
        "curves": cur,
        "per_seed": per_seed,
    }


def equivariance_errors(run_dir: str | Path, *, cache=None, samples: int = 200,
                        seed: int = 0) -> list[dict]:
    """Measured equivariance error of the best-validation model of every seed of a run.

    On the first ``samples`` test inputs, one Haar rotation ``R``, one translation ``t``
    (std = std of the positions) and one node permutation ``P`` per sample
    (:func:`geonorm_jax.testing.random_split_transforms` with ``PRNGKey(seed)``); per seed, the
    relative errors ``rms(f(g x) - g f(x)) / rms(f(x) - centroid(f(x)))`` for ``g`` = rotation
    (``rot``), translation (``trans``) and permutation (``perm``)
    (:func:`geonorm_jax.testing.model_equivariance_errors`). An equivariant model gives ~1e-7
    (float32 rounding).
    """
    import jax

    from geonorm_jax import testing, train
    from geonorm_jax.train.eval_run import best_variables

    config = train.load_config(Path(run_dir) / "config.json")
    s = train.build(config, cache_dir=cache)
    best, _ = best_variables(s, run_dir)
    data = {k: v[:samples] for k, v in s.data["test"].items()}
    elements = testing.random_split_transforms(jax.random.PRNGKey(seed), data)

    def one(params, batch_stats):
        predict = lambda d: s.apply(params, batch_stats, d, False)[0]
        return testing.model_equivariance_errors(predict, data, **elements)

    errs = jax.jit(jax.vmap(one))(best["params"], best["batch_stats"])
    errs = {k: np.asarray(v) for k, v in errs.items()}
    return [
        {"seed": seed_, **{k: float(v[i]) for k, v in errs.items()}}
        for i, seed_ in enumerate(config.train.seeds)
    ]


def make_config(*, particles: int, layers: int, norm: str | None = None,
                norm_place: str | None = None, norm_kwargs: dict | None = None,
                model_kwargs: dict | None = None, lr: float = 5e-4, seeds=(30,),
                epochs: int = 10, batch_size: int = 50, train: int = 100, valid: int = 50,
                test: int = 50, eval_every: int = 5, hidden: int = 64, test_data: bool = False,
                weight_decay: float = 1e-12, train_samples: int | None = None):
    """A :class:`geonorm_jax.train.RunConfig` for one cell (checkpoint only at the end).

    ``test_data`` uses the short trajectories of the ``test`` presets (:data:`TEST_DATA`).
    """
    from geonorm_jax import train as train_lib

    data = {"particles": particles, "train": train, "valid": valid, "test": test}
    if test_data:
        data.update(TEST_DATA)
    return train_lib.merge(train_lib.RunConfig(), {
        "data": data,
        "model": {"hidden": hidden, "num_layers": layers, "norm": norm, "norm_place": norm_place,
                  "norm_kwargs": dict(norm_kwargs or {}),
                  "model_kwargs": dict(model_kwargs or {})},
        "optimizer": {"lr": lr, "weight_decay": weight_decay},
        "train": {"epochs": epochs, "batch_size": batch_size, "seeds": list(seeds),
                  "eval_every": eval_every, "checkpoint_every": epochs, "keep_checkpoints": 1,
                  "train_samples": train_samples, "eval_batch_size": min(500, valid, test),
                  "rte_draws": 3},
    })
