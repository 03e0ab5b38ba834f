"""Beyond the GeoNorm paper: its stated limits, measured.

The paper's Section 6 names its limits: GeoNorm is not permutation-equivariant (per-particle
parameters), it needs the stored initial centroid, it is less expressive, and it was never
tried past N = 100. This experiment answers, from data:

1. **Permutation and SE(3) errors of the trained norm_comparison models** (rotation,
   translation, permutation; :func:`experiments.training.equivariance_errors`): per-particle
   GeoNorm parameters break permutation equivariance, the shared-parameter variant does not.
2. **Which variant is stable and reaches the lowest test MSE at the largest N we ran**, read
   from the ``norm_comparison`` results of the same preset.
3. **N = 200 with the edge-list model**: EGNN with a k-nearest-neighbour edge list
   (``geonorm_jax.models.edges.knn_graph``, recomputed from the input positions) trained with a
   small optax loop, for vanilla EGNN, ScaleNorm and the permutation-equivariant GeoNorm
   (system sigma, shared parameters). The stored centroid ``mu0`` is the input centroid, which
   every model computes on the fly, so nothing is stored beyond the input.

Usage::

    python -m experiments.beyond --preset cpu
"""

from __future__ import annotations

import time

import numpy as np

from experiments import common, norm_comparison, training

NAME = "beyond"

VARIANTS = {
    "none": (None, None),
    "scale_norm": ("scale_norm_l2", "coord"),
    "geo_norm_shared": ("geo_norm_shared", "coord"),
    "geo_norm_particle": ("geo_norm", "coord"),
}

PRESETS = {
    "test": {"source": "test", "particles": 6, "knn": 3, "layers": 2, "hidden": 8,
             "train": 10, "valid": 5, "test": 5, "epochs": 2, "batch_size": 5, "lr": 5e-4,
             "variants": ["none", "geo_norm_shared"], "test_data": True, "equiv_samples": 10},
    # N = 200, 16 nearest neighbours, depth 4, hidden 32, 20 training samples, batch 5.
    "cpu": {"source": "cpu", "particles": 200, "knn": 16, "layers": 4, "hidden": 32,
            "train": 20, "valid": 10, "test": 10, "epochs": 4, "batch_size": 5, "lr": 5e-4,
            "variants": ["geo_norm_shared", "none", "scale_norm"], "test_data": False,
            "equiv_samples": 40},
    "paper": {"source": "paper", "particles": 500, "knn": 32, "layers": 5, "hidden": 64,
              "train": 3000, "valid": 500, "test": 500, "epochs": 300, "batch_size": 25,
              "lr": 5e-4, "variants": list(VARIANTS), "test_data": False,
              "equiv_samples": 500},
}


