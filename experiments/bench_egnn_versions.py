"""The EGNN training step of this checkout against that of an earlier revision (and, with
``--torch-python``, against the official PyTorch EGNN's structure), in one run.

Both sides run the same worker (:data:`WORKER`): an :class:`~geonorm_jax.models.EGNN` with
*that version's defaults* (only ``hidden`` and ``num_layers`` given), an Adam step on random
inputs drawn like the charged N-body generator's (positions ``N(0, (N/5)^{2/3})``, speeds 0.5,
charges ``±1``), compiled once, one warm-up step, then ``--steps`` timed steps. The base is
compiled as it was, with plain ``jax.jit``; this checkout with the compiler options its
:func:`geonorm_jax.xla.jit` passes (as the trainer, ``geonorm-jax bench`` and the
potentials compile). Two more sides (unless ``--no-plain``) separate the two changes:
``this_plain`` (this checkout, plain ``jax.jit``) and ``base_options`` (the base with this
checkout's compiler options). Each
measurement is a fresh process (``PYTHONPATH`` at the side's source tree); the sides alternate
for ``--rounds`` rounds, so both see the same machine load. The base revision's
``geonorm_jax`` is exported with ``git archive`` into a temporary folder (nothing in the
checkout changes).

With ``--torch-python PYTHON`` (an interpreter with ``torch``; default: the environment
variable ``GEONORM_TORCH_PYTHON``, unset: no torch side) a third side runs
``experiments/reference_models/torch_egnn.py``: the velocity EGNN written after the official
code (edge list, unfactorised first edge layer, ``index_add_``), eager PyTorch with as many
threads as CPUs, the same sizes, inputs and Adam step.

The ratio reported is the median step time of this checkout over that of the base (per
round too), and the torch median over this checkout's. Default base: the last revision
before the EGNN's execution plan (:data:`BASE_REV`: ``edge_chunk=16384``, whole-graph
chunks recomputed in full, three- and four-dimensional edge products)::

    python -m experiments.bench_egnn_versions                       # N=100, B=50, L=5
    python -m experiments.bench_egnn_versions --batch 10 --rounds 2 --out /tmp/v.json

Writes ``experiments/results/bench_egnn_versions/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from experiments import common

NAME = "bench_egnn_versions"
TORCH_SCRIPT = common.ROOT / "experiments" / "reference_models" / "torch_egnn.py"
#: The revision before ``edge_chunk="auto"`` (the defaults of the N=100 step before it).
BASE_REV = "28742fa~1"

WORKER = r"""
import json, statistics, sys, time
import jax, jax.numpy as jnp, optax
from geonorm_jax.models import EGNN
n, batch, layers, steps = (int(a) for a in sys.argv[1:5])
options = json.loads(sys.argv[5])  # compiler options of the step (the parent's choice)
kx, kv, kq = jax.random.split(jax.random.key(0), 3)
x = jax.random.normal(kx, (batch, n, 3)) * (n / 5) ** (1 / 3)
v = jax.random.normal(kv, (batch, n, 3))
v = 0.5 * v / jnp.linalg.norm(v, axis=-1, keepdims=True)
q = jnp.where(jax.random.bernoulli(kq, 0.5, (batch, n, 1)), 1.0, -1.0)
target = x + 0.1 * v
model = EGNN(hidden=64, num_layers=layers)
params = model.init(jax.random.key(1), x, v, q)["params"]
tx = optax.adam(5e-4)
state = tx.init(params)

def step(params, state):
    loss, g = jax.value_and_grad(
        lambda p: jnp.mean((model.apply({"params": p}, x, v, q) - target) ** 2))(params)
    u, state = tx.update(g, state, params)
    return optax.apply_updates(params, u), state, loss

t = time.perf_counter()
jitted = jax.jit(step, donate_argnums=(0, 1), compiler_options=options or None)
compiled = jitted.lower(params, state).compile()
compile_s = time.perf_counter() - t
params, state, loss = compiled(params, state)
loss.block_until_ready()
times = []
for _ in range(steps):
    t = time.perf_counter()
    params, state, loss = compiled(params, state)
    loss.block_until_ready()
    times.append(time.perf_counter() - t)
import geonorm_jax
print(json.dumps({"times_s": times, "compile_s": compile_s, "loss": float(loss),
                  "edge_chunk": str(model.edge_chunk), "compiler_options": options,
                  "source": geonorm_jax.__file__}))
"""


def export(rev: str, where: Path) -> Path:
    """``geonorm_jax`` of git revision ``rev`` under ``where`` (``git archive``)."""
    archive = subprocess.run(["git", "archive", rev, "geonorm_jax"], cwd=common.ROOT,
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    return where


def measure(tree: Path, args, options: dict) -> dict:
    """One fresh process of :data:`WORKER` with ``geonorm_jax`` from ``tree`` (its working
    directory too: ``python -c`` puts it first on ``sys.path``), the step compiled with the
    XLA compiler ``options``."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run(
        [sys.executable, "-c", WORKER, str(args.nodes), str(args.batch), str(args.layers),
         str(args.steps), json.dumps(options)],
        env=env, cwd=tree, check=True, capture_output=True, text=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    source = Path(row.pop("source")).resolve()
    if not source.is_relative_to(Path(tree).resolve()):
        raise RuntimeError(f"expected geonorm_jax from {tree}; the worker imported {source}")
    return row


