"""Training curves from ``metrics.jsonl``: log-scale train and validation loss, one line per
seed, explosions marked with an ``x``. Used for ``curves.png`` and ``geonorm-jax plot``."""

from __future__ import annotations

from pathlib import Path

from geonorm_jax.train.rundir import METRICS, read_metrics, read_seeds

__all__ = ["plot_runs"]


def _plottable(run_dir: Path) -> list[dict]:
    """The records of ``run_dir``'s ``metrics.jsonl``, checked: ``ValueError`` (one line) for
    a run without metrics or a record that is not an epoch record of its seeds."""
    if not (run_dir / METRICS).is_file():
        what = ("no epoch has finished yet" if (run_dir / "config.json").is_file()
                else "not a run directory")
        raise ValueError(f"{str(run_dir)!r}: no {METRICS} to plot ({what})")
    records = read_metrics(run_dir)
    if not records:
        raise ValueError(f"{str(run_dir)!r}: {METRICS} has no epoch records to plot (no epoch "
                         "has finished yet, or the file is empty)")
    seeds = None
    for number, r in enumerate(records, 1):
        ok = isinstance(r, dict) and isinstance(r.get("epoch"), int | float)
        lists = ok and all(isinstance(r.get(k), list) for k in ("train_loss", "exploded"))
        if lists:
            seeds = len(r["train_loss"]) if seeds is None else seeds
            lists = all(len(r[k]) == seeds for k in ("train_loss", "exploded")) and \
                ("val_mse" not in r or (isinstance(r["val_mse"], list)
                                        and len(r["val_mse"]) == seeds))
        if not lists:
            raise ValueError(f"{str(run_dir / METRICS)!r}: record {number} is not an epoch "
                             f"record of this run's {seeds or '?'} seeds (expected epoch, "
                             "train_loss, exploded; damaged or edited?)")
    return records


def plot_runs(run_dirs, out: str | Path, *, title: str | None = None) -> Path:
    """Overlay the curves of one or more run directories into ``out`` (PNG).

    Left panel: mean train loss per epoch; right panel: validation MSE at evaluation epochs.
    Each (run, seed) is one line; a seed that exploded gets an ``x`` at its explosion epoch
    (at the top of the panel, since its loss there is NaN/inf or above the threshold).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dirs = [Path(d) for d in run_dirs]
    fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    line = 0
    for run_dir in run_dirs:
        records = _plottable(run_dir)
        seeds = read_seeds(run_dir, len(records[0]["train_loss"]))
        for i, seed in enumerate(seeds):
            color = colors[line % len(colors)]
            line += 1
            label = f"{run_dir.name} seed {seed}" if len(run_dirs) > 1 else f"seed {seed}"
            ep = [r["epoch"] for r in records if r["train_loss"][i] is not None]
            lo = [r["train_loss"][i] for r in records if r["train_loss"][i] is not None]
            ax_train.plot(ep, lo, color=color, label=label, lw=1.2)
            evals = [r for r in records if "val_mse" in r and r["val_mse"][i] is not None]
            ax_val.plot([r["epoch"] for r in evals], [r["val_mse"][i] for r in evals],
                        color=color, label=label, lw=1.2, marker="." if len(evals) < 30 else None)
            boom = next((r["epoch"] for r in records if r["exploded"][i]), None)
            if boom is not None:
                for ax in (ax_train, ax_val):
                    ax.plot([boom], [lo[-1] if lo else 1.0], marker="x", color=color, ms=10,
                            mew=2, ls="none")
                ax_train.annotate("exploded", (boom, lo[-1] if lo else 1.0), color=color,
                                  fontsize=8, xytext=(4, 4), textcoords="offset points")
    for ax, name in ((ax_train, "train loss (MSE)"), (ax_val, "validation MSE")):
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or ", ".join(d.name for d in run_dirs))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out