def train_edges(p: dict, variant: str, cache=None) -> dict:
    """Train one variant with the edge-list EGNN; returns curves, test MSE and explosion."""
    import jax
    import jax.numpy as jnp
    import optax

    from geonorm_jax.models import make_egnn
    from geonorm_jax.models.edges import knn_graph
    from geonorm_jax.train.setup import load_data
    from geonorm_jax.train.step import per_sample_mse

    norm, place = VARIANTS[variant]
    config = training.make_config(particles=p["particles"], layers=p["layers"], train=p["train"],
                                valid=p["valid"], test=p["test"], batch_size=p["batch_size"],
                                test_data=p["test_data"])
    if not p["test_data"]:  # frame 40 needs 4200 steps; the first 4200 steps are identical
        from geonorm_jax import train as train_lib

        config = train_lib.merge(config, {"data": {"steps": 4200}})
    t0 = time.perf_counter()
    data = load_data(config, cache_dir=cache)
    data_s = time.perf_counter() - t0
    kwargs = dict(hidden=p["hidden"], num_layers=p["layers"], graph="edges")
    model = make_egnn(norm, place=place, **kwargs) if norm else make_egnn(None, **kwargs)

    def apply(params, batch):
        s, r, m = knn_graph(batch["loc"], p["knn"])
        return model.apply({"params": params}, batch["loc"], batch["vel"], batch["charges"],
                           senders=s, receivers=r, edge_mask=m)

    first = {k: v[: p["batch_size"]] for k, v in data["train"].items()}
    s, r, m = knn_graph(first["loc"], p["knn"])
    params = model.init(jax.random.PRNGKey(30), first["loc"], first["vel"], first["charges"],
                        senders=s, receivers=r, edge_mask=m)["params"]
    opt = optax.chain(optax.add_decayed_weights(1e-12), optax.adam(p["lr"]))
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(
            lambda q: jnp.mean(per_sample_mse(apply(q, batch), batch["target"])))(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def evaluate(params, split):
        return jnp.mean(per_sample_mse(apply(params, split), split["target"]))

    rng = np.random.default_rng(30)
    n_train, bs = data["train"]["loc"].shape[0], p["batch_size"]
    curve = {"epoch": [], "train_loss": [], "val_mse": [], "test_mse": []}
    exploded_epoch, best = None, (np.inf, None, None)
    t1 = time.perf_counter()
    for epoch in range(1, p["epochs"] + 1):
        order = rng.permutation(n_train)
        losses = []
        for b in range(n_train // bs):
            idx = order[b * bs:(b + 1) * bs]
            batch = {k: v[idx] for k, v in data["train"].items()}
            new_params, new_opt, loss = step(params, opt_state, batch)
            loss = float(loss)
            if not np.isfinite(loss) or loss > 1e3:
                exploded_epoch = epoch
                break
            params, opt_state = new_params, new_opt
            losses.append(loss)
        val = float(evaluate(params, data["valid"]))
        test = float(evaluate(params, data["test"]))
        curve["epoch"].append(epoch)
        curve["train_loss"].append(float(np.mean(losses)) if losses else None)
        curve["val_mse"].append(val)
        curve["test_mse"].append(test)
        if np.isfinite(val) and val < best[0]:
            best = (val, test, epoch)
        if exploded_epoch is not None:
            break
    return {"variant": variant, "norm": norm, "place": place, "curves": curve,
            "best_val_mse": best[0] if np.isfinite(best[0]) else None,
            "test_mse_at_best_val": best[1], "best_epoch": best[2],
            "exploded": exploded_epoch is not None, "exploded_epoch": exploded_epoch,
            "train_time_s": round(time.perf_counter() - t1, 2),
            "data_time_s": round(data_s, 2),
            "edges_per_graph": p["particles"] * p["knn"]}


def run(args, argv) -> dict:
    """Equivariance of the norm_comparison models, the best variant, and the N = 200 runs."""
    p = PRESETS[args.preset]
    exp = common.Experiment(NAME, args, argv)
    src_args = common.source_args(args, norm_comparison.NAME, p["source"])
    src = common.Experiment(norm_comparison.NAME, src_args, [])
    # 1. equivariance (incl. permutation) of every finished norm_comparison model
    equiv = []
    first = ("none", "geo_norm_particle", "geo_norm_shared", "scale_norm")
    paths = sorted(src.cells_dir.glob(f"{p['source']}__*.json"),
                   key=lambda q: (not any(f"_{n}_lr" in q.name for n in first), q.name))
    for path in paths:
        cell = common.read_json(path)
        key = cell["cell"]
        run_dir = norm_comparison.run_dir(src, key)
        if not (run_dir / "checkpoints").exists():
            continue
        out = exp.cell(f"equiv_{key}", lambda d=run_dir: {"errors": training.equivariance_errors(
            d, cache=args.cache, samples=p["equiv_samples"])})
        if out is None:
            continue
        errs = out["errors"]
        equiv.append({"cell": key, "norm": key.split("_L")[1].split("_", 1)[1].rsplit(
            "_lr", 1)[0], **{k: max(e[k] for e in errs) for k in ("rot", "trans", "perm")}})
    # 2. best stable variant at the largest N of norm_comparison
    best = best_variant(src, p["source"])
    # 3. N = 200 (or more) with the edge-list model
    large = []
    for v in p["variants"]:
        out = exp.cell(f"edges_N{p['particles']}_{v}", lambda v=v: train_edges(
            p, v, cache=args.cache))
        if out is not None:
            large.append(out)
    plots = plot(exp, large, p)
    return exp.finish(dict(p, variants_def={k: list(v) for k, v in VARIANTS.items()}),
                      {"equivariance": equiv, "best_variant": best, "large_n": large}, plots)


def best_variant(src, preset: str) -> dict:
    """From norm_comparison cells: per norm, seeds exploded and best test MSE at the largest N."""
    rows = []
    for path in sorted(src.cells_dir.glob(f"{preset}__*.json")):
        c = common.read_json(path)
        cfg = c["config"]
        n = cfg["data"]["particles"]
        norm = c["cell"].split("_L")[1].split("_", 1)[1].rsplit("_lr", 1)[0]
        ps = c["per_seed"]
        rows.append({"cell": c["cell"], "norm": norm, "particles": n,
                     "lr": cfg["optimizer"]["lr"],
                     "exploded_seeds": sum(bool(s["exploded"]) for s in ps),
                     "best_test_mse": common.mean_std([s["best_test_mse"] for s in ps])})
    if not rows:
        return {"rows": [], "answer": None}
    n_max = max(r["particles"] for r in rows)
    stable = [r for r in rows if r["particles"] == n_max and r["exploded_seeds"] == 0
              and common.finite(r["best_test_mse"]["mean"])]
    winner = min(stable, key=lambda r: r["best_test_mse"]["mean"]) if stable else None
    return {"rows": rows, "largest_n": n_max, "answer": winner}


def plot(exp, large: list[dict], p: dict) -> list[str]:
    """Training and test curves of the large-N edge-list runs."""
    plt = common.setup_matplotlib()
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    colors = {"none": "black", "scale_norm": "tab:green", "geo_norm_shared": "red",
              "geo_norm_particle": "darkred"}
    for r in large:
        cur = r["curves"]
        for what, ls in (("train_loss", "-"), ("test_mse", ":")):
            pts = [(x, y) for x, y in zip(cur["epoch"], cur[what], strict=True)
                   if common.finite(y)]
            if pts:
                ax.plot(*zip(*pts, strict=True), ls=ls, color=colors.get(r["variant"], "gray"),
                        label=f"{r['variant']} {what}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE")
    ax.set_title(f"N = {p['particles']}, edge list (k = {p['knn']}), depth {p['layers']}")
    ax.legend(fontsize=7)
    return [common.save_figure(fig, exp, "beyond_large_n.png")]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    return common.cli_main(NAME, run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
