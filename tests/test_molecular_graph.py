"""The molecular batch layout, radius graphs, radial functions and energy_and_forces."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _molecules import ETHANOL_Z, ethanol_frames

from geonorm_jax.models import molecular_graph as mg
from geonorm_jax.models import radial


def _brute_pairs(pos, graph_ids, mask, cutoff):
    """Set of (sender j, receiver i) pairs by a double loop."""
    out = set()
    n = len(pos)
    for i in range(n):
        for j in range(n):
            if i != j and mask[i] and mask[j] and graph_ids[i] == graph_ids[j]:
                if np.linalg.norm(pos[j] - pos[i]) < cutoff:
                    out.add((j, i))
    return out


def test_batch_frames_layout_and_cutoff_mask():
    frames = ethanol_frames(3)
    g = mg.batch_frames(jnp.asarray(frames), ETHANOL_Z, cutoff=2.0)
    a = 9
    assert g.num_graphs == 3 and g.atoms_per_graph == a and g.edges_per_graph == a * (a - 1)
    assert g.positions.shape == (3 * a, 3) and g.senders.shape == (3 * a * (a - 1),)
    np.testing.assert_array_equal(g.graph_ids, np.repeat(np.arange(3), a))
    np.testing.assert_array_equal(g.species, np.tile(ETHANOL_Z, 3))
    # every candidate edge stays inside its molecule block, in the block of its graph
    blk = np.arange(g.num_edges) // g.edges_per_graph
    np.testing.assert_array_equal(np.asarray(g.senders) // a, blk)
    np.testing.assert_array_equal(np.asarray(g.receivers) // a, blk)
    got = {
        (int(s), int(r))
        for s, r, m in zip(g.senders, g.receivers, g.edge_mask, strict=True)
        if m
    }
    want = _brute_pairs(frames.reshape(-1, 3), np.repeat(np.arange(3), a), np.ones(3 * a), 2.0)
    assert got == want and 0 < len(want) < g.num_edges


def test_batch_frames_mask_recomputed_inside_jit():
    frames = jnp.asarray(ethanol_frames(1))
    f = jax.jit(lambda p: mg.batch_frames(p, ETHANOL_Z, cutoff=1.2).edge_mask.sum())
    n0 = int(f(frames))
    assert int(f(frames * 2.0)) < n0  # stretched molecule: fewer bonds within 1.2 Å


def test_batch_frames_padding_mask_and_errors():
    frames = jnp.asarray(ethanol_frames(2))
    z = np.concatenate([ETHANOL_Z, [0]])
    pos = jnp.concatenate([frames, jnp.zeros((2, 1, 3))], axis=1)
    g = mg.batch_frames(pos, z, cutoff=5.0)
    assert not bool(g.atom_mask[9]) and int(g.species[9]) == 0
    touches_pad = (np.asarray(g.senders) % 10 == 9) | (np.asarray(g.receivers) % 10 == 9)
    assert not np.any(np.asarray(g.edge_mask)[touches_pad])
    with pytest.raises(ValueError, match=r"positions \[B, A, 3\]"):
        mg.batch_frames(frames[0], ETHANOL_Z, cutoff=2.0)
    with pytest.raises(ValueError, match=r"\(2, 9\)"):
        mg.batch_frames(frames, ETHANOL_Z[:5], cutoff=2.0)
    with pytest.raises(ValueError, match="cutoff"):
        mg.batch_frames(frames, ETHANOL_Z, cutoff=-1.0)


def test_validate_names_shapes():
    g = mg.batch_frames(jnp.asarray(ethanol_frames(2)), ETHANOL_Z, cutoff=2.0)
    with pytest.raises(ValueError, match=r"species: expected shape \[N\] = \(18,\)"):
        g.replace(species=g.species[:5]).validate()
    with pytest.raises(ValueError, match="edge_mask"):
        g.replace(edge_mask=g.edge_mask[:3]).validate()
    with pytest.raises(ValueError, match="atoms_per_graph"):
        g.replace(atoms_per_graph=4).validate()


def test_radius_graph_matches_brute_force_and_budget():
    frames = ethanol_frames(2)
    pos = np.concatenate([frames.reshape(-1, 3), np.zeros((2, 3))])  # 2 padding rows
    gid = np.concatenate([np.repeat([0, 1], 9), [1, 1]]).astype(np.int32)
    mask = np.concatenate([np.ones(18, bool), np.zeros(2, bool)])
    want = _brute_pairs(pos, gid, mask, 1.6)
    s, r, m, n = mg.radius_graph(jnp.asarray(pos), gid, mask, 1.6, max_edges=len(want) + 5)
    assert int(n) == len(want) and int(m.sum()) == len(want)
    got = {(int(a), int(b)) for a, b, k in zip(s, r, m, strict=True) if k}
    assert got == want
    # sorted by receiver, real edges first
    assert np.all(np.diff(np.asarray(r)[: len(want)]) >= 0)
    assert not np.any(np.asarray(m)[len(want) :])
    with pytest.raises(ValueError, match=rf"found {len(want)} edges.*max_edges = 3"):
        mg.radius_graph(jnp.asarray(pos), gid, mask, 1.6, max_edges=3)
    jitted = jax.jit(mg.radius_graph, static_argnames=("cutoff", "max_edges"))
    *_, m3, n3 = jitted(jnp.asarray(pos), gid, mask, cutoff=1.6, max_edges=3)
    assert int(n3) == len(want) > 3 and int(m3.sum()) == 3  # overflow reported, not raised


def test_to_blocks_roundtrip():
    x = jnp.arange(24.0).reshape(12, 2)
    m = jnp.arange(12) % 3 != 0
    xb, mb = mg.to_blocks(x, m, 4)
    assert xb.shape == (3, 4, 2) and mb.shape == (3, 4)
    np.testing.assert_array_equal(mg.from_blocks(xb), x)
    x1, m1 = mg.to_blocks(x, m, None)
    assert x1.shape == (1, 12, 2) and m1.shape == (1, 12)


def test_radial_functions_against_formulas():
    rc = 4.0
    r = jnp.asarray([0.5, 1.7, 3.2], jnp.float64)
    b = radial.bessel_basis(r, rc, 3)
    want = np.array([[2 / rc * np.sin(n * np.pi * x / rc) / x for n in (1, 2, 3)] for x in r])
    np.testing.assert_allclose(b, want, rtol=1e-12)
    p = 6
    u = lambda x: radial.polynomial_envelope(x, rc, p)  # noqa: E731
    d = 1.7 / rc
    hand = 1 - 28 * d**6 + 48 * d**7 - 21 * d**8  # (p+1)(p+2)/2 = 28, p(p+2) = 48, p(p+1)/2 = 21
    np.testing.assert_allclose(u(jnp.float64(1.7)), hand, rtol=1e-12)
    assert float(u(jnp.float64(0.0))) == 1.0 and float(u(jnp.float64(rc + 1))) == 0.0
    for k in (jax.grad(u), jax.grad(jax.grad(u))):  # smooth at the cutoff
        assert abs(float(k(jnp.float64(rc - 1e-9)))) < 1e-6
        assert float(k(jnp.float64(rc + 0.1))) == 0.0
    np.testing.assert_allclose(
        radial.cosine_cutoff(r, rc), 0.5 * (np.cos(np.pi * np.asarray(r) / rc) + 1), rtol=1e-12
    )
    assert float(radial.cosine_cutoff(jnp.float64(rc), rc)) == 0.0
    g = radial.gaussian_rbf(r, 0.0, 2.0, 5, gamma=10.0)
    np.testing.assert_allclose(
        g, np.exp(-10.0 * (np.asarray(r)[:, None] - np.linspace(0, 2, 5)) ** 2), rtol=1e-12
    )
    assert float(radial.shifted_softplus(jnp.float64(0.0))) == 0.0
    ssp2 = radial.shifted_softplus(jnp.float64(2.0))
    np.testing.assert_allclose(ssp2, np.log(0.5 * np.e**2 + 0.5), rtol=1e-12)
    with pytest.raises(ValueError, match="cutoff > 0"):
        radial.bessel_basis(r, 0.0)


class _Harmonic(nn.Module):
    """E_g = sum over ordered edges of k/4 (r - r0)^2 (each bond counted twice)."""

    k: float = 2.0
    r0: float = 1.2

    @nn.compact
    def __call__(self, graph):
        vec = mg.edge_vectors(graph.positions, graph.senders, graph.receivers)
        r = jnp.linalg.norm(vec, axis=-1)
        e = jnp.where(graph.edge_mask, 0.25 * self.k * (r - self.r0) ** 2, 0.0)
        e_atom = jax.ops.segment_sum(e, graph.receivers, num_segments=graph.num_atoms)
        return jax.ops.segment_sum(e_atom, graph.graph_ids, num_segments=graph.num_graphs)


def test_energy_and_forces_matches_analytic_pair_forces():
    frames = ethanol_frames(2)
    g = mg.batch_frames(jnp.asarray(frames), ETHANOL_Z, cutoff=1.6)
    model = _Harmonic()
    energies, forces = jax.jit(lambda g: mg.energy_and_forces(model, {}, g))(g)
    assert energies.shape == (2,) and forces.shape == (18, 3)
    pos = frames.reshape(-1, 3)
    want_f = np.zeros_like(pos)
    want_e = np.zeros(2)
    for s, r, m in zip(np.asarray(g.senders), np.asarray(g.receivers), np.asarray(g.edge_mask),
                       strict=True):
        if m:
            v = pos[s] - pos[r]
            d = np.linalg.norm(v)
            want_e[r // 9] += 0.25 * 2.0 * (d - 1.2) ** 2
            # dE/dx_s = k/2 (d - r0) v/d; dE/dx_r = -that
            gr = 0.5 * 2.0 * (d - 1.2) * v / d
            want_f[s] -= gr
            want_f[r] += gr
    np.testing.assert_allclose(energies, want_e, rtol=1e-12)
    np.testing.assert_allclose(forces, want_f, atol=1e-12)
