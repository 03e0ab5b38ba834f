"""SchNet: E(3) x permutation symmetry (float64, 1e-9), finite-difference forces, padding,
its 1/N_neighbours normalization (against a hand rescaling and the catalogue layer), places;
the "schnetpack" preset against schnetpack 2.x from transferred weights in float64 (where
torch and schnetpack are installed)."""

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
from geonorm_jax.models.schnet import (
    SCHNET_PLACEMENT,
    SCHNETPACK,
    SchNet,
    schnetpack_rbf_grid,
)

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


# --- schnetpack 2.x from transferred weights, float64 (runs where torch and schnetpack are) --


def _schnetpack():
    torch = pytest.importorskip("torch")
    import torch.utils.data.dataloader as dataloader

    if not hasattr(dataloader, "T_co") and hasattr(dataloader, "_T_co"):
        # schnetpack <= 2.1.1 imports a type variable that torch 2.5 renamed; nothing computes
        dataloader.T_co = dataloader._T_co
    return torch, pytest.importorskip("schnetpack")


def _schnetpack_potential(spk, kw):
    """schnetpack's SchNet potential at the sizes of ``kw`` (SchNet arguments), every other
    argument at schnetpack's default."""
    f, rc = kw["features"], kw["cutoff"]
    rep = spk.representation.SchNet(
        n_atom_basis=f, n_interactions=kw["num_interactions"],
        radial_basis=spk.nn.GaussianRBF(n_rbf=kw["num_rbf"], cutoff=rc),
        cutoff_fn=spk.nn.CosineCutoff(rc))
    return spk.model.NeuralNetworkPotential(
        representation=rep, input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[spk.atomistic.Atomwise(n_in=f, output_key="energy"),
                        spk.atomistic.Forces(energy_key="energy", force_key="forces")])


def schnetpack_params(potential, num_interactions: int) -> dict:
    """Flax ``params`` of :class:`SchNet` from schnetpack's state dict (``Linear`` weights
    ``[out, in]`` -> kernels ``[in, out]``)."""
    sd = {k: v.detach().cpu().numpy() for k, v in potential.state_dict().items()}

    def dense(prefix, bias=True):
        return {"kernel": sd[prefix + ".weight"].T,
                **({"bias": sd[prefix + ".bias"]} if bias else {})}

    params = {"embedding": {"embedding": sd["representation.embedding.weight"]},
              "out_0": dense("output_modules.0.outnet.0"),
              "out_1": dense("output_modules.0.outnet.1")}
    for t in range(num_interactions):
        p = f"representation.interactions.{t}."
        params[f"filter_{t}_0"] = dense(p + "filter_network.0")
        params[f"filter_{t}_1"] = dense(p + "filter_network.1")
        params[f"in2f_{t}"] = dense(p + "in2f", bias=False)
        params[f"f2out_{t}"] = dense(p + "f2out.0")
        params[f"dense_{t}"] = dense(p + "f2out.1")
    return params


def _schnetpack_outputs(torch, potential, frames):
    """Energies ``[B]`` and forces ``[B, A, 3]`` of schnetpack on every ordered pair of a
    frame's atoms (its cosine cutoff zeroes the pairs beyond ``r_c``)."""
    import schnetpack.properties as P

    b, a, _ = frames.shape
    i, j = np.nonzero(~np.eye(a, dtype=bool))
    idx_i = np.concatenate([i + k * a for k in range(b)])
    idx_j = np.concatenate([j + k * a for k in range(b)])
    inputs = {
        P.Z: torch.as_tensor(np.tile(ETHANOL_Z, b), dtype=torch.long),
        P.R: torch.as_tensor(frames.reshape(-1, 3), dtype=torch.float64),
        P.idx_m: torch.repeat_interleave(torch.arange(b), a),
        P.idx_i: torch.as_tensor(idx_i), P.idx_j: torch.as_tensor(idx_j),
        P.offsets: torch.zeros((len(idx_i), 3), dtype=torch.float64),
        P.n_atoms: torch.full((b,), a, dtype=torch.long),
    }
    out = potential(inputs)
    return (out["energy"].detach().numpy().reshape(b),
            out["forces"].detach().numpy().reshape(b, a, 3))


