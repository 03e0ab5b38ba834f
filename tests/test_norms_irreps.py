"""Tests for geonorm_jax.norms.irreps: EquiformerV2's norms, e3nn BatchNorm / instance norm,
norm_activation, soft_normalization and NormSE3.

NumPy references are written from the original code's formulas in EquiformerV2's layout
``[nodes, (lmax+1)^2, C]`` (fairchem) or e3nn's ``[batch, sample, mul, 2l+1]``, and compared to
1e-10 in float64. Equivariance is checked on mixed irreps (both parities, l = 0..2), where the
audit (which probes ``C x 1o`` vectors) cannot see the l = 0 path. The generic checks (jit,
masks, finiteness, layout errors) are in test_catalog_contract.py.
"""

from __future__ import annotations

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geonorm_jax.norms import irreps as ir
from geonorm_jax.testing import equivariance_errors

B, N, C, LMAX = 2, 4, 5, 2
IRREPS = e3nn.Irreps(f"{C}x0e + {C}x1o + {C}x2e")  # EquiformerV2's layout, one chunk per l
MIXED = e3nn.Irreps("3x0e + 1x0o + 2x1o + 1x1e + 2x2e")
EXACT = 1e-10


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _x(key=0, irreps=IRREPS, b=B, n=N, offset=0.7):
    x = e3nn.normal(irreps, jax.random.PRNGKey(key), (b, n)).astype(jnp.float64)
    # give the scalars an offset so centring has something to remove
    return e3nn.IrrepsArray(x.irreps, x.array + offset * (jnp.arange(x.irreps.dim) < C))


def _to_eqv(x: e3nn.IrrepsArray) -> np.ndarray:
    """IrrepsArray Cx0e+Cx1o+Cx2e [B, N, .] -> EquiformerV2 [B*N, (L+1)^2, C]."""
    parts = [np.asarray(c).transpose(0, 1, 3, 2) for c in x.chunks]  # [B, N, 2l+1, C]
    return np.concatenate(parts, axis=2).reshape(B * N, (LMAX + 1) ** 2, C)


def _rand_params(params, seed=1):
    rng = np.random.default_rng(seed)
    return {k: jnp.asarray(np.asarray(v) * np.exp(0.3 * rng.standard_normal(v.shape))
                           + 0.2 * rng.standard_normal(v.shape)) for k, v in params.items()}


def _run(norm, x, params=None, state=None, **kw):
    p, s = norm.init(jax.random.PRNGKey(0), x)
    p = _rand_params(p) if params is None else params
    s = s if state is None else state
    y, s2 = norm.apply(p, s, x, **kw)
    return y, p, s2


# --------------------------------------------------------------------------------- EquiformerV2


def _ref_layer_norm(xe, w, b, eps, normalization):
    out = []
    for l in range(LMAX + 1):
        f = xe[:, l * l:l * l + 2 * l + 1, :]
        if l == 0:
            f = f - f.mean(axis=2, keepdims=True)
        fn = (f**2).sum(1, keepdims=True) if normalization == "norm" else (f**2).mean(
            1, keepdims=True)
        fn = (fn.mean(2, keepdims=True) + eps) ** -0.5 * w[l][None, None]
        f = f * fn
        if l == 0:
            f = f + b[None, None]
        out.append(f)
    return np.concatenate(out, 1)


@pytest.mark.parametrize("normalization", ["component", "norm"])
def test_equivariant_layer_norm_matches_fairchem_formula(normalization):
    x = _x()
    y, p, _ = _run(ir.equivariant_layer_norm(normalization=normalization), x)
    w = np.asarray(p["scale"]).reshape(LMAX + 1, C)
    ref = _ref_layer_norm(_to_eqv(x), w, np.asarray(p["bias"]), 1e-5, normalization)
    np.testing.assert_allclose(_to_eqv(y), ref, atol=EXACT, rtol=0)


