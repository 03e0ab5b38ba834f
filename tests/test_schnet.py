"""SchNet: E(3) x permutation symmetry (float64, 1e-9), finite-difference forces, padding,
its 1/N_neighbours normalization (against a hand rescaling and the catalogue layer), places."""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _molecules import (
    ETHANOL_Z,
    assert_energy_model_symmetric,
    assert_forces_by_central_differences,
    ethanol_frames,
    ethanol_inputs,
    float32_batch_norm_step,
)

import geonorm_jax as gj
from geonorm_jax.models import molecular_graph as mg
from geonorm_jax.models.schnet import SCHNET_PLACEMENT, SchNet

CUTOFF = 3.0
SMALL = dict(features=8, num_interactions=2, num_rbf=6, cutoff=CUTOFF, max_atomic_number=9)


@functools.cache
def _setup(**overrides):
    model = SchNet(**{**SMALL, **overrides})
    g = mg.batch_frames(jnp.asarray(ethanol_frames(2)), ETHANOL_Z, CUTOFF)
    variables = jax.jit(model.init)(jax.random.key(0), g)

    @jax.jit
    def fn(variables, pos, z):
        g = mg.batch_frames(pos, z, CUTOFF, atom_mask=z > 0)
        e, f = mg.energy_and_forces(model, variables, g)
        return e, f.reshape(pos.shape)

    return model, variables, fn


_inputs = ethanol_inputs


@pytest.mark.parametrize("with_norm", [False, True])
def test_energy_invariant_forces_equivariant(with_norm):
    kw = {"feature_norm": gj.norms.make("layer_norm")} if with_norm else {}
    _, variables, fn = _setup(**kw)
    pos, z = _inputs()
    e, f = fn(variables, pos, z)
    assert e.dtype == jnp.float64 and float(jnp.abs(f).max()) > 1e-4
    assert_energy_model_symmetric(fn, variables, pos, z)


def test_forces_by_central_differences_and_padding():
    _, variables, fn = _setup()
    pos, z = _inputs()
    e, f = fn(variables, pos, z)
    assert_forces_by_central_differences(fn, variables, pos, z, ((0, 2, 1), (1, 5, 0), (1, 0, 2)))
    pad_pos = jnp.concatenate([pos, pos[:, :1] + 0.4], axis=1)
    pad_pos = jnp.concatenate([pad_pos, pad_pos[:1]], axis=0)  # [3, 10, 3]
    pad_z = jnp.concatenate([z, jnp.zeros((2, 1), z.dtype)], axis=1)
    pad_z = jnp.concatenate([pad_z, jnp.zeros((1, 10), z.dtype)], axis=0)
    e2, f2 = fn(variables, pad_pos, pad_z)
    np.testing.assert_allclose(e2[:2], e, rtol=1e-12)
    np.testing.assert_allclose(f2[:2, :9], f, atol=1e-12)
    assert float(e2[2]) == 0.0 and float(jnp.abs(f2[:, 9]).max()) == 0.0


def test_neighbor_normalization_is_division_by_neighbor_count():
    """With a cutoff that keeps all 8 neighbours of every ethanol atom, dividing the
    convolution by n_i = 8 equals dividing the (linear) in2f kernels by 8."""
    big = 6.0
    g = mg.batch_frames(jnp.asarray(ethanol_frames(2)), ETHANOL_Z, big)
    assert np.all(np.asarray(mg.neighbor_counts(g)) == 8)
    normed = SchNet(**{**SMALL, "cutoff": big, "neighbor_normalization": True})
    summed = SchNet(**{**SMALL, "cutoff": big, "neighbor_normalization": False})
    variables = jax.jit(normed.init)(jax.random.key(0), g)
    e_norm = jax.jit(normed.apply)(variables, g)
    e_sum = jax.jit(summed.apply)(variables, g)
    assert not np.allclose(e_norm, e_sum)
    params = flax.core.unfreeze(variables)["params"]
    for t in range(SMALL["num_interactions"]):
        params[f"in2f_{t}"]["kernel"] = params[f"in2f_{t}"]["kernel"] / 8.0
    np.testing.assert_allclose(summed.apply({"params": params}, g), e_norm, rtol=1e-12)


