"""Tests for geonorm_jax.norms.molecular: ViSNet VecLayerNorm, TensorNet tensor_norm, MACE density
normalization, NequIP per-species neighbour normalization and MiDi SE3Norm.

NumPy references follow the original code (torchmd-net, mace, nequip, midi) in float64 to 1e-10.
The generic checks are in test_catalog_contract.py.
"""

from __future__ import annotations

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geonorm_jax import geometry
from geonorm_jax.norms import molecular as mol

B, N, C = 2, 5, 4
EXACT = 1e-10


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _vec(seed=0, shape=(B, N, C, 3)):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape))


# ------------------------------------------------------------------------------------- ViSNet


def _ref_visnet(v, norm_type, weight, eps=1e-12):
    """torchmd-net VecLayerNorm on vec [atoms, 3, C] (here [B, N, C, 3] -> [B*N, 3, C])."""
    vec = np.asarray(v).reshape(-1, C, 3).transpose(0, 2, 1)
    dist = np.linalg.norm(vec, axis=1, keepdims=True)  # [A, 1, C]
    if norm_type == "rms":
        d = np.maximum(dist[:, 0], eps)
        d = np.sqrt(np.mean(d**2, axis=-1))
        out = vec / np.maximum(d, 0)[:, None, None]
    else:
        dist = np.maximum(dist, eps)
        direct = vec / dist
        mx, mn = dist.max(-1), dist.min(-1)  # [A, 1]
        delta = (mx - mn).reshape(-1)
        delta = np.where(delta == 0, 1.0, delta)
        dist = (dist - mn[:, :, None]) / delta[:, None, None]
        out = np.maximum(dist, 0) * direct
    out = out * weight[None, None]
    return out.transpose(0, 2, 1).reshape(np.shape(v))


@pytest.mark.parametrize("norm_type", ["max_min", "rms"])
def test_vec_layer_norm_matches_visnet(norm_type):
    v = _vec(1)
    v = v.at[0, 0, 1].set(0.0)  # a zero vector among the channels
    norm = mol.vec_layer_norm(norm_type=norm_type)
    p, _ = norm.init(None, v)
    p = {"weight": jnp.asarray([0.5, 1.5, -1.0, 2.0])}
    y, _ = norm.apply(p, {}, v)
    np.testing.assert_allclose(y, _ref_visnet(v, norm_type, np.asarray(p["weight"])),
                               atol=EXACT, rtol=0)


def test_vec_layer_norm_irreps_chunks_like_visnet_split():
    """ViSNet splits [l=1 (3), l=2 (5)] and normalizes each; an IrrepsArray per chunk does."""
    x = e3nn.normal("4x1o + 4x2e", jax.random.PRNGKey(0), (B, N)).astype(jnp.float64)
    norm = mol.vec_layer_norm(norm_type="rms", trainable=False)
    y, _ = norm.apply({}, {}, x)
    for chunk_y, chunk_x in zip(y.chunks, x.chunks, strict=True):
        n = np.linalg.norm(np.asarray(chunk_x), axis=-1)
        rms = np.sqrt(np.mean(np.maximum(n, 1e-12) ** 2, axis=-1))
        np.testing.assert_allclose(chunk_y, np.asarray(chunk_x) / rms[..., None, None],
                                   atol=EXACT)


# ------------------------------------------------------------------------------------- TensorNet


def test_tensor_norm_matches_tensornet_and_rotates_as_rank2():
    x = _vec(2, (B, N, C, 3, 3))
    y, _ = mol.tensor_norm().apply({}, {}, x)
    xn = np.asarray(x)
    ref = xn / ((xn**2).sum((-2, -1)) + 1)[..., None, None]
    np.testing.assert_allclose(y, ref, atol=EXACT, rtol=0)
    r = np.asarray(geometry.random_orthogonal(jax.random.PRNGKey(1), (), jnp.float64))
    rot = lambda t: jnp.einsum("ij,...jk,lk->...il", r, t, r)
    y2, _ = mol.tensor_norm().apply({}, {}, rot(x))
    np.testing.assert_allclose(y2, rot(y), atol=1e-13)