def _ref_layer_norm_sh(xe, ln_w, ln_b, w, eps, balance):
    f0 = xe[:, 0, :]
    mu, var = f0.mean(-1, keepdims=True), f0.var(-1, keepdims=True)
    out = [((f0 - mu) / np.sqrt(var + eps) * ln_w + ln_b)[:, None]]
    f = xe[:, 1:, :]
    if balance:
        bw = np.concatenate([np.full(2 * l + 1, 1.0 / (2 * l + 1)) for l in range(1, LMAX + 1)])
        fn = np.einsum("nic,i->nc", f**2, bw / LMAX)[:, None]
    else:
        fn = (f**2).mean(1, keepdims=True)
    fn = (fn.mean(2, keepdims=True) + eps) ** -0.5
    for l in range(1, LMAX + 1):
        out.append(xe[:, l * l:l * l + 2 * l + 1] * fn * w[l - 1][None, None])
    return np.concatenate(out, 1)


@pytest.mark.parametrize("balance", [True, False])
def test_equivariant_layer_norm_sh_matches_fairchem_formula(balance):
    x = _x(1)
    y, p, _ = _run(ir.equivariant_layer_norm_sh(std_balance_degrees=balance), x)
    sc = np.asarray(p["scale"]).reshape(LMAX + 1, C)
    ref = _ref_layer_norm_sh(_to_eqv(x), sc[0], np.asarray(p["bias"]), sc[1:], 1e-5, balance)
    np.testing.assert_allclose(_to_eqv(y), ref, atol=EXACT, rtol=0)


def _ref_rms_sh_v2(xe, w, b, eps, centering, balance, normalization):
    f = xe.copy()
    if centering:
        f[:, 0:1] = f[:, 0:1] - f[:, 0:1].mean(2, keepdims=True)
    if normalization == "norm":
        fn = (f**2).sum(1, keepdims=True)
    elif balance:
        bw = np.concatenate([np.full(2 * l + 1, 1.0 / (2 * l + 1)) for l in range(LMAX + 1)])
        fn = np.einsum("nic,i->nc", f**2, bw / (LMAX + 1))[:, None]
    else:
        fn = (f**2).mean(1, keepdims=True)
    fn = (fn.mean(2, keepdims=True) + eps) ** -0.5
    expand = np.concatenate([np.full(2 * l + 1, l) for l in range(LMAX + 1)])
    out = f * fn * w[expand][None]
    if centering:
        out[:, 0:1] += b[None, None]
    return out


@pytest.mark.parametrize("centering,balance,normalization", [
    (True, True, "component"), (False, False, "component"), (True, False, "norm")])
def test_equivariant_rms_norm_sh_matches_fairchem_v2(centering, balance, normalization):
    x = _x(2)
    norm = ir.equivariant_rms_norm_sh(centering=centering, std_balance_degrees=balance,
                                      normalization=normalization)
    y, p, _ = _run(norm, x)
    w = np.asarray(p["scale"]).reshape(LMAX + 1, C)
    b = np.asarray(p["bias"]) if centering else None
    ref = _ref_rms_sh_v2(_to_eqv(x), w, b, 1e-5, centering, balance, normalization)
    np.testing.assert_allclose(_to_eqv(y), ref, atol=EXACT, rtol=0)


def test_rms_norm_sh_rejects_norm_with_balancing():
    with pytest.raises(ValueError, match="std_balance_degrees=False"):
        ir.equivariant_rms_norm_sh(normalization="norm", std_balance_degrees=True)


def test_degree_layer_scale_init_and_formula():
    x = _x(3)
    norm = ir.degree_layer_scale()
    p, _ = norm.init(None, x)
    expect = np.concatenate([np.ones(C), np.full(C, 1 / np.sqrt(2)), np.full(C, 0.5)])
    np.testing.assert_allclose(p["scale"], expect, rtol=1e-15)
    y, p, _ = _run(norm, x)
    w = np.asarray(p["scale"]).reshape(LMAX + 1, C)
    expand = np.concatenate([np.full(2 * l + 1, l) for l in range(LMAX + 1)])
    np.testing.assert_allclose(_to_eqv(y), _to_eqv(x) * w[expand][None], atol=EXACT, rtol=0)


