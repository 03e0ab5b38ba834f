"""Allegro: O(3) x translation x permutation symmetry of energies and forces (float64, 1e-9),
forces against finite differences, padding, the normalization switches, and the dataset
statistics behind them (N̄, species shift, force RMS) against hand computations."""

import functools

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
)

import geonorm_jax as gj
from geonorm_jax.models import molecular_graph as mg
from geonorm_jax.models import target_norms as tn
from geonorm_jax.models.allegro import ALLEGRO_PLACEMENT, ALLEGRO_SPEC, Allegro, env_factor

CUTOFF = 3.0
SMALL = dict(
    num_layers=2,
    latent_dim=8,
    num_channels=2,
    l_max=2,
    num_bessel=4,
    cutoff=CUTOFF,
    embed_dim=4,
    two_body_hidden=(8,),
    latent_hidden=(8,),
    edge_energy_hidden=(8,),
    avg_num_neighbors=6.5,
    species_scale=0.7,
    species_shift=(0.0, -0.5, 0.0, 0.0, 0.0, 0.0, -38.0, 0.0, -75.0),
    max_atomic_number=9,
)


def _frames_fn(model):
    """``(positions [B, A, 3], species [B, A]) -> (energies [B], forces [B, A, 3])``, jitted."""

    @jax.jit
    def fn(variables, pos, z):
        g = mg.batch_frames(pos, z, CUTOFF, atom_mask=z > 0)
        e, f = mg.energy_and_forces(model, variables, g)
        return e, f.reshape(pos.shape)

    return fn


@functools.cache
def _setup(**overrides):
    model = Allegro(**{**SMALL, **overrides})
    g = mg.batch_frames(jnp.asarray(ethanol_frames(2)), ETHANOL_Z, CUTOFF)
    variables = jax.jit(model.init)(jax.random.key(0), g)
    return model, variables, _frames_fn(model)


_inputs = ethanol_inputs


@pytest.mark.parametrize("with_norms", [False, True])
def test_energy_invariant_forces_equivariant(with_norms):
    kw = {}
    if with_norms:
        kw = dict(
            latent_norm=gj.norms.make("layer_norm_graph"),  # per-graph statistics over edges
            tensor_norm=gj.norms.make("gvp_vector_layer_norm"),
        )
    model, variables, fn = _setup(**kw)
    pos, z = _inputs()
    e, f = fn(variables, pos, z)
    assert e.dtype == jnp.float64 and np.all(np.isfinite(e)) and float(jnp.abs(f).max()) > 1e-3
    assert_energy_model_symmetric(fn, variables, pos, z)


def test_forces_are_minus_energy_gradient_by_central_differences():
    model, variables, fn = _setup()
    pos, z = _inputs()
    rng = np.random.default_rng(3)
    points = zip(rng.integers(0, 2, 4), rng.integers(0, 9, 4), rng.integers(0, 3, 4),
                 strict=True)
    assert_forces_by_central_differences(fn, variables, pos, z, points, atol=1e-8)


def test_padded_atoms_and_padded_molecule_change_nothing():
    model, variables, fn = _setup()
    pos, z = _inputs()
    e, f = fn(variables, pos, z)
    # two padding slots per frame placed within the cutoff of real atoms, plus one empty frame
    pad_pos = jnp.concatenate([pos, pos[:, :2] + 0.3], axis=1)
    pad_pos = jnp.concatenate([pad_pos, pad_pos[:1] + 1.0], axis=0)  # [3, 11, 3]
    pad_z = jnp.concatenate([z, jnp.zeros((2, 2), z.dtype)], axis=1)
    pad_z = jnp.concatenate([pad_z, jnp.zeros((1, 11), z.dtype)], axis=0)
    e2, f2 = fn(variables, pad_pos, pad_z)
    np.testing.assert_allclose(e2[:2], e, rtol=1e-12, atol=1e-12)
    assert float(e2[2]) == 0.0
    np.testing.assert_allclose(f2[:2, :9], f, atol=1e-12)
    assert float(jnp.abs(f2[:, 9:]).max()) == 0.0 and float(jnp.abs(f2[2]).max()) == 0.0


