"""Train-step time of geonorm-jax's Allegro and SchNet against the PyTorch reference
implementations (nequip-allegro, schnetpack) at equal size, in one run.

Run::

    python experiments/bench_reference_models.py --torch-python PATH/TO/python

``--torch-python`` (default: the environment variable ``GEONORM_TORCH_PYTHON``) is an
interpreter with ``torch``, ``nequip``, ``nequip-allegro`` and ``schnetpack`` installed; the
references are not dependencies of this package. One way (used for the committed results)::

    python -m venv --system-site-packages /tmp/torchref
    /tmp/torchref/bin/pip install torch schnetpack "nequip-allegro>=0.8" "nequip>=0.16"

The script stops with a message naming what is missing if they are not importable there.

What is measured, per model: one training step on ``B = 8`` frames of uracil (the GFN2-xTB
geometry plus seeded 0.05 Å displacements; :func:`geonorm_jax.bench.molecules.
molecule_frames`), float32, CPU: energies, forces ``F = -dE/dx`` by automatic
differentiation, the loss ``0.01 MSE(E) + 0.99 MSE(F)``, its gradient with respect to the
parameters and one Adam step (learning rate 1e-3). The JAX step is one jitted function
(:mod:`geonorm_jax.bench.molecules`); the torch step is PyTorch in training mode
(``experiments/reference_models/torch_train_step.py``), in each of ``--torch-modes``: eager,
and ``torch.compile`` (nequip's own train-time compile for Allegro; for schnetpack, whose
``torch.compile(model)`` PyTorch refuses because the forces make the loss's backward a double
backward, schnetpack's modules under ``torch.func`` with the whole gradient one compiled
graph; see ``torch_train_step.py``). A mode that fails is recorded with its error. The ratio
uses the peer's best working mode (the lower median); every mode's figures are reported. Sizes: the
published presets ``ALLEGRO_TUTORIAL`` and ``SCHNET_MD17``, translated argument by argument
into the references' constructors (layers, latent and tensor widths, ``l_max`` and parities,
Bessel / Gaussian basis size, cutoff, MLP depths and widths). SchNet runs in schnetpack's
conventions on both sides (the spec's ``"reference"`` size, :data:`geonorm_jax.models.
schnet.SCHNETPACK`), where the two compute the same function: with transferred weights
they agree in float64 to rounding (``tests/test_schnet.py``).

MACE (``mace-torch``) is left out: a ratio compares two implementations of one architecture,
and this package has no MACE (its Allegro is the nearest, a different architecture with a
different cost); mace-torch 0.3.16 also pins ``e3nn==0.4.4`` where nequip 0.19 needs
``e3nn>=0.6``, so the two cannot share the torch interpreter. The results record this under
``left_out``.

Method: each side (JAX, and torch in each mode) runs as a server in its own process,
pinned to the same ``--threads`` CPUs with that many compute threads
(``torch.set_num_threads``; ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=...
intra_op_parallelism_threads=...``); the servers start one after the other (so compile
times do not overlap) and then idle while another side runs. After compilation / a first
step and ``--warmup`` further untimed steps per side, ``--rounds`` rounds each run
``--steps`` steps of every side in turn (the side that goes first rotates), so all sides
see the same machine load, which is recorded (``os.getloadavg``) before, during every round
and after. Reported: per-step medians and best over all timed steps, ``ratio = torch median
/ JAX median`` per torch mode and for the best mode, with the median of its per-round
ratios, parameter counts, edges, JAX compile time and XLA's compiled memory, and
each process's peak RSS (``ru_maxrss``, building and compiling included), and for the JAX
step XLA's count of its floating-point operations with the rate it reaches at the median
step time, beside the rate of a 1024 x 1024 float32 matmul on the same threads.

Threads: the default is one per side. On a machine whose cores are busy with other work, more
threads than free cores make the torch step stall at OpenMP barriers (2 threads per side on 2
shared cores under a load of about 7.5: 2.5 s per Allegro step instead of 0.26 s), which
measures the oversubscription, not the implementations.

Results: ``experiments/results/bench_reference_models/results.json`` (written atomically,
after every model) and the Markdown table made from it, ``table.md`` beside it (also on
stdout); ``--from-json results.json`` rewrites the table from the JSON without running.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH_SCRIPT = ROOT / "experiments" / "reference_models" / "torch_train_step.py"
ENV_VAR = "GEONORM_TORCH_PYTHON"
DEFAULT_OUT = Path("experiments") / "results" / "bench_reference_models" / "results.json"

DEFAULT_TABLE = DEFAULT_OUT.with_name("table.md")

__all__ = ["REFERENCES", "TORCH_MODES", "LEFT_OUT", "check_references", "compare_model",
           "format_table", "machine_load", "main"]

REFERENCES = {
    "allegro": ("nequip-allegro", ("torch", "nequip", "allegro")),
    "schnet": ("schnetpack", ("torch", "schnetpack")),
}
"""Model -> (reference package, modules it needs)."""

TORCH_MODES = ("eager", "compile")
"""The torch modes tried for every reference (see the module docstring)."""

LEFT_OUT = {
    "mace": "mace-torch has no counterpart in geonorm-jax (a ratio compares implementations of "
            "one architecture; Allegro is a different architecture and cost), and mace-torch "
            "0.3.16 pins e3nn==0.4.4 where nequip 0.19 needs e3nn>=0.6 (no shared interpreter)",
}
"""Peers not measured, and why."""

# What the JAX model and the reference compute differently at equal sizes, per model.
DIFFERENCES = {
    "allegro": [
        "geonorm-jax follows the Allegro paper (Musaelian et al. 2023) and the authors' "
        "tutorial configuration; nequip-allegro 0.8 is a later revision of the architecture",
        "two-body embedding: MLP_2b(Emb(Z_i) || Emb(Z_j) || B(r) u) (JAX) vs nequip-allegro's "
        "(Emb_c(Z_i) || Emb_n(Z_j)) * Linear(B(r) u) product embedding, then the MLP",
        "tensor-product layer: an e3nn Linear that mixes the C channels per irrep after a "
        "channel-wise product (JAX: C x C weights per irrep) vs per-channel path weights "
        "(nequip-allegro: C x paths), so JAX has more weights here",
        "scalar track: nequip-allegro 0.8 is densely connected (each latent MLP reads the "
        "two-body features and every earlier layer's latent, D (L + 1) + C inputs, and the "
        "readout reads all of them, D (L_max + 1)); its latent MLPs also output the next "
        "layer's environment weights, and a linear map projects the two-body features to "
        "the first layer's. The JAX model (the paper) has the residual update "
        "(x + a MLP) / sqrt(1 + a^2) with a learned a per layer, separate environment-weight "
        "maps, and a readout of the last latent",
        "nequip keeps positions, edge lengths and the summed energies in float64 "
        "(model_dtype float32 covers weights and features)",
    ],
    "schnet": [
        "the same function: layers, widths, 100-species table, sum over neighbours, SiLU "
        "readout, Gaussian width = spacing (gamma = 50 Å^-2 instead of SCHNET_MD17's 10) and "
        "float32 Gaussian grid on both sides (the spec's schnetpack convention); with "
        "transferred weights the two agree in float64 to rounding",
        "graph: JAX masks all B A (A - 1) ordered pairs to r < r_c inside the step; "
        "schnetpack gets the pairs within r_c, built once outside the step",
    ],
}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def machine_load() -> list[float]:
    """The 1, 5 and 15 minute load averages (runnable processes; compare with the CPU count)."""
    return [round(x, 2) for x in os.getloadavg()]


def check_references(torch_python: str | None, models: list[str]) -> str | None:
    """None if ``torch_python`` runs and imports every module the ``models`` need, else the
    message to print."""
    if not torch_python:
        return (f"no torch interpreter: pass --torch-python or set {ENV_VAR} to a Python "
                f"with torch, nequip-allegro and schnetpack installed")
    modules = sorted({m for model in models for m in REFERENCES[model][1]})
    code = ("import importlib, json, sys\nbad = []\n"
            f"sys.path.insert(0, {str(TORCH_SCRIPT.parent)!r})\n"
            f"for m in {modules!r}:\n"
            "    try:\n"
            "        if m == 'schnetpack':  # the torch_train_step import (T_co, torch >= 2.5)\n"
            "            importlib.import_module('torch_train_step').import_schnetpack()\n"
            "        importlib.import_module(m)\n"
            "    except Exception as e:\n        bad.append(f'{m}: {type(e).__name__}: {e}')\n"
            "print(json.dumps(bad))")
    try:
        proc = subprocess.run([torch_python, "-c", code], capture_output=True, text=True,
                              timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot run the torch interpreter {torch_python!r}: {e}"
    if proc.returncode != 0:
        return f"{torch_python} failed: {proc.stderr[-800:]}"
    bad = json.loads(proc.stdout.strip().splitlines()[-1])
    if bad:
        needed = ", ".join(REFERENCES[m][0] for m in models)
        return (f"the reference implementations are not installed for {torch_python} "
                f"(needs torch and {needed}): " + "; ".join(bad))
    return None


class _Server:
    """One side's server process (the protocol of geonorm_jax.bench.molecules.serve)."""

    def __init__(self, name: str, cmd: list[str], env: dict):
        self.name = name  # each server pins itself to its CPUs (its ``threads`` option)
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env, cwd=ROOT)

    def expect(self, tag: str):
        for line in self.proc.stdout:
            if line.startswith(tag + " "):
                return json.loads(line[len(tag) + 1:])
            if line.startswith("MISSING "):
                raise RuntimeError(f"{self.name}: missing {line[8:].strip()}")
            if line.startswith("FAILED "):
                raise RuntimeError(f"{self.name}: {json.loads(line[7:])}")
        err = self.proc.stderr.read()[-2000:]
        raise RuntimeError(f"{self.name} exited (status {self.proc.wait()}) before {tag}: "
                           f"{err}")

    def send(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def run(self, steps: int) -> list[float]:
        self.send(f"RUN {steps}")
        return self.expect("TIMES")

    def close(self) -> dict:
        self.send("QUIT")
        done = self.expect("DONE")
        self.proc.wait(timeout=60)
        return done

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _summary(times: list[float]) -> dict:
    s = sorted(times)
    return {"step_ms_median": 1e3 * statistics.median(s), "step_ms_best": 1e3 * s[0],
            "step_ms_p90": 1e3 * s[int(0.9 * (len(s) - 1))], "steps_timed": len(s)}


def _fail_text(error) -> str:
    return " ".join(str(error).split())[-200:].replace("|", "/")


def compare_model(model: str, *, frames_path: str, size: str, batch: int, molecule: str,
                  relax: bool, threads: int, rounds: int, steps: int, torch_python: str,
                  torch_modes: tuple[str, ...] = TORCH_MODES, warmup: int = 3,
                  log=print) -> dict:
    """Interleaved timing of one model: JAX and the reference in each of ``torch_modes``; a
    result row (see the module doc). A torch mode that fails to build or to run its first
    step is recorded under ``torch_modes`` with its error; the row fails only if all do."""
    from geonorm_jax.bench.molecules import FORCE_WEIGHT, LEARNING_RATE, model_kwargs
    from geonorm_jax.bench.roofline import flop_rate

    hyper = model_kwargs(model, size)
    case = dict(model=model, size=size, molecule=molecule, batch=batch, relax=relax)
    xla = (f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
           f"intra_op_parallelism_threads={threads}")
    jax_env = {**os.environ, "PYTHONUNBUFFERED": "1", "JAX_PLATFORMS": "cpu",
               "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " " + xla).strip()}
    torch_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads),
                 "MKL_NUM_THREADS": str(threads), "CUDA_VISIBLE_DEVICES": ""}
    jax_cfg = {"case": case, "frames": frames_path, "threads": threads}
    commands = {"jax": ([sys.executable, "-m", "geonorm_jax.bench.molecules", "serve",
                         json.dumps(jax_cfg)], jax_env, "geonorm-jax")}
    for mode in torch_modes:
        cfg = {"model": model, "hyper": hyper, "frames": frames_path, "threads": threads,
               "seed": 0, "learning_rate": LEARNING_RATE, "force_weight": FORCE_WEIGHT,
               "compile_mode": mode}
        commands[mode] = ([torch_python, str(TORCH_SCRIPT), json.dumps(cfg)], torch_env,
                          f"{REFERENCES[model][0]} ({mode})")
    sides, ready, failed = {}, {}, {}
    try:
        for key, (cmd, env, name) in commands.items():  # one at a time: compiles don't overlap
            sides[key] = _Server(name, cmd, env)
            try:
                ready[key] = sides[key].expect("READY")
            except RuntimeError as e:
                if key == "jax":
                    raise
                sides.pop(key).kill()
                failed[key] = {"mode": key, "error": str(e)}
                log(f"  {model}: torch {key} failed: {_fail_text(e)}")
        if len(sides) == 1:
            raise RuntimeError("no torch mode ran: " + "; ".join(
                _fail_text(f["error"]) for f in failed.values()))
        log(f"  {model}: ready (params JAX {ready['jax']['params']:,}, torch "
            f"{ready[next(k for k in sides if k != 'jax')]['params']:,}); load "
            f"{machine_load()}")
        warm = {k: s.run(warmup) if warmup else [] for k, s in sides.items()}
        keys = list(sides)
        times = {k: [] for k in keys}
        medians, load = [], []
        for r in range(rounds):
            order = keys[r % len(keys):] + keys[:r % len(keys)]
            got = {k: sides[k].run(steps) for k in order}
            for k in keys:
                times[k] += got[k]
            medians.append({k: statistics.median(v) for k, v in got.items()})
            load.append(machine_load()[0])
        done = {k: s.close() for k, s in sides.items()}
    finally:
        for s in sides.values():
            s.kill()
    res = {k: {**ready[k], **done[k], **_summary(times[k]), "times_s": times[k],
               "warmup_times_s": warm[k]} for k in keys}
    if "xla_gflop" in res["jax"]:
        res["jax"]["gflops_per_s"] = flop_rate(res["jax"]["xla_gflop"],
                                               res["jax"]["step_ms_median"] / 1e3)
    jax_ms = res["jax"]["step_ms_median"]
    modes = {m: {"mode": m, **res[m]} if m in res else failed[m] for m in torch_modes}
    ratios = {m: res[m]["step_ms_median"] / jax_ms for m in res if m != "jax"}
    best = min(ratios, key=ratios.get)
    round_ratios = [m[best] / m["jax"] for m in medians]
    log(f"  {model}: JAX {jax_ms:.1f} ms, " + ", ".join(
        f"torch {m} {res[m]['step_ms_median']:.1f} ms" for m in ratios)
        + f"; torch/JAX {ratios[best]:.2f} ({best})")
    return {
        "model": model, "reference": REFERENCES[model][0], "size": size, "hyper": hyper,
        "jax": res["jax"], "torch": modes[best], "torch_best_mode": best,
        "torch_modes": modes, "ratio_torch_over_jax": ratios[best], "ratio_by_mode": ratios,
        "ratio_per_round_median": statistics.median(round_ratios),
        "ratio_per_round": round_ratios, "load_1min_per_round": load,
        "params_relative_difference": (modes[best]["params"] - res["jax"]["params"])
        / res["jax"]["params"],
        "differences": DIFFERENCES[model],
    }


