"""The benchmark suite behind ``geonorm-jax bench``: presets, runs, resume, results file.

Sections (``--sections``):

* ``model``: the train step of the dense and kNN EGNN over the N sweep (``scaling`` rows,
  same ``B``, ``L``, ``H`` for every N) and the configurations named by the performance
  targets (``target`` rows). Each case runs in a fresh process, so its peak RSS is its own.
* ``norms``: the cost of every catalogue layer inside a full EGNN step (one process).
* ``data``: N-body generation throughput per N.
* ``epoch``: one epoch of the trainer on the GeoNorm paper's N = 100, depth 5 configuration
  (``geonorm-paper`` preset with ``particles=100, layers=5``), timed after compilation, and
  extrapolated to 1000 epochs (needs the N = 100 data set; generated and cached if missing).
* ``molecules``: the energy-and-force train step of Allegro, SchNet and GemNet-T on uracil, batch 8
  (:mod:`geonorm_jax.bench.molecules`; each case in a fresh process).

After every case the results file is rewritten atomically; ``--resume`` keeps the rows of an
earlier run of the same preset whose configuration is unchanged, so an interrupted run
continues where it stopped.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from geonorm_jax._io import write_json_atomic
from geonorm_jax.bench.model import ModelCase

__all__ = ["PRESETS", "SECTIONS", "model_cases", "run_suite", "evaluate_targets",
           "default_out", "format_tables"]

SECTIONS = ("model", "norms", "data", "epoch", "molecules")
SCHEMA = 1

_SWEEP = (5, 20, 50, 100, 200, 500, 1000)
# The paper-preset epoch: GeoNorm paper, N = 100, depth 5.
_PAPER_EPOCH = dict(preset="geonorm-paper", overrides={"data": {"particles": 100},
                                                       "model": {"num_layers": 5}})


def _targets(small_s: float, large_s: float) -> list[ModelCase]:
    """The papers' three target steps: the EGNN paper's N = 5 (batch 100, 4 layers), the
    GeoNorm paper's N = 100 (batch 50, 5 layers; also with bfloat16 matrix products) and
    N = 1000 on a kNN edge list (k = 32);
    ``small_s``/``large_s``: time budget of the first and of the other two."""
    return [
        ModelCase("target-dense-n5-b100-l4", 5, 100, 4, group="target", seconds=small_s),
        ModelCase("target-dense-n100-b50-l5", 100, 50, 5, group="target", seconds=large_s),
        ModelCase("target-dense-n100-b50-l5-bf16", 100, 50, 5, group="target",
                  seconds=large_s, precision="bfloat16"),
        ModelCase("target-knn32-n1000-b50-l5", 1000, 50, 5, "knn", 32, group="target",
                  seconds=large_s),
    ]


PRESETS: dict[str, dict] = {
    # Seconds: for tests and a first look.
    "quick": {
        "sections": ("model", "norms", "data"),
        "scaling": dict(nodes=(5, 12), batch=2, layers=2, hidden=8, neighbors=4,
                        dense_max=12, remat_from=12, seconds=0.2, max_repeats=3),
        "targets": [],
        "norms": dict(names=["geo_norm", "layer_norm", "weight_norm"], nodes=5, batch=2,
                      layers=2, hidden=8, pairs=2),
        "data": dict(particles=(5,), seconds_per_n=0.2, steps=300),
        "epoch": dict(preset="test", overrides={}),
    },
    # About 25 minutes on 2 CPU cores.
    "cpu": {
        "sections": ("model", "norms", "data", "molecules"),
        "scaling": dict(nodes=_SWEEP, batch=8, layers=4, hidden=64, neighbors=32,
                        dense_max=1000, remat_from=500, seconds=8.0, max_repeats=20),
        "targets": _targets(8.0, 20.0),
        "norms": dict(names=None, nodes=20, batch=50, layers=4, hidden=64, pairs=8),
        "data": dict(particles=_SWEEP, seconds_per_n=5.0, steps=5000),
        "epoch": _PAPER_EPOCH,
    },
    # An accelerator: the CPU sweep plus larger kNN systems, and the paper-preset epoch.
    "gpu": {
        "sections": ("model", "norms", "data", "epoch", "molecules"),
        "scaling": dict(nodes=_SWEEP + (2000, 5000, 10000), batch=8, layers=4, hidden=64,
                        neighbors=32, dense_max=1000, remat_from=1000, seconds=5.0,
                        max_repeats=50),
        "targets": _targets(5.0, 5.0),
        "norms": dict(names=None, nodes=20, batch=50, layers=4, hidden=64, pairs=20),
        "data": dict(particles=_SWEEP, seconds_per_n=5.0, steps=5000),
        "epoch": _PAPER_EPOCH,
    },
}


def model_cases(preset: dict) -> list[ModelCase]:
    """The scaling sweep (dense up to ``dense_max``, kNN for every N) and the target cases."""
    s = preset["scaling"]
    cases = []
    for graph in ("dense", "knn"):
        for n in s["nodes"]:
            if graph == "dense" and n > s["dense_max"]:
                continue
            remat = s["remat_from"] is not None and n >= s["remat_from"]
            cases.append(ModelCase(
                f"{graph}-n{n}-b{s['batch']}-l{s['layers']}", n, s["batch"], s["layers"],
                graph, s["neighbors"] if graph == "knn" else None, s["hidden"], remat,
                seconds=s["seconds"], max_repeats=s["max_repeats"]))
    return cases + list(preset["targets"])


def default_out(backend: str) -> Path:
    """``experiments/results/bench/results.json`` (CPU) or ``results_<backend>.json``."""
    name = "results.json" if backend == "cpu" else f"results_{backend}.json"
    return Path("experiments") / "results" / "bench" / name


# ------------------------------------------------------------------------------------------
# Workers (each case in a fresh process)
# ------------------------------------------------------------------------------------------

def _worker_command(kind: str, payload: dict) -> list[str]:
    return [sys.executable, "-m", "geonorm_jax.bench.worker", kind, json.dumps(payload)]


def _run_worker(kind: str, payload: dict, on_row: Callable[[dict], None]) -> str | None:
    """Run a worker; every stdout line ``ROW {json}`` goes to ``on_row``. Returns the error
    text (stderr tail) if the worker failed, else None."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_worker_command(kind, payload), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:
        if line.startswith("ROW "):
            on_row(json.loads(line[4:]))
    stderr = proc.stderr.read()
    if proc.wait() != 0:
        return stderr[-1500:] or f"exit status {proc.returncode}"
    return None