@pytest.mark.parametrize("overrides", [
    # SCHNET_MD17: F = 64, T = 3, 51 Gaussians, r_c = 5 Å (every ethanol pair within)
    pytest.param({}, id="md17", marks=pytest.mark.slow),
    pytest.param(dict(features=16, num_interactions=2, num_rbf=12, cutoff=CUTOFF),
                 id="small-cutoff"),  # pairs beyond r_c
])
def test_schnetpack_preset_reproduces_schnetpack_in_float64(overrides):
    """The spec's "schnetpack" size with schnetpack's (perturbed) weights gives schnetpack's
    energies and forces in float64; switching back any one of this model's own conventions
    (neighbour mean, ssp readout, exact Gaussian grid) breaks the agreement."""
    torch, spk = _schnetpack()
    spec = gj.models.registry.get("schnet")
    kw = spec.resolve(size="schnetpack", builtin_norm=False, model_kwargs=overrides)
    assert kw == spec.resolve(model_kwargs={**SCHNETPACK, **overrides})
    torch.manual_seed(0)
    potential = _schnetpack_potential(spk, kw).double()
    with torch.no_grad():  # schnetpack starts biases at 0: perturb every weight
        for p in potential.parameters():
            p.add_(0.1 * torch.randn_like(p))
    frames = ethanol_frames(2)
    e_ref, f_ref = _schnetpack_outputs(torch, potential, frames)

    g = mg.batch_frames(jnp.asarray(frames), ETHANOL_Z, kw["cutoff"])
    params = schnetpack_params(potential, kw["num_interactions"])
    init = jax.jit(SchNet(**kw).init)(jax.random.key(0), g)["params"]
    assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, dict(init))

    def outputs(**change):
        e, f = mg.energy_and_forces(SchNet(**{**kw, **change}), {"params": params}, g)
        return np.asarray(e), np.asarray(f).reshape(frames.shape)

    e, f = outputs()
    assert e.dtype == np.float64 and np.abs(f_ref).max() > 1e-3
    np.testing.assert_allclose(e, e_ref, rtol=1e-12, atol=0)
    np.testing.assert_allclose(f, f_ref, rtol=0, atol=1e-12 * np.abs(f_ref).max())
    for change in (dict(neighbor_normalization=True), dict(readout_activation="ssp"),
                   dict(rbf_float32_grid=False)):
        e2, f2 = outputs(**change)
        assert not (np.allclose(e2, e_ref, rtol=1e-12, atol=0)
                    and np.allclose(f2, f_ref, rtol=0, atol=1e-12 * np.abs(f_ref).max())), change


def test_schnetpack_grid_and_convention_checks():
    mu, width = schnetpack_rbf_grid(0.0, 5.0, 51)
    exact = np.linspace(0.0, 5.0, 51)
    assert mu.dtype == np.float32 and mu[0] == 0.0 and mu[-1] == 5.0
    assert 0 < np.abs(mu - exact).max() < 3e-7 and abs(width - 0.1) < 1e-8
    with pytest.raises(ValueError, match="readout_activation: expected None, a callable or one"):
        SchNet(**SMALL, readout_activation="relu6")
    with pytest.raises(ValueError, match="expected rbf_gamma=None, received 10.0"):
        SchNet(**SMALL, rbf_float32_grid=True, rbf_gamma=10.0)
    g = mg.batch_frames(jnp.asarray(ethanol_frames(2)), ETHANOL_Z, CUTOFF)
    _, variables, _ = _setup()
    by_name = SchNet(**SMALL, readout_activation="silu").apply(variables, g)
    by_fn = SchNet(**SMALL, readout_activation=jax.nn.silu).apply(variables, g)
    np.testing.assert_array_equal(by_name, by_fn)
    assert not np.allclose(by_name, SchNet(**SMALL).apply(variables, g))
