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

from experiments import common, norm_comparison, training

NAME = "rte_table"

COLUMNS = ("mean_R_err", "median_R_err", "max_R_err", "delta_R_err",
           "mean_T_err", "median_T_err", "max_T_err", "delta_T_err")

# The GeoNorm paper's Table 1 (Meng et al.; LN/SN/GN = LayerNorm/ScaleNorm/GeoNorm).
PAPER_TABLE = {
    "N100_L5_seed30": {
        "layer_norm": [77.6337, 76.2877, 120.6114, 70.2623, 76.4022, 76.5329, 108.3657, 69.0064],
        "scale_norm": [11.6812, 11.6423, 12.8005, 0.00, 79.9684, 79.0553, 113.0788, 68.3327],
        "geo_norm_particle": [12.0141, 11.9806, 13.1563, 0.00, 12.0149, 11.9934, 13.1494, 0.00],
    },
    "N100_L5_seed40": {
        "layer_norm": [79.7006, 78.9167, 119.5280, 72.3209, 80.5087, 80.8898, 117.7024, 73.1220],
        "scale_norm": [11.7812, 11.7750, 12.9575, 0.00, 84.7791, 82.4171, 139.6815, 73.0484],
        "geo_norm_particle": [11.9976, 11.9577, 13.1755, 0.00, 12.0059, 11.9898, 13.0797, 0.00],
    },
    "N100_L3_seed30": {
        "layer_norm": [75.7769, 77.0998, 114.7744, 68.4406, 74.4919, 73.3482, 120.7420, 67.1195],
        "scale_norm": [11.6409, 11.5987, 12.6707, 0.00, 81.2245, 81.2323, 108.4697, 69.7046],
        "geo_norm_particle": [12.0191, 11.997, 13.0744, 0.00, 12.01149, 12.00350, 13.1469, 0.00],
    },
    "N100_L3_seed40": {
        "layer_norm": [76.2032, 73.3847, 116.7627, 68.8349, 73.0035, 72.6746, 104.7594, 65.6595],
        "scale_norm": [11.4117, 11.3684, 12.5119, 0.00, 81.2904, 79.4168, 120.2692, 69.9343],
        "geo_norm_particle": [11.9349, 11.9154, 13.1020, 0.00, 11.8147, 11.8018, 12.8062, 0.00],
    },
    "N50_L5_seed30": {
        "layer_norm": [43.4534, 43.2547, 74.5962, 38.1556, 42.3317, 41.4941, 66.3715, 37.0249],
        "scale_norm": [8.5636, 8.5396, 9.5382, 0.00, 51.8175, 50.1510, 68.9853, 43.2368],
        "geo_norm_particle": [9.0896, 9.0807, 9.9733, 0.00, 9.1155, 9.1257, 10.0839, 0.00],
    },
    "N50_L5_seed40": {
        "layer_norm": [42.7479, 41.4761, 75.6686, 37.4484, 43.5382, 41.7819, 71.8296, 38.2338],
        "scale_norm": [8.6886, 8.6783, 9.6922, 0.00, 52.4891, 50.8263, 84.0599, 43.7528],
        "geo_norm_particle": [9.1182, 9.0935, 10.1146, 0.00, 9.0662, 9.0217, 10.0238, 0.00],
    },
}

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
