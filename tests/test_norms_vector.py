"""Tests for geonorm_jax.norms.vector: RMS (GVP / Quaternion), Vector Neuron BatchNorm, EvNorm.

Tolerances: O(3) and permutation equivariance in float64 to 1e-10, in float32 to 1e-4;
NumPy references to 1e-10 (float64).
"""

from __future__ import annotations

import functools

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geonorm_jax.norms import vector
from geonorm_jax.testing import assert_equivariant

B, N, C = 3, 5, 4
IRREPS = e3nn.Irreps("2x0e + 3x1o + 1x2e")  # l = 0, 1, 2 with both parities among l > 0
RICH_IRREPS = e3nn.Irreps("2x0e + 1x0o + 3x1o + 1x1e + 2x2e + 1x2o")
EXACT = 1e-10

# (id, constructor kwargs, training). Covers every catalogue entry and the main options.
CASES = [
    ("gvp", dict(reduce="channels"), False),
    ("quaternion", dict(reduce="nodes_channels", use_scale=True), False),
    ("vn_train", {}, True),
    ("vn_eval", {}, False),
    ("ev", {}, False),
]
_CTOR = dict(
    gvp=vector.rms_vector_norm,
    quaternion=vector.rms_vector_norm,
    vn_train=vector.vector_neuron_batch_norm,
    vn_eval=vector.vector_neuron_batch_norm,
    ev=vector.ev_norm,
)
IDS = [c[0] for c in CASES]


def _v(seed=0, shape=(B, N, C, 3), dtype=jnp.float64):
    return jax.random.normal(jax.random.PRNGKey(seed), shape).astype(dtype)


def _irreps(seed=0, dtype=jnp.float64, irreps=IRREPS):
    return e3nn.normal(irreps, jax.random.PRNGKey(seed), (B, N), dtype=dtype)


