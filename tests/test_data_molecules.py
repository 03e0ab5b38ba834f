"""GFN2-xTB molecular data: the tblite wrapper's units, relaxation, Langevin dynamics, and the
cached, resumable ``md17-xtb`` generator (on water, a few steps, so each test takes seconds)."""

import json

import numpy as np
import pytest

pytest.importorskip("tblite")
pytest.importorskip("rdkit")
pytest.importorskip("ase")

from geonorm_jax.data.molecules import (  # noqa: E402
    MolecularDataError,
    MoleculeConfig,
    get_molecular_dataset,
    is_molecular_dataset,
    load_molecular_dataset,
)
from geonorm_jax.data.molecules import files as mfiles  # noqa: E402
from geonorm_jax.data.molecules.md import (  # noqa: E402
    MDState,
    atomic_masses,
    decorrelation_time,
    generator_from_state,
    generator_state,
    kinetic_energy,
    langevin_steps,
    maxwell_boltzmann,
)
from geonorm_jax.data.molecules.structures import build_geometry, embed  # noqa: E402
from geonorm_jax.data.molecules.xtb import XTB  # noqa: E402

TINY = dict(molecule="water", frames=6, trajectories=2, stride=4, equilibration=6)


@pytest.fixture(scope="module")
def water():
    return build_geometry("water", seed=0)


def test_forces_are_minus_the_finite_difference_gradient():
    z, r = embed("O", seed=0)  # not relaxed: forces are large
    xtb = XTB(z)
    _, forces = xtb(r)
    h = 1e-4  # Å
    fd = np.zeros_like(r)
    for i in range(r.shape[0]):
        for k in range(3):
            plus, minus = r.copy(), r.copy()
            plus[i, k] += h
            minus[i, k] -= h
            fd[i, k] = -(xtb(plus)[0] - xtb(minus)[0]) / (2 * h)
    assert np.abs(forces).max() > 0.1
    np.testing.assert_allclose(forces, fd, atol=1e-4)


def test_energy_matches_tblite_ase_calculator_in_ev():
    from ase import Atoms
    from tblite.ase import TBLite

    z, r = embed("CCO", seed=1)
    energy, forces = XTB(z)(r)
    atoms = Atoms(numbers=z, positions=r)
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    # ASE's units are CODATA 2014, ours CODATA 2018: agreement to ~1e-8 relative.
    assert energy == pytest.approx(atoms.get_potential_energy(), rel=1e-6)
    np.testing.assert_allclose(forces, atoms.get_forces(), rtol=1e-5, atol=1e-6)


def test_xtb_rejects_bad_input():
    with pytest.raises(ValueError, match=r"positions must have shape \(3, 3\).*\(2, 3\)"):
        XTB(np.array([8, 1, 1]))(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="method must be one of"):
        XTB(np.array([8, 1, 1]), method="GFN0")
    with pytest.raises(ValueError, match="atomic_numbers must be a 1-D integer array"):
        XTB(np.array([8.0, 1.0, 1.0]))


def test_relaxed_geometry_has_small_forces(water):
    assert water["max_force"] < 0.01
    _, forces = XTB(water["atomic_numbers"])(water["positions"])
    assert np.linalg.norm(forces, axis=1).max() < 0.01
    z, r0 = embed("O", seed=0)
    assert np.linalg.norm(XTB(z)(r0)[1], axis=1).max() > 0.01  # the relaxation did something


def test_velocity_verlet_conserves_energy(water):
    z, x = water["atomic_numbers"], water["positions"]
    xtb, masses = XTB(z), atomic_masses(z)
    rng = np.random.default_rng(0)
    energy, forces = xtb(x)
    state = MDState(x, maxwell_boltzmann(masses, 1000.0, rng), energy, forces, 0)
    totals, potentials = [], []

    def record(s):
        potentials.append(s.energy)
        totals.append(s.energy + kinetic_energy(s.velocities, masses))

    langevin_steps(state, xtb, masses, 60, 0.25, 0.0, 0.0, rng, on_step=record)
    swing = np.ptp(potentials)
    assert swing > 0.02  # eV: the molecule vibrates
    assert np.ptp(totals) < 0.01 * swing


def test_langevin_thermostat_reaches_the_target_temperature(water):
    from geonorm_jax.data.molecules.units import BOLTZMANN_EV_PER_K

    z, x = water["atomic_numbers"], water["positions"]
    xtb, masses = XTB(z), atomic_masses(z)
    rng = np.random.default_rng(1)
    energy, forces = xtb(x)
    target = 500.0
    state = MDState(x, np.zeros_like(x), energy, forces, 0)  # starts cold
    kinetic = []
    state = langevin_steps(state, xtb, masses, 200, 0.5, target, 0.05, rng)
    langevin_steps(
        state,
        xtb,
        masses,
        3000,
        0.5,
        target,
        0.05,
        rng,
        on_step=lambda s: kinetic.append(kinetic_energy(s.velocities, masses)),
    )
    temperature = 2 * np.mean(kinetic) / (3 * len(z) * BOLTZMANN_EV_PER_K)
    assert temperature == pytest.approx(target, rel=0.15)