def test_env_normalization_divides_environment_sum():
    """÷√N̄ and ÷N̄ change the layer-0 environment sum by exactly those factors."""
    g = mg.batch_frames(jnp.asarray(ethanol_frames(2)), ETHANOL_Z, CUTOFF)
    nbar = 6.5
    envs, energies = {}, {}
    base = Allegro(**{**SMALL, "env_normalization": "none"})
    variables = jax.jit(base.init)(jax.random.key(0), g)
    for mode in ("none", "sqrt", "mean"):
        model = Allegro(**{**SMALL, "env_normalization": mode, "avg_num_neighbors": nbar})
        e, inter = jax.jit(lambda v, g, m=model: m.apply(v, g, mutable=["intermediates"]))(
            variables, g
        )
        envs[mode] = inter["intermediates"]["environment_0"][0]
        energies[mode] = e
    assert float(jnp.abs(envs["none"]).max()) > 1e-3
    np.testing.assert_allclose(envs["sqrt"], envs["none"] / np.sqrt(nbar), rtol=1e-12)
    np.testing.assert_allclose(envs["mean"], envs["none"] / nbar, rtol=1e-12)
    assert not np.allclose(energies["sqrt"], energies["none"])
    assert env_factor("sqrt", 4.0) == 0.5 and env_factor("mean", 4.0) == 0.25
    assert env_factor("none", None) == 1.0


def test_species_scale_and_shift_and_residual_switches():
    g = mg.batch_frames(jnp.asarray(ethanol_frames(2)), ETHANOL_Z, CUTOFF)
    plain = Allegro(**{**SMALL, "species_scale": None, "species_shift": None})
    variables = jax.jit(plain.init)(jax.random.key(0), g)
    e0 = jax.jit(plain.apply)(variables, g)
    e1 = jax.jit(Allegro(**SMALL).apply)(variables, g)
    shift = np.asarray(SMALL["species_shift"])
    want = SMALL["species_scale"] * np.asarray(e0) + shift[ETHANOL_Z].sum()
    np.testing.assert_allclose(e1, want, rtol=1e-12)
    e2 = jax.jit(Allegro(**{**SMALL, "latent_resnet": False}).apply)(variables, g)
    assert not np.allclose(e2, e1)


def test_placement_and_argument_checks():
    with pytest.raises(ValueError, match="latent_norm: expected a Norm of kind 'features'"):
        Allegro(**{**SMALL, "latent_norm": gj.norms.make("gvp_vector_layer_norm")})
    with pytest.raises(ValueError, match="tensor_norm: expected a Norm of kind 'vectors'"):
        Allegro(**{**SMALL, "tensor_norm": gj.norms.make("layer_norm")})
    with pytest.raises(ValueError, match="avg_num_neighbors: expected N̄ > 0"):
        Allegro(**{**SMALL, "avg_num_neighbors": None})
    with pytest.raises(ValueError, match="env_normalization: expected one of"):
        Allegro(**{**SMALL, "env_normalization": "sum"})
    assert ALLEGRO_PLACEMENT.default_place("vectors") == "tensor"


# ------------------------------------------------------------------ dataset statistics


def test_avg_num_neighbors_by_hand():
    # a chain of 3 atoms 1 Å apart and an isolated pair 2.5 Å apart, cutoff 1.5 Å:
    # chain counts 1, 2, 1; the pair 0, 0 -> 4 / 5. A padded slot is ignored.
    chain = np.array([[[0, 0, 0], [1, 0, 0], [2, 0, 0], [0.5, 0, 0]]], float)
    pair = np.array([[[0, 0, 0], [2.5, 0, 0], [9, 9, 9], [0.4, 0, 0]]], float)
    pos = np.concatenate([chain, pair])
    z = np.array([[1, 1, 1, 0], [1, 1, 1, 0]])
    assert tn.avg_num_neighbors(pos, 1.5, atomic_numbers=z) == pytest.approx(4 / 6)
    assert tn.avg_num_neighbors(pos[:1, :3], 1.5) == pytest.approx(4 / 3)
    # also through the flat batch
    g = mg.batch_frames(jnp.asarray(pos), z, 1.5)
    counts = np.asarray(mg.neighbor_counts(g))
    np.testing.assert_array_equal(counts, [1, 2, 1, 0, 0, 0, 0, 0])


def test_fit_species_shift_by_hand():
    # H2 (-1.0), H2O (-76.1), O2 (-150.2): shifts H = -0.5, O = -75.1 solve it exactly
    z = np.array([[1, 1, 0], [1, 1, 8], [8, 8, 0]])
    e = np.array([-1.0, -76.1, -150.2])
    mu = tn.fit_species_shift(e, z)
    assert len(mu) == 9 and mu[0] == 0.0
    assert mu[1] == pytest.approx(-0.5) and mu[8] == pytest.approx(-75.1)
    # one molecule repeated (MD): rank 1; minimum norm mu = n E̅ / |n|^2
    eth = np.array([-10.0, -12.0])
    mu = tn.fit_species_shift(eth, ETHANOL_Z)  # n = (H 6, C 2, O 1)
    ebar, nn2 = -11.0, 36 + 4 + 1
    assert mu[1] == pytest.approx(6 * ebar / nn2) and mu[6] == pytest.approx(2 * ebar / nn2)
    assert mu[8] == pytest.approx(ebar / nn2)


