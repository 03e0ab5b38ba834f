"""Random group elements and their action (geonorm_jax.geometry)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from geonorm_jax import geometry

KEY = jax.random.PRNGKey(0)


def _orthogonal(m):
    m = np.asarray(m, np.float64)
    np.testing.assert_allclose(m @ np.swapaxes(m, -1, -2), np.broadcast_to(np.eye(3), m.shape),
                               atol=1e-5)
    return np.linalg.det(m)


def test_rotation_reflection_and_orthogonal_determinants():
    np.testing.assert_allclose(_orthogonal(geometry.random_rotation(KEY, (16,))), 1.0, atol=1e-5)
    np.testing.assert_allclose(_orthogonal(geometry.random_reflection(KEY, (16,))), -1.0,
                               atol=1e-5)
    det = _orthogonal(geometry.random_orthogonal(KEY, (64,)))
    np.testing.assert_allclose(np.abs(det), 1.0, atol=1e-5)
    assert (det > 0).any() and (det < 0).any()  # both components of O(3)


def test_rotate_and_permute_nodes_act_on_the_documented_axes():
    x = jax.random.normal(KEY, (2, 4, 3))
    r = geometry.random_rotation(jax.random.PRNGKey(1))
    np.testing.assert_allclose(geometry.rotate(x, r), np.asarray(x) @ np.asarray(r).T,
                               rtol=1e-5, atol=1e-6)
    perm = jnp.asarray([2, 0, 3, 1])
    np.testing.assert_array_equal(geometry.permute_nodes(x, perm), np.asarray(x)[:, [2, 0, 3, 1]])
    edges = jnp.arange(32.0).reshape(2, 4, 4)
    np.testing.assert_array_equal(geometry.permute_nodes(edges, perm, axes=(1, 2)),
                                  np.asarray(edges)[:, perm][:, :, perm])
    t = geometry.random_translation(KEY, (1000,), scale=2.0)
    assert t.shape == (1000, 3) and 1.8 < float(jnp.std(t)) < 2.2


def test_magnitude_scale_is_one_in_range_and_a_power_of_two_outside():
    m = jnp.asarray([0.0, 1e-15, 1.0, 3.0, 1e15, 1e-30, 1e30, 3e38, jnp.inf], jnp.float32)
    s = np.asarray(geometry.magnitude_scale(m), np.float64)
    np.testing.assert_array_equal(s[:5], 1.0)  # inside 2**+-50: no rescaling at all
    mm = np.asarray(m, np.float64)[5:8]
    assert np.all(np.log2(s[5:8]) == np.round(np.log2(s[5:8])))  # exact powers of two
    assert np.all((mm / s[5:8] >= 1.0) & (mm / s[5:8] < [2.0, 2.0, 8.0]))  # 1/s stays normal
    assert s[8] == 1.0  # non-finite: left alone
    # the floor (sqrt(eps)) keeps eps / s**2 from overflowing for tiny inputs
    assert float(geometry.magnitude_scale(jnp.float32(1e-30), 1e-3)) == 1.0
    assert float(jax.grad(lambda a: geometry.magnitude_scale(a) * a)(jnp.float32(1e30))) == (
        float(geometry.magnitude_scale(jnp.float32(1e30))))  # no gradient through s