def test_langevin_state_round_trip_continues_identically(water):
    z, x = water["atomic_numbers"], water["positions"]
    xtb, masses = XTB(z), atomic_masses(z)
    rng = np.random.default_rng(3)
    energy, forces = xtb(x)
    start = MDState(x, maxwell_boltzmann(masses, 500.0, rng), energy, forces, 0)
    args = (xtb, masses)
    kw = dict(dt=0.5, temperature=500.0, friction=0.05)
    rng_a = generator_from_state(generator_state(rng))
    whole = langevin_steps(start, *args, steps=8, rng=rng_a, **kw)
    rng_b = generator_from_state(generator_state(rng))
    half = langevin_steps(start, *args, steps=4, rng=rng_b, **kw)
    rng_c = generator_from_state(generator_state(rng_b))
    rest = langevin_steps(half, *args, steps=4, rng=rng_c, **kw)
    np.testing.assert_array_equal(whole.positions, rest.positions)
    np.testing.assert_array_equal(whole.velocities, rest.velocities)
    assert whole.step == rest.step == 8
    with pytest.raises(ValueError, match="friction must be >= 0"):
        langevin_steps(start, *args, steps=1, rng=rng, dt=0.5, temperature=500.0, friction=-1)


def test_decorrelation_time_of_known_series():
    rng = np.random.default_rng(0)
    phi, n = 0.9, 20000  # AR(1): C(k) = phi^k, 1/e after ~9.5 lags, tau_int = (1+phi)/(2(1-phi))
    e = np.zeros(n)
    for i in range(1, n):
        e[i] = phi * e[i - 1] + rng.normal()
    t_dec, tau = decorrelation_time(e, dt=1.0)
    assert 7 <= t_dec <= 13
    assert tau == pytest.approx((1 + phi) / (2 * (1 - phi)), rel=0.25)


def test_generation_cache_hit_and_loads(tmp_path, monkeypatch):
    config = MoleculeConfig(**TINY)
    path = get_molecular_dataset(config, tmp_path, workers=1, chunk_frames=2)
    data = load_molecular_dataset(path)
    assert data.positions.shape == (6, 3, 3) and data.forces.shape == (6, 3, 3)
    assert data.meta["units"]["energies"] == "eV" and data.meta["molecule"] == "water"
    assert not (path / "chunks").exists()
    assert is_molecular_dataset(path)
    # frames are different states, forces consistent with a bound molecule
    assert np.unique(data.energies).size == 6 and np.abs(data.forces).max() < 20

    def boom(task):
        raise AssertionError("a cache hit must not run dynamics")

    monkeypatch.setattr(mfiles, "_run_task", boom)
    assert get_molecular_dataset(config, tmp_path, workers=1) == path


def test_killed_generation_leaves_nothing_loadable_and_resumes(tmp_path, monkeypatch):
    config = MoleculeConfig(**TINY)
    reference = load_molecular_dataset(
        get_molecular_dataset(config, tmp_path / "uninterrupted", workers=1, chunk_frames=2)
    )
    real, calls = mfiles._run_task, {"n": 0}

    def dies_on_fourth_task(task):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("killed")
        return real(task)

    monkeypatch.setattr(mfiles, "_run_task", dies_on_fourth_task)
    with pytest.raises(KeyboardInterrupt):
        get_molecular_dataset(config, tmp_path / "killed", workers=1, chunk_frames=2)
    directory = tmp_path / "killed" / config.dataset_name()
    assert not (directory / "metadata.json").exists() and not (directory / "data.npz").exists()
    with pytest.raises(MolecularDataError, match="interrupted generation"):
        load_molecular_dataset(directory)
    assert len(list((directory / "chunks").glob("t00_f*.npz"))) == 2  # equil + 2 chunks done
    monkeypatch.setattr(mfiles, "_run_task", real)
    report = mfiles.generate_molecular_dataset(config, directory, workers=1, chunk_frames=2)
    assert report["resumed_frames"] == 3 and report["frames"] == 3
    resumed = load_molecular_dataset(directory)
    for name in ("positions", "energies", "forces", "atomic_numbers"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(reference, name))


def test_corrupted_data_file_is_detected(tmp_path):
    config = MoleculeConfig(molecule="water", frames=2, trajectories=1, stride=2, equilibration=2)
    path = get_molecular_dataset(config, tmp_path, workers=1)
    with open(path / "data.npz", "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01\x02")
    with pytest.raises(MolecularDataError, match="does not match the metadata"):
        load_molecular_dataset(path)
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["config"]["molecule"] == "water"
    # the same size, altered: not complete (the size alone accepted it), so it is regenerated
    assert (path / "data.npz").stat().st_size == meta["file"]["bytes"]
    assert not mfiles.is_complete(path, config)
    assert get_molecular_dataset(config, tmp_path, workers=1) == path
    load_molecular_dataset(path)


@pytest.mark.slow
def test_two_worker_processes_give_the_same_bytes(tmp_path):
    config = MoleculeConfig(**TINY)
    one = load_molecular_dataset(get_molecular_dataset(config, tmp_path / "a", workers=1))
    two = load_molecular_dataset(get_molecular_dataset(config, tmp_path / "b", workers=2))
    np.testing.assert_array_equal(one.positions, two.positions)
    np.testing.assert_array_equal(one.forces, two.forces)
