"""One process of the two-process test in ``test_multihost.py`` (not a test module).

``python tests/_multihost_worker.py PROCESS_ID PORT DATA.npz OUT.json``: joins a 2-process JAX
cluster on localhost (2 CPU devices per process, gloo collectives), runs the node-sharded
EGNN forward and gradient over the 4 global devices with inputs placed by
``parallel.shard_graph`` / ``parallel.replicate`` (each process supplies only its own
shards), and compares its addressable shards with the single-process reference in DATA.npz.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    pid, port, data_path, out_path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2,
                               process_id=pid)
    import jax.numpy as jnp
    import numpy as np
    from flax import traverse_util

    from geonorm_jax import parallel
    from geonorm_jax.models import make_egnn

    data = dict(np.load(data_path))
    params = traverse_util.unflatten_dict(
        {tuple(k[2:].split("/")): v for k, v in data.items() if k.startswith("p:")})
    ns = parallel.node_sharding()
    inputs = parallel.shard_graph(ns, data["x"], data["v"], data["q"], data["senders"],
                                  data["receivers"], data["edge_mask"])
    variables = parallel.replicate(ns, {"params": params})
    target = parallel.shard_nodes(ns, data["target"])
    model = make_egnn("geo_norm_shared", graph="edges", hidden=int(data["hidden"]),
                      num_layers=int(data["layers"]), node_sharding=ns)

    def loss(variables, inputs, target):  # global arrays enter as arguments, not constants
        y = model.apply(variables, **inputs)
        return jnp.mean(jnp.square(y - target)), y

    step = jax.jit(jax.value_and_grad(loss, has_aux=True))
    (value, y), grads = step(variables, inputs, target)
    out_err = max(float(np.max(np.abs(np.asarray(s.data) - data["y"][s.index])))
                  for s in y.addressable_shards)
    flat = traverse_util.flatten_dict(grads["params"], sep="/")
    grad_err = max(float(np.max(np.abs(np.asarray(g.addressable_data(0)) - data["g:" + k])))
                   for k, g in flat.items())
    result = {"process": jax.process_index(), "processes": jax.process_count(),
              "devices": jax.device_count(), "local_devices": jax.local_device_count(),
              "loss": float(value.addressable_data(0)), "out_err": out_err,
              "grad_err": grad_err, "shards": len(y.addressable_shards),
              "dtype": str(y.dtype)}
    with open(out_path, "w") as f:
        json.dump(result, f)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
