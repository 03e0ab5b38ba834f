"""The survey's Section 4 question, asked of the whole catalogue: does geometric match predict
which normalization layers train well?

The EGNN is trained on charged N-body (N = 20) with each catalogue layer that applies to the
invariant features (place ``feature``), the coordinates (``coord``) or the coordinate update
(``update``, vector layers), one at a time, plus no normalization. For each layer we report
side by side: the test MSE at the best validation epoch, the measured equivariance error of the
trained model (rotation, translation and permutation; see
:func:`experiments.training.equivariance_errors`) and the layer's geometric-match verdict for
the ``nbody-dynamics`` task (:func:`geonorm_jax.audit.audit`, the survey's Definition 3).

Usage::

    python -m experiments.norm_zoo --preset cpu
"""

from __future__ import annotations

from experiments import common, training

NAME = "norm_zoo"
KINDS = ("features", "coordinates", "vectors")

PRESETS = {
    "test": {"particles": 5, "depth": 2, "train": 20, "valid": 10, "test": 10, "epochs": 2,
             "batch_size": 10, "eval_every": 1, "hidden": 8, "seeds": [30], "lr": 5e-4,
             "test_data": True, "only": ["layer_norm", "geo_norm", "ev_norm"],
             "equiv_samples": 10},
    # 2 loaded CPU cores: N = 20, depth 3, 40 training samples, batch 10, 4 epochs, hidden 32.
    "cpu": {"particles": 20, "depth": 3, "train": 40, "valid": 40, "test": 40, "epochs": 4,
            "batch_size": 10, "eval_every": 2, "hidden": 32, "seeds": [30], "lr": 5e-4,
            "test_data": False, "only": None, "equiv_samples": 40},
    "paper": {"particles": 20, "depth": 4, "train": 3000, "valid": 2000, "test": 2000,
              "epochs": 500, "batch_size": 50, "eval_every": 5, "hidden": 64,
              "seeds": [30, 40, 50, 60], "lr": 5e-4, "test_data": False, "only": None,
              "equiv_samples": 500},
}


# Run first (a time budget then still covers every kind and both audit verdicts).
FIRST = ("geo_norm", "layer_norm_coords", "scale_norm_l2", "layer_norm", "batch_norm",
         "ev_norm", "gvp_vector_layer_norm", "graph_norm", "geo_norm_shared", "pair_norm")


def layers(only=None) -> list:
    """Catalogue entries that the EGNN can take (features, coordinates, vectors)."""
    from geonorm_jax.norms.catalog import CATALOG

    out = [info for info in CATALOG if info.kind in KINDS]
    if only is not None:
        out = [info for info in out if info.name in only]
    rank = {name: i for i, name in enumerate(FIRST)}
    return sorted(out, key=lambda info: rank.get(info.name, len(rank)))


def run(args, argv) -> dict:
    """Train the EGNN with each layer (skipping finished ones) and write results and plots."""
    from geonorm_jax import audit

    p = PRESETS[args.preset]
    exp = common.Experiment(NAME, args, argv)
    entries = [None, *layers(p["only"])]
    rows = []
    for info in entries:
        name = "none" if info is None else info.name
        config = training.make_config(
            particles=p["particles"], layers=p["depth"], norm=None if info is None else name,
            lr=p["lr"], seeds=p["seeds"], epochs=p["epochs"], batch_size=p["batch_size"],
            train=p["train"], valid=p["valid"], test=p["test"], eval_every=p["eval_every"],
            hidden=p["hidden"], test_data=p["test_data"])

        def one(c=config, k=name, info=info):
            out = {"layer": k, "kind": None if info is None else info.kind}
            if info is not None:
                try:
                    a = audit.audit(info, "nbody-dynamics")
                    out["audit"] = {"matched": a.matched, "violated": a.violated,
                                    "violations": a.violations}
                except Exception as e:  # noqa: BLE001 - record, do not crash the sweep
                    out["audit"] = {"matched": None, "error": f"{type(e).__name__}: {e}"}
            else:
                out["audit"] = {"matched": True, "violated": [], "violations": []}
            try:
                res = training.run_cell(c, exp.runs / k, cache=exp.cache)
                out.update(per_seed=res["per_seed"], curves=res["curves"],
                           summary=res["summary"], place=res["config"]["model"]["norm_place"])
                out["equivariance"] = training.equivariance_errors(
                    exp.runs / k, cache=exp.cache, samples=p["equiv_samples"])
            except Exception as e:  # noqa: BLE001
                out["error"] = f"{type(e).__name__}: {e}"
            return out

        out = exp.cell(name, one)
        if out is None:
            continue
        rows.append(summarize(out))
    plots = plot(exp, rows)
    config = dict(p, task="nbody-dynamics", kinds=list(KINDS))
    return exp.finish(config, {"rows": rows, "analysis": analyse(rows)}, plots)