# --------------------------------------------------------------------------------- e3nn BatchNorm


def _ref_e3nn_bn(x, w, b, eps, instance, normalization, running=None, momentum=0.1):
    """e3nn/nn/_batchnorm.py on input [batch, sample, dim]; returns (y, new_mean, new_var)."""
    arr = np.asarray(x.array)
    out, ix, iw, ib, means, vars_ = [], 0, 0, 0, [], []
    irm = irv = 0
    for mul_ir in x.irreps:
        d, mul = mul_ir.ir.dim, mul_ir.mul
        f = arr[:, :, ix:ix + mul * d].reshape(arr.shape[0], arr.shape[1], mul, d)
        ix += mul * d
        scalar = mul_ir.ir.l == 0 and mul_ir.ir.p == 1
        if scalar:
            if running is None:
                fm = f.mean(1).reshape(-1, 1, mul, 1) if instance else f.mean((0, 1)).reshape(
                    1, 1, mul, 1)
                means.append(fm.reshape(-1, mul)[0] if not instance else None)
            else:
                fm = running[0][irm:irm + mul].reshape(1, 1, mul, 1)
            irm += mul
            f = f - fm
        if running is None:
            fn = (f**2).sum(3) if normalization == "norm" else (f**2).mean(3)
            fn = fn.mean(1)
            if not instance:
                fn = fn.mean(0)
                vars_.append(fn)
        else:
            fn = running[1][irv:irv + mul]
        irv += mul
        fn = (fn + eps) ** -0.5 * w[iw:iw + mul]
        iw += mul
        f = f * fn.reshape(-1, 1, mul, 1)
        if scalar:
            f = f + b[ib:ib + mul].reshape(mul, 1)
            ib += mul
        out.append(f.reshape(arr.shape[0], arr.shape[1], -1))
    return np.concatenate(out, -1), means, vars_


@pytest.mark.parametrize("instance,normalization", [
    (False, "component"), (False, "norm"), (True, "component")])
def test_e3nn_batch_norm_matches_e3nn_formula(instance, normalization):
    x = _x(4, MIXED)
    norm = ir.e3nn_batch_norm(instance=instance, normalization=normalization)
    p0, s0 = norm.init(None, x)
    p = _rand_params(p0)
    y, s1 = norm.apply(p, s0, x, training=True)
    ref, means, vars_ = _ref_e3nn_bn(x, np.asarray(p["scale"]), np.asarray(p["bias"]), 1e-5,
                                     instance, normalization)
    np.testing.assert_allclose(np.asarray(y.array), ref, atol=EXACT, rtol=0)
    if not instance:  # running averages, e3nn's (1 - m) r + m batch
        np.testing.assert_allclose(s1["mean"], 0.1 * np.concatenate(means), atol=EXACT)
        np.testing.assert_allclose(s1["var"], 0.9 + 0.1 * np.concatenate(vars_), atol=EXACT)
        # eval mode uses the running statistics
        ye, s2 = norm.apply(p, s1, x, training=False)
        ref_e, _, _ = _ref_e3nn_bn(x, np.asarray(p["scale"]), np.asarray(p["bias"]), 1e-5,
                                   False, normalization,
                                   running=(np.asarray(s1["mean"]), np.asarray(s1["var"])))
        np.testing.assert_allclose(np.asarray(ye.array), ref_e, atol=EXACT, rtol=0)
        assert s2 is s1
    else:
        assert s1 == {}


def test_e3nn_instance_norm_is_per_graph_and_masked():
    x = _x(5, MIXED, b=2, n=6)
    norm = ir.e3nn_batch_norm(instance=True)
    p, s = norm.init(None, x)
    p = _rand_params(p)
    mask = jnp.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]], bool)
    y, _ = norm.apply(p, s, x, mask=mask)
    for g in range(2):
        k = int(mask[g].sum())
        xg = e3nn.IrrepsArray(x.irreps, x.array[g:g + 1, :k])
        yg, _ = norm.apply(p, s, xg)
        np.testing.assert_allclose(y.array[g, :k], yg.array[0], atol=EXACT)


