"""The equivariance kit's split-level functions (trained models on N-body splits)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geonorm_jax import geometry, testing

S, N = 6, 5


def _split(dtype=jnp.float32):
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    return {
        "loc": 2.0 * jax.random.normal(k[0], (S, N, 3), dtype) + 1.0,
        "vel": jax.random.normal(k[1], (S, N, 3), dtype),
        "charges": jnp.sign(jax.random.normal(k[2], (S, N, 1), dtype)),
        "target": jax.random.normal(k[3], (S, N, 3), dtype),
        "mask": jnp.arange(N)[None, :].repeat(S, 0) < N - 1,
    }


def _equivariant(d):  # E(3)- and permutation-equivariant: positions plus charged velocities
    return d["loc"] + 0.1 * d["charges"] * d["vel"]


def _elements(data):
    return testing.random_split_transforms(jax.random.PRNGKey(1), data)


def test_transform_split_acts_on_each_field_by_its_kind():
    data = _split()
    el = _elements(data)
    rot, t, perm = el["rotation"], el["translation"], el["permutation"]
    r = testing.transform_split(data, rotation=rot)
    for name in ("loc", "vel", "target"):
        expected = np.stack([np.asarray(data[name][s]) @ np.asarray(rot[s]).T for s in range(S)])
        np.testing.assert_allclose(r[name], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(r["charges"], data["charges"])
    tr = testing.transform_split(data, translation=t)
    np.testing.assert_allclose(tr["loc"], data["loc"] + t[:, None], rtol=1e-6)
    np.testing.assert_allclose(tr["target"], data["target"] + t[:, None], rtol=1e-6)
    np.testing.assert_array_equal(tr["vel"], data["vel"])
    p = testing.transform_split(data, permutation=perm)
    for name, a in data.items():
        expected = np.stack([np.asarray(a[s])[np.asarray(perm[s])] for s in range(S)])
        np.testing.assert_array_equal(p[name], expected)


def test_transform_positions_keeps_numpy_float64_and_leading_axes():
    data = _split()
    el = {k: np.asarray(v) for k, v in _elements(data).items()}
    el["rotation"] = el["rotation"].astype(np.float64)
    el["translation"] = el["translation"].astype(np.float64)
    y = np.random.default_rng(0).normal(size=(2, S, N, 3))  # a seed axis in front
    out = testing.transform_positions(y, **el)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == y.shape
    for seed in range(2):
        for s in range(S):
            expected = (y[seed, s] @ el["rotation"][s].T + el["translation"][s])
            np.testing.assert_allclose(out[seed, s], expected[el["permutation"][s]], rtol=1e-12)


def test_random_split_transforms_are_group_elements():
    data = _split()
    el = _elements(data)
    rot = np.asarray(el["rotation"], np.float64)
    np.testing.assert_allclose(rot @ np.swapaxes(rot, 1, 2), np.eye(3)[None].repeat(S, 0),
                               atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-5)
    assert sorted(np.asarray(el["permutation"][0]).tolist()) == list(range(N))
    assert el["translation"].shape == (S, 3)
    assert testing.random_split_transforms(jax.random.PRNGKey(2), data)["rotation"].shape == (
        S, 3, 3)
    assert not np.array_equal(
        testing.random_split_transforms(jax.random.PRNGKey(2), data)["translation"],
        el["translation"])


def test_model_equivariance_errors_separate_equivariant_and_broken_models():
    data = _split()
    el = _elements(data)
    good = jax.jit(lambda: testing.model_equivariance_errors(_equivariant, data, **el))()
    assert all(float(v) < 1e-6 for v in good.values()), good
    w = jnp.asarray([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.3, 0.0, 2.0]])
    rotation_broken = lambda d: d["loc"] @ w  # translation- and permutation-equivariant only
    bad = testing.model_equivariance_errors(rotation_broken, data, **el)
    assert float(bad["rot"]) > 0.05 and float(bad["trans"]) > 0.05
    assert float(bad["perm"]) < 1e-6
    order_broken = lambda d: d["loc"] + jnp.cumsum(d["vel"], axis=1)  # depends on node order
    assert float(testing.model_equivariance_errors(order_broken, data, **el)["perm"]) > 0.05


def test_model_equivariance_errors_vmap_over_parameters():
    data = _split()
    el = _elements(data)
    scales = jnp.asarray([0.0, 1.0])  # 0: equivariant, 1: breaks rotations

    def one(a):
        w = jnp.eye(3) + a * jnp.asarray([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
        return testing.model_equivariance_errors(lambda d: d["loc"] @ w, data, **el)

    errs = jax.jit(jax.vmap(one))(scales)
    assert errs["rot"].shape == (2,)
    assert float(errs["rot"][0]) < 1e-6 < 0.05 < float(errs["rot"][1])


def test_equivariance_residual_is_zero_for_the_transformed_prediction():
    data = _split()
    el = _elements(data)
    y = _equivariant(data)
    moved = testing.transform_positions(y, **el)
    np.testing.assert_array_equal(testing.equivariance_residual(moved, y, **el), 0.0)


@pytest.mark.parametrize("name, value, shape", [
    ("rotation", geometry.random_rotation(jax.random.PRNGKey(0), (S + 1,)), r"\[6, 3, 3\]"),
    ("translation", jnp.zeros((S, 2)), r"\[6, 3\]"),
    ("permutation", jnp.zeros((S, N + 1), int), r"\[6, 5\]"),
])
def test_bad_element_shapes_name_the_expected_shape(name, value, shape):
    with pytest.raises(ValueError, match=name + ": expected shape " + shape):
        testing.transform_split(_split(), **{name: value})


def test_bad_split_names_loc():
    with pytest.raises(ValueError, match=r"data\['loc'\]: expected shape \[S, N, 3\]"):
        testing.transform_split({"loc": jnp.zeros((S, N))})
