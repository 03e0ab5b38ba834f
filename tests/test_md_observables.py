"""MD observables (geonorm_jax.potentials.observables): bonds, Fu et al.'s stability criterion
and h(r), energy drift and temperature."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _molecules import ETHANOL_POS, ETHANOL_Z
from ase import Atoms, units
from ase.md import velocitydistribution as _vd
from ase.md.velocitydistribution import Stationary, ZeroRotation

from geonorm_jax.potentials import observables as obs


def _maxwell_boltzmann(atoms, temperature_k, rng):
    """ASE's Maxwell-Boltzmann momenta (``thermalize_momenta`` from ASE 3.29 on, which
    deprecates ``MaxwellBoltzmannDistribution``)."""
    if hasattr(_vd, "thermalize_momenta"):
        _vd.thermalize_momenta(atoms, temperature_k, rng=rng)
    else:  # ASE < 3.29
        _vd.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_k, rng=rng)


# Ethanol atoms: 0 C, 1 C, 2 O, 3-5 H on C0, 6-7 H on C1, 8 H on O.
ETHANOL_BONDS = [[0, 1], [0, 3], [0, 4], [0, 5], [1, 2], [1, 6], [1, 7], [2, 8]]


def test_constants_match_ase():
    # 1 amu (1 Å/fs)^2 = 1.66054e-27 kg (1e5 m/s)^2 = 1.66054e-17 J = 103.6427 eV
    assert obs.AMU_A2_PER_FS2_TO_EV == pytest.approx(103.6427, rel=1e-5)
    assert obs.KB_EV_PER_K == pytest.approx(8.617333e-5, rel=1e-5)
    assert obs.DEFAULT_HR_BINS.shape == (501,)
    assert obs.DEFAULT_HR_BINS[-1] == 10.0


def test_ethanol_bonds_exact():
    pairs = obs.bonds(ETHANOL_Z, ETHANOL_POS)
    assert pairs.shape == (8, 2)
    assert pairs.tolist() == ETHANOL_BONDS
    kinds = sorted("".join(sorted("CHO"[[6, 1, 8].index(ETHANOL_Z[k])] for k in p)) for p in pairs)
    assert kinds == ["CC", "CH", "CH", "CH", "CH", "CH", "CO", "HO"]
    lengths = np.asarray(obs.bond_lengths(ETHANOL_POS, pairs))
    assert lengths[0] == pytest.approx(1.51, abs=0.01)  # C-C
    assert lengths[4] == pytest.approx(1.42, abs=0.01)  # C-O
    assert lengths[7] == pytest.approx(0.97, abs=0.01)  # O-H


def test_bonds_reject_bad_shapes():
    with pytest.raises(ValueError, match=r"positions: expected shape \[A, 3\]"):
        obs.bonds(ETHANOL_Z, ETHANOL_POS[:5])
    with pytest.raises(ValueError, match="atomic_numbers"):
        obs.bonds(ETHANOL_Z[None], ETHANOL_POS)
    with pytest.raises(ValueError, match="pairs"):
        obs.bond_lengths(ETHANOL_POS, np.array([0, 1]))


def _stretched_trajectory(stretch: float, frame: int, num_frames: int = 12):
    """Ethanol with the O-H bond (atoms 2, 8) stretched by ``stretch`` Å from ``frame`` on,
    the other atoms jiggling by 0.02 Å."""
    rng = np.random.default_rng(0)
    traj = ETHANOL_POS[None] + 0.02 * rng.standard_normal((num_frames, 9, 3))
    oh = ETHANOL_POS[8] - ETHANOL_POS[2]
    traj[frame:, 8] = ETHANOL_POS[2] + oh * (1.0 + stretch / np.linalg.norm(oh))
    traj[frame:, 2] = ETHANOL_POS[2]
    return traj


def _setup():
    pairs = obs.bonds(ETHANOL_Z, ETHANOL_POS)
    ref = np.asarray(obs.bond_lengths(ETHANOL_POS, pairs))
    times = 0.05 * np.arange(12)  # ps, one frame every 0.05 ps like Fu et al.
    return pairs, ref, times


def test_stability_first_unstable_frame():
    pairs, ref, times = _setup()
    fn = jax.jit(obs.time_to_instability)
    s = fn(_stretched_trajectory(0.55, 7), pairs, ref, times)
    assert not bool(s.stable)
    assert int(s.first_frame) == 7
    assert float(s.time) == pytest.approx(times[7])
    s = fn(_stretched_trajectory(0.4, 7), pairs, ref, times)
    assert bool(s.stable)
    assert int(s.first_frame) == 12
    assert float(s.time) == pytest.approx(times[-1])
    # the threshold is honoured: 0.4 Å breaks a 0.3 Å criterion at frame 7
    s = fn(_stretched_trajectory(0.4, 7), pairs, ref, times, 0.3)
    assert int(s.first_frame) == 7
    mask = obs.stable_frames(s, 12)
    assert np.asarray(mask).tolist() == [True] * 7 + [False] * 5


def test_stability_nan_is_unstable():
    pairs, ref, times = _setup()
    traj = _stretched_trajectory(0.0, 12)
    traj[4, 0] = np.nan
    s = obs.time_to_instability(traj, pairs, ref, times)
    assert not bool(s.stable) and int(s.first_frame) == 4


def test_stability_vmap_over_replicas():
    pairs, ref, times = _setup()
    reps = np.stack(
        [
            _stretched_trajectory(0.55, 7),
            _stretched_trajectory(0.4, 7),
            _stretched_trajectory(0.8, 2),
        ]
    )  # [R=3, T, A, 3]
    fn = jax.jit(jax.vmap(obs.time_to_instability, in_axes=(0, None, None, None)))
    s = fn(reps, pairs, ref, times)
    assert np.asarray(s.stable).tolist() == [False, True, False]
    assert np.asarray(s.first_frame).tolist() == [7, 12, 2]
    np.testing.assert_allclose(np.asarray(s.time), [times[7], times[-1], times[2]])
    masks = jax.vmap(obs.stable_frames, in_axes=(0, None))(s, 12)
    assert np.asarray(masks).sum(1).tolist() == [7, 12, 2]
    # h(r) of the stable part of each replica, vmapped too
    h = jax.vmap(obs.distance_histogram, in_axes=(0, None, 0))(reps, obs.DEFAULT_HR_BINS, masks)
    dr = np.diff(obs.DEFAULT_HR_BINS)
    np.testing.assert_allclose(np.asarray(h) @ dr, 1.0, rtol=1e-12)


def test_stability_rejects_bad_shapes():
    pairs, ref, times = _setup()
    traj = _stretched_trajectory(0.0, 12)
    with pytest.raises(ValueError, match=r"positions: expected shape \[T, A, 3\]"):
        obs.time_to_instability(traj[None], pairs, ref, times)
    with pytest.raises(ValueError, match="times"):
        obs.time_to_instability(traj, pairs, ref, times[:-1])
    with pytest.raises(ValueError, match="reference_lengths"):
        obs.time_to_instability(traj, pairs, ref[:-1], times)


def test_h_of_equilateral_triangle():
    side = 1.5
    tri = np.array([[0.0, 0.0, 0.0], [side, 0.0, 0.0], [side / 2, side * np.sqrt(3) / 2, 0.0]])
    rng = np.random.default_rng(1)
    frames = []
    for _ in range(5):  # rigid motions keep every distance at 1.5 Å
        q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
        frames.append(tri @ q.T + rng.standard_normal(3))
    bins = obs.DEFAULT_HR_BINS
    h = np.asarray(jax.jit(obs.distance_histogram)(np.stack(frames), bins))
    dr = np.diff(bins)
    assert h.shape == (500,)
    assert np.count_nonzero(h) == 1
    k = int(np.argmax(h))
    assert bins[k] <= side < bins[k + 1]
    assert h[k] == pytest.approx(1.0 / dr[k])
    assert float(h @ dr) == pytest.approx(1.0, abs=1e-12)


def test_h_matches_fu_et_al_numpy_reference():
    """Fu et al.: np.histogram(cdist(traj, traj).flatten(), bins, density=True)."""
    traj = ETHANOL_POS[None] + 0.1 * np.random.default_rng(2).standard_normal((20, 9, 3))
    bins = obs.DEFAULT_HR_BINS
    cd = np.linalg.norm(traj[:, :, None] - traj[:, None], axis=-1).ravel()
    ref, _ = np.histogram(cd, bins, density=True)
    np.testing.assert_allclose(np.asarray(obs.distance_histogram(traj, bins)), ref, rtol=1e-10)
    # padding atoms and masked frames change nothing
    padded = np.concatenate([traj, np.zeros((20, 2, 3))], axis=1)
    am = np.array([True] * 9 + [False] * 2)
    extra = np.concatenate([traj, traj[:3] + 5.0])
    fm = np.array([True] * 20 + [False] * 3)
    np.testing.assert_allclose(
        np.asarray(obs.distance_histogram(padded, bins, atom_mask=am)), ref, rtol=1e-10
    )
    np.testing.assert_allclose(
        np.asarray(obs.distance_histogram(extra, bins, mask=fm)), ref, rtol=1e-10
    )


def test_h_error_identical_and_disjoint():
    bins = obs.DEFAULT_HR_BINS
    dr = np.diff(bins)
    a = np.zeros(500)
    a[50:60] = 1.0
    a /= a @ dr
    b = np.zeros(500)
    b[100:130] = 1.0
    b /= b @ dr
    assert float(obs.h_error(a, a, bins)) == 0.0
    assert float(jax.jit(obs.h_error)(a, b, bins)) == pytest.approx(2.0, abs=1e-12)
    # batched h [2, K] against one reference
    np.testing.assert_allclose(np.asarray(obs.h_error(np.stack([a, b]), a, bins)), [0.0, 2.0])
    # Fu et al.'s form, mean |h - h_ref| * 10, agrees to 1e-6 relative
    assert float(np.abs(a - b).mean() * 10) == pytest.approx(2.0, rel=1e-6)
    with pytest.raises(ValueError, match="h: expected shape"):
        obs.h_error(a[:-1], a[:-1], bins)


def test_energy_drift_recovers_slope():
    t = np.linspace(0.0, 10.0, 201)  # ps
    num_atoms, e0, a = 9, -4200.0, 0.027  # eV, eV/ps
    rng = np.random.default_rng(3)
    e = e0 + a * t + 1e-4 * np.sin(37 * t)
    drift = float(jax.jit(obs.energy_drift, static_argnums=2)(e, t, num_atoms))
    assert drift == pytest.approx(a / num_atoms, rel=1e-3)
    exact = float(obs.energy_drift(e0 + a * t, t, num_atoms))
    assert exact == pytest.approx(a / num_atoms, rel=1e-10)
    # masked frames (e.g. after an instability) are left out of the fit
    junk = e0 + a * t
    junk[150:] = rng.normal(0.0, 100.0, 51)
    masked = float(obs.energy_drift(junk, t, num_atoms, mask=np.arange(201) < 150))
    assert masked == pytest.approx(a / num_atoms, rel=1e-10)
    dev = float(obs.max_energy_deviation(e0 + a * t, num_atoms))
    assert dev == pytest.approx(a * 10.0 / num_atoms, rel=1e-10)
    with pytest.raises(ValueError, match="times_ps"):
        obs.energy_drift(e, t[:-1], num_atoms)


def _ethanol_atoms():
    return Atoms(numbers=ETHANOL_Z, positions=ETHANOL_POS)


def test_temperature_units_match_ase():
    atoms = _ethanol_atoms()
    _maxwell_boltzmann(atoms, 300.0, np.random.default_rng(4))
    v = atoms.get_velocities() * units.fs  # ASE velocity unit -> Å/fs
    m = atoms.get_masses()
    assert float(obs.kinetic_energy(v, m)) == pytest.approx(atoms.get_kinetic_energy(), rel=1e-12)
    t3a = float(obs.temperature(v, m, dof=27))
    assert t3a == pytest.approx(atoms.get_temperature(), rel=1e-12)
    assert float(obs.temperature(v, m)) == pytest.approx(t3a * 27 / 21, rel=1e-12)


def test_temperature_of_maxwell_boltzmann_500k():
    """ASE's Maxwell-Boltzmann draw at 500 K, then momentum and angular momentum removed:
    3A - 6 = 21 degrees of freedom remain, so T = 500 K chi2(21)/21 per draw (std 154 K);
    the mean of 2000 draws has a standard error of 3.5 K, the tolerance is 12 K (3.5 sigma).
    With 3A degrees of freedom (ASE's get_temperature) it would read 389 K."""
    atoms = _ethanol_atoms()
    rng = np.random.default_rng(5)
    vs = []
    for _ in range(2000):
        _maxwell_boltzmann(atoms, 500.0, rng)
        # ASE's defaults (preserve_temperature=True) would rescale the velocities back to the
        # drawn 3A-dof kinetic energy, which then reads 27/21 too hot over 21 dof
        Stationary(atoms, preserve_temperature=False)
        ZeroRotation(atoms, preserve_temperature=False)
        vs.append(atoms.get_velocities() * units.fs)
    temps = jax.jit(obs.temperature)(np.stack(vs), atoms.get_masses())  # [2000]
    assert temps.shape == (2000,)
    assert float(jnp.mean(temps)) == pytest.approx(500.0, abs=12.0)


def test_temperature_atom_mask_and_dof():
    rng = np.random.default_rng(6)
    v = rng.standard_normal((4, 9, 3)) * 0.01
    m = np.full(9, 12.0)
    padded_v = np.concatenate([v, rng.standard_normal((4, 3, 3))], axis=1)
    padded_m = np.concatenate([m, np.ones(3)])
    am = np.array([True] * 9 + [False] * 3)
    f = jax.jit(obs.temperature)
    np.testing.assert_allclose(
        np.asarray(f(padded_v, padded_m, am)), np.asarray(obs.temperature(v, m)), rtol=1e-12
    )
    assert np.asarray(obs.degrees_of_freedom(np.array([1, 2, 3, 9]))).tolist() == [3, 1, 3, 21]
    with pytest.raises(ValueError, match=r"masses: expected shape \[A\]"):
        obs.temperature(v, m[:-1])