def test_catalogue_schnet_neighbor_norm_at_aggregate_place_matches_switch():
    g = mg.batch_frames(jnp.asarray(ethanol_frames(2)), ETHANOL_Z, CUTOFF)
    counts = np.asarray(mg.neighbor_counts(g))
    assert len(set(counts.tolist())) > 1  # atoms with different neighbour counts
    switch = SchNet(**SMALL, neighbor_normalization=True)
    placed = SchNet(
        **SMALL,
        neighbor_normalization=False,
        aggregate_norm=gj.norms.make("schnet_neighbor_norm"),
    )
    variables = jax.jit(placed.init)(jax.random.key(0), g)
    np.testing.assert_allclose(
        jax.jit(placed.apply)(variables, g), jax.jit(switch.apply)(variables, g), rtol=1e-12
    )


def test_species_scale_shift_and_checks():
    g = mg.batch_frames(jnp.asarray(ethanol_frames(2)), ETHANOL_Z, CUTOFF)
    plain = SchNet(**SMALL)
    variables = jax.jit(plain.init)(jax.random.key(0), g)
    shift = (0.0, -0.5) + (0.0,) * 4 + (-38.0, 0.0, -75.0)
    scaled = SchNet(**SMALL, species_scale=2.5, species_shift=shift)
    want = 2.5 * np.asarray(plain.apply(variables, g)) + np.asarray(shift)[ETHANOL_Z].sum()
    np.testing.assert_allclose(scaled.apply(variables, g), want, rtol=1e-12)
    with pytest.raises(ValueError, match="feature_norm: expected a Norm of kind 'features'"):
        SchNet(**SMALL, feature_norm=gj.norms.make("gvp_vector_layer_norm"))
    with pytest.raises(ValueError, match="aggregate_norm"):
        SchNet(**SMALL, aggregate_norm=gj.norms.make("geo_norm"))
    assert SCHNET_PLACEMENT.default_place("features") == "feature"


def test_float32_atomic_energies_and_batch_stats_in_training():
    model = SchNet(**SMALL, feature_norm=gj.norms.make("batch_norm"), training=True)
    g, variables, e, _, _ = float32_batch_norm_step(model)
    e_atoms = jax.jit(lambda v, g: model.apply(v, g, method="atomic_energies",
                                               mutable=["batch_stats"])[0])(variables, g)
    np.testing.assert_allclose(jax.ops.segment_sum(e_atoms, g.graph_ids, 2), e, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    "place,name",
    [
        (place, e.name)
        for place in ("feature", "aggregate")
        for e in gj.norms.CATALOG
        if e.kind == "features" and set(e.context) <= {"num_neighbors", "adjacency"}
    ],
)
def test_every_fitting_catalogue_norm_at_each_place(place, name):
    _, variables, fn = _setup(**{f"{place}_norm": gj.norms.make(name)})
    pos, z = _inputs()
    e, f = fn(variables, pos, z)
    assert np.all(np.isfinite(e)) and np.all(np.isfinite(f))
    assert_energy_model_symmetric(fn, variables, pos, z, ("SO3", "O3", "translation"))


def test_packed_flat_graph_gives_the_same_energies_as_batch_frames():
    frames = ethanol_frames(2)
    g = mg.batch_frames(jnp.asarray(frames), ETHANOL_Z, CUTOFF)
    # packed layout: molecule 1 first, then molecule 0, then 3 padding atoms
    pos = np.concatenate([frames[1], frames[0], np.zeros((3, 3))])
    z = np.concatenate([ETHANOL_Z, ETHANOL_Z, [0, 0, 0]])
    gid = np.concatenate([np.ones(9), np.zeros(9), np.ones(3)]).astype(np.int32)
    flat = mg.flat_graph(jnp.asarray(pos), z, gid, 2, CUTOFF, max_edges=200)
    assert flat.atoms_per_graph is None and int(flat.edge_mask.sum()) == int(g.edge_mask.sum())
    model, variables, _ = _setup()
    np.testing.assert_allclose(model.apply(variables, flat), model.apply(variables, g),
                               rtol=1e-12)