def test_force_rms_and_target_scaling_by_hand():
    f = np.zeros((2, 2, 3))
    f[0, 0] = [3.0, 0.0, 4.0]
    f[1, 1] = [1.0, 2.0, 2.0]
    f[1, 0] = [100.0, 0.0, 0.0]  # masked out
    mask = np.array([[True, False], [False, True]])
    assert tn.force_rms(f, mask) == pytest.approx(np.sqrt((25 + 9) / 6))
    assert tn.force_rms(f[:1, :1]) == pytest.approx(np.sqrt(25 / 3))
    with pytest.raises(ValueError, match=r"forces \[B, A, 3\]"):
        tn.force_rms(np.zeros((4, 2)))
    norm = tn.EnergyNormalization(shift=(0.0, -0.5, 0, 0, 0, 0, 0, 0, -75.0), scale=2.0)
    z = np.array([[1, 1, 8], [1, 8, 0]])
    e = np.array([-80.0, -77.0])
    en, fn = norm.normalize_targets(e, f[:, :1].repeat(3, 1)[:, :3], z)
    np.testing.assert_allclose(en, [(-80.0 + 76.0) / 2, (-77.0 + 75.5) / 2])
    e_back, _ = norm.denormalize(en, fn, z)
    np.testing.assert_allclose(e_back, e)
    kw = tn.EnergyNormalization.fit(
        np.array([-1.0, -76.4, -150.2]), f[:1].repeat(3, 0), np.array([[1, 1], [1, 8], [8, 8]])
    ).model_kwargs()
    assert set(kw) == {"species_shift", "species_scale"}
    assert kw["species_scale"] == pytest.approx(np.sqrt(25 / 6))


def test_per_species_force_rms_by_hand():
    f = np.zeros((2, 3, 3))
    f[0, 0] = [3.0, 0.0, 4.0]  # Z = 1
    f[1, 0] = [0.0, 0.0, 1.0]  # Z = 1
    f[0, 1] = [2.0, 2.0, 1.0]  # Z = 8
    f[1, 2] = [50.0, 0.0, 0.0]  # padding
    z = np.array([[1, 8, 0], [1, 8, 0]])
    s = tn.per_species_force_rms(f, z)
    assert len(s) == 9 and s[6] == 1.0
    assert s[1] == pytest.approx(np.sqrt(26 / 6)) and s[8] == pytest.approx(np.sqrt(9 / 6))
    norm = tn.EnergyNormalization.fit(np.array([-1.0, -2.0]), f, z, per_species_scale=True)
    assert norm.model_kwargs()["species_scale"] == s
    with pytest.raises(ValueError, match="one global scale"):
        norm.normalize_targets(np.zeros(2), f, z)
    glob = tn.EnergyNormalization.fit(np.array([-1.0, -2.0]), f, z)  # padding excluded
    assert glob.scale == pytest.approx(np.sqrt(35 / 12))


def test_float32_and_atomic_energies():
    g = mg.batch_frames(jnp.asarray(ethanol_frames(2), jnp.float32), ETHANOL_Z, CUTOFF)
    model = Allegro(**SMALL)
    variables = jax.jit(model.init)(jax.random.key(0), g)
    e, f = jax.jit(lambda v, g: mg.energy_and_forces(model, v, g))(variables, g)
    assert e.dtype == jnp.float32 and f.dtype == jnp.float32
    assert np.all(np.isfinite(e)) and np.all(np.isfinite(f))
    e_atoms = jax.jit(lambda v, g: model.apply(v, g, method="atomic_energies"))(variables, g)
    assert e_atoms.shape == (18,)
    np.testing.assert_allclose(jax.ops.segment_sum(e_atoms, g.graph_ids, 2), e, rtol=1e-5)


# ``vectors`` layers whose input is not an irreps field: multivectors (CGENN, GATr); on
# Allegro's tensor track they raise their layout error
# (test_other_layouts_are_refused_on_the_tensor_track).
NOT_IRREPS = ("mv_layer_norm", "grade_norm", "gatr_layer_norm")


def _fitting(kind):
    """Catalogue entries of ``kind`` whose context the model supplies (or can do without)."""
    return [
        e.name
        for e in gj.norms.CATALOG
        if e.kind == kind and set(e.context) <= {"num_neighbors", "adjacency"}
        and e.name not in NOT_IRREPS
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    "place,name",
    [("latent", n) for n in _fitting("features")] + [("tensor", n) for n in _fitting("vectors")],
)
def test_every_fitting_catalogue_norm_at_each_place(place, name):
    model = Allegro(**{**SMALL, f"{place}_norm": gj.norms.make(name)})
    pos, z = _inputs()
    g = mg.batch_frames(pos, ETHANOL_Z, CUTOFF)
    variables = jax.jit(model.init)(jax.random.key(0), g)
    fn = _frames_fn(model)
    e, f = fn(variables, pos, z)
    assert np.all(np.isfinite(e)) and np.all(np.isfinite(f))
    assert_energy_model_symmetric(fn, variables, pos, z, ("SO3", "O3", "translation"))