# ---------------------------------------------------------------- norm_activation, soft_norm


@pytest.mark.parametrize("normalization", ["component", "norm"])
def test_norm_activation_matches_e3nn_jax(normalization):
    x = _x(6, MIXED)
    y, _, _ = _run(ir.norm_activation(activation="sigmoid", normalization=normalization), x)
    ref = e3nn.norm_activation(x, [jax.nn.sigmoid] * len(x.irreps), normalization=normalization)
    np.testing.assert_allclose(y.array, ref.array, atol=EXACT, rtol=0)
    # NumPy: each field times sigmoid(its norm)
    arr, out = np.asarray(x.array), []
    for mi, sl in zip(x.irreps, x.irreps.slices(), strict=True):
        f = arr[..., sl].reshape(B, N, mi.mul, mi.ir.dim)
        n = np.sqrt((f**2).mean(-1, keepdims=True) if normalization == "component"
                    else (f**2).sum(-1, keepdims=True))
        out.append((f / (1 + np.exp(-n))).reshape(B, N, -1))
    np.testing.assert_allclose(y.array, np.concatenate(out, -1), atol=EXACT, rtol=0)


def test_norm_activation_identity_scalars():
    x = _x(7, MIXED)
    y, _, _ = _run(ir.norm_activation(scalars="identity"), x)
    np.testing.assert_array_equal(y.array[..., :3], x.array[..., :3])


@pytest.mark.parametrize("max_component", [1.0, 0.4])
def test_soft_normalization_matches_e3nn_jax(max_component):
    x = _x(8, MIXED)
    x = e3nn.IrrepsArray(x.irreps, 2.0 * x.array)
    y, _, _ = _run(ir.soft_normalization(max_component=max_component), x)
    ref = e3nn.soft_normalization(x, max_component)
    np.testing.assert_allclose(y.array, ref.array, atol=EXACT, rtol=0)
    arr, out = np.asarray(x.array), []
    for mi, sl in zip(x.irreps, x.irreps.slices(), strict=True):
        f = arr[..., sl].reshape(B, N, mi.mul, mi.ir.dim)
        t = np.sqrt((f**2).mean(-1, keepdims=True)) / max_component
        sus = np.where(t > 0, np.exp(-1 / np.where(t > 0, t, 1)), 0)
        out.append((f / (1 + t * sus)).reshape(B, N, -1))
    np.testing.assert_allclose(y.array, np.concatenate(out, -1), atol=EXACT, rtol=0)


# --------------------------------------------------------------------------------- NormSE3


def test_norm_se3_matches_se3_transformer_formula():
    x = _x(9, MIXED)
    y, p, _ = _run(ir.norm_se3(), x)
    arr, out = np.asarray(x.array), []
    w, b = np.asarray(p["scale"]), np.asarray(p["bias"])
    i = 0
    for mi, sl in zip(x.irreps, x.irreps.slices(), strict=True):
        f = arr[..., sl].reshape(B, N, mi.mul, mi.ir.dim)
        n = np.maximum(np.linalg.norm(f, axis=-1), 2.0**-24)  # [B, N, mul]
        ln = (n - n.mean(-1, keepdims=True)) / np.sqrt(n.var(-1, keepdims=True) + 1e-5)
        ln = ln * w[i:i + mi.mul] + b[i:i + mi.mul]
        i += mi.mul
        out.append((np.maximum(ln, 0)[..., None] * f / n[..., None]).reshape(B, N, -1))
    np.testing.assert_allclose(y.array, np.concatenate(out, -1), atol=EXACT, rtol=0)


# --------------------------------------------------------------------- symmetries, mixed irreps

