"""GemNet-T: E(3) x permutation symmetry (float64, 1e-9), finite-difference forces, padding
of atoms, edges and triplets, the fitted scale factors, both normalization switches."""

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
    float32_batch_norm_step,
)

import geonorm_jax as gj
from geonorm_jax.models import molecular_graph as mg
from geonorm_jax.models.gemnet import GEMNET_PLACEMENT, GEMNET_T_MD17, GEMNET_T_SMALL, GemNetT
from geonorm_jax.models.gemnet_blocks import ResidualLayer
from geonorm_jax.models.gemnet_scaling import fit_scale_factors, masked_variance

CUTOFF = 3.0
SMALL = dict(num_blocks=1, emb_size_atom=8, emb_size_edge=8, emb_size_trip=4, emb_size_rbf=4,
             emb_size_cbf=4, emb_size_bil_trip=4, num_spherical=4, num_radial=4,
             cutoff=CUTOFF, max_atomic_number=9)


def _graph(num_frames=2, seed=0):
    return mg.batch_frames(jnp.asarray(ethanol_frames(num_frames, seed=seed)), ETHANOL_Z, CUTOFF)


@functools.partial(jax.jit, static_argnums=0)
def _apply(model, variables, g):
    return model.apply(variables, g)


@functools.cache
def _init():
    """Unfitted variables of ``GemNetT(**SMALL)`` (also valid for every variant below: the
    switches and the norms without parameters change no parameter shape)."""
    return jax.jit(GemNetT(**SMALL).init)(jax.random.key(0), _graph())


@functools.cache
def _setup(**overrides):
    model = GemNetT(**{**SMALL, **overrides})
    g = _graph()
    variables = _init() if not overrides else jax.jit(model.init)(jax.random.key(0), g)
    if model.scale_factors:
        variables = fit_scale_factors(model, variables, g)

    @jax.jit
    def fn(variables, pos, z):
        g = mg.batch_frames(pos, z, CUTOFF, atom_mask=z > 0)
        e, f = mg.energy_and_forces(model, variables, g)
        return e, f.reshape(pos.shape)

    return model, variables, fn


_inputs = ethanol_inputs


@pytest.mark.parametrize("norm", [None, pytest.param("layer_norm", marks=pytest.mark.slow)])
def test_energy_invariant_forces_equivariant(norm):
    kw = {"atom_norm": gj.norms.make(norm), "edge_norm": gj.norms.make(norm)} if norm else {}
    _, variables, fn = _setup(**kw)
    pos, z = _inputs()
    e, f = fn(variables, pos, z)
    assert e.dtype == jnp.float64 and float(jnp.abs(f).max()) > 1e-4
    assert_energy_model_symmetric(fn, variables, pos, z)


def test_forces_by_central_differences():
    _, variables, fn = _setup()
    pos, z = _inputs()
    assert_forces_by_central_differences(fn, variables, pos, z, ((0, 2, 1), (1, 5, 0), (1, 0, 2)))


def test_padded_atoms_molecules_edges_and_triplets_change_nothing():
    model, variables, fn = _setup()
    pos, z = _inputs()
    e, f = fn(variables, pos, z)
    # a padded atom slot in every frame (close to real atoms) and a padded molecule
    pad_pos = jnp.concatenate([pos, pos[:, :1] + 0.4], axis=1)
    pad_pos = jnp.concatenate([pad_pos, pad_pos[:1]], axis=0)  # [3, 10, 3]
    pad_z = jnp.concatenate([z, jnp.zeros((2, 1), z.dtype)], axis=1)
    pad_z = jnp.concatenate([pad_z, jnp.zeros((1, 10), z.dtype)], axis=0)
    e2, f2 = fn(variables, pad_pos, pad_z)
    np.testing.assert_allclose(e2[:2], e, rtol=1e-12)
    np.testing.assert_allclose(f2[:2, :9], f, atol=1e-12)
    assert float(e2[2]) == 0.0 and float(jnp.abs(f2[:, 9]).max()) == 0.0
    # packed flat graph: molecules swapped, padded atoms, 60 padded edge slots, and a triplet
    # budget of 12 slots per edge where 8 are needed
    frames = ethanol_frames(2)
    p = np.concatenate([frames[1], frames[0], np.zeros((3, 3))])
    zz = np.concatenate([ETHANOL_Z, ETHANOL_Z, [0, 0, 0]])
    gid = np.concatenate([np.ones(9), np.zeros(9), np.ones(3)]).astype(np.int32)
    g = _graph()
    flat = mg.flat_graph(jnp.asarray(p), zz, gid, 2, CUTOFF,
                         max_edges=int(g.edge_mask.sum()) + 60)
    wide = GemNetT(**SMALL, max_neighbors=12)
    np.testing.assert_allclose(_apply(wide, variables, flat), e, rtol=1e-12)
    with pytest.raises(ValueError, match="max_neighbors: expected an int"):
        model.apply(variables, flat)