def test_tensor_norm_irreps_per_field():
    x = e3nn.normal("3x0e + 2x1o + 2x2e", jax.random.PRNGKey(3), (B, N)).astype(jnp.float64)
    y, _ = mol.tensor_norm().apply({}, {}, x)
    for cy, cx in zip(y.chunks, x.chunks, strict=True):
        cx = np.asarray(cx)
        np.testing.assert_allclose(cy, cx / ((cx**2).sum(-1, keepdims=True) + 1), atol=EXACT)


def test_tensor_norm_overflow_safe():
    x = _vec(3, (B, N, C, 3, 3)) * 1e200
    y, _ = mol.tensor_norm().apply({}, {}, x)
    xn = np.asarray(x) / 1e200
    ref = xn / ((xn**2).sum((-2, -1)))[..., None, None] / 1e200
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(np.asarray(y) * 1e200, ref * 1e200, rtol=1e-12)


# ------------------------------------------------------------------------------------- MACE


def _ref_bessel(r, num_basis=8, r_max=5.0, p=5):
    w = np.pi / r_max * np.arange(1, num_basis + 1)
    bessel = np.sqrt(2.0 / r_max) * np.sin(w * r[..., None]) / r[..., None]
    u = r[..., None] / r_max
    env = (1 - (p + 1) * (p + 2) / 2 * u**p + p * (p + 2) * u ** (p + 1)
           - p * (p + 1) / 2 * u ** (p + 2)) * (u < 1)
    return bessel * env


def test_mace_density_norm_matches_mace_formula_with_mask():
    x = _vec(4)
    pos = 1.5 * _vec(5, (B, N, 3))
    mask = jnp.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], bool)
    norm = mol.mace_density_norm()
    p, _ = norm.init(jax.random.PRNGKey(0), x, positions=pos)
    y, _ = norm.apply(p, {}, x, mask=mask, positions=pos)
    w = np.asarray(p["density_weight"])
    posn, m = np.asarray(pos), np.asarray(mask)
    ref = np.zeros_like(np.asarray(x))
    for b in range(B):
        for i in range(N):
            rho = 0.0
            for j in range(N):  # scatter_sum over edges j -> i of real atoms
                if j == i or not m[b, j]:
                    continue
                e = _ref_bessel(np.linalg.norm(posn[b, i] - posn[b, j]))
                rho += np.tanh((e @ w / np.sqrt(8)) ** 2)
            ref[b, i] = np.asarray(x)[b, i] / (rho + 1)
    real = m[..., None, None].repeat(C, 2).repeat(3, 3)
    np.testing.assert_allclose(np.where(real, y, 0), np.where(real, ref, 0), atol=EXACT)


def test_mace_density_norm_edge_features_and_identity_without_context():
    x = _vec(6)
    e = _vec(7, (B, N, N, 3))
    adj = jnp.asarray(np.random.default_rng(8).random((B, N, N)) > 0.4)
    norm = mol.mace_density_norm()
    p, _ = norm.init(jax.random.PRNGKey(0), x, edge_features=e)
    assert p["density_weight"].shape == (3,)
    y, _ = norm.apply(p, {}, x, edge_features=e, adjacency=adj)
    h = np.einsum("bijf,f->bij", np.asarray(e), np.asarray(p["density_weight"])) / np.sqrt(3)
    keep = np.asarray(adj) & ~np.eye(N, dtype=bool)
    rho = np.where(keep, np.tanh(h**2), 0).sum(-1)
    np.testing.assert_allclose(y, np.asarray(x) / (rho + 1)[..., None, None], atol=EXACT)
    y0, _ = norm.apply(p, {}, x)
    np.testing.assert_array_equal(y0, x)