def _in_process(kind: str, payload: dict, on_row: Callable[[dict], None]) -> str | None:
    from geonorm_jax.bench import worker

    try:
        worker.run(kind, payload, on_row)
    except Exception as e:  # noqa: BLE001 - recorded in the row
        return f"{type(e).__name__}: {e}"
    return None


# ------------------------------------------------------------------------------------------
# The suite
# ------------------------------------------------------------------------------------------

def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _same_case(row: dict, case: ModelCase) -> bool:
    return all(row.get(k) == v for k, v in case.to_dict().items()
               if k not in ("seconds", "max_repeats"))


def run_suite(preset_name: str, *, sections=None, out: str | Path | None = None,
              plot: str | Path | None = None, resume: bool = False, subprocesses: bool = True,
              only: list[str] | None = None, command: str = "",
              log: Callable[[str], None] = print) -> dict:
    """Run the suite; returns the results dict (also written to ``out``)."""
    import jax

    from geonorm_jax.bench.machine import copy_rate, machine_info, matmul_rate
    from geonorm_jax.bench.scaling import plot_scaling, scaling_fits

    if preset_name not in PRESETS:
        raise ValueError(f"preset: expected one of {list(PRESETS)}; received {preset_name!r}")
    preset = PRESETS[preset_name]
    sections = tuple(sections or preset["sections"])
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise ValueError(f"sections: expected some of {list(SECTIONS)}; received {bad}")
    out = Path(out) if out else default_out(jax.default_backend())
    previous = {}
    if resume and out.is_file():
        previous = json.loads(out.read_text())
        if previous.get("preset") != preset_name or previous.get("schema") != SCHEMA:
            raise ValueError(f"--resume: {out} holds preset {previous.get('preset')!r}; "
                             f"received {preset_name!r} (use another --out)")
    results = {
        "schema": SCHEMA, "preset": preset_name, "command": command,
        "started": previous.get("started", _now()), "finished": None,
        "machine": machine_info(), "matmul_gflops_per_s": matmul_rate() / 1e9,
        "copy_gbytes_per_s": copy_rate() / 1e9,
        "model": previous.get("model", []), "norms": previous.get("norms", []),
        "data": previous.get("data", []), "epoch": previous.get("epoch"),
        "molecules": previous.get("molecules", []),
    }
    save = lambda: write_json_atomic(out, results)
    log(f"machine: {results['machine']['cpu']} ({results['machine']['cpu_count']} cores), "
        f"device {results['machine']['device']}, jax {results['machine']['versions']['jax']}; "
        f"square matmul {results['matmul_gflops_per_s']:.1f} GFLOP/s, array copy "
        f"{results['copy_gbytes_per_s']:.1f} GB/s")
    call = _run_worker if subprocesses else _in_process

    if "model" in sections:
        for case in model_cases(preset):
            if only and case.name not in only:
                continue
            if any(_same_case(r, case) and "step_ms_best" in r for r in results["model"]):
                log(f"  {case.name}: kept from the earlier run")
                continue
            results["model"] = [r for r in results["model"] if r.get("name") != case.name]
            t = time.perf_counter()
            rows = []
            err = call("case", case.to_dict(), rows.append)
            row = rows[0] if rows else {**case.to_dict(), "error": err}
            results["model"].append(row)
            save()
            log(f"  {case.name}: " + (f"{row['step_ms_best']:.1f} ms/step, edges "
                                      f"{row.get('edge_plan')}" if "step_ms_best" in row
                                      else f"failed: {str(row.get('error'))[-300:]}")
                + f" ({time.perf_counter() - t:.0f} s)")

    if "norms" in sections:
        n = preset["norms"]
        done = {r["norm"] for r in results["norms"]} if resume else set()
        if not resume:
            results["norms"] = []
        base = ModelCase(f"norms-n{n['nodes']}", n["nodes"], n["batch"], n["layers"],
                         hidden=n["hidden"])
        from geonorm_jax.norms import catalog

        names = [x for x in (n["names"] or catalog.names()) if x not in done]
        if names:
            def on_norm(row):
                results["norms"].append(row)
                save()
                log(f"  norm {row['norm']}: " + (
                    f"{row['cost_percent']:+.1f}%" if "cost_percent" in row
                    else row.get("skipped") or row.get("error", "")))

            err = call("norms", {"base": base.to_dict(), "names": names,
                                 "pairs": n["pairs"]}, on_norm)
            if err:
                log(f"  norms worker failed: {err[-500:]}")

    if "data" in sections:
        d = preset["data"]
        done = {r["particles"] for r in results["data"]} if resume else set()
        if not resume:
            results["data"] = []
        todo = [p for p in d["particles"] if p not in done]
        if todo:
            def on_data(row):
                results["data"].append(row)
                save()
                log(f"  data N={row['particles']}: {row['trajectories_per_s']:.3g} traj/s"
                    + (" (extrapolated)" if row.get("extrapolated") else ""))

            err = call("data", {**d, "particles": todo}, on_data)
            if err:
                log(f"  data worker failed: {err[-500:]}")

    if "epoch" in sections and not (resume and results.get("epoch")):
        rows = []
        err = call("epoch", preset["epoch"], rows.append)
        results["epoch"] = rows[0] if rows else {"error": err}
        save()

    if "molecules" in sections and not (resume and results.get("molecules")):
        from geonorm_jax.bench.molecules import run_molecules

        results["molecules"] = run_molecules(preset_name, subprocesses=subprocesses, log=log)
        save()

    results["scaling"] = scaling_fits(results["model"])
    results["targets"] = evaluate_targets(results)
    results["finished"] = _now()
    save()
    if plot is None:
        plot = out.with_name(out.stem.replace("results", "scaling") + ".png")
    if plot and results["scaling"]:
        m = results["machine"]
        s = preset["scaling"]
        plot_scaling(results["scaling"], plot,
                     title=f"EGNN train step, B={s['batch']}, L={s['layers']}, H={s['hidden']},"
                           f" k={s['neighbors']}; {m['device']}")
        results["plot"] = str(plot)
        save()
    return results