def measure_torch(python: str, args) -> dict:
    """One fresh process of :data:`TORCH_SCRIPT` under ``python``."""
    out = subprocess.run(
        [python, str(TORCH_SCRIPT), str(args.nodes), str(args.batch), str(args.layers),
         str(args.steps), str(os.cpu_count() or 1)], check=True, capture_output=True,
        text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog=f"python -m experiments.{NAME}",
                                description=__doc__.splitlines()[0])
    p.add_argument("--base", default=BASE_REV, help=f"git revision (default {BASE_REV})")
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--steps", type=int, default=3, help="timed steps per process")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of both sides")
    p.add_argument("--torch-python", default=os.environ.get("GEONORM_TORCH_PYTHON"),
                   help="interpreter with torch for the official-structure side (optional)")
    p.add_argument("--no-plain", action="store_true",
                   help="skip the two sides that separate the plan from the compiler options")
    p.add_argument("--out", type=Path, default=common.RESULTS / NAME / "results.json")
    args = p.parse_args(argv)
    from geonorm_jax import xla

    ours = xla.compiler_options()  # what the library's jit passes on this backend
    options = {"base": {}, "this": ours, "this_plain": {}, "base_options": ours}
    sides = ({"base": [], "this": []}
             | ({} if args.no_plain else {"this_plain": [], "base_options": []})
             | ({"torch": []} if args.torch_python else {}))
    load = {"start": list(os.getloadavg())}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"base": export(args.base, Path(tmp)), "this": common.ROOT}
        for r in range(args.rounds):
            for side in sides:
                row = (measure_torch(args.torch_python, args) if side == "torch"
                       else measure(trees[side.split("_")[0]], args, options[side]))
                sides[side].append(row)
                print(f"round {r}: {side:10s} median {statistics.median(row['times_s']):.3f} "
                      f"s (edge_chunk={row['edge_chunk']}, options "
                      f"{row.get('compiler_options', '-')}, compile "
                      f"{row['compile_s']:.1f} s, loss {row['loss']:.6g})", flush=True)
    load["end"] = list(os.getloadavg())
    med = {k: statistics.median(t for row in v for t in row["times_s"]) for k, v in sides.items()}
    per_round = [statistics.median(a["times_s"]) / statistics.median(b["times_s"])
                 for a, b in zip(sides["this"], sides["base"], strict=True)]
    ratio = med["this"] / med["base"]
    torch_ratio = med["torch"] / med["this"] if "torch" in med else None
    print(f"step: base {med['base']:.3f} s, this {med['this']:.3f} s, this/base {ratio:.3f} "
          f"(per round {', '.join(f'{x:.3f}' for x in per_round)})", flush=True)
    plain_ratio = med["this_plain"] / med["base"] if "this_plain" in med else None
    if plain_ratio is not None:
        print(f"plain jax.jit: this {med['this_plain']:.3f} s, this_plain/base "
              f"{plain_ratio:.3f} (the execution plan alone); with the library's compiler "
              f"options: base {med['base_options']:.3f} s, this/base_options "
              f"{med['this'] / med['base_options']:.3f}", flush=True)
    if torch_ratio is not None:
        print(f"torch (official structure, eager): {med['torch']:.3f} s, torch/this "
              f"{torch_ratio:.2f}, torch/base {med['torch'] / med['base']:.2f}", flush=True)
    doc = {"experiment": NAME, "base_rev": args.base,
           "base_commit": subprocess.run(["git", "rev-parse", args.base], cwd=common.ROOT,
                                         capture_output=True, text=True).stdout.strip(),
           "case": {"nodes": args.nodes, "batch": args.batch, "layers": args.layers,
                    "hidden": 64, "dtype": "float32", "steps": args.steps,
                    "rounds": args.rounds},
           "median_step_s": med, "this_over_base": ratio, "per_round_ratio": per_round,
           "this_plain_over_base": plain_ratio,
           "this_over_base_options": (med["this"] / med["base_options"]
                                      if "base_options" in med else None),
           "compiler_options": options,
           "torch_over_this": torch_ratio,
           "torch_over_base": med["torch"] / med["base"] if "torch" in med else None,
           "sides": sides, "load_average": load, "machine": common.machine_info(),
           "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
           "command": f"python -m experiments.{NAME} " + " ".join(
               "PYTHON" if a == args.torch_python else a
               for a in (sys.argv[1:] if argv is None else argv))}
    common.write_json(args.out, doc)
    print(f"wrote {args.out}", flush=True)
    return doc


if __name__ == "__main__":
    main()