def test_bessel_edge_features_finite_at_zero_distance():
    r = jnp.array([0.0, 1.0, 6.0])
    e = mol.bessel_edge_features(r)
    np.testing.assert_allclose(e[1:], _ref_bessel(np.array([1.0, 6.0])), atol=EXACT)
    w = np.pi / 5.0 * np.arange(1, 9)
    np.testing.assert_allclose(e[0], np.sqrt(2 / 5.0) * w, atol=EXACT)
    g = jax.grad(lambda r: jnp.sum(mol.bessel_edge_features(r)))(r)
    assert np.all(np.isfinite(g))


# ------------------------------------------------------------------------------------- NequIP


def test_species_neighbor_norm_matches_nequip_lookup():
    x = _vec(9)
    z = jnp.array([[0, 1, 2, 1, 0], [2, 2, 0, 1, 1]])
    avg = (4.0, 9.0, 16.0)
    norm = mol.species_neighbor_norm(avg_num_neighbors=avg)
    _, s = norm.init(None, x, species=z)
    y, _ = norm.apply({}, s, x, species=z)
    const = 1.0 / np.sqrt(np.asarray(avg))  # nequip: norm_const = 1/sqrt(N), embedding lookup
    np.testing.assert_allclose(y, np.asarray(x) * const[np.asarray(z)][..., None, None],
                               atol=EXACT)
    y1, _ = mol.species_neighbor_norm(avg_num_neighbors=4.0).apply(
        {}, {"avg_num_neighbors": jnp.array([4.0])}, x)
    np.testing.assert_allclose(y1, np.asarray(x) / 2.0, atol=EXACT)
    with pytest.raises(ValueError, match="species"):
        norm.apply({}, s, x)


def test_species_neighbor_norm_estimates_per_type_counts():
    x = _vec(10)
    z = jnp.array([[0, 0, 1, 1, 1], [0, 1, 1, 1, 1]])
    mask = jnp.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], bool)
    adj = jnp.ones((B, N, N)) - jnp.eye(N)
    _, s = mol.species_neighbor_norm(num_species=3).init(None, x, mask=mask, species=z,
                                                         adjacency=adj)
    # type 0: atoms (0,0),(0,1) with 3 real neighbours, (1,0) with 4 -> 10/3; type 1: 3,3 and
    # 4,4,4,4 -> 22/6; type 2 absent -> 1
    np.testing.assert_allclose(s["avg_num_neighbors"], [10 / 3, 22 / 6, 1.0], rtol=1e-6)


# ------------------------------------------------------------------------------------- MiDi


def test_se3_coord_norm_matches_midi_with_zero_padding():
    pos = _vec(11, (B, N, 3))
    mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    norm = mol.se3_coord_norm()
    p = {"scale": jnp.array([1.7])}
    y, _ = norm.apply(p, {}, pos, mask=mask)
    posn = np.asarray(pos) * np.asarray(mask)[..., None]  # MiDi zeroes padded positions
    nrm = np.linalg.norm(posn, axis=-1, keepdims=True)
    mean = nrm.sum(1, keepdims=True) / np.asarray(mask).sum(1)[:, None, None]
    ref = 1.7 * posn / (mean + 1e-5)
    real = np.asarray(mask)[..., None].repeat(3, -1)
    np.testing.assert_allclose(np.where(real, y, 0), np.where(real, ref, 0), atol=EXACT)


def test_se3_coord_norm_is_not_translation_equivariant():
    """MiDi assumes zero-centred inputs: the layer itself normalizes about the origin."""
    pos = _vec(12, (1, N, 3))
    norm = mol.se3_coord_norm()
    p, _ = norm.init(None, pos)
    t = jnp.array([[[3.0, 0.0, 0.0]]])
    y, _ = norm.apply(p, {}, pos)
    yt, _ = norm.apply(p, {}, pos + t)
    assert float(jnp.max(jnp.abs(yt - (y + t)))) > 0.1
