"""GeoNorm paper, Table 1: rotation and translation errors (RTE) of the trained models.

For the :mod:`experiments.norm_comparison` models (LayerNorm, ScaleNorm, GeoNorm and, beyond the
paper, vanilla EGNN and the other GeoNorm variants) at the paper's cells, this evaluates the
best-validation parameters on test inputs mutated by random rotations and translations
(:func:`geonorm_jax.train.evaluate_run` with ``rte=True``; the protocol is documented in
:mod:`geonorm_jax.train.evaluate`) and writes the 8 columns: mean, median and max R_err,
ΔR_err, mean, median and max T_err, ΔT_err. The paper's numbers are copied beside ours.

The paper's cells are (N, depth, seed) = (100, 5, 30/40), (100, 3, 30/40), (50, 5, 30/40);
the ``cpu`` preset uses N = 20, depth 5, seeds 30 and 40 (models from the ``cpu`` preset of
``norm_comparison``, trained first if missing).

Usage::

    python -m experiments.rte_table --preset cpu
"""

from __future__ import annotations

import csv
from pathlib import Path

from experiments import common, norm_comparison, training

NAME = "rte_table"

COLUMNS = ("mean_R_err", "median_R_err", "max_R_err", "delta_R_err",
           "mean_T_err", "median_T_err", "max_T_err", "delta_T_err")


def _paper_table(path: Path = Path(__file__).with_name("rte_table_paper.csv")) -> dict:
    """The GeoNorm paper's Table 1 (Meng et al.) from its transcription ``path``:
    ``{cell: {norm: [the 8 COLUMNS]}}``, cells such as ``"N100_L5_seed30"`` and norms
    ``layer_norm``, ``scale_norm``, ``geo_norm_particle`` (LN/SN/GN) in the file's order."""
    lines = [x for x in path.read_text().splitlines() if x and not x.startswith("#")]
    table: dict[str, dict[str, list[float]]] = {}
    for row in csv.DictReader(lines):
        table.setdefault(row["cell"], {})[row["norm"]] = [float(row[c]) for c in COLUMNS]
    return table


PAPER_TABLE = _paper_table()

PAPER_CLAIMS = {
    "text": "ΔR_err = ΔT_err = 0 only for GeoNorm; ScaleNorm keeps ΔR_err = 0 but its ΔT_err is "
            "large; LayerNorm's ΔR_err and ΔT_err are both large.",
}

PRESETS = {
    "test": {"source": "test", "cells": [(5, 2)], "seeds": [30, 40],
             "norms": ["none", "scale_norm", "geo_norm_particle"], "lrs": [5e-3]},
    # lr 5e-3 models first (that half of norm_comparison's cpu preset finishes first).
    "cpu": {"source": "cpu", "cells": [(20, 5)], "seeds": [30, 40],
            "norms": list(norm_comparison.NORMS), "lrs": [5e-3, 5e-4]},
    "paper": {"source": "paper", "cells": [(100, 5), (100, 3), (50, 5)], "seeds": [30, 40],
              "norms": list(norm_comparison.NORMS), "lrs": [5e-4]},
}

# Relative tolerance for "Δ = 0": |Δ| below this fraction of the test MSE (float32 rounding).
ZERO_TOL = 1e-3


