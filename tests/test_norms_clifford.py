"""Tests for the Clifford-algebra helper (geonorm_jax.norms.clifford) and the multivector norms
of CGENN (mv_layer_norm, grade_norm) and GATr (gatr_layer_norm).

The helper is checked against the algebra's defining identities (e_i^2 = m_i, anticommuting
base vectors, q(x) = <~x x>_0, the outermorphism of an orthogonal map preserving q and the
geometric product); the layers against NumPy references of the original code's formulas to
1e-10 in float64 and for equivariance under the outermorphism of random O(3) elements.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geonorm_jax import geometry
from geonorm_jax.norms import clifford_norms as cn
from geonorm_jax.norms.clifford import CliffordAlgebra

B, N, C = 2, 4, 3
EXACT = 1e-10


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _mv(seed, size, shape=(B, N, C)):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape + (size,)))


# ------------------------------------------------------------------------------------- algebra


@pytest.mark.parametrize("metric", [(1, 1, 1), (0, 1, 1, 1), (1, -1)])
def test_algebra_defining_identities(metric):
    alg = CliffordAlgebra(metric)
    assert alg.size == 2 ** len(metric) and alg.blades[0] == ()
    e = np.eye(alg.size)
    gp = lambda a, b: np.asarray(alg.geometric_product(jnp.asarray(a), jnp.asarray(b)))
    for i in range(alg.dim):
        ei = e[1 + i]
        np.testing.assert_allclose(gp(ei, ei), metric[i] * e[0])  # e_i^2 = m_i
        for j in range(i + 1, alg.dim):
            ej = e[1 + j]
            np.testing.assert_allclose(gp(ei, ej), -gp(ej, ei))  # anticommute
    # associativity and q(x) = <~x x>_0
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(alg.size) for _ in range(3))
    np.testing.assert_allclose(gp(gp(a, b), c), gp(a, gp(b, c)), atol=1e-12)
    x = jnp.asarray(a)
    q_ref = float(alg.geometric_product(alg.reverse(x), x)[0])
    assert abs(float(alg.quadratic_form(x)) - q_ref) < 1e-12


def test_gatr_blade_order_and_degenerate_e0():
    alg = CliffordAlgebra((0, 1, 1, 1))
    names = ["".join(str(i) for i in b) for b in alg.blades]
    assert names == ["", "0", "1", "2", "3", "01", "02", "03", "12", "13", "23", "012", "013",
                     "023", "123", "0123"]
    eta = alg.eta
    assert all(eta[k] == (0.0 if 0 in b else 1.0) for k, b in enumerate(alg.blades))


def test_outermorphism_is_an_algebra_automorphism_for_orthogonal_maps():
    alg = CliffordAlgebra((1, 1, 1))
    r = np.asarray(geometry.random_orthogonal(jax.random.PRNGKey(0), (), jnp.float64))
    o = jnp.asarray(alg.outermorphism(r))
    x, y = _mv(1, 8, ()), _mv(2, 8, ())
    np.testing.assert_allclose(alg.geometric_product(x @ o.T, y @ o.T),
                               alg.geometric_product(x, y) @ o.T, atol=1e-12)
    np.testing.assert_allclose(alg.quadratic_form(x @ o.T), alg.quadratic_form(x), atol=1e-12)
    np.testing.assert_allclose(np.asarray(o)[1:4, 1:4], r)  # grade 1 is the map itself
    with pytest.raises(ValueError, match=r"expected a \[3, 3\] matrix"):
        alg.outermorphism(np.eye(2))


def test_algebra_rejects_bad_metric():
    with pytest.raises(ValueError, match="received"):
        CliffordAlgebra((1, 2))


# ------------------------------------------------------------------------------------- layers


def _q(x, eta):
    return (np.asarray(x) ** 2 * eta).sum(-1)


def test_mv_layer_norm_matches_cgenn():
    alg = CliffordAlgebra((1, 1, 1))
    x = _mv(3, 8)
    a = jnp.asarray([0.5, 1.2, 2.0])
    y, _ = cn.mv_layer_norm().apply({"a": a}, {}, x)
    norm = (_q(x, alg.eta) ** 2 + 1e-16) ** 0.25  # _smooth_abs_sqrt of the full multivector
    ref = np.asarray(a)[:, None] * np.asarray(x) / (norm.mean(-1, keepdims=True)[..., None]
                                                   + 1e-6)
    np.testing.assert_allclose(y, ref, atol=EXACT, rtol=0)


def test_grade_norm_matches_cgenn():
    alg = CliffordAlgebra((1, 1, 1))
    x = _mv(4, 8)
    a = jnp.asarray(np.random.default_rng(5).standard_normal((C, 4)))
    y, _ = cn.grade_norm().apply({"a": a}, {}, x)
    xn = np.asarray(x)
    norms = np.stack([(_q(xn * (alg.grades == k), alg.eta) ** 2 + 1e-16) ** 0.25
                      for k in range(4)], -1)  # [B, N, C, 4]
    sa = 1 / (1 + np.exp(-np.asarray(a)))
    f = sa * (norms - 1) + 1
    ref = xn / (f[..., alg.grades] + 1e-6)  # repeat_interleave over each grade's blades
    np.testing.assert_allclose(y, ref, atol=EXACT, rtol=0)


def test_gatr_layer_norm_matches_gatr_and_ignores_e0():
    x = _mv(6, 16)
    y, _ = cn.gatr_layer_norm().apply({}, {}, x)
    no_e0 = np.array([0 not in b for b in CliffordAlgebra((0, 1, 1, 1)).blades])
    xn = np.asarray(x)
    ms = np.maximum((xn[..., no_e0] ** 2).sum(-1).mean(-1, keepdims=True), 0.01)
    np.testing.assert_allclose(y, xn / np.sqrt(ms)[..., None], atol=EXACT, rtol=0)
    # the e0 components do not enter the statistic
    x2 = x.at[..., 1].add(5.0)
    y2, _ = cn.gatr_layer_norm().apply({}, {}, x2)
    np.testing.assert_allclose(np.delete(np.asarray(y2), 1, -1), np.delete(np.asarray(y), 1, -1),
                               atol=EXACT)
    # a tiny multivector hits the 0.01 clamp
    y3, _ = cn.gatr_layer_norm().apply({}, {}, 1e-3 * x)
    np.testing.assert_allclose(y3, 1e-3 * xn / 0.1, atol=EXACT)


@pytest.mark.parametrize("make,size,metric", [
    (cn.mv_layer_norm, 8, (1, 1, 1)),
    (cn.grade_norm, 8, (1, 1, 1)),
    (cn.gatr_layer_norm, 16, (0, 1, 1, 1)),
])
def test_multivector_norms_commute_with_orthogonal_outermorphisms(make, size, metric):
    alg = CliffordAlgebra(metric)
    norm = make()
    x = _mv(7, size)
    p, _ = norm.init(None, x)
    p = {k: v + 0.3 * jnp.asarray(np.random.default_rng(8).standard_normal(v.shape))
         for k, v in p.items()}
    for seed in range(3):
        r = np.asarray(geometry.random_orthogonal(jax.random.PRNGKey(seed), (), jnp.float64))
        m = r if alg.dim == 3 else np.block([[np.ones((1, 1)), np.zeros((1, 3))],
                                             [np.zeros((3, 1)), r]])
        o = jnp.asarray(alg.outermorphism(m))
        y, _ = norm.apply(p, {}, x)
        yr, _ = norm.apply(p, {}, x @ o.T)
        np.testing.assert_allclose(yr, y @ o.T, atol=1e-12)


@pytest.mark.parametrize("make,size", [(cn.mv_layer_norm, 8), (cn.grade_norm, 8),
                                       (cn.gatr_layer_norm, 16)])
def test_vectors_are_the_grade_one_part(make, size):
    norm = make()
    v = _mv(9, 3)
    p, _ = norm.init(None, v)
    y, _ = norm.apply(p, {}, v)
    idx = [1, 2, 3] if size == 8 else [2, 3, 4]
    mv = jnp.zeros(v.shape[:-1] + (size,)).at[..., idx].set(v)
    ymv, _ = norm.apply(p, {}, mv)
    np.testing.assert_allclose(y, ymv[..., idx], atol=1e-15)
    rest = np.delete(np.asarray(ymv), idx, -1)
    assert np.all(rest == 0)


def test_overflow_safe():
    for make, size in ((cn.mv_layer_norm, 8), (cn.gatr_layer_norm, 16)):
        x = _mv(10, size)
        norm = make()
        p, _ = norm.init(None, x)
        y, _ = norm.apply(p, {}, x)
        yb, _ = norm.apply(p, {}, 1e200 * x)
        assert np.all(np.isfinite(yb))
        np.testing.assert_allclose(yb, y, rtol=1e-4)  # epsilon negligible at 1e200
