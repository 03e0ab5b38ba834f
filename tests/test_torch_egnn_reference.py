"""The PyTorch EGNN of the step benchmark (``experiments/reference_models/torch_egnn.py``, the
official code's structure) computes the same function as :class:`geonorm_jax.models.EGNN`:
with the JAX weights transferred, outputs agree in float64 to rounding. Runs where ``torch``
is importable (skipped otherwise; it is not a dependency)."""

from __future__ import annotations

import importlib.util
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geonorm_jax.models import EGNN

torch = pytest.importorskip("torch")

SCRIPT = "experiments/reference_models/torch_egnn.py"


def _reference():
    from experiments import common

    spec = importlib.util.spec_from_file_location("torch_egnn", common.ROOT / SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["torch_egnn"] = module
    spec.loader.exec_module(module)
    return module


def _transfer(params, ref):
    """Copy the JAX parameters into the torch model (``Linear.weight = kernel^T``)."""
    t = lambda a: torch.tensor(np.asarray(a, np.float64).T)

    def set_linear(linear, p):
        linear.weight.data = t(p["kernel"])
        if "bias" in p:
            linear.bias.data = torch.tensor(np.asarray(p["bias"], np.float64))

    set_linear(ref.embedding, params["embedding"])
    for k, layer in enumerate(ref.layers):
        p = params[f"layer_{k}"]
        first = np.concatenate([p["edge_w_hi"], p["edge_w_hj"], p["edge_w_radial"],
                                p["edge_w_attr"]], axis=0)
        set_linear(layer.edge_mlp[0], {"kernel": first, "bias": p["edge_bias"]})
        set_linear(layer.edge_mlp[2], p["edge_mlp_out"])
        set_linear(layer.coord_mlp[0], p["coord_mlp_hidden"])
        set_linear(layer.coord_mlp[2], p["coord_mlp_out"])
        set_linear(layer.coord_mlp_vel[0], p["vel_mlp_hidden"])
        set_linear(layer.coord_mlp_vel[2], p["vel_mlp_out"])
        set_linear(layer.node_mlp[0], p["node_mlp_hidden"])
        set_linear(layer.node_mlp[2], p["node_mlp_out"])


def test_torch_reference_matches_the_jax_egnn_in_float64():
    mod = _reference()
    batch, n, hidden, layers = 3, 6, 16, 3
    kx, kv, kq = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (batch, n, 3), jnp.float64)
    v = jax.random.normal(kv, (batch, n, 3), jnp.float64)
    q = jnp.where(jax.random.bernoulli(kq, 0.5, (batch, n, 1)), 1.0, -1.0).astype(jnp.float64)
    model = EGNN(hidden=hidden, num_layers=layers, param_dtype=jnp.float64)
    params = model.init(jax.random.key(1), x, v, q)["params"]
    # larger output weights than the 0.001 initialisation, so the coordinate MLP matters
    params = jax.tree_util.tree_map_with_path(
        lambda path, a: 300 * a if "coord_mlp_out" in jax.tree_util.keystr(path) else a, params)
    out = np.asarray(model.apply({"params": params}, x, v, q))

    torch.set_default_dtype(torch.float64)
    try:
        ref = mod.EGNNVel(hidden, layers)
        _transfer(params, ref)
        xt = torch.tensor(np.asarray(x).reshape(-1, 3))
        vt = torch.tensor(np.asarray(v).reshape(-1, 3))
        qt = torch.tensor(np.asarray(q).reshape(-1, 1))
        row, col = mod.fully_connected(batch, n)
        attr = torch.cat([qt[row] * qt[col], ((xt[row] - xt[col]) ** 2).sum(-1, keepdim=True)],
                         dim=1)
        count = torch.full((batch * n, 1), float(n - 1))
        got = ref(xt, vt, row, col, attr, count).detach().numpy().reshape(batch, n, 3)
    finally:
        torch.set_default_dtype(torch.float32)
    assert np.abs(out - np.asarray(x)).max() > 1e-3  # the layers moved the particles
    np.testing.assert_allclose(got, out, rtol=1e-12, atol=1e-12)
