"""Shared plumbing of the experiments: command line, presets, output directories, per-cell
resume, results JSON and figures. Training a cell and measuring it is :mod:`experiments.training`.

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

from geonorm_jax._io import write_json_atomic

__all__ = [
    "ROOT",
    "RESULTS",
    "RUNS",
    "PRESET_NAMES",
    "Experiment",
    "parse_args",
    "source_args",
    "cli_main",
    "machine_info",
    "write_json",
    "read_json",
    "mean_std",
    "finite",
    "setup_matplotlib",
    "save_figure",
]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
RUNS = ROOT / "experiments" / "runs"
PRESET_NAMES = ("test", "cpu", "paper")


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
    """Write ``obj`` as indented JSON (``indent=1``) atomically, after :func:`_clean` (numpy
    scalars to Python, NaN/inf to null); see :func:`geonorm_jax._io.write_json_atomic`."""
    return write_json_atomic(path, _clean(obj), indent=1)


def write_results(path: str | Path, name: str, argv: list[str] | None, doc: dict) -> dict:
    """``doc`` with ``experiment``, ``command`` (``python -m experiments.NAME`` and ``argv``,
    default ``sys.argv[1:]``) and ``machine`` first, written by :func:`write_json`; returns
    it. For the single-command experiments that write one results file without cells."""
    args = sys.argv[1:] if argv is None else argv
    doc = {"experiment": name, "command": f"python -m experiments.{name} " + " ".join(args),
           "machine": machine_info(), **doc}
    write_json(path, doc)
    return doc


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

