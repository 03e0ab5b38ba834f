"""The JAX simulator against an independent NumPy loop, the wall reflection, frame indexing,
initial-state statistics and energy conservation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geonorm_jax.data import (
    InitialState,
    energy_drift,
    reflect_walls,
    sample_initial_state,
    simulate,
    simulate_from_state,
    total_energy,
)
from geonorm_jax.data.reference import simulate_numpy as numpy_simulate


def _state(seed, s, n, scale=1.0):
    rng = np.random.default_rng(seed)
    loc = rng.normal(size=(s, n, 3)) * scale
    vel = rng.normal(size=(s, n, 3))
    vel *= 0.5 / np.linalg.norm(vel, axis=-1, keepdims=True)
    charges = rng.choice([-1.0, 1.0], size=(s, n, 1))
    return loc, vel, charges


@pytest.mark.parametrize("n, scale", [(5, 1.0), (12, 3.0)])
def test_matches_numpy_loop_first_1000_steps(n, scale):
    # scale 3 puts coordinates outside the box, so the wall reflection is exercised too.
    loc, vel, charges = _state(0, 4, n, scale)
    traj = simulate_from_state(loc, vel, charges, steps=1000, sample_freq=100)
    assert traj.loc.shape == (4, 9, n, 3) and traj.loc.dtype == jnp.float64
    for b in range(4):
        ref_x, ref_v = numpy_simulate(loc[b], vel[b], charges[b], steps=1000, sample_freq=100)
        np.testing.assert_allclose(np.asarray(traj.loc[b]), ref_x, rtol=0, atol=1e-8)
        np.testing.assert_allclose(np.asarray(traj.vel[b]), ref_v, rtol=0, atol=1e-8)


def test_frame_k_is_state_after_step_sample_freq_times_k_plus_1():
    loc, vel, charges = _state(1, 2, 5)
    short = simulate_from_state(loc, vel, charges, steps=400, sample_freq=100)  # 3 frames
    fine = simulate_from_state(loc, vel, charges, steps=400, sample_freq=10)  # 39 frames
    # step 100 (k+1) is frame 10 (k+1) - 1 of the fine run
    for k in range(3):
        np.testing.assert_allclose(short.loc[:, k], fine.loc[:, 10 * (k + 1) - 1], atol=1e-12)
        np.testing.assert_allclose(short.vel[:, k], fine.vel[:, 10 * (k + 1) - 1], atol=1e-12)


def test_first_frame_after_100_steps_free_particles():
    # Without charges there is no force: x(step i) = x0 + i dt v0.
    loc, vel, _ = _state(2, 3, 5)
    traj = simulate_from_state(loc, vel, np.zeros((3, 5, 1)), steps=300, sample_freq=100)
    for k in range(2):
        expected = loc + (k + 1) * 100 * 0.001 * vel
        np.testing.assert_allclose(traj.loc[:, k], expected, atol=1e-12)
    assert not np.any(traj.clipped)


def test_wall_reflection_matches_reference_rule():
    loc = np.array([[6.0, -7.0, 1.0], [-5.5, 5.0, 14.0]])
    vel = np.array([[0.3, -0.2, 0.1], [-0.4, 0.5, 0.6]])
    new_loc, new_vel = reflect_walls(loc, vel, 5.0)
    np.testing.assert_allclose(new_loc, [[4.0, -3.0, 1.0], [-4.5, 5.0, -4.0]])
    np.testing.assert_allclose(new_vel, [[-0.3, 0.2, 0.1], [0.4, 0.5, -0.6]])


def test_single_trajectory_input_has_no_batch_axis():
    loc, vel, charges = _state(3, 1, 5)
    one = simulate_from_state(loc[0], vel[0], charges[0], steps=300, sample_freq=100)
    batch = simulate_from_state(loc, vel, charges, steps=300, sample_freq=100)
    assert one.loc.shape == (2, 5, 3)
    np.testing.assert_array_equal(np.asarray(one.loc), np.asarray(batch.loc[0]))


def test_initial_state_statistics_and_key_independence():
    n = 40
    state = sample_initial_state(jax.random.PRNGKey(0), 100, n, loc_std=1.0, vel_norm=0.5)
    assert state.loc.shape == (100, n, 3) and state.charges.shape == (100, n, 1)
    assert state.loc.dtype == jnp.float64
    np.testing.assert_allclose(np.linalg.norm(state.vel, axis=-1), 0.5, rtol=1e-12)
    assert set(np.unique(state.charges)) == {-1.0, 1.0}
    assert abs(float(np.mean(state.charges))) < 0.05
    expected_std = (n / 5) ** (1 / 3)
    assert abs(float(np.std(state.loc)) / expected_std - 1) < 0.03
    # trajectory i depends only on (key, i)
    tail = sample_initial_state(jax.random.PRNGKey(0), 30, n, start=70)
    np.testing.assert_array_equal(np.asarray(tail.loc), np.asarray(state.loc[70:]))
    other = sample_initial_state(jax.random.PRNGKey(1), 1, n)
    assert not np.allclose(np.asarray(other.loc[0]), np.asarray(state.loc[0]))


def test_simulate_from_key_equals_simulate_from_its_state():
    key = jax.random.PRNGKey(5)
    a = simulate(key, 3, particles=5, steps=300)
    b = simulate(InitialState(*sample_initial_state(key, 3, 5)), steps=300)
    np.testing.assert_array_equal(np.asarray(a.loc), np.asarray(b.loc))


def test_total_energy_two_charges():
    loc = np.array([[[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]])
    vel = np.array([[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]])
    np.testing.assert_allclose(total_energy(loc, vel, np.array([[[1.0], [-1.0]]])), [2.5 - 0.5])


def test_energy_drift_is_small_without_clipping():
    traj = simulate(jax.random.PRNGKey(11), 48, particles=5, steps=5000, sample_freq=100)
    loc, vel, charges, clipped = (np.asarray(a) for a in traj)
    drift = energy_drift(loc, vel, charges)
    free = ~clipped
    assert free.sum() >= 10
    assert np.median(drift[free]) < 3e-3
    assert np.max(drift[free]) < 5e-2
    # the check can fail: the same measure is large where forces were clipped
    assert np.max(drift[clipped]) > 0.1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=1000, sample_freq=300), "sample_freq"),
        (dict(steps=100, sample_freq=100), "sample_freq"),
        (dict(dt=0.0), "dt"),
    ],
)
def test_bad_simulation_arguments(kwargs, match):
    loc, vel, charges = _state(4, 1, 5)
    with pytest.raises(ValueError, match=match):
        simulate_from_state(loc, vel, charges, **kwargs)


def test_bad_state_shapes_name_the_shape():
    loc, vel, charges = _state(4, 2, 5)
    with pytest.raises(ValueError, match=r"\(2, 5, 2\)"):
        simulate_from_state(loc[..., :2], vel, charges)
    with pytest.raises(ValueError, match=r"\(2, 5\)"):
        simulate_from_state(loc, vel, charges[..., 0])
    with pytest.raises(ValueError, match="N >= 2"):
        simulate_from_state(loc[:, :1], vel[:, :1], charges[:, :1])