def test_scale_factor_fit_gives_unit_variance_ratio_and_is_deterministic():
    model, fitted, _ = _setup()
    g = _graph()
    stats = jax.jit(lambda v, g: model.apply(v, g, mutable=["scale_stats"])[1]["scale_stats"])
    ratios = [x for x in jax.tree.leaves(stats(fitted, g))]
    # per block: the radial product and the triplet sum; per atom update and output: the sum
    assert len(ratios) == 3 * SMALL["num_blocks"] + SMALL["num_blocks"] + 1
    np.testing.assert_allclose(ratios, 1.0, rtol=1e-10)
    factors = np.asarray(jax.tree.leaves(fitted["scale_factors"]))
    assert np.all(np.abs(factors - 1.0) > 1e-3)  # the fit did something
    init = _init()
    np.testing.assert_array_equal(  # deterministic: a second fit is bit-identical
        factors, np.asarray(jax.tree.leaves(fit_scale_factors(model, init, g)["scale_factors"])))
    unfitted = np.asarray(jax.tree.leaves(stats(init, g)))
    assert np.max(np.abs(unfitted - 1.0)) > 0.1
    other = np.asarray(jax.tree.leaves(stats(fitted, _graph(2, seed=3))))
    assert np.max(np.abs(other - 1.0)) > 1e-6  # unit only on the fitting batch
    # the statistic itself, by hand
    x = np.random.default_rng(0).standard_normal((5, 3))
    mask = np.array([True, True, False, True, True])
    want = np.mean(np.var(x[mask], axis=0, ddof=1))
    np.testing.assert_allclose(masked_variance(jnp.asarray(x), jnp.asarray(mask)), want,
                               rtol=1e-12)


def test_both_normalizations_switch_off():
    g = _graph()
    on, init = GemNetT(**SMALL), _init()
    fitted = _setup()[1]
    no_scale = GemNetT(**SMALL, scale_factors=False)
    v_off = {"params": init["params"]}
    assert "scale_factors" not in jax.eval_shape(no_scale.init, jax.random.key(0), g)
    # unfitted factors are 1: the model with them equals the model without them
    e_off = _apply(no_scale, v_off, g)
    np.testing.assert_allclose(_apply(on, init, g), e_off, rtol=1e-12)
    assert not np.allclose(_apply(on, fitted, g), e_off)
    with pytest.raises(ValueError, match="scale_factors"):
        fit_scale_factors(no_scale, v_off, g)
    with pytest.raises(ValueError, match="'scale_factors' collection"):
        _apply(on, v_off, g)
    plain = GemNetT(**SMALL, residual_scaling=False)
    assert not np.allclose(_apply(plain, fitted, g), _apply(on, fitted, g))
    x = jax.random.normal(jax.random.key(1), (4, 6))
    v = ResidualLayer().init(jax.random.key(2), x)
    y_scaled = ResidualLayer().apply(v, x)
    y_plain = ResidualLayer(residual_scale=1.0).apply(v, x)
    np.testing.assert_allclose(y_plain, np.sqrt(2.0) * y_scaled, rtol=1e-6)


@pytest.mark.slow  # float32 also runs fast in the bench's tiny GemNet case (its train step)
def test_float32_and_batch_norm_training_updates_stats():
    float32_batch_norm_step(GemNetT(**SMALL, atom_norm=gj.norms.make("batch_norm"),
                                    training=True))


def test_a_norm_at_each_place_changes_the_energies():
    """No dead place: a norm with a non-trivial output changes the energies (a norm on h after
    the last block would not: GemNet's output blocks read the edge embeddings)."""
    g = _graph()
    e_plain = _apply(GemNetT(**SMALL), _init(), g)
    for place in GEMNET_PLACEMENT.names():
        placed = GemNetT(**SMALL, **{f"{place}_norm": gj.norms.make("layer_norm")})
        variables = jax.jit(placed.init)(jax.random.key(0), g)
        assert f"{place}_norm" in variables["params"]["interaction_0"]
        assert not np.allclose(_apply(placed, variables, g), e_plain, rtol=1e-6)


