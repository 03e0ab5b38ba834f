"""GemNet-T's triplet sums chunked by the execution plan against unchunked: step time and XLA
temporaries of one train step, in alternating fresh processes.

The published GemNet-T (:data:`~geonorm_jax.models.gemnet.GEMNET_T_MD17`) on ``--batch``
frames of uracil (GFN2-xTB geometry plus 0.05 Å displacements; batch 128 gives 16,896 edges,
above the CPU's ``CPU_WHOLE``), the train step of :mod:`geonorm_jax.bench.molecules` (energies,
forces, the energy-and-force loss, its gradient, Adam), compiled by :func:`geonorm_jax.xla.jit`,
with ``triplet_chunk=None`` and ``"auto"``; each side in its own process, ``--rounds`` rounds,
best of ``--steps`` steps after one untimed step. Writes
``experiments/results/bench_triplet_chunks/results.json``::

    python -m experiments.bench_triplet_chunks                  # batch 128, 2 rounds (~5 min)
    python -m experiments.bench_triplet_chunks --batch 4 --rounds 1 --steps 1 --no-relax
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from experiments import common

NAME = "bench_triplet_chunks"
SIDES = {"unchunked": None, "auto": "auto"}


def measure(triplet_chunk, batch: int, steps: int, relax: bool) -> dict:
    """One side in this process: the plan, XLA's temporary bytes and the step times."""
    import jax
    import jax.numpy as jnp

    from geonorm_jax.bench.molecules import build_train_step, model_kwargs, molecule_frames
    from geonorm_jax.models import registry
    from geonorm_jax.models.molecular_graph import batch_frames

    spec = registry.get("gemnet")
    kwargs = model_kwargs("gemnet")
    cutoff = spec.cutoff_of(kwargs)
    frames = molecule_frames("uracil", batch, relax=relax, cutoff=cutoff)
    model = spec.build({**kwargs, "triplet_chunk": triplet_chunk})
    pos = jnp.asarray(frames.positions, jnp.float32)
    z = jnp.asarray(frames.atomic_numbers)
    graph = batch_frames(pos, z, cutoff)
    variables = spec.init(model, jax.random.key(0),
                          {"positions": pos, "atomic_numbers": jnp.broadcast_to(z, pos.shape[:2])})
    step, tx = build_train_step(model, constants=variables["batch_stats"])
    params, opt = variables["params"], tx.init(variables["params"])
    e_ref = jnp.asarray(frames.energies, jnp.float32)
    f_ref = jnp.asarray(frames.forces.reshape(-1, 3), jnp.float32)
    compiled = step.lower(params, opt, graph, e_ref, f_ref).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes / 1e9
    params, opt, loss = compiled(params, opt, graph, e_ref, f_ref)
    loss.block_until_ready()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        params, opt, loss = compiled(params, opt, graph, e_ref, f_ref)
        loss.block_until_ready()
        times.append(time.perf_counter() - t)
    return {"triplet_chunk": triplet_chunk, "edges": int(graph.num_edges),
            "plan": model.edge_plan(graph).describe(), "xla_temp_gb": temp,
            "step_s_best": min(times), "step_s": times, "loss": float(loss)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog=f"python -m experiments.{NAME}",
                                description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--no-relax", action="store_true", help="RDKit geometry, no xTB relaxation")
    p.add_argument("--side", choices=list(SIDES), help=argparse.SUPPRESS)  # worker mode
    p.add_argument("--out", type=Path, default=common.RESULTS / NAME / "results.json")
    args = p.parse_args(argv)
    if args.side:
        row = measure(SIDES[args.side], args.batch, args.steps, not args.no_relax)
        print("ROW " + json.dumps(row), flush=True)
        return row
    rounds = []
    for r in range(args.rounds):
        rows = {}
        for side in SIDES:
            cmd = [sys.executable, "-m", f"experiments.{NAME}", "--side", side,
                   "--batch", str(args.batch), "--steps", str(args.steps)]
            cmd += ["--no-relax"] if args.no_relax else []
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows[side] = json.loads(next(ln[4:] for ln in out.splitlines()
                                         if ln.startswith("ROW ")))
            print(f"round {r + 1} {side}: {rows[side]['step_s_best']:.2f} s, XLA temporaries "
                  f"{rows[side]['xla_temp_gb']:.2f} GB ({rows[side]['plan']})", flush=True)
        rounds.append(rows)
    return common.write_results(args.out, NAME, argv, {
        "batch": args.batch, "relaxed": not args.no_relax, "rounds": rounds,
        "time_ratio_auto_over_unchunked": [
            r["auto"]["step_s_best"] / r["unchunked"]["step_s_best"] for r in rounds],
        "temp_ratio_auto_over_unchunked":
            rounds[0]["auto"]["xla_temp_gb"] / rounds[0]["unchunked"]["xla_temp_gb"]})


if __name__ == "__main__":
    main()