def format_table(results: dict) -> str:
    """Markdown table of a results dict (every figure from it)."""
    m = results["machine"]
    load = results.get("load", {})
    lines = [f"Machine: {m['cpu']}, {m['cpu_count']} logical CPUs, shared; load average "
             f"(1/5/15 min) {load.get('start')} at the start, {load.get('end')} at the end; "
             f"{results['threads']} thread(s) per side; {results['molecule']}, "
             f"B = {results['batch']}, float32; {results.get('warmup', 0)} warm-up steps, then "
             f"{results['rounds']} rounds x {results['steps']} steps per side, interleaved. "
             f"Command: `{results['command']}`.", "",
             "| model | side | params | edges | step ms (median / best) | torch/JAX (medians; "
             "per-round median) | peak RSS GB | compile s | XLA temp MB | XLA GFLOP "
             "(GFLOP/s; matmul GFLOP/s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["models"]:
        if "error" in r:
            lines.append(f"| {r['model']} | failed: {_fail_text(r['error'])} |")
            continue
        s = r["jax"]
        temp = s.get("xla_temp_gb")
        lines.append(
            f"| {r['model']} | geonorm-jax | {s['params']:,} | {s['edges']} | "
            f"{s['step_ms_median']:.1f} / {s['step_ms_best']:.1f} |  | "
            f"{s['peak_rss_gb']:.2f} | {s['compile_s']:.1f} | "
            f"{'' if temp is None else format(1e3 * temp, '.1f')} | "
            + (f"{s['xla_gflop']:.2f} ({s['gflops_per_s']:.1f}; "
               f"{s['matmul_gflops_per_s']:.1f})" if "xla_gflop" in s else "") + " |")
        for mode, t in r.get("torch_modes", {"eager": r["torch"]}).items():
            label = f"{r['reference']} ({mode})"
            if "error" in t:
                lines.append(f"| {r['model']} | {label} | failed: {_fail_text(t['error'])} |")
                continue
            ratio = f"{t['step_ms_median'] / s['step_ms_median']:.2f}"
            if mode == r.get("torch_best_mode", mode):
                ratio = f"**{ratio}**; {r['ratio_per_round_median']:.2f} (best mode)"
            lines.append(
                f"| {r['model']} | {label} | {t['params']:,} | {t['edges']} | "
                f"{t['step_ms_median']:.1f} / {t['step_ms_best']:.1f} | {ratio} | "
                f"{t['peak_rss_gb']:.2f} | {t['first_step_s']:.1f} (first step) |  |  |")
    for name, why in results.get("left_out", {}).items():
        lines.append(f"\nLeft out: {name}: {why}.")
    return "\n".join(lines)


def _public_args(argv: list[str]) -> list[str]:
    """The arguments without the torch interpreter's path and without absolute paths (the
    command recorded in the results names no machine paths)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            out.append("$" + ENV_VAR)
        elif a == "--torch-python":
            skip = True
            out.append(a)
        elif a.startswith("--torch-python="):
            out.append("--torch-python=$" + ENV_VAR)
        else:
            out.append("PATH" if a.startswith("/") else a)
    return out


def _write_table(results: dict, path: str) -> str:
    from geonorm_jax._io import atomic_write_text

    table = format_table(results)
    if path:
        atomic_write_text(path, table + "\n")
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--torch-python", default=os.environ.get(ENV_VAR),
                    help=f"interpreter with the references (default: ${ENV_VAR})")
    ap.add_argument("--models", nargs="+", default=["allegro", "schnet"],
                    choices=sorted(REFERENCES))
    ap.add_argument("--size", default="published", help="published or tiny")
    ap.add_argument("--molecule", default="uracil")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--no-relax", action="store_true", help="skip the GFN2-xTB relaxation")
    ap.add_argument("--threads", type=int, default=1, help="CPUs and compute threads per side")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--steps", type=int, default=5, help="steps per side per round")
    ap.add_argument("--warmup", type=int, default=3,
                    help="untimed steps per side after the first one")
    ap.add_argument("--torch-modes", nargs="+", default=list(TORCH_MODES), choices=TORCH_MODES,
                    help="torch modes to time (the ratio uses the best that works)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="results JSON; '' for none")
    ap.add_argument("--table", default=str(DEFAULT_TABLE),
                    help="Markdown table written from the results; '' for none")
    ap.add_argument("--from-json", default=None, metavar="RESULTS",
                    help="only rewrite --table from this results JSON (no run)")
    args = ap.parse_args(argv)

    if args.from_json:
        print(_write_table(json.loads(Path(args.from_json).read_text()), args.table))
        return 0
    problem = check_references(args.torch_python, args.models)
    if problem:
        print(f"bench_reference_models: {problem}", file=sys.stderr)
        return 2

    import numpy as np

    from geonorm_jax._io import write_json_atomic
    from geonorm_jax.bench.machine import machine_info
    from geonorm_jax.bench.molecules import molecule_frames

    frames = molecule_frames(args.molecule, args.batch, relax=not args.no_relax)
    command = "python experiments/bench_reference_models.py " + " ".join(
        _public_args(argv if argv is not None else sys.argv[1:]))
    machine = machine_info()
    machine["affinity_cpus"] = len(os.sched_getaffinity(0))
    results = {
        "started": _now(), "finished": None, "command": command,
        "machine": machine, "load": {"start": machine_load(), "end": None},
        "molecule": args.molecule, "batch": args.batch,
        "atoms": int(len(frames.atomic_numbers)), "relaxed": not args.no_relax,
        "avg_num_neighbors": frames.avg_num_neighbors, "threads": args.threads,
        "rounds": args.rounds, "steps": args.steps, "warmup": args.warmup,
        "torch_modes": args.torch_modes, "models": [], "left_out": LEFT_OUT,
        "thread_settings": {
            "jax": f"CPU affinity {args.threads} CPU(s); XLA_FLAGS="
                   f"--xla_cpu_multi_thread_eigen={'true' if args.threads > 1 else 'false'} "
                   f"intra_op_parallelism_threads={args.threads}",
            "torch": f"CPU affinity {args.threads} CPU(s); torch.set_num_threads("
                     f"{args.threads}), set_num_interop_threads(1), OMP_NUM_THREADS="
                     f"{args.threads}"},
        "loss": "0.01 MSE(E) + 0.99 MSE(F), Adam lr 1e-3, seeded Gaussian targets",
    }
    print(f"machine: {machine['cpu']}, {machine['cpu_count']} logical CPUs "
          f"({machine['affinity_cpus']} usable), load average {results['load']['start']}")
    print(f"{args.molecule}: {results['atoms']} atoms, B = {args.batch}, "
          f"avg neighbours {frames.avg_num_neighbors:.2f}; {args.threads} thread(s) per side; "
          f"torch modes {' '.join(args.torch_modes)}")
    with tempfile.TemporaryDirectory() as tmp:
        frames_path = str(Path(tmp) / "frames.npz")
        np.savez(frames_path, **frames._asdict())
        for model in args.models:
            try:
                row = compare_model(model, frames_path=frames_path, size=args.size,
                                    batch=args.batch, molecule=args.molecule,
                                    relax=not args.no_relax, threads=args.threads,
                                    rounds=args.rounds, steps=args.steps,
                                    torch_python=args.torch_python,
                                    torch_modes=tuple(args.torch_modes), warmup=args.warmup)
            except Exception as e:  # noqa: BLE001 - recorded in the results
                row = {"model": model, "error": f"{type(e).__name__}: {e}"}
                print(f"  {model}: failed: {row['error'][-500:]}")
            results["models"].append(row)
            if args.out:
                write_json_atomic(args.out, results)
    results["finished"] = _now()
    results["load"]["end"] = machine_load()
    if args.out:
        write_json_atomic(args.out, results)
    print(_write_table(results, args.table))
    return 0 if all("error" not in r for r in results["models"]) else 1


if __name__ == "__main__":
    sys.exit(main())
