"""Per-device memory of a node-sharded EGNN training step on one large system.

Run: ``python experiments/bench_sharding.py`` (defaults: N = 20000 nodes, k = 16 neighbours,
hidden 64, 4 layers, float32), or e.g. ``--nodes 40000 --devices 4``. It sets
``XLA_FLAGS=--xla_force_host_platform_device_count=D`` before importing JAX, so the ``D``
"devices" are virtual CPU devices that share this machine's cores.

For one system (batch 1), a kNN graph and one training step (forward and backward pass of
an MSE loss: ``jax.value_and_grad``) it compiles the step twice: on one device (the plain
edge-list EGNN) and node-sharded over ``D`` devices (``EGNN(node_sharding=...)``), with and
without edge chunking. It reports ``compiled.memory_analysis()`` of each program, which XLA
gives per device: ``argument`` (parameters, node arrays, edges), ``output`` (loss, gradients,
predictions) and ``temp`` (every intermediate the step allocates) bytes. It then runs both
steps once and reports how well loss, predictions and gradients agree.

Timings on forced host devices are meaningless (the ``D`` devices share the same cores and
run the shards one after another or interleaved), so none are reported as a speedup.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=20000)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--edge-chunk", type=int, default=16384,
                    help="edges per chunk of the chunked configuration")
    ap.add_argument("--no-run", action="store_true", help="only compile (memory), no agreement")
    ap.add_argument("--out", default="experiments/results/bench/sharding.json",
                    help="results JSON (written atomically); '' for none")
    args = ap.parse_args(argv)

    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={args.devices}"
    )
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import jax.numpy as jnp
    import numpy as np

    from geonorm_jax import parallel
    from geonorm_jax.models import EGNN, knn_graph
    from geonorm_jax.models import sharding as model_sharding

    t_start = time.time()
    n, k, hidden, layers, devices = args.nodes, args.k, args.hidden, args.layers, args.devices
    if len(jax.devices()) != devices:
        raise SystemExit(f"expected {devices} devices; JAX sees {len(jax.devices())}")
    ns = parallel.node_sharding()
    rng = np.random.default_rng(0)
    # a box of uniform density (about 1 particle per unit volume)
    x = jnp.asarray(rng.uniform(0.0, n ** (1 / 3), size=(1, n, 3)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(1, n, 3)), jnp.float32)
    q = jnp.asarray(rng.choice([-1.0, 1.0], size=(1, n, 1)), jnp.float32)
    target = x + 0.1 * v
    edges = jax.jit(lambda x: knn_graph(x, k, row_chunk=1024))(x)
    placed = parallel.shard_nodes(ns, x, v, q, target)
    edges_sharded = model_sharding.knn_graph(ns, placed[0], k, row_chunk=1024)
    same_graph = all(bool(jnp.array_equal(a, b)) for a, b in zip(edges, edges_sharded, strict=True))

    def step(model):
        def loss(params, x, v, q, target, s, r, e):
            y = model.apply(params, x, v, q, senders=s, receivers=r, edge_mask=e)
            return jnp.mean(jnp.square(y - target)), y
        return jax.jit(jax.value_and_grad(loss, has_aux=True))

    base = dict(hidden=hidden, num_layers=layers, graph="edges")
    params = EGNN(**base).init(jax.random.key(0), x[:, :64], v[:, :64], q[:, :64],
                               senders=jnp.zeros((1, 64), jnp.int32),
                               receivers=jnp.zeros((1, 64), jnp.int32))
    params_rep = parallel.replicate(ns, params)
    one = (params, x, v, q, target) + tuple(edges)
    many = (params_rep,) + tuple(placed) + tuple(edges_sharded)

    rows, agreement = [], []
    for chunk in (None, args.edge_chunk):
        for d, kw, inputs in ((1, {}, one), (devices, {"node_sharding": ns}, many)):
            t0 = time.time()
            compiled = step(EGNN(**base, edge_chunk=chunk, **kw)).lower(*inputs).compile()
            mem = compiled.memory_analysis()
            rows.append(dict(chunk=chunk, devices=d, argument=mem.argument_size_in_bytes,
                             output=mem.output_size_in_bytes, temp=mem.temp_size_in_bytes,
                             compile_s=time.time() - t0, compiled=compiled, inputs=inputs))
        if not args.no_run:
            (l1, y1), g1 = rows[-2]["compiled"](*rows[-2]["inputs"])
            (l4, y4), g4 = rows[-1]["compiled"](*rows[-1]["inputs"])
            g1, g4 = jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g4)
            grad_rel = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))
                           for a, b in zip(g1, g4, strict=True))
            agreement.append(dict(
                chunk=chunk, loss=(float(l1), float(l4)),
                out_err=float(jnp.max(jnp.abs(y1 - jnp.asarray(y4)))),
                out_scale=float(jnp.max(jnp.abs(y1))), grad_rel=grad_rel,
                sharding=f"{y4.sharding.spec} over {len(y4.sharding.device_set)} devices",
            ))

    mb = lambda b: f"{b / 2**20:8.1f}"
    print(f"\nEGNN train step (value_and_grad of MSE), one system: N = {n}, k = {k} "
          f"({n * k} edges), hidden {hidden}, {layers} layers, float32; "
          f"kNN per node block == single-device kNN: {same_graph}")
    print("per-device memory from compiled.memory_analysis(), MiB\n")
    print("| edge_chunk | devices | argument |   output |     temp |    total | total vs 1 |")
    print("|-----------:|--------:|---------:|---------:|---------:|---------:|-----------:|")
    for i, row in enumerate(rows):
        total = row["argument"] + row["output"] + row["temp"]
        ref = rows[i - i % 2]
        ref_total = ref["argument"] + ref["output"] + ref["temp"]
        print(f"| {str(row['chunk']):>10} | {row['devices']:7d} | {mb(row['argument'])} | "
              f"{mb(row['output'])} | {mb(row['temp'])} | {mb(total)} | "
              f"{total / ref_total:10.3f} |")
    for a in agreement:
        print(f"\nedge_chunk={a['chunk']}: loss 1 device {a['loss'][0]:.7g}, {devices} shards "
              f"{a['loss'][1]:.7g}; max |out_1 - out_{devices}| = {a['out_err']:.2e} "
              f"(max |out| {a['out_scale']:.2e}); max relative gradient difference "
              f"{a['grad_rel']:.2e}; output sharding {a['sharding']}")
    command = " ".join(["python", *sys.argv])
    if args.out:
        from geonorm_jax._io import write_json_atomic

        keep = ("chunk", "devices", "argument", "output", "temp", "compile_s")
        write_json_atomic(args.out, {
            "command": command, "nodes": n, "k": k, "hidden": hidden, "layers": layers,
            "devices": devices, "same_graph": same_graph,
            "memory_bytes": [{key: r[key] for key in keep} for r in rows],
            "agreement": agreement, "jax": jax.__version__,
        })
    print(f"\ncommand: {command}  "
          f"(wall {time.time() - t_start:.0f} s; timings on forced host devices are not "
          f"speedups)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
