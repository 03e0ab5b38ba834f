"""Large N: the kNN edge-list EGNN on charged N = 500 systems, a short run.

Trains the ``knn-500`` preset (N = 500, kNN k = 32, hidden 64, 4 layers, 100 training systems,
batch 10, 30 epochs, lr 1e-3) with shared-parameter GeoNorm (``geo_norm_shared``: the best
GeoNorm variant of ``norm_comparison``, and the only one that is permutation-equivariant and
independent of N) and without normalization, then reports the test MSE at the best
validation epoch beside two physics-free baselines on the same test split: the identity
(``x(t+10) = x(t)``) and constant velocity (``x(t+10) = x(t) + 1.0 v(t)``; 10 frames of
100 steps of dt = 0.001).

    python -m experiments.large_n                    # trains both (about 30 min on 2 cores)
    python -m experiments.large_n --runs DIR         # reuse finished runs DIR/knn500-<norm>

A run directory that already has ``summary.json`` is reused; an unfinished one is resumed.
Results: ``experiments/results/large_n/results.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from geonorm_jax._io import write_json_atomic

NORMS = ("geo_norm_shared", None)
OUT = Path("experiments/results/large_n/results.json")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default="experiments/runs/large_n", help="run directories")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)

    from geonorm_jax.train import config as cfg
    from geonorm_jax.train import loop, setup

    rows = []
    for norm in NORMS:
        config = cfg.merge(cfg.preset("knn-500"), {"model": {"norm": norm}})
        run_dir = Path(args.runs) / f"knn500-{norm or 'none'}"
        summary_file = run_dir / "summary.json"
        if not summary_file.is_file():
            resume = (run_dir / "config.json").is_file()
            loop.train(config, run_dir, resume=resume, progress=False)
        summary = json.loads(summary_file.read_text())
        seed = summary["seeds"][0]
        rows.append({"norm": norm or "none", "test_mse": seed["test_mse"],
                     "best_val_mse": seed["best_val_mse"], "best_epoch": seed["best_epoch"],
                     "epochs": summary["epochs"], "exploded": seed["exploded"],
                     "wall_time_s": summary["wall_time"],
                     "config": cfg.to_dict(config)})

    test = setup.load_data(cfg.preset("knn-500"))["test"]
    loc, vel, target = (np.asarray(test[k], np.float64) for k in ("loc", "vel", "target"))
    baselines = {"identity": float(np.mean((loc - target) ** 2)),
                 "constant_velocity": float(np.mean((loc + 1.0 * vel - target) ** 2))}
    write_json_atomic(args.out, {"command": "python -m experiments.large_n", "runs": rows,
                                 "baselines": baselines, "test_systems": int(loc.shape[0]),
                                 "particles": int(loc.shape[1])})
    print("| model | test MSE @ best val | best epoch / epochs | wall (s) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| EGNN kNN k=32, {r['norm']} | {r['test_mse']:.4f} | {r['best_epoch']} / "
              f"{r['epochs']} | {r['wall_time_s']:.0f} |")
    for name, value in baselines.items():
        print(f"| baseline: {name.replace('_', ' ')} | {value:.4f} | | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