def summarize(out: dict) -> dict:
    """One table row: MSE, equivariance errors, audit verdict, explosion."""
    ps = out.get("per_seed") or []
    eq = out.get("equivariance") or []
    mx = lambda k: max((e[k] for e in eq if common.finite(e[k])), default=None)
    return {
        "layer": out["layer"], "kind": out.get("kind"),
        "place": out.get("place") or {"coordinates": "coord", "vectors": "update",
                                      "features": "feature"}.get(out.get("kind")),
        "matched": out["audit"].get("matched"), "violated": out["audit"].get("violated", []),
        "test_mse": common.mean_std([s["test_mse_at_best_val"] for s in ps]),
        "exploded_seeds": sum(bool(s["exploded"]) for s in ps),
        "equiv_rot": mx("rot"), "equiv_trans": mx("trans"), "equiv_perm": mx("perm"),
        "error": out.get("error"),
    }


def analyse(rows: list[dict]) -> dict:
    """Does geometric match predict low test MSE? Median MSE of matched vs mismatched layers."""
    import numpy as np

    def mses(flag):
        return [r["test_mse"]["mean"] for r in rows if r["matched"] is flag
                and common.finite(r["test_mse"]["mean"]) and r["layer"] != "none"]

    m, mm = mses(True), mses(False)
    base = next((r["test_mse"]["mean"] for r in rows if r["layer"] == "none"), None)
    out = {"matched_n": len(m), "mismatched_n": len(mm),
           "matched_median_mse": float(np.median(m)) if m else None,
           "mismatched_median_mse": float(np.median(mm)) if mm else None,
           "none_mse": base}
    if m and mm:
        # Fraction of (matched, mismatched) pairs where the matched layer has the lower MSE.
        wins = sum(a < b for a in m for b in mm)
        out["matched_better_pair_fraction"] = wins / (len(m) * len(mm))
        out["counterexamples_mismatched_beating_median_matched"] = sorted(
            r["layer"] for r in rows if r["matched"] is False
            and common.finite(r["test_mse"]["mean"])
            and r["test_mse"]["mean"] < out["matched_median_mse"])
    out["failed"] = sorted(r["layer"] for r in rows if r["error"])
    return out


def plot(exp, rows: list[dict]) -> list[str]:
    """Test MSE against measured equivariance error, coloured by geometric match."""
    plt = common.setup_matplotlib()
    fig, ax = plt.subplots(figsize=(7, 5), constrained_layout=True)
    for r in rows:
        y = r["test_mse"]["mean"]
        if not common.finite(y):
            continue
        x = max(r["equiv_rot"] or 0.0, r["equiv_trans"] or 0.0, 1e-8)
        color = {True: "tab:green", False: "tab:red"}.get(r["matched"], "gray")
        ax.scatter([x], [y], color=color)
        ax.annotate(r["layer"], (x, y), fontsize=6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured SE(3) equivariance error of the trained model (relative)")
    ax.set_ylabel("test MSE at best validation epoch")
    ax.set_title("norm zoo: green = geometric match for nbody-dynamics, red = mismatch")
    return [common.save_figure(fig, exp, "norm_zoo.png")]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    return common.cli_main(NAME, run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
