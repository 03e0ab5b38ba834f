"""GeoNorm paper, Figure 2: vanilla EGNN training explodes as depth and system size grow.

Vanilla (no normalization) EGNN training curves for depth 1, 3, 5 and 10 at N = 20 and
N = 50, and for N = 20, 50 and 100 at depth 3; every run that exploded (a batch loss that is
NaN/inf or above ``train.explosion_threshold`` = 1e3) is marked with the epoch it happened.
The paper finds explosions at N = 50 with depth 5 and at N = 100 with depth 3.

Usage::

    python -m experiments.instability --preset cpu      # fewer samples/epochs, same N, depths
    python -m experiments.instability --preset paper    # 3000 samples, 1000 epochs (GPU)
"""

from __future__ import annotations

from experiments import common, training

NAME = "instability"

# (N, depth) cells of Figure 2: upper panel (depth sweep at N = 20, 50), lower (N sweep, depth 3).
PAPER_CELLS = [(20, 1), (20, 3), (20, 5), (20, 10), (50, 1), (50, 3), (50, 5), (50, 10),
               (100, 3)]
# The paper's claimed explosions early, so a time budget drops the least informative cells.
CPU_CELLS = [(20, 1), (20, 3), (50, 5), (100, 3), (20, 5), (50, 3), (50, 1), (20, 10), (50, 10)]

PRESETS = {
    "test": {"cells": [(5, 1), (5, 3)], "train": 20, "valid": 10, "test": 10, "epochs": 2,
             "batch_size": 10, "eval_every": 1, "seeds": [30], "lrs": [5e-3], "hidden": 8,
             "test_data": True},
    # 2 loaded CPU cores: the paper's N and depths, 40 training samples, batch 10, 12 epochs
    # (48 steps), hidden 32, the larger of the paper's learning rates.
    "cpu": {"cells": CPU_CELLS, "train": 40, "valid": 40, "test": 40, "epochs": 12,
            "batch_size": 10, "eval_every": 3, "seeds": [30], "lrs": [5e-3],
            "hidden": 32, "test_data": False},
    # The paper: 3000 training trajectories, 1000 epochs, batch 50, both learning rates.
    "paper": {"cells": PAPER_CELLS, "train": 3000, "valid": 2000, "test": 2000, "epochs": 1000,
              "batch_size": 50, "eval_every": 5, "seeds": [30, 40, 50, 60],
              "lrs": [5e-3, 5e-4], "hidden": 64, "test_data": False},
}

PAPER_CLAIMS = {
    "explodes": [[20, 10], [50, 5], [50, 10], [100, 3]],
    "text": "Vanilla EGNN training becomes unstable (numerical explosion) as depth grows from 1 "
            "to 10 at N = 20 and 50; at N = 50 already with depth 5 (depth 10 is off the "
            "chart), and at N = 100 already with depth 3.",
}


def cell_key(n: int, depth: int, lr: float) -> str:
    """The cell name, e.g. ``N50_L5_lr0.005``."""
    return f"N{n}_L{depth}_lr{lr:g}"


def run(args, argv) -> dict:
    """Run every cell of the preset (skipping finished ones) and write results + plots."""
    p = PRESETS[args.preset]
    exp = common.Experiment(NAME, args, argv)
    cells = {}
    for lr in p["lrs"]:
        for n, depth in p["cells"]:
            key = cell_key(n, depth, lr)
            config = training.make_config(
                particles=n, layers=depth, norm=None, lr=lr, seeds=p["seeds"],
                epochs=p["epochs"], batch_size=p["batch_size"], train=p["train"],
                valid=p["valid"], test=p["test"], eval_every=p["eval_every"],
                hidden=p["hidden"], test_data=p["test_data"])
            out = exp.cell(key, lambda c=config, k=key: training.run_cell(
                c, exp.runs / k, cache=exp.cache))
            if out is None:
                continue
            out.update(particles=n, depth=depth, lr=lr)
            cells[key] = out
    rows = []
    for key, c in cells.items():
        exploded = [s for s in c["per_seed"] if s["exploded"]]
        rows.append({
            "cell": key, "particles": c["particles"], "depth": c["depth"], "lr": c["lr"],
            "seeds": len(c["per_seed"]), "exploded_seeds": len(exploded),
            "exploded_epochs": [s["exploded_epoch"] for s in exploded],
            "test_mse_at_best_val": common.mean_std(
                [s["test_mse_at_best_val"] for s in c["per_seed"]]),
            "max_train_loss": max((x for seed in c["curves"]["train_loss"].values()
                                   for x in seed if common.finite(x)), default=None),
        })
    verdicts = compare(rows)
    plots = plot(exp, cells, p)
    config = {k: (list(map(list, v)) if k == "cells" else v) for k, v in p.items()}
    config.update(norm=None, optimizer="adam", weight_decay=1e-12,
                  explosion_threshold=1e3, data="charged N-body, frames 30 -> 40")
    return exp.finish(config, {"rows": rows, "cells": cells, "paper": PAPER_CLAIMS,
                               "verdicts": verdicts}, plots)


