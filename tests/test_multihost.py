"""Across hosts: two JAX processes (2 CPU devices each, gloo collectives on localhost) run the
node-sharded EGNN over 4 global devices, each supplying only its own input shards, and get the
single-process result. This is what the README's multi-host instructions describe."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from geonorm_jax.models import knn_graph, make_egnn

WORKER = Path(__file__).with_name("_multihost_worker.py")
N, K, HIDDEN, LAYERS = 64, 8, 16, 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, N, 3)) * 2.0
    v = rng.normal(size=(1, N, 3))
    q = rng.choice([-1.0, 1.0], size=(1, N, 1))
    target = x + 0.1 * rng.normal(size=(1, N, 3))
    s, r, e = (np.asarray(a) for a in knn_graph(jnp.asarray(x), K))
    model = make_egnn("geo_norm_shared", graph="edges", hidden=HIDDEN, num_layers=LAYERS)
    edges = dict(senders=s, receivers=r, edge_mask=e)
    variables = model.init(jax.random.key(0), x, v, q, **edges)

    def loss(variables):
        y = model.apply(variables, x, v, q, **edges)
        return jnp.mean(jnp.square(y - target)), y

    (_, y), grads = jax.value_and_grad(loss, has_aux=True)(variables)
    assert y.dtype == jnp.float64  # tests run with x64 (conftest)
    arrays = dict(x=x, v=v, q=q, target=target, senders=s, receivers=r, edge_mask=e,
                  y=np.asarray(y), hidden=HIDDEN, layers=LAYERS)
    arrays.update({"p:" + k: np.asarray(a) for k, a in
                   traverse_util.flatten_dict(variables["params"], sep="/").items()})
    arrays.update({"g:" + k: np.asarray(a) for k, a in
                   traverse_util.flatten_dict(grads["params"], sep="/").items()})
    np.savez(tmp_path / "data.npz", **arrays)

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu", "JAX_ENABLE_X64": "1"}
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(pid), port,
                               str(tmp_path / "data.npz"), str(tmp_path / f"out{pid}.json")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for pid in (0, 1)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    results = [json.loads((tmp_path / f"out{pid}.json").read_text()) for pid in (0, 1)]
    scale = float(np.max(np.abs(arrays["y"])))
    for res in results:
        assert (res["processes"], res["devices"], res["local_devices"]) == (2, 4, 2), res
        assert res["shards"] == 2 and res["dtype"] == "float64", res
        assert res["out_err"] < 1e-10 * scale, res
        assert res["grad_err"] < 1e-9, res
    assert results[0]["loss"] == results[1]["loss"]