def _perturb(tree, seed):
    """Non-trivial params/state: positive leaves stay positive (variances), others shift."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.PRNGKey(seed), max(len(leaves), 1))[: len(leaves)]
    new = [
        leaf * jnp.exp(0.3 * jax.random.normal(k, leaf.shape, leaf.dtype))
        + 0.3 * jax.random.normal(jax.random.fold_in(k, 1), leaf.shape, leaf.dtype)
        for leaf, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree.unflatten(treedef, new)


def _setup(case, x, seed=3):
    cid, kwargs, training = case
    norm = _CTOR[cid](**kwargs)
    params, state = norm.init(jax.random.PRNGKey(0), x)
    params = _perturb(params, seed)
    state = {k: jnp.abs(v) + 0.5 for k, v in _perturb(state, seed + 1).items()}
    return norm, params, state, training


def _fn(norm, params, state, training):
    def f(x, mask=None):
        return norm.apply(params, state, x, mask=mask, training=training)[0]

    return jax.jit(f)


# ------------------------------------------------------------------------------------------
# NumPy references (V: [B, N, C, D], any D)
# ------------------------------------------------------------------------------------------


def _np_mask(mask, b, n):
    return np.ones((b, n), bool) if mask is None else np.asarray(mask)


def np_rms(V, scale, reduce, eps, mask=None):
    V = np.asarray(V, np.float64)
    out = np.empty_like(V)
    m = _np_mask(mask, *V.shape[:2])
    for b in range(V.shape[0]):
        for i in range(V.shape[1]):
            if reduce == "channels":
                ms = np.mean([V[b, i, c] @ V[b, i, c] for c in range(V.shape[2])])
            else:
                real = V[b, m[b]]  # [n_real, C, D]
                ms = np.sum(real**2) / max(real.shape[0] * real.shape[1], 1)
            out[b, i] = V[b, i] / np.sqrt(ms + eps)
    return out * (1.0 if scale is None else np.asarray(scale)[:, None])


def np_vn_bn(V, scale, bias, mean, var, eps, training, mask=None, norm_eps=1e-6):
    V = np.asarray(V, np.float64)
    n = np.linalg.norm(V, axis=-1)  # [B, N, C]
    m = _np_mask(mask, *V.shape[:2])
    if training:
        real = n[m]  # [count, C]
        mean, var = real.mean(axis=0), real.var(axis=0)
    nhat = (n - mean) / np.sqrt(var + eps) * scale + bias
    return V * (nhat / (n + norm_eps))[..., None], mean, var


def np_ev(V, beta, scale, bias, eps, mask=None):
    V = np.asarray(V, np.float64)
    n = np.linalg.norm(V, axis=-1)
    m = _np_mask(mask, *V.shape[:2])
    out = np.empty_like(V)
    for b in range(V.shape[0]):
        real = n[b, m[b]]
        mu, var = real.mean(), real.var()
        nhat = (n[b] - mu) / np.sqrt(var + eps) * scale + bias
        out[b] = V[b] * (nhat / (n[b] + np.maximum(np.abs(beta), eps)))[..., None]
    return out


def np_reference(case, params, state, V, mask=None):
    cid, kwargs, training = case
    p = {k: np.asarray(v) for k, v in params.items()}
    if cid in ("gvp", "quaternion"):
        return np_rms(V, p.get("scale"), kwargs.get("reduce"), 1e-8, mask)
    if cid.startswith("vn"):
        return np_vn_bn(
            V,
            p["scale"],
            p["bias"],
            np.asarray(state["mean"]),
            np.asarray(state["var"]),
            1e-5,
            training,
            mask,
        )[0]
    return np_ev(V, p["beta"], p["scale"], p["bias"], 1e-5, mask)


# ------------------------------------------------------------------------------------------
# Equivariance
# ------------------------------------------------------------------------------------------


def _groups(case):
    # per-sample statistics make outputs batch-independent; BatchNorm in training does not
    return ("SO3", "O3", "permutation") + (() if case[0] == "vn_train" else ("batch",))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_o3_and_permutation_equivariant_raw_vectors(case):
    x = _v()
    norm, params, state, training = _setup(case, x)
    assert_equivariant(
        _fn(norm, params, state, training),
        jax.random.PRNGKey(1),
        x,
        group=_groups(case),
        kinds=("vectors",),
        atol=EXACT,
        rtol=EXACT,
    )


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_o3_and_permutation_equivariant_irreps(case):
    x = _irreps(irreps=RICH_IRREPS)
    norm, params, state, training = _setup(case, x)
    mask = jnp.arange(N)[None, :] < jnp.array([N, 3, 1])[:, None]
    assert_equivariant(
        _fn(norm, params, state, training),
        jax.random.PRNGKey(2),
        x,
        mask,
        group=("SO3", "O3", "permutation"),
        kinds=("irreps", "mask"),
        out_kinds=("irreps",),
        atol=EXACT,
        rtol=EXACT,
    )


# ------------------------------------------------------------------------------------------
# NumPy references, raw and per irrep
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("masked", [False, True])
def test_matches_numpy_reference(case, masked):
    x = _v()
    norm, params, state, training = _setup(case, x)
    mask = (jnp.arange(N)[None, :] < jnp.array([N, 3, 1])[:, None]) if masked else None
    y = norm.apply(params, state, x, mask=mask, training=training)[0]
    ref = np_reference(case, params, state, x, mask)
    m = _np_mask(mask, B, N)
    np.testing.assert_allclose(np.asarray(y)[m], ref[m], rtol=EXACT, atol=EXACT)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_irreps_chunks_match_numpy_reference_per_irrep(case):
    x = _irreps()
    norm, params, state, training = _setup(case, x)
    y = norm.apply(params, state, x, training=training)[0]
    assert isinstance(y, e3nn.IrrepsArray) and y.irreps == x.irreps and y.shape == x.shape
    assert {mul_ir.ir.l for mul_ir in y.irreps} == {0, 1, 2}
    start = 0
    for mul_ir, xc, yc in zip(x.irreps, x.chunks, y.chunks, strict=True):
        stop = start + mul_ir.mul
        p = {k: v[start:stop] for k, v in params.items()}
        s = {k: v[start:stop] for k, v in state.items()}
        ref = np_reference(case, p, s, xc)  # chunk [B, N, mul, 2l+1], mul as channels
        np.testing.assert_allclose(np.asarray(yc), ref, rtol=EXACT, atol=EXACT, err_msg=str(mul_ir))
        start = stop


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_l1_irreps_equal_raw_vectors(case):
    x = _irreps(irreps=e3nn.Irreps(f"{C}x1o"))
    norm, params, state, training = _setup(case, x)
    y = norm.apply(params, state, x, training=training)[0]
    raw = x.array.reshape(B, N, C, 3)
    y_raw = norm.apply(params, state, raw, training=training)[0]
    np.testing.assert_allclose(np.asarray(y.array).reshape(B, N, C, 3), y_raw, rtol=1e-12)


def test_scalars_identity_passes_scalars_through():
    x = _irreps()
    for ctor in (vector.rms_vector_norm, vector.vector_neuron_batch_norm, vector.ev_norm):
        norm = ctor(scalars="identity")
        params, state = norm.init(jax.random.PRNGKey(0), x)
        y, new_state = norm.apply(params, state, x, training=True)
        np.testing.assert_array_equal(y.filter(keep="0e").array, x.filter("0e").array)
        assert not np.allclose(y.filter(drop="0e").array, x.filter(drop="0e").array)
        for k in new_state:  # the scalars' running stats are untouched
            np.testing.assert_array_equal(new_state[k][:2], state[k][:2])


def test_zero_chunks_stay_zero():
    chunks = [None, jnp.ones((B, N, 3, 3))]
    x = e3nn.from_chunks("2x0e + 3x1o", chunks, (B, N), jnp.float64)
    for case in CASES:
        norm, params, state, training = _setup(case, x)
        y = norm.apply(params, state, x, training=training)[0]
        assert y.irreps == x.irreps
        np.testing.assert_array_equal(y.array[..., :2], 0.0)
        assert np.all(np.isfinite(np.asarray(y.array)))


def test_gvp_output_has_unit_rms_per_node():
    x = 7.0 * _v()
    norm = vector.rms_vector_norm()
    y = norm.apply(*norm.init(jax.random.PRNGKey(0), x), x)[0]
    ms = np.mean(np.sum(np.asarray(y) ** 2, axis=-1), axis=-1)
    np.testing.assert_allclose(ms, 1.0, rtol=1e-8)


# ------------------------------------------------------------------------------------------
# Running statistics of Vector Neuron BatchNorm
# ------------------------------------------------------------------------------------------


def test_vn_batch_norm_running_stats():
    x = 2.0 * _v() + 0.5
    mask = jnp.arange(N)[None, :] < jnp.array([N, 3, 2])[:, None]
    norm = vector.vector_neuron_batch_norm(momentum=0.9)
    params, state = norm.init(jax.random.PRNGKey(0), x)
    _, same = norm.apply(params, state, x, mask=mask, training=False)
    assert same is state or all(np.array_equal(same[k], state[k]) for k in state)
    _, new = norm.apply(params, state, x, mask=mask, training=True)
    _, mean, var = np_vn_bn(x, 1.0, 0.0, 0.0, 1.0, 1e-5, True, mask)
    np.testing.assert_allclose(new["mean"], 0.1 * mean, rtol=1e-12)
    np.testing.assert_allclose(new["var"], 0.9 + 0.1 * var, rtol=1e-12)
    # eval uses the running statistics, not the batch's
    y_eval = norm.apply(params, new, x, mask=mask, training=False)[0]
    ref = np_vn_bn(x, 1.0, 0.0, np.asarray(new["mean"]), np.asarray(new["var"]), 1e-5, False)[0]
    real = np.asarray(mask)  # padded outputs are unspecified (computed from zeros)
    np.testing.assert_allclose(np.asarray(y_eval)[real], ref[real], rtol=1e-10)


# ------------------------------------------------------------------------------------------
# Masking, degenerate inputs
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("irreps", [False, True])
def test_padding_does_not_change_real_outputs_or_stats(case, irreps):
    x = _irreps() if irreps else _v()
    norm, params, state, training = _setup(case, x)
    mask = jnp.arange(N)[None, :] < jnp.array([N, 3, 1])[:, None]
    arr = x.array if irreps else x
    garbage = jnp.where(mask.reshape(B, N, *(1,) * (arr.ndim - 2)), arr, 1e3 + 0 * arr)
    x2 = e3nn.IrrepsArray(x.irreps, garbage) if irreps else garbage
    y1, s1 = norm.apply(params, state, x, mask=mask, training=training)
    y2, s2 = norm.apply(params, state, x2, mask=mask, training=training)
    a1 = np.asarray(y1.array if irreps else y1)
    a2 = np.asarray(y2.array if irreps else y2)
    m = np.asarray(mask)
    np.testing.assert_allclose(a1[m], a2[m], rtol=1e-12, atol=1e-12)
    assert np.all(np.isfinite(a2))
    for k in s1:
        np.testing.assert_allclose(s1[k], s2[k], rtol=1e-12)


def _assert_finite_value_and_grads(norm, params, state, inputs, training):
    """Value and gradients (wrt params and input) finite for each ``(x, mask)`` in ``inputs``
    (all of one shape and irreps, so one compilation serves them all)."""
    x0 = inputs[0][0]
    irreps = x0.irreps if isinstance(x0, e3nn.IrrepsArray) else None

    def loss(params, arr, mask):
        xin = arr if irreps is None else e3nn.IrrepsArray(irreps, arr)
        y = norm.apply(params, state, xin, mask=mask, training=training)[0]
        y = y if irreps is None else y.array
        return jnp.sum(y**2 + y)

    value_and_grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    for x, mask in inputs:
        arr = x if irreps is None else x.array
        value, grads = value_and_grads(params, arr, mask)
        assert np.isfinite(float(value))
        for g in jax.tree.leaves(grads):
            assert np.all(np.isfinite(np.asarray(g)))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_zero_vectors_have_finite_value_and_grad(case):
    x = _v()
    norm, params, state, training = _setup(case, x)
    all_real = jnp.ones((B, N), bool)
    some_zero = x.at[:, :, 1].set(0.0).at[0, 2].set(0.0)  # a zero channel, a zero node
    raw = [(jnp.zeros_like(x), all_real), (some_zero, all_real)]
    _assert_finite_value_and_grads(norm, params, state, raw, training)
    xi = _irreps()
    norm, params, state, training = _setup(case, xi)
    zeros = e3nn.IrrepsArray(xi.irreps, jnp.zeros_like(xi.array))
    fully_masked_and_single = jnp.zeros((B, N), bool).at[0, 0].set(True)
    irr = [(zeros, all_real), (xi, fully_masked_and_single), (zeros, fully_masked_and_single)]
    _assert_finite_value_and_grads(norm, params, state, irr, training)


# ------------------------------------------------------------------------------------------
# dtypes, jit, errors
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float32_preserved_jit_agrees_and_equivariant(case):
    for x in (_v(dtype=jnp.float32), _irreps(dtype=jnp.float32)):
        norm, params, state, training = _setup(case, x)
        params = jax.tree.map(lambda p: p.astype(jnp.float32), params)
        state = jax.tree.map(lambda p: p.astype(jnp.float32), state)
        y, new_state = norm.apply(params, state, x, training=training)
        y_jit, _ = jax.jit(functools.partial(norm.apply, training=training))(params, state, x)
        arr, arr_jit = (y.array, y_jit.array) if isinstance(y, e3nn.IrrepsArray) else (y, y_jit)
        assert arr.dtype == jnp.float32 and y.shape == x.shape
        assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(new_state))
        np.testing.assert_allclose(arr, arr_jit, rtol=1e-5, atol=1e-5)
        if not isinstance(x, e3nn.IrrepsArray):  # float32 O(3) equivariance, tolerance 1e-4
            assert_equivariant(
                _fn(norm, params, state, training),
                jax.random.PRNGKey(3),
                x,
                group=("SO3", "O3"),
                kinds=("vectors",),
                atol=1e-4,
                rtol=1e-4,
            )


def test_no_recompilation_when_only_values_change():
    traces = []
    norm = vector.vector_neuron_batch_norm()
    x = _v(dtype=jnp.float32)
    params, state = norm.init(jax.random.PRNGKey(0), x)

    @jax.jit
    def f(params, state, x, mask):
        traces.append(1)
        return norm.apply(params, state, x, mask=mask, training=True)

    for seed in range(3):
        mask = jax.random.bernoulli(jax.random.PRNGKey(seed), 0.7, (B, N))
        _, state = f(params, state, _v(seed, dtype=jnp.float32), mask)
    assert len(traces) == 1


@pytest.mark.parametrize(
    "ctor", [vector.rms_vector_norm, vector.vector_neuron_batch_norm, vector.ev_norm]
)
@pytest.mark.parametrize("shape", [(B, N, C, 2), (B, N, 3), (B, N, C, 3, 1)])
def test_bad_shapes_raise_naming_the_shape(ctor, shape):
    norm = ctor()
    pattern = "received shape " + str(shape).replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(ValueError, match=pattern):
        norm.init(jax.random.PRNGKey(0), jnp.ones(shape))
    params, state = norm.init(jax.random.PRNGKey(0), _v())
    with pytest.raises(ValueError, match=pattern):
        norm.apply(params, state, jnp.ones(shape))


def test_other_input_errors():
    norm = vector.ev_norm()
    params, state = norm.init(jax.random.PRNGKey(0), _v())
    with pytest.raises(ValueError, match=r"\(3, 5, 6, 3\)"):  # channel count changed
        norm.apply(params, state, _v(shape=(B, N, 6, 3)))
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        norm.apply(params, state, _v(), mask=jnp.ones((3, 4), bool))
    with pytest.raises(ValueError, match=r"\(3, 15\)"):
        norm.apply(params, state, e3nn.IrrepsArray("5x1o", jnp.ones((3, 15))))
    with pytest.raises(ValueError, match="floating"):
        norm.apply(params, state, jnp.ones((B, N, C, 3), jnp.int32))
    with pytest.raises(ValueError, match="reduce"):
        vector.rms_vector_norm(reduce="batch")
    with pytest.raises(ValueError, match="scalars"):
        vector.ev_norm(scalars="layer_norm")


def test_context_is_ignored_and_catalogue_consistent():
    x = _v()
    for entry in vector.CATALOG_ENTRIES:
        norm = entry.make()
        assert norm.kind == "vectors" == entry.kind and norm.name == entry.name
        params, state = norm.init(jax.random.PRNGKey(0), x, mu0=jnp.zeros((B, 3)))
        y, _ = norm.apply(params, state, x, mu0=jnp.zeros((B, 3)), edges=None)
        assert y.shape == x.shape
    names = {e.name for e in vector.CATALOG_ENTRIES}
    assert names == {
        "quaternion_rms_norm",
        "gvp_vector_layer_norm",
        "vector_neuron_batch_norm",
        "ev_norm",
    }