def run(args, argv) -> dict:
    """Evaluate RTE for every available norm_comparison model of the preset's cells."""
    from geonorm_jax import train

    p = PRESETS[args.preset]
    exp = common.Experiment(NAME, args, argv)
    nc_preset = dict(norm_comparison.PRESETS[p["source"]])
    src_args = common.source_args(args, norm_comparison.NAME, p["source"])
    src = common.Experiment(norm_comparison.NAME, src_args, [])
    rows, missing = [], []
    for n, depth in p["cells"]:
        for norm in p["norms"]:
            lr = next((lr for lr in p["lrs"] if src.cell_path(
                norm_comparison.cell_key(n, depth, norm, lr)).exists()), None)
            if lr is None and args.preset == "test":
                lr = p["lrs"][0]  # tests train the source models here
            if lr is None:
                missing.append(f"N{n}_L{depth}_{norm}")
                continue
            key = norm_comparison.cell_key(n, depth, norm, lr)
            q = dict(nc_preset, particles=[n], depth=depth)
            config = norm_comparison.cell_config(q, n, norm, lr)
            src.cell(key, lambda c=config, k=key: training.run_cell(
                c, norm_comparison.run_dir(src, k), cache=args.cache))

            def evaluate(k=key):
                res = train.evaluate_run(norm_comparison.run_dir(src, k), rte=True,
                                         cache_dir=args.cache)
                return {"rte": res["rte"], "seeds": res["seeds"],
                        "protocol": res.get("rte_protocol"), "best_epoch": res["best_epoch"]}

            out = exp.cell(key, evaluate)
            if out is None:
                continue
            for seed, r in zip(out["seeds"], out["rte"], strict=True):
                rows.append({"particles": n, "depth": depth, "norm": norm, "lr": lr,
                             "seed": seed, "paper_cell": f"N{n}_L{depth}_seed{seed}",
                             "in_paper_seeds": seed in p["seeds"], **r})
    verdicts = compare(rows)
    plots = plot(exp, rows)
    config = dict(p, zero_tol=ZERO_TOL, columns=list(COLUMNS))
    return exp.finish(config, {"rows": rows, "missing_models": missing,
                               "paper_table": PAPER_TABLE, "paper_columns": list(COLUMNS),
                               "paper": PAPER_CLAIMS, "verdicts": verdicts}, plots)


def is_zero(row: dict, column: str) -> bool:
    """Whether ``row[column]`` (ΔR or ΔT) is zero up to float32 rounding."""
    v = row[column]
    return common.finite(v) and abs(v) <= ZERO_TOL * max(abs(row["mse"]), 1e-12)


def compare(rows: list[dict]) -> dict:
    """Check the paper's three Table 1 claims on our rows."""
    def rows_of(norm):
        return [r for r in rows if r["norm"] == norm and r["in_paper_seeds"]]

    def zeros(norm):
        rs = rows_of(norm)
        return ([is_zero(r, "delta_R_err") for r in rs], [is_zero(r, "delta_T_err") for r in rs])

    out = {}
    gr, gt = zeros("geo_norm_particle")
    others = [r for r in rows if r["norm"] in ("layer_norm", "scale_norm") and r["in_paper_seeds"]]
    only = all(gr) and all(gt) and bool(gr) and not any(
        is_zero(r, "delta_R_err") and is_zero(r, "delta_T_err") for r in others)
    out["geo_only_zero"] = {"status": "reproduced" if only else (
        "not tested" if not gr else "not reproduced"),
        "geo_delta_R_zero": gr, "geo_delta_T_zero": gt}
    sr, st = zeros("scale_norm")
    if sr:
        ok = all(sr) and not any(st)
        out["scale_T_large"] = {"status": "reproduced" if ok else (
            "partially reproduced" if not any(st) or all(sr) else "not reproduced"),
            "delta_R_zero": sr, "delta_T_zero": st}
    lr_, lt = zeros("layer_norm")
    if lr_:
        ok = not any(lr_) and not any(lt)
        out["layer_both_large"] = {"status": "reproduced" if ok else (
            "partially reproduced" if not all(lr_) or not all(lt) else "not reproduced"),
            "delta_R_zero": lr_, "delta_T_zero": lt}
    return out


def plot(exp, rows: list[dict]) -> list[str]:
    """Bar chart of ΔR_err and ΔT_err relative to the test MSE, per norm (log scale)."""
    plt = common.setup_matplotlib()
    if not rows:
        return []
    labels = [f"{r['norm']}\nN{r['particles']} s{r['seed']}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(rows)), 4), constrained_layout=True)
    x = range(len(rows))
    rel = lambda r, c: max(abs(r[c]) / max(abs(r["mse"]), 1e-12), 1e-9) if common.finite(
        r[c]) else 1e3
    ax.bar([i - 0.2 for i in x], [rel(r, "delta_R_err") for r in rows], 0.4, label="|ΔR|/MSE")
    ax.bar([i + 0.2 for i in x], [rel(r, "delta_T_err") for r in rows], 0.4, label="|ΔT|/MSE",
           color=["red" if r["norm"].startswith("geo") else "tab:orange" for r in rows])
    ax.set_xticks(list(x), labels, rotation=90, fontsize=7)
    ax.set_yscale("log")
    ax.axhline(ZERO_TOL, color="gray", ls="--", lw=0.8)
    ax.set_title("RTE increments relative to the test MSE (dashed: 'zero' tolerance)")
    ax.legend()
    return [common.save_figure(fig, exp, "rte_table.png")]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    return common.cli_main(NAME, run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