def compare(rows: list[dict]) -> dict:
    """Per paper claim: did the cells the paper says explode explode, and did the others not."""
    exploded = {(r["particles"], r["depth"]) for r in rows if r["exploded_seeds"]}
    ran = {(r["particles"], r["depth"]) for r in rows}
    claimed = {tuple(c) for c in PAPER_CLAIMS["explodes"]} & ran
    stable_claimed = ran - {tuple(c) for c in PAPER_CLAIMS["explodes"]}
    hit = sorted(claimed & exploded)
    miss = sorted(claimed - exploded)
    extra = sorted(stable_claimed & exploded)
    if not claimed:
        status = "not tested"
    elif not miss and not extra:
        status = "reproduced"
    elif hit:
        status = "partially reproduced"
    else:
        status = "not reproduced"
    return {"status": status, "claimed_explosions_seen": [list(c) for c in hit],
            "claimed_explosions_missing": [list(c) for c in miss],
            "unexpected_explosions": [list(c) for c in extra]}


def plot(exp, cells: dict, p: dict) -> list[str]:
    """Figure 2 layout: depth sweeps at N = 20, 50 (top), N sweep at depth 3 (bottom)."""
    plt = common.setup_matplotlib()
    names = []
    for lr in p["lrs"]:
        ns = sorted({n for n, _ in p["cells"]})
        panels = [("depth", n) for n in ns if sum(1 for m, _ in p["cells"] if m == n) > 1]
        panels.append(("N", 3 if any(d == 3 for _, d in p["cells"]) else p["cells"][0][1]))
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4),
                                 constrained_layout=True, squeeze=False)
        for ax, (kind, value) in zip(axes[0], panels, strict=True):
            if kind == "depth":
                sel = [(n, d) for n, d in p["cells"] if n == value]
                ax.set_title(f"vanilla EGNN, N = {value}, lr {lr:g}")
            else:
                sel = [(n, d) for n, d in p["cells"] if d == value]
                ax.set_title(f"vanilla EGNN, depth {value}, lr {lr:g}")
            for j, (n, d) in enumerate(sel):
                c = cells.get(cell_key(n, d, lr))
                if c is None:
                    continue
                color = plt.cm.viridis(j / max(1, len(sel) - 1))
                label = f"depth {d}" if kind == "depth" else f"N = {n}"
                for i, (seed, losses) in enumerate(c["curves"]["train_loss"].items()):
                    ep = c["curves"]["epoch"]
                    xs = [e for e, v in zip(ep, losses, strict=True) if common.finite(v)]
                    ys = [v for v in losses if common.finite(v)]
                    ax.plot(xs, ys, color=color, lw=1.2, label=label if i == 0 else None)
                    boom = c["per_seed"][i]
                    if boom["exploded"]:
                        ax.scatter([boom["exploded_epoch"]], [max(ys) if ys else 1.0],
                                   marker="x", s=60, color=color, zorder=5)
                        ax.annotate(f"exploded ep {boom['exploded_epoch']} (seed {seed})",
                                    (boom["exploded_epoch"], max(ys) if ys else 1.0),
                                    fontsize=7, color=color)
            ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.set_ylabel("train MSE")
            ax.legend(fontsize=8)
        name = f"instability_lr{lr:g}.png"
        names.append(common.save_figure(fig, exp, name))
    return names


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    return common.cli_main(NAME, run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