def _row(results: dict, name: str) -> dict | None:
    return next((r for r in results["model"] if r.get("name") == name and "step_ms_best" in r),
                None)


def evaluate_targets(results: dict) -> list[dict]:
    """The benchmark's performance targets (listed in the README's bench section: matmul-rate
    fraction and peak RSS of the dense N = 100 step, the kNN N = 1000 to dense N = 100 step
    ratio, the 1000-epoch time on a GPU), each with the measured value and met/missed."""
    out = []
    backend = results["machine"]["backend"]
    n100 = _row(results, "target-dense-n100-b50-l5")
    n1000 = _row(results, "target-knn32-n1000-b50-l5")
    if n100 and backend == "cpu":
        out.append(dict(target="dense N=100 B=50 L=5: >= 30% of the square-matmul rate (CPU)",
                        value=n100["fraction_of_matmul"], limit=0.30,
                        met=n100["fraction_of_matmul"] >= 0.30))
    if n100:
        out.append(dict(target="dense N=100 B=50 L=5: peak RSS <= 3 GB",
                        value=n100["peak_rss_gb"], limit=3.0, met=n100["peak_rss_gb"] <= 3.0))
    if n100 and n1000:
        ratio = n1000["step_ms_best"] / n100["step_ms_best"]
        out.append(dict(target="kNN k=32 N=1000 step <= 10x the dense N=100 step (B=50, L=5)",
                        value=ratio, limit=10.0, met=ratio <= 10.0))
    epoch = results.get("epoch") or {}
    if "epoch_s" in epoch and backend != "cpu":
        minutes = 1000 * epoch["epoch_s"] / 60
        out.append(dict(target="1000-epoch N=100 run under 30 minutes (GPU)", value=minutes,
                        limit=30.0, met=minutes < 30.0))
    return out