_ALL = {
    "equivariant_layer_norm": ir.equivariant_layer_norm,
    "equivariant_layer_norm_sh": ir.equivariant_layer_norm_sh,
    "equivariant_rms_norm_sh": ir.equivariant_rms_norm_sh,
    "degree_layer_scale": ir.degree_layer_scale,
    "e3nn_batch_norm": ir.e3nn_batch_norm,
    "e3nn_instance_norm": lambda: ir.e3nn_batch_norm(instance=True),
    "norm_activation": ir.norm_activation,
    "soft_normalization": ir.soft_normalization,
    "norm_se3": ir.norm_se3,
}


@pytest.mark.parametrize("name", sorted(_ALL))
def test_o3_and_permutation_equivariance_on_mixed_irreps(name):
    norm = _ALL[name]()
    x = _x(10, MIXED, b=2, n=5)
    p, s = norm.init(None, x)
    p = _rand_params(p)
    fn = jax.jit(lambda a: norm.apply(p, s, a, training=True)[0])
    errs = equivariance_errors(fn, jax.random.PRNGKey(3), x, group=("SO3", "O3", "permutation"),
                               kinds=("irreps",), out_kinds=("irreps",))
    for g, (err, scale) in errs.items():
        assert err / scale < 1e-12, (g, err, scale)


def test_centring_only_even_scalars():
    """0o scalars are not centred (that would break parity); 0e ones are."""
    x = e3nn.IrrepsArray("2x0e + 2x0o", jnp.array([[[1.0, 3.0, 1.0, 3.0]]]))
    y, _ = ir.equivariant_layer_norm(affine=False).apply({}, {}, x)
    np.testing.assert_allclose(y.array[0, 0, :2], [-1.0, 1.0], atol=1e-5)
    assert float(y.array[0, 0, 2]) > 0 and float(y.array[0, 0, 3]) > 0


def test_raw_vectors_read_as_1o():
    v = jax.random.normal(jax.random.PRNGKey(0), (B, N, C, 3), jnp.float64)
    norm = ir.equivariant_layer_norm()
    p, _ = norm.init(None, v)
    y, _ = norm.apply(p, {}, v)
    xi = e3nn.IrrepsArray(f"{C}x1o", v.reshape(B, N, 3 * C))
    yi, _ = norm.apply(p, {}, xi)
    assert y.shape == v.shape
    np.testing.assert_allclose(y.reshape(B, N, -1), yi.array, atol=1e-15)


def test_overflow_safe_statistics():
    x = _x(11)
    big = e3nn.IrrepsArray(x.irreps, 1e200 * x.array)
    for make in (ir.equivariant_layer_norm, ir.equivariant_rms_norm_sh,
                 lambda epsilon: ir.e3nn_batch_norm(instance=True, epsilon=epsilon)):
        # at 1e200 the epsilon is negligible: compare with epsilon = 0 on the unscaled input
        norm, exact = make(epsilon=1e-5), make(epsilon=0.0)
        p, s = norm.init(None, x)
        y1, _ = exact.apply(p, s, x, training=True)
        y2, _ = norm.apply(p, s, big, training=True)
        assert np.all(np.isfinite(y2.array))
        np.testing.assert_allclose(y2.array, y1.array, atol=1e-9)


@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e30])
def test_field_norm_unit_and_reciprocal_gradients_in_float32(scale):
    f = jnp.asarray([[3.0, -4.0, 0.0], [0.0, 0.0, 0.0]], jnp.float32) * jnp.float32(scale)
    n = ir.field_norm(f)
    np.testing.assert_allclose(np.asarray(n, np.float64)[:, 0] / scale, [5.0, 0.0], rtol=1e-6)
    g = jax.grad(lambda a: jnp.sum(ir.field_norm(a)))(f)
    np.testing.assert_allclose(g, [[0.6, -0.8, 0.0], [0.0, 0.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(ir.unit(f), [[0.6, -0.8, 0.0], [0.0, 0.0, 0.0]], rtol=1e-6)
    d = jnp.float32(5.0 * scale)
    gr = jax.grad(lambda a: ir.stable_reciprocal(a) * d)(d)  # -d / d^2 = -1 / d
    np.testing.assert_allclose(float(gr) * 5.0 * scale, -1.0, rtol=1e-6)
