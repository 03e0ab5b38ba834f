"""EGNN paper anchor: charged 5-body, the "small" split, test MSE at the best validation epoch.

Protocol (Satorras et al. 2021, official ``main_nbody.py``): 5 particles, 3000 training,
2000 validation and 2000 test trajectories, frame 30 -> 40; EGNN_vel with 4 layers, hidden 64;
Adam lr 5e-4, weight decay 1e-12, batch 100; validation and test every 5 epochs; the reported
number is the test MSE at the best validation epoch. The paper reports 0.0071 after 10000
epochs. Run with no normalization and with GeoNorm (sigma per particle).

Usage::

    python -m experiments.egnn_5body --preset cpu     # shorter schedule
    python -m experiments.egnn_5body --preset paper   # 10000 epochs (GPU)

The ``paper-cpu`` preset is the EGNN paper's protocol above, exactly, for one seed (1) and the
vanilla model only, run on CPU in pieces: each invocation trains until ``--budget-min`` minutes
are spent (:func:`geonorm_jax.train.train`'s ``deadline``: the epoch in progress finishes, an
interval checkpoint is written at that epoch), writes the partial results and exits 0; the
next invocation resumes from the checkpoint, and the epochs after it are the ones an
uninterrupted run would have trained. The run also checkpoints every ``CHECKPOINT_EVERY`` = 10
epochs, so a killed process loses at most the 10 epochs since the last checkpoint (on 2
unloaded CPU cores an epoch takes about 2.5-3.5 s, so at most about half a minute of training;
one orbax save of the 134k-parameter state with its Adam moments costs a fraction of a second
against the 25-35 s of 10 epochs). The partial results JSON is rewritten every
``RESULTS_EVERY`` = 50 epochs and when the invocation ends, the PNG when the invocation ends
and on ``--status``. ``--status`` prints the
progress (epochs done of 10000, best validation epoch and its test MSE, seconds per epoch from
the run's own wall-clock record, estimated time left = remaining epochs x the mean seconds per
epoch of the last 100 epochs) and the test-MSE curve as a sparkline, and redraws the PNG::

    nice -n 15 python -m experiments.egnn_5body --preset paper-cpu --budget-min 600 &
    python -m experiments.egnn_5body --preset paper-cpu --status

``--seed N`` runs the same protocol with another training seed (initialization and batch
order; the data splits stay those of data seed 43) in its own folders
``paper-cpu-seedN``, for the spread over training seeds.

Results: ``experiments/results/egnn_5body/paper-cpu/results.json`` (``complete`` is false until
epoch 10000) and ``egnn_5body_paper_cpu.png``; run directory
``experiments/runs/egnn_5body/paper-cpu/none`` (not committed). Reference numbers: 0.0071 is
the EGNN paper's Table 2 (EGNN, charged 5-body, 3000 training samples); 0.0084 is the figure
reported by the published JAX port of EGNN for the same protocol.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from experiments import common, training

NAME = "egnn_5body"
PAPER_MSE = 0.0071
JAX_PORT_MSE = 0.0084
CHECKPOINT_EVERY = 10
RESULTS_EVERY = 50
RESUMABLE = "paper-cpu"

MODELS = {"none": None, "geo_norm": "geo_norm"}

PRESETS = {
    "test": {"train": 20, "valid": 10, "test": 10, "epochs": 2, "batch_size": 10,
             "eval_every": 1, "hidden": 8, "layers": 2, "seeds": [1], "test_data": True},
    # Full split and model; 15 epochs instead of 10000 (2 loaded CPU cores).
    "cpu": {"train": 3000, "valid": 2000, "test": 2000, "epochs": 15, "batch_size": 100,
            "eval_every": 5, "hidden": 64, "layers": 4, "seeds": [1], "test_data": False},
    "paper": {"train": 3000, "valid": 2000, "test": 2000, "epochs": 10000, "batch_size": 100,
              "eval_every": 5, "hidden": 64, "layers": 4, "seeds": [1], "test_data": False},
    # The paper's protocol for one seed and the vanilla model, resumable across invocations.
    RESUMABLE: {"train": 3000, "valid": 2000, "test": 2000, "epochs": 10000,
                "batch_size": 100, "eval_every": 5, "hidden": 64, "layers": 4, "seeds": [1],
                "test_data": False, "models": ["none"]},
}


def run(args, argv) -> dict:
    """Train both models (skipping finished ones) and write results and plots."""
    p = PRESETS[args.preset]
    exp = common.Experiment(NAME, args, argv)
    cells, rows = {}, []
    for name, norm in MODELS.items():
        config = training.make_config(
            particles=5, layers=p["layers"], norm=norm, lr=5e-4, seeds=p["seeds"],
            epochs=p["epochs"], batch_size=p["batch_size"], train=p["train"], valid=p["valid"],
            test=p["test"], eval_every=p["eval_every"], hidden=p["hidden"],
            test_data=p["test_data"], train_samples=p["train"])
        out = exp.cell(name, lambda c=config, k=name: training.run_cell(
            c, exp.runs / k, cache=exp.cache))
        if out is None:
            continue
        cells[name] = out
        for s in out["per_seed"]:
            mse = s["test_mse_at_best_val"]
            rows.append({"model": name, "seed": s["seed"], "test_mse_at_best_val": mse,
                         "best_epoch": s["best_epoch"], "epochs": p["epochs"],
                         "exploded": s["exploded"],
                         "reached_paper": bool(common.finite(mse) and mse <= PAPER_MSE)})
    plots = plot(exp, cells)
    config = dict(p, particles=5, lr=5e-4, weight_decay=1e-12, frames=[30, 40],
                  models=MODELS)
    return exp.finish(config, {"rows": rows, "cells": cells, "paper_mse": PAPER_MSE,
                               "verdicts": compare(rows)}, plots)


def compare(rows: list[dict]) -> dict:
    """Whether each model reached the paper's 0.0071."""
    out = {}
    for r in rows:
        status = "reproduced" if r["reached_paper"] else "not reproduced"
        out[r["model"]] = {"status": status, "test_mse": r["test_mse_at_best_val"],
                           "epochs": r["epochs"], "paper": PAPER_MSE}
    return out


