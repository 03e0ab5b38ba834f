"""Shared plumbing of the experiments: presets, run directories, per-cell resume, results JSON.

Layout of one experiment ``NAME``::

    experiments/results/NAME/results.json    every number, config, version, command, machine
    experiments/results/NAME/cells/*.json    one file per finished cell (resume unit)
    experiments/results/NAME/*.png           plots
    experiments/runs/NAME/<cell>/            training run directories (checkpoints; not committed)

A cell (one training run, usually several seeds vmapped together) whose ``cells/<cell>.json``
exists is not run again, so a killed ``cpu`` preset continues where it stopped: run the same
command again. A cell whose run directory holds a checkpoint but no cell file is resumed from
that checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _ensure_data_api() -> None:
    """Work around an incomplete ``geonorm_jax.data`` package (names not yet re-exported)."""
    import geonorm_jax.data as data

    if not hasattr(data, "DataConfig"):
        from geonorm_jax.data.config import DataConfig
        from geonorm_jax.data.files import get_dataset, load_split

        data.DataConfig, data.get_dataset, data.load_split = DataConfig, get_dataset, load_split


_ensure_data_api()

__all__ = [
    "ROOT",
    "RESULTS",
    "RUNS",
    "PRESET_NAMES",
    "TEST_DATA",
    "Experiment",
    "parse_args",
    "machine_info",
    "write_json",
    "read_json",
    "curves",
    "run_cell",
    "mean_std",
    "finite",
    "equivariance_errors",
    "make_config",
    "source_args",
    "setup_matplotlib",
]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
RUNS = ROOT / "experiments" / "runs"
PRESET_NAMES = ("test", "cpu", "paper")

# Short trajectories for the ``test`` presets (seconds): 600 steps, frames 2 -> 4.
TEST_DATA = {"steps": 600, "sample_freq": 100, "frame_in": 2, "frame_out": 4}


def parse_args(name: str, argv: list[str] | None, doc: str | None = None) -> argparse.Namespace:
    """The common command line: ``--preset``, ``--out``, ``--runs``, ``--cache``, ``--fresh``."""
    p = argparse.ArgumentParser(prog=f"python -m experiments.{name}",
                                description=(doc or "").split("\n\n")[0])
    p.add_argument("--preset", choices=PRESET_NAMES, default="cpu",
                   help="test: seconds (CI); cpu: minutes on 2 cores; paper: the paper's settings")
    p.add_argument("--out", default=None,
                   help=f"results directory (default experiments/results/{name}; the test "
                        f"preset defaults to experiments/runs/test/{name}/results)")
    p.add_argument("--runs", default=None, help="training run directories (checkpoints)")
    p.add_argument("--cache", default=None, help="dataset cache directory")
    p.add_argument("--budget-min", type=float, default=None,
                   help="start no new cell after this many minutes (skipped cells are listed "
                        "in results.json; run again to continue)")
    p.add_argument("--only", default=None, metavar="TEXT",
                   help="run only cells whose name contains TEXT (finished cells are still "
                        "collected); lets several processes share one preset")
    p.add_argument("--fresh", action="store_true",
                   help="discard finished cells and run directories of this preset first")
    return p.parse_args(argv)


def source_args(args: argparse.Namespace, name: str, preset: str) -> argparse.Namespace:
    """Arguments locating another experiment's results and runs next to this one's.

    With ``--out A/x`` and ``--runs B/x`` the source experiment ``name`` is read from
    ``A/name`` and ``B/name``; otherwise from its default directories.
    """
    return argparse.Namespace(
        preset=preset, cache=args.cache, fresh=False, budget_min=None, only=None,
        out=str(Path(args.out).parent / name) if args.out else None,
        runs=str(Path(args.runs).parent / name) if args.runs else None)


def machine_info() -> dict:
    """Python, JAX and package versions, CPU count and ``jax.devices()``."""
    import jax

    import geonorm_jax

    devices = jax.devices()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "geonorm_jax": geonorm_jax.__version__,
        "jax_devices": [str(d) for d in devices],
        "device": "gpu" if any(d.platform == "gpu" for d in devices) else "cpu",
    }


def _clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (temporary file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(_clean(obj), indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def finite(x) -> bool:
    """True for a finite number (``None`` and NaN/inf are not)."""
    return x is not None and isinstance(x, int | float) and math.isfinite(x)


def mean_std(values) -> dict:
    """``{"mean", "std", "n"}`` over the finite values (``None`` when there are none)."""
    vals = [float(v) for v in values if finite(v)]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "n": len(vals)}


class Experiment:
    """Output directories, per-cell resume and the final ``results.json`` of one experiment.

    Args:
      name: experiment name (``experiments/results/<name>``).
      args: the parsed command line (:func:`parse_args`).
      argv: the raw arguments, recorded as the command.
    """

    def __init__(self, name: str, args: argparse.Namespace, argv: list[str] | None):
        self.name = name
        self.preset = args.preset
        self.t0 = time.perf_counter()
        if args.out is not None:
            self.out = Path(args.out)
        elif args.preset == "test":
            self.out = RUNS / "test" / name / "results"
        else:
            self.out = RESULTS / name
        self.runs = Path(args.runs) if args.runs else RUNS / name / args.preset
        self.cache = args.cache
        self.budget_s = None if args.budget_min is None else 60.0 * args.budget_min
        self.only = getattr(args, "only", None)
        self.skipped: list[str] = []
        self.cells_dir = self.out / "cells"
        if args.fresh:
            shutil.rmtree(self.cells_dir, ignore_errors=True)
            shutil.rmtree(self.runs, ignore_errors=True)
        self.out.mkdir(parents=True, exist_ok=True)
        self.runs.mkdir(parents=True, exist_ok=True)
        argv = list(sys.argv[1:] if argv is None else argv)
        self.command = f"python -m experiments.{name} " + " ".join(argv)

    def cell_path(self, key: str) -> Path:
        """Where cell ``key`` of this preset is stored."""
        return self.cells_dir / f"{self.preset}__{key}.json"

    def cell(self, key: str, fn) -> dict | None:
        """The stored result of cell ``key``, or ``fn()`` (then stored atomically).

        Returns None (and records ``key`` as skipped) when the time budget is spent.
        """
        path = self.cell_path(key)
        if path.exists():
            try:
                out = read_json(path)
                print(f"[{self.name}] {key}: done earlier (cached)", flush=True)
                return out
            except json.JSONDecodeError:
                pass
        if self.only is not None and self.only not in key:
            print(f"[{self.name}] {key}: not selected by --only", flush=True)
            self.skipped.append(key)
            return None
        if self.budget_s is not None and time.perf_counter() - self.t0 > self.budget_s:
            print(f"[{self.name}] {key}: skipped (time budget spent)", flush=True)
            self.skipped.append(key)
            return None
        t = time.perf_counter()
        out = fn()
        out = dict(out, cell=key, cell_wall_time_s=round(time.perf_counter() - t, 2))
        write_json(path, out)
        print(f"[{self.name}] {key}: {out['cell_wall_time_s']:.1f} s", flush=True)
        return out

    def finish(self, config: dict, results: dict, plots: list[str]) -> dict:
        """Write ``results.json`` (results + metadata) and return it."""
        cells = sorted(self.cells_dir.glob(f"{self.preset}__*.json"))
        cell_wall = sum(read_json(p).get("cell_wall_time_s", 0.0) for p in cells)
        info = machine_info()
        doc = {
            "experiment": self.name,
            "preset": self.preset,
            "command": self.command,
            "version": info["geonorm_jax"],
            "device": info["device"],
            "machine": info,
            "wall_time_s": round(time.perf_counter() - self.t0, 2),
            "cells_wall_time_s": round(cell_wall, 2),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            "config": config,
            "skipped_cells": list(self.skipped),
            "complete": not self.skipped,
            "results": results,
            "plots": plots,
        }
        write_json(self.out / "results.json", doc)
        print(f"[{self.name}] wrote {self.out / 'results.json'}", flush=True)
        return doc


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
            train.train  # noqa: B018 - keep the import used
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

    For ``samples`` test inputs we draw one Haar rotation ``R``, one translation ``t``
    (std = std of the positions) and one node permutation ``P`` per sample and report, per
    seed, the relative errors ``rms(f(g x) - g f(x)) / rms(f(x) - centroid(f(x)))`` for
    ``g`` = rotation (``rot``), translation (``trans``) and permutation (``perm``).
    An equivariant model gives ~1e-7 (float32 rounding).
    """
    import jax
    import jax.numpy as jnp

    from geonorm_jax import geometry, train
    from geonorm_jax.train.eval_run import best_variables

    config = train.load_config(Path(run_dir) / "config.json")
    s = train.build(config, cache_dir=cache)
    best, _ = best_variables(s, run_dir)
    data = {k: v[:samples] for k, v in s.data["test"].items()}
    num, n = data["loc"].shape[:2]
    key = jax.random.PRNGKey(seed)
    k1, k2, k3 = jax.random.split(key, 3)
    rot = geometry.random_rotation(k1, (num,), dtype=jnp.float32)
    tau = jnp.std(data["loc"])
    shift = jax.random.normal(k2, (num, 1, 3), jnp.float32) * tau
    perm = jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(k3, num))

    def rotate(a):
        return jnp.einsum("snj,sij->sni", a, rot)

    def permute(a):
        return jnp.take_along_axis(a, perm.reshape(num, n, *([1] * (a.ndim - 2))), axis=1)

    def one(params, batch_stats):
        f = lambda d: s.apply(params, batch_stats, d, False)[0]
        y = f(data)
        scale = jnp.sqrt(jnp.mean(jnp.square(y - jnp.mean(y, axis=1, keepdims=True))))
        rms = lambda a, b: jnp.sqrt(jnp.mean(jnp.square(a - b))) / scale
        d_rot = dict(data, loc=rotate(data["loc"]), vel=rotate(data["vel"]))
        d_tr = dict(data, loc=data["loc"] + shift)
        d_perm = {k: permute(v) for k, v in data.items()}
        return {
            "rot": rms(f(d_rot), rotate(y)),
            "trans": rms(f(d_tr), y + shift),
            "perm": rms(f(d_perm), permute(y)),
        }

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
        "model": {"hidden": hidden, "layers": layers, "norm": norm, "norm_place": norm_place,
                  "norm_kwargs": dict(norm_kwargs or {}),
                  "model_kwargs": dict(model_kwargs or {})},
        "optimizer": {"lr": lr, "weight_decay": weight_decay},
        "train": {"epochs": epochs, "batch_size": batch_size, "seeds": list(seeds),
                  "eval_every": eval_every, "checkpoint_every": epochs, "keep_checkpoints": 1,
                  "train_samples": train_samples, "eval_batch_size": min(500, valid, test),
                  "rte_draws": 3},
    })


def setup_matplotlib():
    """``matplotlib.pyplot`` with the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, exp: Experiment, name: str) -> str:
    """Save ``fig`` as ``exp.out / name`` (110 dpi), close it and return ``name``."""
    import matplotlib.pyplot as plt

    fig.savefig(exp.out / name, dpi=110)
    plt.close(fig)
    return name


def cli_main(name: str, run, doc: str | None, argv: list[str] | None) -> int:
    """The command-line entry point of an experiment: parse ``argv`` and ``run(args, argv)``."""
    run(parse_args(name, argv, doc), argv)
    return 0