def test_checks_and_placement():
    with pytest.raises(ValueError, match="atom_norm: expected a Norm of kind 'features'"):
        GemNetT(**SMALL, atom_norm=gj.norms.make("gvp_vector_layer_norm"))
    with pytest.raises(ValueError, match="edge_norm"):
        GemNetT(**SMALL, edge_norm=gj.norms.make("geo_norm"))
    with pytest.raises(ValueError, match="num_blocks"):
        GemNetT(**{**SMALL, "num_blocks": 0})
    with pytest.raises(ValueError, match="max_neighbors"):
        GemNetT(**SMALL, max_neighbors=0)
    assert GEMNET_PLACEMENT.default_place("features") == "atom"
    assert GEMNET_PLACEMENT.names() == ("atom", "edge")
    g = _graph()
    tight = GemNetT(**SMALL, max_neighbors=2)  # ethanol atoms have up to 8 neighbours
    variables = _setup()[1]
    with pytest.raises(ValueError, match="expected at most max_neighbors = 2"):
        tight.apply(variables, g)
    # under jit the truncation is silent but recorded
    _, inter = jax.jit(lambda v, g: tight.apply(v, g, mutable=["intermediates"]))(variables, g)
    assert int(inter["intermediates"]["triplet_max_neighbors"][0]) > 2
    assert GEMNET_T_SMALL["num_blocks"] < GEMNET_T_MD17["num_blocks"]


def _primitives(closed) -> set[str]:
    names = set()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            names.add(eqn.primitive.name)
            for value in eqn.params.values():
                for sub in value if isinstance(value, (tuple, list)) else (value,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        walk(inner)

    walk(closed.jaxpr)
    return names


def test_chunked_triplets_give_the_same_loss_and_gradients():
    """``triplet_chunk``: chunked (7 edges) and unchunked training losses and parameter
    gradients agree at 1e-10 (float64); the chunked step loops over chunks; the fit reads all
    triplets."""
    g = _graph(3)
    whole = GemNetT(**SMALL, triplet_chunk=None)
    variables = fit_scale_factors(whole, _init(), g)
    losses, grads, fits = [], [], []
    for chunk in (None, 7):
        model = GemNetT(**SMALL, triplet_chunk=chunk)
        plan = model.edge_plan(g)
        assert (plan.chunk is None) == (chunk is None) and plan.num_chunks == (
            1 if chunk is None else -(-g.num_edges // chunk)), plan

        def loss(params, model=model):
            e, f = mg.energy_and_forces(model, {**variables, "params": params}, g)
            return 0.01 * jnp.sum(e**2) + jnp.sum(f**2)

        value, grad = jax.jit(jax.value_and_grad(loss))(variables["params"])
        losses.append(float(value))
        grads.append(grad)
        assert ("scan" in _primitives(jax.make_jaxpr(loss)(variables["params"]))) == (
            chunk is not None)
        fits.append(jax.tree.leaves(fit_scale_factors(model, _init(), g)["scale_factors"]))
    for k in (1,):
        np.testing.assert_allclose(losses[k], losses[0], rtol=1e-10)
        for a, b in zip(jax.tree.leaves(grads[k]), jax.tree.leaves(grads[0]), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(fits[k], fits[0])


def test_triplet_plan_on_the_cpu():
    """``"auto"`` on the CPU: MD17-sized batches run at once; beyond ``CPU_WHOLE`` edges the
    triplet sums run in chunks holding the bytes of the EGNN's CPU chunk."""
    from geonorm_jax.models import execution_plan as ep

    model = GemNetT(**GEMNET_T_MD17)
    small = _graph(8)
    assert model.edge_plan(small).chunk is None
    pos = np.broadcast_to(ethanol_frames(1), (300, 9, 3))  # 300 x 72 = 21600 edges
    big = mg.batch_frames(jnp.asarray(pos), ETHANOL_Z, GEMNET_T_MD17["cutoff"])
    assert big.num_edges > ep.CPU_WHOLE
    plan = model.edge_plan(big)
    width = 8 * GEMNET_T_MD17["emb_size_trip"]  # M = A - 1 = 8 slots
    assert plan.chunk == ep.CPU_CHUNK * 64 // width and plan.backend == "cpu", plan
    assert "CPU" in plan.describe()


@pytest.mark.parametrize("bad", [0, "all", 2.5, True])
def test_triplet_chunk_is_checked(bad):
    with pytest.raises(ValueError, match="GemNetT.triplet_chunk: expected 'auto', None or an"):
        GemNetT(**SMALL, triplet_chunk=bad)