def plot(exp, cells: dict, filename: str = "egnn_5body.png",
         title: str = "charged 5-body (small split)") -> list[str]:
    """Validation and test MSE per evaluation, with the paper's 0.0071."""
    plt = common.setup_matplotlib()
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    colors = {"none": "black", "geo_norm": "red"}
    for name, c in cells.items():
        cur = c["curves"]
        for seed, ys in cur["test_mse"].items():
            pts = [(x, y) for x, y in zip(cur["eval_epoch"], ys, strict=True)
                   if common.finite(y)]
            if pts:
                ax.plot(*zip(*pts, strict=True), color=colors.get(name, "gray"),
                        label=f"{name} test (seed {seed})")
            vs = cur["val_mse"][seed]
            pts = [(x, y) for x, y in zip(cur["eval_epoch"], vs, strict=True) if common.finite(y)]
            if pts:
                ax.plot(*zip(*pts, strict=True), color=colors.get(name, "gray"), ls=":",
                        label=f"{name} val")
    ax.axhline(PAPER_MSE, color="gray", ls="--", label="EGNN paper 0.0071")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return [common.save_figure(fig, exp, filename)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """:func:`experiments.common.parse_args` plus the ``paper-cpu`` preset and ``--status``."""
    p = argparse.ArgumentParser(prog=f"python -m experiments.{NAME}",
                                description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--preset", choices=list(PRESETS), default="cpu",
                   help="test: seconds (CI); cpu: minutes on 2 cores; paper: the paper's "
                        "settings (GPU); paper-cpu: the paper's protocol, one seed, vanilla, "
                        "resumable on CPU")
    p.add_argument("--out", default=None, help="results directory")
    p.add_argument("--runs", default=None, help="training run directories (checkpoints)")
    p.add_argument("--cache", default=None, help="dataset cache directory")
    p.add_argument("--budget-min", type=float, default=None,
                   help="paper-cpu: train for this many minutes, checkpoint and exit; other "
                        "presets: start no new cell after this many minutes")
    p.add_argument("--only", default=None, metavar="TEXT",
                   help="run only cells whose name contains TEXT")
    p.add_argument("--fresh", action="store_true",
                   help="discard finished cells and run directories of this preset first")
    p.add_argument("--status", action="store_true",
                   help="paper-cpu: print the progress and redraw the curve; trains nothing")
    p.add_argument("--seed", type=int, default=1,
                   help="paper-cpu: the training seed (initialization and batch order; the "
                        "data are the same); seed N != 1 has its own results and run "
                        "directories, paper-cpu-seedN")
    args = p.parse_args(argv)
    if args.seed != 1 and args.preset != RESUMABLE:
        p.error(f"--seed is for --preset {RESUMABLE}; preset {args.preset!r} has its own seeds")
    if args.seed < 0:
        p.error(f"--seed must be a non-negative integer, got {args.seed}")
    if args.preset == RESUMABLE:
        folder = resumable_folder(args.seed)
        if args.out is None:
            args.out = str(common.RESULTS / NAME / folder)
        if args.runs is None:
            args.runs = str(common.RUNS / NAME / folder)
    return args


def resumable_folder(seed: int) -> str:
    """``paper-cpu`` for seed 1 (the first run's folders), ``paper-cpu-seedN`` otherwise."""
    return RESUMABLE if seed == 1 else f"{RESUMABLE}-seed{seed}"


def resumable_preset(args) -> dict:
    """The ``paper-cpu`` preset with the seed of ``--seed``."""
    return dict(PRESETS[RESUMABLE], seeds=[int(getattr(args, "seed", 1))])


def resumable_config(p: dict):
    """The run configuration of the ``paper-cpu`` cell: checkpoints every
    :data:`CHECKPOINT_EVERY` epochs, the last two kept."""
    from geonorm_jax import train

    config = training.make_config(
        particles=5, layers=p["layers"], norm=None, lr=5e-4, seeds=p["seeds"],
        epochs=p["epochs"], batch_size=p["batch_size"], train=p["train"], valid=p["valid"],
        test=p["test"], eval_every=p["eval_every"], hidden=p["hidden"],
        test_data=p["test_data"], train_samples=p["train"])
    return train.merge(config, {"train": {"checkpoint_every": min(CHECKPOINT_EVERY,
                                                                  p["epochs"]),
                                          "keep_checkpoints": 2}})


def progress(run_dir: Path, epochs: int, window: int = 100) -> dict:
    """Where the run in ``run_dir`` stands, from its ``metrics.jsonl``.

    ``sec_per_epoch`` is the mean over the last ``window`` epochs of the run's own cumulative
    wall-clock record (``time``: training and evaluation, not data loading or compilation
    before the first epoch of an invocation); ``eta_hours`` = remaining epochs x that.
    """
    from geonorm_jax import train

    records = train.read_metrics(run_dir)
    done = records[-1]["epoch"] if records else 0
    out = {"epochs_done": done, "epochs": epochs, "best_epoch": None, "best_val_mse": None,
           "test_mse_at_best_val": None, "sec_per_epoch": None, "eta_hours": None,
           "train_wall_hours": round(records[-1]["time"] / 3600, 3) if records else 0.0}
    evals = [r for r in records if "val_mse" in r]
    if evals:
        best_epoch = evals[-1]["best_epoch"][0]
        best = next((r for r in evals if r["epoch"] == best_epoch), None)
        if best is not None:
            out.update(best_epoch=best_epoch, best_val_mse=best["val_mse"][0],
                       test_mse_at_best_val=best["test_mse"][0])
    recent = records[-window - 1:]
    if len(recent) >= 2:
        steps = [b["time"] - a["time"] for a, b in zip(recent, recent[1:], strict=False)
                 if b["epoch"] == a["epoch"] + 1 and b["time"] > a["time"]]
        if steps:
            out["sec_per_epoch"] = round(sum(steps) / len(steps), 3)
            out["eta_hours"] = round((epochs - done) * out["sec_per_epoch"] / 3600, 2)
    return out


def sparkline(values: list[float], width: int = 60) -> str:
    """An ASCII sparkline of ``values`` on a log scale (``width`` characters, bucket means)."""
    vals = [math.log10(v) for v in values if common.finite(v) and v > 0]
    if not vals:
        return ""
    if len(vals) > width:
        k = len(vals) / width
        vals = [sum(vals[int(i * k):max(int((i + 1) * k), int(i * k) + 1)])
                / len(vals[int(i * k):max(int((i + 1) * k), int(i * k) + 1)])
                for i in range(width)]
    lo, hi = min(vals), max(vals)
    chars = " .:-=+*#%@"
    span = (hi - lo) or 1.0
    return "".join(chars[min(len(chars) - 1, int((v - lo) / span * len(chars)))] for v in vals)


def run_resumable(args, argv) -> dict:
    """The ``paper-cpu`` preset: train (resuming) until the budget is spent; write results."""
    from geonorm_jax import train

    p = resumable_preset(args)
    exp = common.Experiment(NAME, args, argv)
    config = resumable_config(p)
    run_dir = exp.runs / "none"
    deadline = None if args.budget_min is None else time.time() + 60.0 * args.budget_min
    state = {"doc": None}

    def write(stopped, figure=True):
        state["doc"] = write_resumable(exp, p, run_dir, stopped, figure=figure)

    def on_epoch_end(epoch, record):
        if epoch % RESULTS_EVERY == 0 and epoch < p["epochs"]:
            write("running", figure=False)

    cell = exp.cell_path("none")
    if not cell.exists():
        resume = (run_dir / "config.json").exists()
        if resume:
            summary = train.train(config, run_dir, resume=True, cache_dir=exp.cache,
                                  progress=False, deadline=deadline, on_epoch_end=on_epoch_end)
        else:
            if run_dir.exists():
                import shutil

                shutil.rmtree(run_dir)
            summary = train.train(config, run_dir, cache_dir=exp.cache, progress=False,
                                  deadline=deadline, on_epoch_end=on_epoch_end)
        if summary["epochs_completed"] >= p["epochs"]:
            exp.cell("none", lambda: training.run_cell(config, run_dir, cache=exp.cache))
        write(summary.get("stopped") or "finished")
    else:
        write("finished")
    print_status(dict(state["doc"], _out=str(exp.out)))
    return state["doc"]


def write_resumable(exp, p: dict, run_dir: Path, stopped: str, figure: bool = True) -> dict:
    """Write ``results.json`` and (``figure``) the curve of the ``paper-cpu`` run as it
    stands."""
    from geonorm_jax import train

    prog = progress(run_dir, p["epochs"])
    records = train.read_metrics(run_dir)
    cur = training.curves(records, p["seeds"]) if records else None
    finished = prog["epochs_done"] >= p["epochs"]
    exp.skipped = [] if finished else ["none"]
    mse = prog["test_mse_at_best_val"]
    rows = [{"model": "none", "seed": p["seeds"][0], "test_mse_at_best_val": mse,
             "best_epoch": prog["best_epoch"], "epochs": prog["epochs_done"],
             "exploded": bool(records and records[-1]["exploded"][0]),
             "reached_paper": bool(common.finite(mse) and mse <= PAPER_MSE)}]
    filename = "egnn_5body_paper_cpu.png"
    plots = [filename]
    if figure:
        plots = plot(exp, {"none": {"curves": cur}} if cur else {}, filename=filename,
                     title=f"charged 5-body, EGNN paper protocol: epoch {prog['epochs_done']}"
                           f"/{p['epochs']}")
    config = dict(p, particles=5, lr=5e-4, weight_decay=1e-12, frames=[30, 40],
                  checkpoint_every=min(CHECKPOINT_EVERY, p["epochs"]))
    results = {"rows": rows, "progress": dict(prog, state=stopped), "paper_mse": PAPER_MSE,
               "jax_port_mse": JAX_PORT_MSE, "curves": cur,
               "run_dir": str(Path(run_dir).name), "verdicts": compare(rows)}
    return exp.finish(config, results, plots)


def print_status(doc: dict | None, stream=None) -> None:
    """Print the ``paper-cpu`` progress of a results document."""
    stream = stream or sys.stdout
    if doc is None:
        print("no paper-cpu results yet", file=stream)
        return
    g = doc["results"]["progress"]
    fmt = lambda x, f: "—" if x is None else format(x, f)
    lines = [
        f"EGNN charged 5-body, paper protocol (seed {doc['config']['seeds'][0]}, vanilla): "
        f"epoch {g['epochs_done']} / {g['epochs']} ({g['state']})",
        f"best validation epoch {g['best_epoch']}: val MSE {fmt(g['best_val_mse'], '.5f')}, "
        f"test MSE {fmt(g['test_mse_at_best_val'], '.5f')} (EGNN paper {PAPER_MSE}, "
        f"JAX port {JAX_PORT_MSE})",
        f"{fmt(g['sec_per_epoch'], '.2f')} s per epoch (mean of the last 100 epochs), "
        f"{g['train_wall_hours']:.2f} h of training so far, estimated "
        f"{fmt(g['eta_hours'], '.1f')} h left",
    ]
    cur = doc["results"].get("curves")
    if cur:
        tests = cur["test_mse"][str(doc["config"]["seeds"][0])]
        lines.append(f"test MSE (log scale, epochs {cur['eval_epoch'][0]}..."
                     f"{cur['eval_epoch'][-1]}): |{sparkline(tests)}|")
    for name in doc.get("plots", []):
        lines.append(f"curve: {Path(doc.get('_out', '')) / name}")
    print("\n".join(lines), file=stream)


def status(args) -> dict | None:
    """``--status``: read the run directory, rewrite the results and print the progress."""
    p = resumable_preset(args)
    run_dir = Path(args.runs) / "none"
    if not (run_dir / "metrics.jsonl").exists():
        seed = "" if args.seed == 1 else f" --seed {args.seed}"
        print(f"no paper-cpu run in {run_dir}; start one with `nice -n 15 python -m "
              f"experiments.{NAME} --preset {RESUMABLE}{seed} --budget-min 600`")
        return None
    path = Path(args.out) / "results.json"
    state = common.read_json(path)["results"]["progress"]["state"] if path.exists() else "?"
    exp = common.Experiment(NAME, args, ["--preset", RESUMABLE, "--status"]
                            + ([] if args.seed == 1 else ["--seed", str(args.seed)]))
    doc = write_resumable(exp, p, run_dir, state)
    print_status(dict(doc, _out=str(exp.out)))
    return doc


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = parse_args(argv)
    if args.preset == RESUMABLE:
        if args.status:
            status(args)
        else:
            run_resumable(args, argv)
        return 0
    if args.status:
        raise SystemExit("--status is for --preset paper-cpu")
    run(args, argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
