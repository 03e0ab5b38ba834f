"""The GeoNorm paper's experiments at the paper's scale, trained in short GPU visits.

The GeoNorm paper (Meng et al.) trains every configuration for 1000 epochs at batch 50 on 3000
training systems (2000 validation, 2000 test), hidden 64, Adam with weight decay 1e-12, seeds
30/40/50/60 and learning rates 5e-3 and 5e-4, and quotes "up to 6 hours" per configuration on
one V100. This script trains those configurations cell by cell (one cell = one (N, depth,
normalization, learning rate) with the 4 seeds vmapped in one program), in priority order:

1. Figure 2 (instability): vanilla EGNN at N = 50, depth 5 and N = 100, depth 3 (the two cells
   the paper says explode), and the same two cells with ``geo_norm_shared``,
   ``geo_norm_system`` and ScaleNorm (``scale_norm_l2``), at lr 5e-3 (the paper does not give
   Figure 2's learning rate; 5e-3 is the larger of its two and the one
   ``experiments.instability``'s ``cpu`` preset uses).
2. Figure 5 (training curves per normalization): ``experiments.norm_comparison``'s ``paper``
   cells, N = 50 and 100, depth 5, its 7 normalizations, lr 5e-3 and 5e-4 (the N = 50 cells
   already trained for Figure 2 are not trained again).
3. Table 1 (rotation/translation errors): LayerNorm, ScaleNorm and GeoNorm (sigma per
   particle) at (N, depth) = (100, 5), (100, 3), (50, 5), lr 5e-4 (``experiments.rte_table``'s
   ``paper`` preset); the (100, 3) models are trained here, the others come from Figure 5.
   When such a cell finishes, :func:`geonorm_jax.train.evaluate_run` (``rte=True``) measures
   the 8 RTE columns on its best-validation parameters and stores them with the cell.

Visits. One invocation first times the bench's model step
(:func:`geonorm_jax.bench.model.run_case`) for N = 5 (batch 100, depth 4) and N = 100
(batch 50, depth 5), the same cases as the bench's ``target`` rows, and records them with the
device (``jax.devices()[0].device_kind``), so every GPU visit leaves step times behind: the
EGNN's execution plan (``edge_chunk="auto"``, :mod:`geonorm_jax.models.execution_plan`), XLA's
FLOPs and bytes of the compiled step and their fractions of the matmul and copy rates measured
on the device (:mod:`geonorm_jax.bench.roofline`), and two variant rows at N = 100 that the
estimates do not use: the former fixed ``edge_chunk=16384`` and bfloat16 matrix products. The
bench takes about 2 minutes of a visit (three N = 100 compilations and timings). Then it
trains the cells in order until ``--budget-min`` (default 11) minutes are spent: each cell runs
:func:`geonorm_jax.train.train` with a wall-clock ``deadline`` and ``resume=True``, so a cell
stopped by the budget checkpoints at an epoch boundary and the next visit continues it at
that epoch. ``results.json`` is rewritten after every finished or partial cell; it accumulates
the visits (device, step times, cells advanced) and holds the estimate table. Finished cells
are stored in ``cells/`` (:class:`experiments.common.Experiment`'s store); a partial cell lives
only in its run directory, ``--runs DIR`` (default ``experiments/runs/gpu_campaign/<preset>``,
not committed): on a GPU visit that directory must come back with the results, or the partial
cell restarts from epoch 0 (with ``--prune-checkpoints`` only partial cells keep checkpoints,
about 11 MB each at the paper's size: 4 seeds x 134k parameters with Adam moments and the best
parameters). Datasets are cached in ``--cache`` (default the package's cache); a fresh machine
regenerates them (each visit records, per cell, ``setup_s``: the seconds outside the epochs,
dataset generation included).

Estimates (every minute figure printed before a cell runs, and ``--estimate``) are estimates,
derived as follows. The time of one optimizer step of one seed at (N, depth, batch) is the
N = 100 reference step time scaled by the ratio of matrix-product FLOPs
(:func:`geonorm_jax.bench.model.step_flops`), floored by the N = 5 reference step time scaled
by depth (small steps are latency bound). An epoch is ``seeds x (steps + evaluation)``: 60
steps of batch 50, plus every ``eval_every`` epochs a forward pass over the 4000 validation and
test systems in batches of 500 (a forward pass counted as a third of a training step), times
``1 + cost`` of the normalization from the bench's ``norms`` rows (when present, 0 if
negative). Reference step times are, in order of preference: this campaign's own bench rows
on the device in use, then GPU rows of ``experiments/results/bench/results_gpu.json``, then
the CPU rows of ``experiments/results/bench/results.json`` converted to a GPU by assumption:
the step's FLOPs at ``--gpu-tflops`` (default 10 TFLOP/s sustained, about 15 % of an H100's
67 TFLOP/s FP32 peak) with a floor of 1 ms per 4 layers. A cell that has trained on the
current device uses its own measured seconds per epoch instead. Visits needed = estimated
minutes / (budget - ``VISIT_OVERHEAD_MIN`` = 3 minutes for the bench, dataset generation and
compilation), rounded up.

Usage::

    python -m experiments.gpu_campaign --preset paper                  # one 11-minute visit
    python -m experiments.gpu_campaign --preset paper --budget-s 420   # a 7-minute visit
    python -m experiments.gpu_campaign --preset paper --estimate       # the estimate table only
    python -m experiments.gpu_campaign --preset test --budget-min 1    # CPU, seconds
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from pathlib import Path

from experiments import common, norm_comparison, training

NAME = "gpu_campaign"
VISIT_OVERHEAD_MIN = 3.0
ASSUMED_GPU_TFLOPS = 10.0
ASSUMED_GPU_FLOOR_MS_PER_4_LAYERS = 1.0
PAPER_HOURS_PER_CONFIG_V100 = 6.0  # GeoNorm paper, "Implementation Details"
VARIANT = "variant"  # bench rows recorded for comparison, not used by the estimates

SIZES = {
    "test": {"train": 20, "valid": 10, "test": 10, "epochs": 3, "batch_size": 10,
             "eval_every": 1, "hidden": 8, "seeds": [30, 40], "test_data": True,
             "checkpoint_every": 1},
    "paper": {"train": 3000, "valid": 2000, "test": 2000, "epochs": 1000, "batch_size": 50,
              "eval_every": 5, "hidden": 64, "seeds": [30, 40, 50, 60], "test_data": False,
              "checkpoint_every": 10},
}

PRESETS = {
    "test": {
        "sizes": SIZES["test"],
        "figure2": {"cells": [(5, 2)], "norms": ["none", "geo_norm_shared"], "lr": 5e-3},
        "figure5": {"particles": [5], "depth": 2, "norms": ["none", "scale_norm"],
                    "lrs": [5e-3]},
        "table1": {"cells": [(5, 2)], "norms": ["scale_norm"], "lr": 5e-3},
        "matmul_size": 128,
        "copy_size": 2**16,
        "bench": [dict(name="test-dense-n5-b2-l1", nodes=5, batch=2, layers=1, hidden=8,
                       seconds=0.1, max_repeats=2),
                  dict(name="test-dense-n12-b2-l1", nodes=12, batch=2, layers=1, hidden=8,
                       seconds=0.1, max_repeats=2),
                  dict(name="test-dense-n12-b2-l1-bf16", nodes=12, batch=2, layers=1,
                       hidden=8, precision="bfloat16", group=VARIANT, seconds=0.1,
                       max_repeats=2)],
    },
    "paper": {
        "sizes": SIZES["paper"],
        "figure2": {"cells": [(50, 5), (100, 3)],
                    "norms": ["none", "geo_norm_shared", "geo_norm_system", "scale_norm"],
                    "lr": 5e-3},
        "figure5": {"particles": [50, 100], "depth": 5, "norms": list(norm_comparison.NORMS),
                    "lrs": [5e-3, 5e-4]},
        "table1": {"cells": [(100, 5), (100, 3), (50, 5)],
                   "norms": ["layer_norm", "scale_norm", "geo_norm_particle"], "lr": 5e-4},
        "matmul_size": None,
        "copy_size": None,
        "bench": [dict(name="target-dense-n5-b100-l4", nodes=5, batch=100, layers=4,
                       seconds=5.0, max_repeats=20),
                  dict(name="target-dense-n100-b50-l5", nodes=100, batch=50, layers=5,
                       seconds=10.0, max_repeats=20),
                  # variants (not estimate references): the former fixed chunk, bf16 products
                  dict(name="target-dense-n100-b50-l5-chunk16384", nodes=100, batch=50,
                       layers=5, edge_chunk=16384, group=VARIANT, seconds=5.0, max_repeats=10),
                  dict(name="target-dense-n100-b50-l5-bf16", nodes=100, batch=50, layers=5,
                       precision="bfloat16", group=VARIANT, seconds=5.0, max_repeats=10)],
    },
}


# ------------------------------------------------------------------------------------------
# Cells
# ------------------------------------------------------------------------------------------

def cells(preset: dict) -> list[dict]:
    """The prioritised cell list: ``{"key", "phase", "particles", "depth", "norm", "lr",
    "rte"}``; a configuration needed by several phases appears once, in its first phase."""
    out, seen = [], {}
    t1 = preset["table1"]
    rte = {(n, d, norm, t1["lr"]) for n, d in t1["cells"] for norm in t1["norms"]}

    def add(phase, n, d, norm, lr):
        key = norm_comparison.cell_key(n, d, norm, lr)
        if key in seen:
            return
        seen[key] = True
        out.append({"key": key, "phase": phase, "particles": n, "depth": d, "norm": norm,
                    "lr": lr, "rte": (n, d, norm, lr) in rte})

    f2 = preset["figure2"]
    for n, d in f2["cells"]:
        for norm in f2["norms"]:
            add("figure2", n, d, norm, f2["lr"])
    f5 = preset["figure5"]
    for n in f5["particles"]:
        for lr in f5["lrs"]:
            for norm in f5["norms"]:
                add("figure5", n, f5["depth"], norm, lr)
    for n, d in t1["cells"]:
        for norm in t1["norms"]:
            add("table1", n, d, norm, t1["lr"])
    return out


def cell_config(sizes: dict, cell: dict):
    """The RunConfig of ``cell`` (``experiments.norm_comparison``'s normalization names and
    places), checkpointing every ``sizes["checkpoint_every"]`` epochs."""
    from geonorm_jax import train

    cat, place, model_kwargs = norm_comparison.NORMS[cell["norm"]]
    config = training.make_config(
        particles=cell["particles"], layers=cell["depth"], norm=cat, norm_place=place,
        model_kwargs=model_kwargs, lr=cell["lr"], seeds=sizes["seeds"],
        epochs=sizes["epochs"], batch_size=sizes["batch_size"], train=sizes["train"],
        valid=sizes["valid"], test=sizes["test"], eval_every=sizes["eval_every"],
        hidden=sizes["hidden"], test_data=sizes["test_data"])
    return train.merge(config, {"train": {"checkpoint_every": sizes["checkpoint_every"],
                                          "keep_checkpoints": 1}})


def cell_progress(run_dir: Path) -> dict:
    """Epochs done and measured seconds per epoch (median over the run's consecutive
    epochs, from ``metrics.jsonl``'s cumulative wall time) of a run directory."""
    from geonorm_jax import train

    records = train.read_metrics(run_dir) if run_dir.exists() else []
    done = records[-1]["epoch"] if records else 0
    steps = sorted(b["time"] - a["time"] for a, b in zip(records, records[1:], strict=False)
                   if b["epoch"] == a["epoch"] + 1 and b["time"] > a["time"])
    return {"epochs_done": done,
            "sec_per_epoch": steps[len(steps) // 2] if steps else None,
            "train_time_s": records[-1]["time"] if records else 0.0}


# ------------------------------------------------------------------------------------------
# Step times and estimates
# ------------------------------------------------------------------------------------------

def run_bench(preset: dict, log=print) -> list[dict]:
    """Time the bench's model step for the preset's reference cases (in this process), with
    the EGNN's execution plan (``edge_chunk="auto"`` unless a case says otherwise), XLA's
    cost analysis and the roofline fractions against the matmul and copy rates measured here
    (:mod:`geonorm_jax.bench.roofline`)."""
    from geonorm_jax.bench.machine import CopyTimer, MatmulTimer
    from geonorm_jax.bench.model import ModelCase, run_case

    rows = []
    matmul = MatmulTimer(preset.get("matmul_size"))
    copy = CopyTimer(preset.get("copy_size"))
    for spec in preset["bench"]:
        case = ModelCase(**{"group": "target", **spec})
        t = time.perf_counter()
        try:
            row = run_case(case, matmul, copy)
        except Exception as e:  # noqa: BLE001 - record the failure, keep the visit going
            row = {**case.to_dict(), "error": f"{type(e).__name__}: {e}"}
        row["wall_s"] = round(time.perf_counter() - t, 2)
        rows.append(row)
        log(f"[{NAME}] bench {case.name}: " + (_bench_line(row) if "step_ms_best" in row
                                                 else row["error"]))
    return rows


def _bench_line(row: dict) -> str:
    f = lambda key, fmt: "-" if row.get(key) is None else format(row[key], fmt)
    return (f"{row['step_ms_best']:.2f} ms/step, {f('xla_gflops_per_s', '.0f')} GFLOP/s "
            f"({f('xla_fraction_of_matmul', '.3f')} of matmul), {f('xla_gbytes_per_s', '.0f')} "
            f"GB/s ({f('xla_fraction_of_copy', '.3f')} of copy), {row.get('bound', '-')}-bound;"
            f" edges {row.get('edge_plan')}")


def _flops(nodes, batch, layers, hidden) -> float:
    from geonorm_jax.bench.model import ModelCase, step_flops

    return step_flops(ModelCase("x", nodes, batch, layers, hidden=hidden))


def step_model(rows: list[dict], source: str, gpu_tflops: float = ASSUMED_GPU_TFLOPS):
    """``step_s(nodes, batch, layers, hidden) -> seconds`` of one training step of one seed.

    ``source``: ``"measured"`` (``rows`` are step times on the device the cells run on) or
    ``"cpu-assumed-gpu"`` (``rows`` only fix nothing; the GPU time is the step's FLOPs at
    ``gpu_tflops`` with a floor of 1 ms per 4 layers). See the module docstring.
    """
    ok = [r for r in rows if "step_ms_best" in r and r.get("graph", "dense") == "dense"
          and r.get("group") != VARIANT]
    if source == "cpu-assumed-gpu" or not ok:
        def step_s(nodes, batch, layers, hidden):
            floor = ASSUMED_GPU_FLOOR_MS_PER_4_LAYERS * 1e-3 * layers / 4
            return max(_flops(nodes, batch, layers, hidden) / (gpu_tflops * 1e12), floor)
        return step_s
    big = max(ok, key=lambda r: r["nodes"])
    small = min(ok, key=lambda r: r["nodes"])

    def step_s(nodes, batch, layers, hidden):
        scaled = big["step_ms_best"] * 1e-3 * _flops(nodes, batch, layers, hidden) / _flops(
            big["nodes"], big["batch"], big["layers"], big["hidden"])
        floor = small["step_ms_best"] * 1e-3 * layers / small["layers"]
        return max(scaled, floor)
    return step_s


def norm_costs(bench_doc: dict | None) -> dict:
    """Per ``norm_comparison`` name, the bench's measured extra cost of its layer (fraction,
    negative values as 0); 0 where the bench has no row."""
    rows = {r["norm"]: r.get("cost_percent") for r in (bench_doc or {}).get("norms", [])}
    out = {}
    for name, (cat, _, _) in norm_comparison.NORMS.items():
        c = rows.get(cat) if cat else None
        out[name] = max(0.0, c / 100.0) if common.finite(c) else 0.0
    return out


def epoch_seconds(cell: dict, sizes: dict, step_s, costs: dict) -> float:
    """Estimated seconds of one epoch of ``cell`` (all seeds; module docstring)."""
    n, d, h = cell["particles"], cell["depth"], sizes["hidden"]
    b = sizes["batch_size"]
    steps = math.ceil(sizes["train"] / b)
    eval_b = min(500, sizes["valid"], sizes["test"])
    eval_batches = math.ceil(sizes["valid"] / eval_b) + math.ceil(sizes["test"] / eval_b)
    per_seed = steps * step_s(n, b, d, h) + eval_batches * step_s(n, eval_b, d, h) / 3 / \
        sizes["eval_every"]
    return len(sizes["seeds"]) * per_seed * (1.0 + costs.get(cell["norm"], 0.0))


def reference_rows(campaign_doc: dict | None, device_kind: str) -> tuple[list[dict], str, str]:
    """``(rows, source, description)`` of the step times the estimates use (module docstring
    for the order of preference)."""
    visits = (campaign_doc or {}).get("results", {}).get("visits", [])
    for v in reversed(visits):
        if v.get("device_kind") == device_kind and v.get("bench"):
            return v["bench"], "measured", f"this campaign's bench on {device_kind} " \
                                           f"({v.get('started')})"
    gpu = common.RESULTS / "bench" / "results_gpu.json"
    if gpu.exists():
        doc = common.read_json(gpu)
        rows = [r for r in doc.get("model", []) if r.get("group") == "target"]
        if rows:
            return rows, "measured", f"experiments/results/bench/results_gpu.json " \
                                     f"({doc.get('machine', {}).get('device_kind', 'gpu')})"
    return [], "cpu-assumed-gpu", "assumed GPU rate (no GPU step times recorded yet)"


def estimate_table(preset: dict, campaign_doc: dict | None, device_kind: str,
                   budget_min: float, gpu_tflops: float = ASSUMED_GPU_TFLOPS,
                   measured: dict | None = None) -> dict:
    """Estimated minutes of every cell (remaining and total) and the visits per phase.

    ``measured``: ``{key: {"epochs_done", "sec_per_epoch"}}`` of cells that trained on
    ``device_kind``; their own seconds per epoch replace the estimate.
    """
    sizes = preset["sizes"]
    bench_path = common.RESULTS / "bench" / "results.json"
    bench_doc = common.read_json(bench_path) if bench_path.exists() else None
    rows, source, described = reference_rows(campaign_doc, device_kind)
    step_s = step_model(rows, source, gpu_tflops)
    cpu_step_s = step_model([r for r in (bench_doc or {}).get("model", [])
                             if r.get("group") == "target"], "measured") if bench_doc else None
    costs = norm_costs(bench_doc)
    done_cells = set((campaign_doc or {}).get("results", {}).get("done", []))
    out_cells, phases = [], {}
    for c in cells(preset):
        est = epoch_seconds(c, sizes, step_s, costs)
        m = (measured or {}).get(c["key"], {})
        per_epoch = m.get("sec_per_epoch") or est
        done = sizes["epochs"] if c["key"] in done_cells else m.get("epochs_done", 0)
        left = sizes["epochs"] - done
        row = {"key": c["key"], "phase": c["phase"], "estimated_sec_per_epoch": est,
               "measured_sec_per_epoch": m.get("sec_per_epoch"),
               "cell_minutes": sizes["epochs"] * per_epoch / 60,
               "epochs_done": done, "minutes_left": left * per_epoch / 60}
        if cpu_step_s is not None:
            row["cpu_bench_sec_per_epoch"] = epoch_seconds(c, sizes, cpu_step_s, costs)
        out_cells.append(row)
        ph = phases.setdefault(c["phase"], {"cells": 0, "minutes": 0.0, "minutes_left": 0.0})
        ph["cells"] += 1
        ph["minutes"] += row["cell_minutes"]
        ph["minutes_left"] += row["minutes_left"]
    usable = max(budget_min - VISIT_OVERHEAD_MIN, 0.5)
    for ph in phases.values():
        ph["visits"] = math.ceil(ph["minutes"] / usable)
        ph["visits_left"] = math.ceil(ph["minutes_left"] / usable)
    return {
        "device_kind": device_kind, "source": source, "source_description": described,
        "reference_rows": [{k: r.get(k) for k in ("name", "nodes", "batch", "layers",
                                                  "hidden", "step_ms_best")} for r in rows],
        "assumed_gpu_tflops": gpu_tflops if source == "cpu-assumed-gpu" else None,
        "budget_min": budget_min, "visit_overhead_min": VISIT_OVERHEAD_MIN,
        "norm_costs": costs, "cells": out_cells, "phases": phases,
        "paper_upper_bound_hours_per_config_v100": PAPER_HOURS_PER_CONFIG_V100,
        "note": "estimates, not measurements: see experiments/gpu_campaign.py's docstring",
    }


def format_estimate(est: dict) -> str:
    """The estimate table as text."""
    lines = [f"Estimated GPU minutes per cell ({est['source_description']}; "
             + (f"assumed {est['assumed_gpu_tflops']:g} TFLOP/s sustained" if
                est["assumed_gpu_tflops"] else "measured step times") + "):",
             f"{'cell':<40} {'phase':<8} {'s/epoch':>8} {'cell min':>9} {'done':>5} "
             f"{'min left':>9}"]
    for r in est["cells"]:
        sec = r["measured_sec_per_epoch"] or r["estimated_sec_per_epoch"]
        tag = "m" if r["measured_sec_per_epoch"] else "e"
        lines.append(f"{r['key']:<40} {r['phase']:<8} {sec:>7.3g}{tag} "
                     f"{r['cell_minutes']:>9.1f} {r['epochs_done']:>5} "
                     f"{r['minutes_left']:>9.1f}")
    lines.append(f"(e = estimated, m = measured on this device; {est['budget_min']:g}-minute "
                 f"visits with {est['visit_overhead_min']:g} min overhead each)")
    for name, ph in est["phases"].items():
        lines.append(f"{name}: {ph['cells']} cells, {ph['minutes']:.0f} min in all, "
                     f"{ph['minutes_left']:.0f} min left: {ph['visits']} visits in all, "
                     f"{ph['visits_left']} left")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# The campaign
# ------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line: ``--preset``, ``--budget-min``, ``--runs``, ``--out``, ``--cache``,
    ``--estimate``, ``--gpu-tflops``, ``--fresh``."""
    p = argparse.ArgumentParser(prog=f"python -m experiments.{NAME}",
                                description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--preset", choices=list(PRESETS), default="paper",
                   help="test: tiny, seconds on CPU (CI); paper: the GeoNorm paper's settings")
    p.add_argument("--budget-min", type=float, default=11.0,
                   help="wall-clock minutes for this visit (bench included); the cell in "
                        "progress stops at the first epoch end past it and checkpoints")
    p.add_argument("--budget-s", type=float, default=None,
                   help="the visit's budget in seconds (replaces --budget-min)")
    p.add_argument("--runs", default=None,
                   help="run directories (checkpoints of partial cells); default "
                        "experiments/runs/gpu_campaign/<preset>")
    p.add_argument("--out", default=None, help="results directory")
    p.add_argument("--cache", default=None, help="dataset cache directory")
    p.add_argument("--estimate", action="store_true",
                   help="print the estimate table, write it to estimate.json, train nothing")
    p.add_argument("--gpu-tflops", type=float, default=ASSUMED_GPU_TFLOPS,
                   help="assumed sustained GPU rate for estimates without GPU step times")
    p.add_argument("--fresh", action="store_true",
                   help="discard this preset's finished cells and run directories first")
    p.add_argument("--prune-checkpoints", action="store_true",
                   help="delete a cell's checkpoints once it is finished and stored (keeps "
                        "--runs small enough to carry between machines: only partial cells "
                        "keep checkpoints)")
    args = p.parse_args(argv)
    if args.budget_s is not None:
        if not args.budget_s > 0:
            p.error(f"--budget-s: expected > 0; received {args.budget_s:g}")
        args.budget_min = args.budget_s / 60.0
    args.only = None
    return args


def device_kind() -> str:
    import jax

    return jax.devices()[0].device_kind


def _load(path: Path) -> dict | None:
    try:
        return common.read_json(path) if path.exists() else None
    except ValueError:
        return None


class Campaign:
    """One visit: bench, cells in order until the budget is spent, results after each."""

    def __init__(self, args, argv):
        self.args = args
        self.preset = PRESETS[args.preset]
        self.sizes = self.preset["sizes"]
        budget = args.budget_min
        args.budget_min = None  # the Experiment's own cell budget is not used
        self.exp = common.Experiment(NAME, args, argv)
        args.budget_min = budget
        self.t0 = time.time()
        self.end = self.t0 + 60.0 * budget
        self.previous = _load(self.exp.out / "results.json")
        self.device_kind = device_kind()
        self.visit = {"started": time.strftime("%Y-%m-%d %H:%M:%S"),
                      "device_kind": self.device_kind, "budget_min": budget, "bench": [],
                      "cells": {}, "wall_s": 0.0}

    def done(self) -> dict:
        out = {}
        for c in cells(self.preset):
            doc = _load(self.exp.cell_path(c["key"]))
            if doc is not None:
                out[c["key"]] = doc
        return out

    def measured(self) -> dict:
        """Progress of every cell with a run directory; seconds per epoch only from runs on
        this device kind (a run directory records no device, so a visit counts a cell as
        measured here once it trained it in this visit or the previous visit used the same
        device kind)."""
        same = bool(self.previous) and all(
            v.get("device_kind") == self.device_kind
            for v in self.previous.get("results", {}).get("visits", []))
        out = {}
        for c in cells(self.preset):
            prog = cell_progress(self.exp.runs / c["key"])
            if c["key"] not in self.visit["cells"] and not same:
                prog["sec_per_epoch"] = None
            out[c["key"]] = prog
        return out

    def write(self, note: str) -> dict:
        """Rewrite results.json (visits accumulated, finished cells, partial cells, estimate)."""
        self.visit["wall_s"] = round(time.time() - self.t0, 1)
        visits = list((self.previous or {}).get("results", {}).get("visits", []))
        visits.append(self.visit)
        finished = self.done()
        measured = self.measured()
        partial = {k: v for k, v in measured.items() if v["epochs_done"] and k not in finished}
        results = {"visits": visits, "done": sorted(finished), "partial": partial}
        est = estimate_table(self.preset, {"results": results}, self.device_kind,
                             self.args.budget_min, self.args.gpu_tflops, measured)
        rows = [summary_row(c, finished[c["key"]]) for c in cells(self.preset)
                if c["key"] in finished]
        left = [c["key"] for c in cells(self.preset) if c["key"] not in finished]
        self.exp.skipped = left
        results.update(rows=rows, rte=rte_rows(finished), estimate=est,
                       remaining={"cells": len(left),
                                  "epochs": sum(self.sizes["epochs"] - measured[k]["epochs_done"]
                                                for k in left),
                                  "minutes_estimated": sum(r["minutes_left"]
                                                           for r in est["cells"])},
                       state=note)
        config = dict(self.sizes, figure2=self.preset["figure2"],
                      figure5=self.preset["figure5"], table1=self.preset["table1"],
                      cells=[c["key"] for c in cells(self.preset)],
                      norm_definitions={k: {"norm": v[0], "place": v[1], "model_kwargs": v[2]}
                                        for k, v in norm_comparison.NORMS.items()})
        doc = self.exp.finish(config, results, [])
        doc["device_kind"] = self.device_kind
        common.write_json(self.exp.out / "results.json", doc)
        return doc

    def run(self) -> dict:
        print(f"[{NAME}] device {self.device_kind}, budget {self.args.budget_min:g} min, "
              f"runs in {self.exp.runs}", flush=True)
        self.visit["bench"] = run_bench(self.preset)
        self.write("bench")
        print(f"[{NAME}] bench done after {time.time() - self.t0:.1f} s", flush=True)
        first = True
        for c in cells(self.preset):
            if self.exp.cell_path(c["key"]).exists():
                continue
            left = self.end - time.time()
            est = estimate_table(self.preset, {"results": {"visits": [self.visit]}},
                                 self.device_kind, self.args.budget_min, self.args.gpu_tflops,
                                 self.measured())
            row = next(r for r in est["cells"] if r["key"] == c["key"])
            per_epoch = row["measured_sec_per_epoch"] or row["estimated_sec_per_epoch"]
            if not first and left < 2 * per_epoch + 30:
                print(f"[{NAME}] {c['key']}: not started (budget spent: {left:.0f} s left)",
                      flush=True)
                break
            print(f"[{NAME}] {c['key']} ({c['phase']}): epoch {row['epochs_done']}/"
                  f"{self.sizes['epochs']}, estimated {row['minutes_left']:.1f} min left "
                  f"({per_epoch:.3g} s/epoch), {left / 60:.1f} min of budget left", flush=True)
            first = False
            self.train_cell(c, deadline=self.end - per_epoch - 5)
            self.write("running")
            if time.time() >= self.end:
                break
        doc = self.write("visit finished")
        print(format_estimate(doc["results"]["estimate"]), flush=True)
        r = doc["results"]["remaining"]
        print(f"[{NAME}] remaining: {r['cells']} cells, {r['epochs']} epochs, about "
              f"{r['minutes_estimated']:.0f} min on {self.device_kind} (estimated)", flush=True)
        return doc

    def train_cell(self, c: dict, deadline: float) -> None:
        from geonorm_jax import train

        config = cell_config(self.sizes, c)
        run_dir = self.exp.runs / c["key"]
        t = time.time()
        start = cell_progress(run_dir)
        before = start["epochs_done"]
        summary = None
        if (run_dir / "config.json").exists():
            try:
                summary = train.train(config, run_dir, resume=True, cache_dir=self.exp.cache,
                                      progress=False, deadline=deadline)
            except ValueError as e:  # another configuration in that directory: start over
                print(f"[{NAME}] {c['key']}: restarting ({e})", flush=True)
                shutil.rmtree(run_dir, ignore_errors=True)
        if summary is None:
            shutil.rmtree(run_dir, ignore_errors=True)
            summary = train.train(config, run_dir, cache_dir=self.exp.cache, progress=False,
                                  deadline=deadline)
        after = summary["epochs_completed"]
        wall = time.time() - t
        trained = cell_progress(run_dir)["train_time_s"] - (start["train_time_s"] if before
                                                             else 0.0)
        # setup_s: dataset generation or loading, model build and restore, outside the epochs
        self.visit["cells"][c["key"]] = {"epochs_from": before, "epochs_to": after,
                                         "wall_s": round(wall, 1),
                                         "setup_s": round(max(wall - trained, 0.0), 1)}
        if after < config.train.epochs:
            print(f"[{NAME}] {c['key']}: stopped at epoch {after} (checkpointed)", flush=True)
            return
        out = training.run_cell(config, run_dir, cache=self.exp.cache)
        out.update(phase=c["phase"], particles=c["particles"], depth=c["depth"],
                   norm=c["norm"], lr=c["lr"], device_kind=self.device_kind)
        if c["rte"]:
            res = train.evaluate_run(run_dir, rte=True, cache_dir=self.exp.cache)
            out["rte"] = {"seeds": res["seeds"], "rows": res["rte"],
                          "protocol": res.get("rte_protocol"), "best_epoch": res["best_epoch"]}
        common.write_json(self.exp.cell_path(c["key"]), dict(out, cell=c["key"]))
        if self.args.prune_checkpoints:
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        print(f"[{NAME}] {c['key']}: finished", flush=True)


def summary_row(c: dict, out: dict) -> dict:
    """One results row of a finished cell: explosions and test MSE over seeds."""
    per = out["per_seed"]
    exploded = [s for s in per if s["exploded"]]
    return {"cell": c["key"], "phase": c["phase"], "particles": c["particles"],
            "depth": c["depth"], "norm": c["norm"], "lr": c["lr"], "seeds": len(per),
            "exploded_seeds": len(exploded),
            "exploded_epochs": [s["exploded_epoch"] for s in exploded],
            "test_mse_at_best_val": common.mean_std([s["test_mse_at_best_val"] for s in per]),
            "best_test_mse": common.mean_std([s["best_test_mse"] for s in per]),
            "device_kind": out.get("device_kind")}


def rte_rows(finished: dict) -> list[dict]:
    """The Table 1 rows (one per seed) of the finished cells that carry RTE."""
    rows = []
    for key, out in finished.items():
        if "rte" not in out:
            continue
        for seed, r in zip(out["rte"]["seeds"], out["rte"]["rows"], strict=True):
            rows.append({"cell": key, "particles": out["particles"], "depth": out["depth"],
                         "norm": out["norm"], "lr": out["lr"], "seed": seed, **r})
    return rows


def estimate_only(args) -> dict:
    """``--estimate``: the table for this machine's device kind (or, on CPU, for an assumed
    GPU), printed and written to ``estimate.json``."""
    out = Path(args.out) if args.out else (
        common.RUNS / "test" / NAME / "results" if args.preset == "test"
        else common.RESULTS / NAME)
    out.mkdir(parents=True, exist_ok=True)
    previous = _load(out / "results.json")
    visits = (previous or {}).get("results", {}).get("visits", [])
    kind = next((v["device_kind"] for v in reversed(visits) if v["device_kind"] != "cpu"),
                device_kind())
    est = estimate_table(PRESETS[args.preset], previous, kind, args.budget_min,
                         args.gpu_tflops)
    est["command"] = f"python -m experiments.{NAME} --preset {args.preset} --estimate"
    est["machine"] = common.machine_info()
    common.write_json(out / "estimate.json", est)
    print(format_estimate(est))
    return est


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = parse_args(argv)
    if args.estimate:
        estimate_only(args)
        return 0
    Campaign(args, argv).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
