"""Using a trained potential: the jitted energy-and-forces function (size buckets, compile
counts, padding), the ASE calculator, JAX molecular dynamics (NVE energy conservation,
Langevin temperature) and the jax_md energy function. Float64 where exactness is tested."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _molecules import ETHANOL_POS, ETHANOL_Z

from geonorm_jax.models import registry
from geonorm_jax.norms import catalog
from geonorm_jax.potentials import Potential, masses_of, simulate

ase = pytest.importorskip("ase")

WATER_Z = np.array([8, 1, 1])
WATER = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])


def make_potential(name="schnet", dtype=jnp.float64, norm=None) -> Potential:
    """An initialised (untrained) tiny potential: a smooth random energy surface."""
    spec = registry.get(name)
    kwargs = spec.resolve(size="tiny", data={"avg_num_neighbors": 4.0, "max_atomic_number": 8})
    model = spec.build(kwargs, catalog.make(norm) if norm else None)
    batch = {"positions": jnp.asarray(ETHANOL_POS[None], dtype),
             "atomic_numbers": jnp.asarray(ETHANOL_Z[None])}
    variables = spec.init(model, jax.random.key(0), batch)
    return Potential(model=model, variables=variables, spec=spec, atomic_numbers=ETHANOL_Z,
                     dtype=dtype)


@pytest.mark.parametrize("name", ["schnet", "allegro"])
def test_padding_to_size_buckets_changes_nothing_and_compiles_once_per_bucket(name):
    pot = make_potential(name)
    spec = pot.spec
    direct, _ = spec.predict(pot.model, pot.variables,
                             {"positions": jnp.asarray(ETHANOL_POS[None]),
                              "atomic_numbers": jnp.asarray(ETHANOL_Z[None])}, False)
    e, f = pot.energy_and_forces(ETHANOL_POS)  # 9 atoms -> bucket 16, 1 frame
    np.testing.assert_allclose(e, direct["energy"][0], rtol=1e-12)
    np.testing.assert_allclose(f, direct["forces"][0], rtol=1e-10, atol=1e-12)
    frames = ETHANOL_POS[None] + 0.02 * np.random.default_rng(0).normal(size=(3, 9, 3))
    eb, fb = pot.energy_and_forces(frames)  # 3 frames -> bucket 4
    for i in range(3):
        ei, fi = pot.energy_and_forces(frames[i])
        np.testing.assert_allclose(eb[i], ei, rtol=1e-12)
        np.testing.assert_allclose(fb[i], fi, rtol=1e-10, atol=1e-12)
    before = pot.compile_count
    pot.energy_and_forces(WATER, WATER_Z)  # 3 atoms -> bucket 8: a new shape
    pot.energy_and_forces(WATER[:2], WATER_Z[:2])  # 2 atoms -> bucket 8 again: no compile
    pot.energy_and_forces(np.concatenate([WATER, WATER + 5.0]), np.tile(WATER_Z, 2))  # 6 -> 8
    assert pot.compile_count == before + 1
    pot.energy_and_forces(ETHANOL_POS + 1.0)  # bucket 16, 1 frame: compiled before
    assert pot.compile_count == before + 1
    with pytest.raises(ValueError, match=r"atomic_numbers: expected 9 entries"):
        pot.energy_and_forces(ETHANOL_POS, WATER_Z)
    with pytest.raises(ValueError, match=r"positions: expected \[A, 3\] or \[B, A, 3\]"):
        pot.energy_and_forces(ETHANOL_POS[:, :2])


def test_ase_calculator_forces_are_the_models_and_minus_de_dx():
    from ase import Atoms
    from ase.calculators.calculator import PropertyNotImplementedError

    from geonorm_jax.potentials import GeonormCalculator

    pot = make_potential("schnet")
    atoms = Atoms(numbers=ETHANOL_Z, positions=ETHANOL_POS)
    atoms.calc = GeonormCalculator(pot)
    e, f = pot.energy_and_forces(ETHANOL_POS)
    np.testing.assert_allclose(atoms.get_potential_energy(), e, rtol=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), f, rtol=1e-10, atol=1e-12)
    h = 1e-5
    for a, d in ((0, 0), (2, 1), (8, 2)):
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[a, d] += h
        minus.positions[a, d] -= h
        ep = pot.energy_and_forces(plus.positions)[0]
        em = pot.energy_and_forces(minus.positions)[0]
        np.testing.assert_allclose(-(ep - em) / (2 * h), atoms.get_forces()[a, d],
                                   rtol=1e-6, atol=1e-9)
    with pytest.raises(PropertyNotImplementedError, match="stress: not implemented"):
        atoms.get_stress()
    # ASE's own integrator runs on it
    from ase.md.verlet import VelocityVerlet

    VelocityVerlet(atoms, timestep=0.5 * ase.units.fs).run(5)
    assert np.isfinite(atoms.get_potential_energy())


def test_nve_conserves_energy_in_float64():
    """Velocity Verlet of ethanol at 300 K on a tiny Allegro (a smooth random surface): over
    0.5 ps the total energy stays within 2e-5 eV per atom of its start (measured 4e-7 at
    0.2 fs, 1.7e-6 at 0.4 fs), and the deviation falls as dt^2."""
    pot = make_potential("allegro")
    deviation = {}
    for dt in (0.4, 0.2):
        steps = int(round(500 / dt))
        traj = simulate(pot.energy_forces_fn(), ETHANOL_POS, masses_of(ETHANOL_Z), steps=steps,
                        dt=dt, record_every=steps // 25, replicas=2, temperature=300.0,
                        key=jax.random.key(1))
        assert traj.positions.shape == (2, 26, 9, 3) and traj.time_fs[-1] == 500.0
        total = np.asarray(traj.total_energy)
        deviation[dt] = np.max(np.abs(total - total[:, :1])) / 9
        assert not np.allclose(traj.positions[0], traj.positions[1])  # replicas differ
    assert deviation[0.4] < 2e-5, deviation
    assert 2.5 < deviation[0.4] / deviation[0.2] < 6.0, deviation  # second order


def test_schnet_mean_over_neighbours_is_discontinuous_at_the_cutoff():
    """SchNet's built-in normalization divides each sum over neighbours by the number of
    neighbours within the cutoff; the count jumps when an atom crosses the cutoff, so the
    energy jumps there even though every filter goes smoothly to zero (an NVE run then loses
    energy at such crossings whatever the time step). The plain sum is continuous."""
    spec = registry.get("schnet")
    for builtin, continuous in ((True, False), (False, True)):
        kwargs = spec.resolve(size="tiny", builtin_norm=builtin, data={"max_atomic_number": 8})
        model = spec.build(kwargs)
        rc = kwargs["cutoff"]
        z = np.array([8, 1, 1])
        pos = lambda d: np.array([[0.0, 0, 0], [0.96, 0, 0], [d, 0, 0]])  # noqa: E731
        batch = {"positions": jnp.asarray(pos(1.0)[None]), "atomic_numbers": jnp.asarray(z[None])}
        variables = spec.init(model, jax.random.key(0), batch)
        pot = Potential(model=model, variables=variables, spec=spec, atomic_numbers=z,
                        dtype=jnp.float64)
        inside = pot.energy_and_forces(pos(rc - 1e-8))[0]
        outside = pot.energy_and_forces(pos(rc + 1e-8))[0]
        jump = abs(float(inside - outside))
        assert (jump < 1e-9) == continuous, (builtin, jump)
        if not continuous:
            assert jump > 1e-4, jump


def test_langevin_holds_the_bath_temperature():
    pot = make_potential("schnet", dtype=jnp.float32)
    traj = simulate(pot.energy_forces_fn(), ETHANOL_POS.astype(np.float32),
                    masses_of(ETHANOL_Z), steps=4000, dt=0.5, record_every=20, replicas=8,
                    thermostat="langevin", temperature=500.0, friction=0.05,
                    key=jax.random.key(2))
    late = np.asarray(traj.temperature)[:, 50:]  # after 0.5 ps
    assert abs(late.mean() - 500.0) < 40.0, late.mean()
    assert traj.positions.shape[0] == 8
    with pytest.raises(ValueError, match="thermostat: expected one of"):
        simulate(pot.energy_forces_fn(), ETHANOL_POS, masses_of(ETHANOL_Z), steps=10,
                 thermostat="berendsen")
    with pytest.raises(ValueError, match="steps a multiple of record_every"):
        simulate(pot.energy_forces_fn(), ETHANOL_POS, masses_of(ETHANOL_Z), steps=15,
                 record_every=10)


def test_energy_fn_plugs_into_jax_md():
    jax_md = pytest.importorskip("jax_md")
    pot = make_potential("schnet")
    energy = pot.energy_fn()
    _, shift = jax_md.space.free()
    force = jax_md.quantity.force(energy)
    np.testing.assert_allclose(force(jnp.asarray(ETHANOL_POS)),
                               pot.energy_and_forces(ETHANOL_POS)[1], rtol=1e-10, atol=1e-12)
    init, apply = jax_md.simulate.nve(energy, shift, dt=0.01)
    state = init(jax.random.key(0), jnp.asarray(ETHANOL_POS),
                 mass=jnp.asarray(masses_of(ETHANOL_Z)), kT=0.0)
    state = jax.lax.fori_loop(0, 10, lambda i, s: apply(s), state)
    assert np.all(np.isfinite(np.asarray(state.position)))


def test_a_potential_trained_in_kcal_per_mol_answers_in_ev():
    """``molecules.energy_unit = "kcal/mol"``: energies and forces (all three entry points)
    are converted to eV, so ASE and the MD driver never see kcal/mol."""
    from geonorm_jax.data.molecules.units import KCAL_PER_MOL_EV

    ev = make_potential("schnet")
    kcal = dataclasses.replace(ev, info={"energy_unit": "kcal/mol"}, compile_count=0)
    e0, f0 = ev.energy_and_forces(ETHANOL_POS)
    e1, f1 = kcal.energy_and_forces(ETHANOL_POS)
    np.testing.assert_allclose(e1, KCAL_PER_MOL_EV * e0, rtol=1e-12)
    np.testing.assert_allclose(f1, KCAL_PER_MOL_EV * f0, rtol=1e-12, atol=1e-14)
    e2, f2 = kcal.energy_forces_fn()(jnp.asarray(ETHANOL_POS))
    np.testing.assert_allclose(e2, e1, rtol=1e-12)
    np.testing.assert_allclose(f2, f1, rtol=1e-10, atol=1e-14)
    with pytest.raises(ValueError, match=r"energy_unit.*received 'hartree'"):
        dataclasses.replace(ev, info={"energy_unit": "hartree"})


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """SchNet trained for 2 epochs on 24 GFN2-xTB water frames (the test suite's water set)."""
    pytest.importorskip("tblite")
    pytest.importorskip("rdkit")
    from geonorm_jax import train
    from geonorm_jax.data.molecules import MoleculeConfig, get_molecular_dataset

    root = tmp_path_factory.mktemp("md")
    data_dir = get_molecular_dataset(MoleculeConfig(
        molecule="water", frames=24, trajectories=2, stride=4, equilibration=6), root / "cache")
    config = train.merge(train.preset("schnet-uracil"), {
        "molecules": {"molecule": "water", "train": 12, "valid": 4, "test": 8},
        "model": {"hidden": 8, "num_layers": 1, "model_kwargs": {"num_rbf": 8}},
        "train": {"epochs": 2, "batch_size": 4, "seeds": [0, 1], "eval_every": 1,
                  "checkpoint_every": 1, "eval_batch_size": 8, "fast_compile": True}})
    train.train(config, root / "run", data_dir=data_dir, progress=False)
    return root / "run", data_dir


def test_load_potential_reproduces_the_runs_test_predictions(trained_run):
    from geonorm_jax import train
    from geonorm_jax.potentials import load_potential

    run, data_dir = trained_run
    pot = load_potential(run, seed=1, data_dir=data_dir)
    assert pot.seed == 1 and list(pot.atomic_numbers) == [8, 1, 1]
    assert pot.frames["test"].shape == (8, 3, 3)
    result = train.evaluate_run(run, data_dir=data_dir)
    s = train.build(train.load_config(run / "config.json"), data_dir=data_dir)
    test = s.data["test"]
    e, f = pot.energy_and_forces(np.asarray(test["positions"]))
    force_mae = 1e3 * np.mean(np.abs(np.asarray(f) - np.asarray(test["forces"])))
    np.testing.assert_allclose(force_mae, result["test_force_mae"][1], rtol=1e-4)
    with pytest.raises(ValueError, match=r"seed: expected one of the run's seeds \[0, 1\]"):
        load_potential(run, seed=7, data_dir=data_dir)


def test_the_readmes_potential_example_runs(trained_run):
    """The README's "Using a trained potential" block, on this run (its path and data
    directory substituted, 20 MD steps instead of 20 000)."""
    import re
    from pathlib import Path

    run, data_dir = trained_run
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("## Using a trained potential\n")
    code = re.findall(r"```python\n(.*?)```", readme[start:readme.index("\n## ", start + 1)],
                      flags=re.S)[0]
    for old, new in [('"runs/allegro-uracil"', "RUN, data_dir=DATA"), ("20_000", "20"),
                     ("atoms.calc =", "atoms = Atoms(pot.atomic_numbers, pot.frames['test'][0])"
                                      "\natoms.calc =")]:
        assert old in code, old
        code = code.replace(old, new)
    scope = {"RUN": str(run), "DATA": data_dir}
    exec("from ase import Atoms\n" + code, scope)
    assert np.isfinite(scope["atoms"].get_forces()).all()
    assert np.isfinite(float(scope["energy_fn"](jnp.asarray(scope["pot"].frames["test"][0]))))
    assert np.isfinite(np.asarray(scope["traj"].positions)).all()


def test_md_command_writes_extxyz_and_reports_speed(trained_run, tmp_path, capsys):
    from ase.io import read

    from geonorm_jax import cli

    run, data_dir = trained_run
    out = tmp_path / "water.xyz"
    assert cli.main(["md", str(run), "--data-dir", str(data_dir), "--ps", "0.02",
                     "--thermostat", "nve", "--temperature", "100", "--record-every", "5",
                     "--chunks", "2", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "ns/day" in text and "energy drift" in text
    frames = read(out, index=":")
    assert len(frames) == 9 and frames[0].info["time_fs"] == 0.0  # 40 steps, every 5
    assert frames[-1].info["time_fs"] == 20.0
    assert np.isfinite(frames[-1].get_potential_energy())
    assert cli.main(["md", str(run), "--data-dir", str(data_dir), "--ps", "0.01",
                     "--replicas", "2", "--out", str(tmp_path / "r.xyz"), "--json",
                     "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["replicas"] == 2 and len(summary["files"]) == 2
    assert summary["ns_per_day"] > 0 and summary["thermostat"] == "langevin"
    assert cli.main(["md", str(run), "--data-dir", str(data_dir), "--start", "99"]) == 2


@pytest.mark.slow
def test_schnet_mean_normalization_breaks_energy_conservation():
    """NVE of ethanol (300 K, 0.5 ps, float64) on a tiny random SchNet: with the mean over
    neighbours the energy error does not fall with the time step (the energy jumps at cutoff
    crossings), with the plain sum it falls as dt^2. Measured: mean 2.7e-4 / 2.6e-4 eV/atom at
    0.4 / 0.2 fs; sum 9.9e-6 / 2.5e-6."""
    spec = registry.get("schnet")
    ratio = {}
    for builtin in (True, False):
        kwargs = spec.resolve(size="tiny", builtin_norm=builtin, data={"max_atomic_number": 8})
        model = spec.build(kwargs)
        batch = {"positions": jnp.asarray(ETHANOL_POS[None]),
                 "atomic_numbers": jnp.asarray(ETHANOL_Z[None])}
        pot = Potential(model=model, variables=spec.init(model, jax.random.key(0), batch),
                        spec=spec, atomic_numbers=ETHANOL_Z, dtype=jnp.float64)
        dev = {}
        for dt in (0.4, 0.2):
            steps = int(round(500 / dt))
            traj = simulate(pot.energy_forces_fn(), ETHANOL_POS, masses_of(ETHANOL_Z),
                            steps=steps, dt=dt, record_every=steps // 25, temperature=300.0,
                            key=jax.random.key(1))
            total = np.asarray(traj.total_energy[0])
            dev[dt] = np.max(np.abs(total - total[0])) / 9
        print(builtin, dev)
        ratio[builtin] = dev[0.4] / dev[0.2]
    assert ratio[True] < 1.5 and 3.0 < ratio[False] < 5.0, ratio