def _roofline_row(r: dict) -> str:
    f = lambda key, fmt: "" if r.get(key) is None else format(r[key], fmt)
    return (f"| {r['name']} | {r.get('precision', 'float32')} | {f('xla_gflop', '.3g')} | "
            f"{f('xla_gbytes', '.3g')} | {f('xla_gflops_per_s', '.1f')} | "
            f"{f('xla_gbytes_per_s', '.1f')} | {f('xla_fraction_of_matmul', '.3f')} | "
            f"{f('xla_fraction_of_copy', '.3f')} | {f('intensity_flop_per_byte', '.2f')} | "
            f"{r.get('bound') or ''} | {f('roofline_fraction', '.3f')} | "
            f"{r.get('edge_plan') or ''} |")


def format_tables(results: dict) -> str:
    """Markdown tables of a results dict (what ``geonorm-jax bench`` prints)."""
    lines = []
    m = results["machine"]
    copy = results.get("copy_gbytes_per_s")
    lines.append(f"Machine: {m['cpu']}, {m['cpu_count']} cores; device {m['device']}; "
                 f"jax {m['versions']['jax']}; square matmul "
                 f"{results['matmul_gflops_per_s']:.1f} GFLOP/s (float32)"
                 + (f"; array copy {copy:.1f} GB/s" if copy else "") + ".")
    if results["model"]:
        lines += ["", "| case | graph | N | B | L | k | remat | step ms (best / median) | "
                  "GFLOP/s | of matmul | peak RSS GB | XLA temp GB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in results["model"]:
            if "step_ms_best" not in r:
                lines.append(f"| {r['name']} | failed: {str(r.get('error'))[-80:]} |")
                continue
            dev = r.get("device_peak_gb")
            mem = f"{r['peak_rss_gb']:.2f}" + (f" (device {dev:.2f})" if dev else "")
            temp = r.get("xla_temp_gb")
            lines.append(
                f"| {r['name']} | {r['graph']} | {r['nodes']} | {r['batch']} | {r['layers']} | "
                f"{r['k'] or ''} | {'yes' if r['remat'] else ''} | {r['step_ms_best']:.1f} / "
                f"{r['step_ms_median']:.1f} | {r['step_gflops_per_s']:.1f} | "
                f"{r['fraction_of_matmul']:.2f} | {mem} | "
                f"{'' if temp is None else f'{temp:.3f}'} |")
        lines += ["", "Roofline (XLA's cost analysis of the compiled step, of its unchunked "
                  "twin for chunked steps; fractions of the measured matmul and copy rates):",
                  "", "| case | precision | XLA GFLOP | XLA GB | GFLOP/s | GB/s | of matmul | "
                  "of copy | FLOP/byte | bound | of roofline | edges |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in results["model"]:
            if "step_ms_best" in r:
                lines.append(_roofline_row(r))
    for graph, fit in (results.get("scaling") or {}).items():
        large = fit["exponent_large"]
        if fit["exponent_all"] is None:
            continue
        lines.append(
            f"\nStep time ~ N^p, {graph}: p = {fit['exponent_all']:.2f} over N = "
            f"{fit['nodes'][0]}..{fit['nodes'][-1]}"
            + (f", p = {large:.2f} over N >= {fit['n_min']}" if large is not None else "")
            + f" (expected {fit['expected']:g} when the edge work dominates)")
    if results["norms"]:
        lines += ["", "| norm | kind | place | step ms (none / norm) | cost |",
                  "|---|---|---|---|---|"]
        for r in results["norms"]:
            if "cost_percent" in r:
                lines.append(f"| {r['norm']} | {r['kind']} | {r['place']} | "
                             f"{r['step_ms_none']:.1f} / {r['step_ms_norm']:.1f} | "
                             f"{r['cost_percent']:+.1f}% |")
            else:
                lines.append(f"| {r['norm']} | {r['kind']} | — | — | "
                             f"{r.get('skipped') or 'error: ' + str(r.get('error'))[:80]} |")
    if results["data"]:
        lines += ["", "| N | trajectories/s (5000 steps) | ns per pair-step | timed | "
                  "extrapolated |", "|---|---|---|---|---|"]
        for r in results["data"]:
            lines.append(f"| {r['particles']} | {r['trajectories_per_s']:.3g} | "
                         f"{r['ns_per_pair_step']:.2f} | {r['trajectories']} x "
                         f"{r['steps_timed']} steps | {'yes' if r['extrapolated'] else 'no'} |")
    e = results.get("epoch")
    if e and "epoch_s" in e:
        lines.append(f"\nOne epoch ({e['description']}): {e['epoch_s']:.2f} s after compilation "
                     f"({e['compile_s']:.0f} s compile); 1000 epochs ≈ "
                     f"{1000 * e['epoch_s'] / 60:.1f} min.")
    elif e:
        lines.append(f"\nEpoch timing failed: {str(e.get('error'))[-300:]}")
    if results.get("targets"):
        lines += ["", "| target | measured | met |", "|---|---|---|"]
        for t in results["targets"]:
            met = "met" if t["met"] else "MISSED"
            lines.append(f"| {t['target']} | {t['value']:.3g} | {met} |")
    if results.get("molecules"):
        from geonorm_jax.bench.molecules import format_molecules

        lines += ["", format_molecules(results["molecules"])]
    return "\n".join(lines)
