"""GemNet-T's parts: triplets against a brute-force enumeration, the bases against closed
forms, the He-orthogonal initialization."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _molecules import ETHANOL_Z, ethanol_frames

from geonorm_jax.models import molecular_graph as mg
from geonorm_jax.models.gemnet_basis import (
    gemnet_radial_basis,
    he_orthogonal_init,
    legendre_spherical_basis,
)
from geonorm_jax.models.gemnet_triplets import check_triplet_budget, edge_triplets
from geonorm_jax.models.radial import bessel_basis, polynomial_envelope


def _brute(senders, receivers, mask):
    trip, swap = set(), {}
    for e, f in itertools.product(range(len(senders)), repeat=2):
        if mask[e] and mask[f] and e != f and receivers[e] == receivers[f]:
            trip.add((e, f))
        if mask[e] and mask[f] and senders[e] == receivers[f] and receivers[e] == senders[f]:
            swap[e] = f
    return trip, swap


@pytest.mark.parametrize("cutoff", [1.6, 3.0])
def test_triplets_match_brute_force(cutoff):
    g = mg.batch_frames(jnp.asarray(ethanol_frames(2)), ETHANOL_Z, cutoff)
    # scramble the edge order and hide some edges, so no layout is assumed
    perm = np.random.default_rng(0).permutation(g.num_edges)
    s, r = np.asarray(g.senders)[perm], np.asarray(g.receivers)[perm]
    mask = np.asarray(g.edge_mask)[perm] & (np.arange(g.num_edges) % 7 != 0)
    t = edge_triplets(jnp.asarray(s), jnp.asarray(r), jnp.asarray(mask), g.num_atoms, 8)
    rows, cols = np.nonzero(np.asarray(t.triplet_mask))
    got = {(e, int(t.edge_ba[e, k])) for e, k in zip(rows, cols, strict=True)}
    want, swap = _brute(s, r, mask)
    assert got == want and len(want) > 0
    sm = np.asarray(t.swap_mask)
    assert {e: int(t.swap[e]) for e in np.nonzero(sm)[0]} == swap
    counts = np.bincount(r[mask], minlength=g.num_atoms)
    assert int(t.max_count) == counts.max()
    with pytest.raises(ValueError, match="expected at most max_neighbors = 1"):
        edge_triplets(jnp.asarray(s), jnp.asarray(r), jnp.asarray(mask), g.num_atoms, 1)
    assert check_triplet_budget(g, 8) <= 8


def test_radial_basis_is_enveloped_bessel_and_vanishes_at_cutoff():
    r = jnp.linspace(0.3, 6.0, 50, dtype=jnp.float64)
    got = gemnet_radial_basis(r, 5.0, 6, 5)
    want = (bessel_basis(r, 5.0, 6) * math.sqrt(5.0 / 2.0)
            * polynomial_envelope(r, 5.0, 5)[:, None])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert float(jnp.abs(got[r >= 5.0]).max()) == 0.0
    with pytest.raises(ValueError, match="cutoff"):
        gemnet_radial_basis(r, -1.0)


def test_legendre_basis_matches_numpy_legendre():
    x = np.linspace(-1.0, 1.0, 41)
    got = np.asarray(legendre_spherical_basis(jnp.asarray(x), 6))
    for l in range(6):  # noqa: E741
        coef = np.zeros(l + 1)
        coef[l] = 1.0
        want = np.sqrt((2 * l + 1) / (4 * np.pi)) * np.polynomial.legendre.legval(x, coef)
        np.testing.assert_allclose(got[:, l], want, atol=1e-13)
    # orthonormal on the sphere: 2 pi int Y_l Y_k d(cos) = delta_lk
    nodes, weights = np.polynomial.legendre.leggauss(20)
    y = np.asarray(legendre_spherical_basis(jnp.asarray(nodes), 6))
    np.testing.assert_allclose(2 * np.pi * (y.T * weights) @ y, np.eye(6), atol=1e-12)


def test_he_orthogonal_init_standardized():
    w = np.asarray(he_orthogonal_init(jax.random.key(0), (64, 32)))
    np.testing.assert_allclose(w.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(w.var(axis=0, ddof=1) * 64, 1.0, rtol=1e-4)
    w3 = he_orthogonal_init(jax.random.key(0), (4, 8, 16))
    assert w3.shape == (4, 8, 16)
    with pytest.raises(ValueError, match="rank >= 2"):
        he_orthogonal_init(jax.random.key(0), (4,))
