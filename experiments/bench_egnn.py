"""Benchmark: one jitted EGNN training step (forward, backward, Adam) per configuration.

Run: ``python experiments/bench_egnn.py`` (all configurations) or ``--configs n5 n100``.
Each configuration runs in its own subprocess, so the peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, compilation included) is per configuration.
In the same subprocess, interleaved with the steps, it times a ``2048 x 2048`` float32
matmul (best of the repetitions) as the machine's attainable FLOP rate, and reports the
step's achieved fraction of it. Results: a Markdown table on stdout and
``experiments/results/bench_egnn/results.json``.

How the step's FLOPs are counted (only matrix products; element-wise work is not counted).
A dense layer ``[.., a] x [a, b]`` costs ``2 a b`` FLOPs per row. With hidden size ``H``,
``E`` real edges (``B N (N - 1)`` for the fully connected graph, ``B N k`` for kNN;
the dense path also computes the ``B N`` masked diagonal pairs, which are not counted) and
``B N`` nodes, one layer's forward pass costs

* per edge: the second ``phi_e`` layer ``2 H^2``, the hidden ``phi_x`` layer ``2 H^2`` and
  its output ``2 H`` (the first ``phi_e`` layer is factorised into per-node products):
  ``4 H^2 + 2 H``;
* per node: the factorised first ``phi_e`` layer ``2 x 2 H^2``, ``phi_v`` ``2 H^2 + 2 H``,
  ``phi_h`` ``2 (2H) H + 2 H^2``: ``12 H^2 + 2 H``;

and the embedding ``2 H`` per node once. A training step is counted as 3 forward passes
(the backward pass of a product costs two products of the same size), so
``FLOPs = 3 [L (E (4H^2 + 2H) + B N (12 H^2 + 2H)) + 2 B N H]``. Recomputation in the
backward pass (``remat``, the chunked edge block) is work the step does but is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = {
    # name: nodes N, batch B, layers L, graph, kNN neighbours, remat, edge_chunk
    "n5": dict(N=5, B=100, L=4, graph="dense", k=None, remat=False, edge_chunk=16384),
    "n20": dict(N=20, B=50, L=4, graph="dense", k=None, remat=False, edge_chunk=16384),
    "n50": dict(N=50, B=50, L=5, graph="dense", k=None, remat=False, edge_chunk=16384),
    "n100": dict(N=100, B=50, L=5, graph="dense", k=None, remat=False, edge_chunk=16384),
    "n1000_knn32": dict(N=1000, B=4, L=4, graph="knn", k=32, remat=False, edge_chunk=16384),
}
HIDDEN = 64
RESULTS = Path(__file__).resolve().parent / "results" / "bench_egnn"


def step_flops(N: int, B: int, L: int, k: int | None, H: int = HIDDEN) -> float:
    """Matrix-product FLOPs of one training step (see the module docstring)."""
    edges = B * N * (k if k is not None else N - 1)
    nodes = B * N
    forward = L * (edges * (4 * H * H + 2 * H) + nodes * (12 * H * H + 2 * H)) + 2 * nodes * H
    return 3.0 * forward


def _worker(name: str, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    from geonorm_jax.models import EGNN, knn_graph

    cfg = CONFIGS[name]
    N, B, L = cfg["N"], cfg["B"], cfg["L"]
    key = jax.random.key(0)
    kx, kv, kq, kt = jax.random.split(key, 4)
    scale = (N / 5) ** (1 / 3)  # the N-body generator's box scaling
    x = scale * jax.random.normal(kx, (B, N, 3), jnp.float32)
    v = 0.5 * jax.random.normal(kv, (B, N, 3), jnp.float32)
    q = jnp.where(jax.random.bernoulli(kq, 0.5, (B, N, 1)), 1.0, -1.0).astype(jnp.float32)
    target = x + 0.1 * jax.random.normal(kt, (B, N, 3), jnp.float32)
    edges = {}
    if cfg["graph"] == "knn":  # built once from the input positions (data pipeline)
        s, r, e = jax.jit(knn_graph, static_argnums=1)(x, cfg["k"])
        edges = dict(senders=s, receivers=r, edge_mask=e)

    model = EGNN(hidden=HIDDEN, num_layers=L, remat=cfg["remat"], edge_chunk=cfg["edge_chunk"])
    params = jax.jit(model.init)(jax.random.key(1), x, v, q, **edges)["params"]
    tx = optax.adam(5e-4)
    opt_state = tx.init(params)

    def loss_fn(params, x, v, q, target, edges):
        pred = model.apply({"params": params}, x, v, q, **edges)
        return jnp.mean(jnp.square(pred - target))

    @jax.jit
    def train_step(params, opt_state, x, v, q, target, edges):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, v, q, target, edges)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    a = jax.random.normal(key, (2048, 2048), jnp.float32)
    matmul = jax.jit(lambda a: a @ a)
    matmul(a).block_until_ready()

    t0 = time.perf_counter()
    params, opt_state, loss = train_step(params, opt_state, x, v, q, target, edges)
    loss.block_until_ready()
    compile_s = time.perf_counter() - t0

    step_s, matmul_s = [], []
    for _ in range(repeats):
        for _ in range(3):
            t = time.perf_counter()
            matmul(a).block_until_ready()
            matmul_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        params, opt_state, loss = train_step(params, opt_state, x, v, q, target, edges)
        loss.block_until_ready()
        step_s.append(time.perf_counter() - t)

    flops = step_flops(N, B, L, cfg["k"])
    peak = 2 * 2048**3 / min(matmul_s)
    best = min(step_s)
    return {
        "config": name,
        **{k: v for k, v in cfg.items()},
        "hidden": HIDDEN,
        "step_ms_best": 1e3 * best,
        "step_ms_median": 1e3 * sorted(step_s)[len(step_s) // 2],
        "compile_s": compile_s,
        "step_gflop": flops / 1e9,
        "step_gflops_per_s": flops / best / 1e9,
        "matmul_gflops_per_s": peak / 1e9,
        "fraction_of_matmul": flops / best / peak,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "loss": float(loss),
        "repeats": repeats,
        "devices": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
    }


def _repeats(name: str) -> int:
    return {"n5": 30, "n20": 20, "n50": 8, "n100": 4, "n1000_knn32": 6}[name]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(RESULTS / "results.json"))
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(_worker(args.worker, _repeats(args.worker))))
        return

    rows = []
    for name in args.configs:
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", name], capture_output=True, text=True
        )
        if proc.returncode != 0:
            print(f"{name}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"done {name}", file=sys.stderr)

    header = (
        "| config | N | B | L | graph | step (ms, best) | median | GFLOP/step | GFLOP/s "
        "| matmul GFLOP/s | fraction | peak RSS (GB) |"
    )
    print(header)
    print("|" + "---|" * 12)
    for r in rows:
        graph = r["graph"] + (f" k={r['k']}" if r["k"] else "")
        print(
            f"| {r['config']} | {r['N']} | {r['B']} | {r['L']} | {graph} | "
            f"{r['step_ms_best']:.1f} | {r['step_ms_median']:.1f} | {r['step_gflop']:.2f} | "
            f"{r['step_gflops_per_s']:.1f} | {r['matmul_gflops_per_s']:.1f} | "
            f"{r['fraction_of_matmul']:.2f} | {r['peak_rss_gb']:.2f} |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"hidden": HIDDEN, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