@pytest.mark.slow
@pytest.mark.parametrize("name", NOT_IRREPS)
def test_other_layouts_are_refused_on_the_tensor_track(name):
    model = Allegro(**{**SMALL, "tensor_norm": gj.norms.make(name)})
    pos, _ = _inputs()
    g = mg.batch_frames(pos, ETHANOL_Z, CUTOFF)
    with pytest.raises(ValueError, match="expected"):
        jax.eval_shape(model.init, jax.random.key(0), g)


@pytest.mark.parametrize("latent_norm", [None, "layer_norm"])
def test_energy_continuous_when_an_atom_crosses_the_cutoff(latent_norm):
    """A C-O pair: beyond r_c the energy is the isolated atoms' (the species shifts); below,
    it approaches them as (r_c - r)^3, since u, u' and u'' vanish at r_c."""
    kw = {} if latent_norm is None else {"latent_norm": gj.norms.make(latent_norm)}
    model = Allegro(**{**SMALL, **kw})
    z = jnp.asarray([[6, 8]])

    def graph(dist):
        pos = jnp.zeros((1, 2, 3)).at[0, 1].set(jnp.stack([dist * 0.6, dist * 0.8, 0.0]))
        return mg.batch_frames(pos, z, CUTOFF)

    variables = jax.jit(model.init)(jax.random.key(0), graph(1.2))
    energy = jax.jit(lambda d: model.apply(variables, graph(d))[0])
    isolated = SMALL["species_shift"][6] + SMALL["species_shift"][8]
    assert float(energy(CUTOFF + 1e-3)) == isolated
    far = abs(float(energy(CUTOFF - 0.5)) - isolated)
    near = abs(float(energy(CUTOFF - 1e-2)) - isolated)
    assert far > 1e-5  # the pair does interact inside the cutoff
    assert near < 1e-3 * far  # (1e-2 / 0.5)^3 = 8e-6 for a pure cubic


def test_md17_size_is_the_authors_example_configuration():
    """Size ``md17`` (configs/example.yaml) through the registry: r_c 6 Å, 8 Bessels, l_max 2
    with both parities on the tensor track, 32 channels, 512 latents from a two-body MLP
    64-128-256-512, one linear latent map, readout 512-128-1; it initialises and predicts
    (shapes traced with ``jax.eval_shape``: compiling the 1 M parameters takes ~30 s)."""
    spec = gj.models.registry.get("allegro")
    assert spec is ALLEGRO_SPEC
    kwargs = spec.resolve(size="md17", data={"avg_num_neighbors": 8.0, "max_atomic_number": 9})
    assert (kwargs["cutoff"], kwargs["num_bessel"], kwargs["envelope_p"], kwargs["l_max"]) == (
        6.0, 8, 6, 2)
    assert kwargs["env_normalization"] == "sqrt" and kwargs["latent_resnet"] is True
    model = spec.build(kwargs)
    g = mg.batch_frames(jnp.asarray(ethanol_frames(1)), ETHANOL_Z, kwargs["cutoff"])
    variables = jax.eval_shape(model.init, jax.random.key(0), g)  # traced, not compiled
    shapes = jax.tree_util.tree_map(lambda x: x.shape, variables["params"])
    assert [shapes["two_body_mlp"][f"dense_{k}"]["kernel"][1] for k in range(4)] == [
        64, 128, 256, 512]
    # the latent map: [x (512) || 32 channels of 0e scalars] -> 512, no hidden layer
    assert shapes["latent_mlp_0"] == {"dense_0": {"kernel": (512 + 32, 512)}}
    assert shapes["edge_energy_mlp"]["dense_0"]["kernel"] == (512, 128)
    # environment weights: 32 channels x the 3 spherical-harmonic irreps 0e + 1o + 2e
    assert shapes["env_weights_0"]["kernel"] == (512, 32 * 3)
    # the first tensor product keeps both parities of l = 1 and 2 (0o has no path from
    # spherical harmonics), 32 channels each; the last keeps scalars only
    outs = {name.split()[1].split(",")[1] for name in shapes["tensor_linear_0"]}
    assert outs == {"32x0e", "32x1o", "32x1e", "32x2e", "32x2o"}
    assert {name.split()[1].split(",")[1] for name in shapes["tensor_linear_1"]} == {"32x0e"}
    assert jax.eval_shape(model.apply, variables, g).shape == (1,)
