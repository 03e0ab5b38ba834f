"""Reference-format loader, batching and the ``geonorm-jax data`` command."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geonorm_jax.cli import main
from geonorm_jax.data import (
    DataFileError,
    Samples,
    batch_indices,
    edge_attributes,
    iterate_batches,
    load_reference_split,
    load_reference_trajectories,
    load_split,
    num_batches,
    reference_filename,
)


def _write_reference(directory, split, s=6, t=12, n=5, suffix="small"):
    rng = np.random.default_rng(0)
    loc = rng.normal(size=(s, t, 3, n))
    vel = rng.normal(size=(s, t, 3, n))
    charges = rng.choice([-1.0, 1.0], size=(s, n, 1))
    edges = charges @ np.swapaxes(charges, 1, 2)
    for kind, array in dict(loc=loc, vel=vel, edges=edges, charges=charges).items():
        np.save(directory / reference_filename(kind, split, n, suffix), array)
    return loc, vel, charges


def test_reference_filename_matches_generate_dataset():
    assert reference_filename("loc", "train", 5, "small") == "loc_train_charged5_initvel1small.npy"
    assert reference_filename("charges", "val", 100) == "charges_valid_charged100_initvel1.npy"


def test_reference_loader_transposes_and_samples_frames(tmp_path):
    loc, vel, charges = _write_reference(tmp_path, "valid")
    samples = load_reference_split(tmp_path, "val", 3, 9, suffix="small")
    np.testing.assert_allclose(samples.loc, loc[:, 3].transpose(0, 2, 1), rtol=1e-6)
    np.testing.assert_allclose(samples.vel, vel[:, 3].transpose(0, 2, 1), rtol=1e-6)
    np.testing.assert_allclose(samples.target, loc[:, 9].transpose(0, 2, 1), rtol=1e-6)
    np.testing.assert_array_equal(samples.charges, charges)
    assert all(a.dtype == np.float32 for a in samples)
    full = load_reference_trajectories(tmp_path, "valid", suffix="small", max_samples=4)
    assert full["loc"].shape == (4, 12, 5, 3) and full["edges"].shape == (4, 5, 5)
    np.testing.assert_array_equal(full["edges"], edge_attributes(full["charges"]))


def test_reference_loader_errors_name_the_file(tmp_path):
    _write_reference(tmp_path, "test", suffix="")
    with pytest.raises(DataFileError, match="loc_train_charged5_initvel1.npy"):
        load_reference_split(tmp_path, "train")
    vel_path = tmp_path / reference_filename("vel", "test", 5)
    vel_path.write_bytes(vel_path.read_bytes()[:200])  # truncated
    with pytest.raises(DataFileError, match=vel_path.name):
        load_reference_split(tmp_path, "test", 1, 2)
    np.save(vel_path, np.zeros((6, 12, 5, 3)))  # wrong axis order
    with pytest.raises(DataFileError, match=vel_path.name):
        load_reference_split(tmp_path, "test", 1, 2)
    loc_path = tmp_path / reference_filename("loc", "test", 5)
    np.save(loc_path, np.zeros((6, 12, 3, 4)))  # four particles under a five-particle name
    with pytest.raises(DataFileError, match=r"loc_test.*expected \[S, T, 3, 5\]"):
        load_reference_split(tmp_path, "test", 1, 2)


def _samples(s=10, n=3):
    base = np.arange(s, dtype=np.float32)[:, None, None]
    loc = np.broadcast_to(base, (s, n, 3)).copy()
    return Samples(loc, loc + 100, np.ones((s, n, 1), np.float32), loc + 200)


def test_batches_drop_last_static_shape_and_order():
    batches = list(iterate_batches(_samples(), 4))
    assert len(batches) == num_batches(10, 4) == 2
    for b in batches:
        assert all(isinstance(a, jax.Array) and a.dtype == jnp.float32 for a in b)
        assert b.loc.shape == (4, 3, 3) and b.charges.shape == (4, 3, 1)
    np.testing.assert_array_equal(batches[1].loc[:, 0, 0], [4, 5, 6, 7])
    np.testing.assert_array_equal(batches[1].target - batches[1].loc, 200)


def test_batches_keep_everything_for_evaluation():
    batches = list(iterate_batches(_samples(), 4, drop_last=False))
    assert [b.loc.shape[0] for b in batches] == [4, 4, 2] and num_batches(10, 4, False) == 3
    seen = np.concatenate([b.loc[:, 0, 0] for b in batches])
    np.testing.assert_array_equal(seen, np.arange(10))


def test_shuffling_is_seeded_and_keeps_samples_together():
    key = jax.random.PRNGKey(3)
    first = [b.loc[:, 0, 0] for b in iterate_batches(_samples(), 5, key=key)]
    again = [b.loc[:, 0, 0] for b in iterate_batches(_samples(), 5, key=key)]
    other = [b.loc[:, 0, 0] for b in iterate_batches(_samples(), 5, key=jax.random.PRNGKey(4))]
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(again))
    assert sorted(np.concatenate(first).tolist()) == list(range(10))
    assert not np.array_equal(np.concatenate(first), np.concatenate(other))
    assert not np.array_equal(np.concatenate(first), np.arange(10))
    for b in iterate_batches(_samples(), 5, key=key):  # rows stay aligned
        np.testing.assert_array_equal(b.vel - b.loc, 100)
    on_device = Samples(*(jnp.asarray(a) for a in _samples()))
    dev = [b.loc[:, 0, 0] for b in iterate_batches(on_device, 5, key=key)]
    np.testing.assert_array_equal(np.concatenate(dev), np.concatenate(first))


def test_batch_indices_drop_the_remainder_and_iterate_batches_follows_them():
    key = jax.random.PRNGKey(7)
    order = np.asarray(batch_indices(key, 11, 4))
    assert order.shape == (2, 4)  # 11 // 4 full batches, 3 samples dropped
    assert len(set(order.reshape(-1).tolist())) == 8 and order.max() < 11
    np.testing.assert_array_equal(order, jax.jit(batch_indices, static_argnums=(1, 2))(key, 11, 4))
    samples = _samples(11)
    batches = [b.loc[:, 0, 0] for b in iterate_batches(samples, 4, key=key)]
    np.testing.assert_array_equal(np.stack(batches), samples.loc[order][..., 0, 0])


@pytest.mark.parametrize("batch_size", [0, -1, 2.0, True])
def test_bad_batch_size(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        next(iterate_batches(_samples(), batch_size))


def test_bad_batching_inputs():
    with pytest.raises(ValueError, match="no batch"):
        next(iterate_batches(_samples(3), 4))
    s = _samples()
    with pytest.raises(ValueError, match=r"\(10, 3, 2\)"):
        next(iterate_batches(s._replace(vel=s.vel[..., :2]), 2))


def test_cli_generate_and_info(tmp_path, capsys):
    out = tmp_path / "ds"
    argv = ["data", "generate", "--particles", "5", "--train", "4", "--valid", "2", "--test"]
    argv += ["2", "--steps", "400", "--seed", "1", "--out", str(out)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert str(out) in captured.out and "train [" in captured.err  # progress bar on stderr
    assert main(argv) == 0
    assert "already generated" in capsys.readouterr().out
    samples = load_split(out, "train", 0, 2)
    assert samples.loc.shape == (4, 5, 3)
    assert main(["data", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "loc [4, 3, 5, 3] float32" in text and "energy drift" in text and '"seed": 1' in text


def test_cli_errors_are_reported(tmp_path, capsys):
    assert main(["data", "generate", "--particles", "1", "--out", str(tmp_path / "x")]) == 2
    assert "particles" in capsys.readouterr().err
    assert main(["data", "info", str(tmp_path)]) == 2
    assert "metadata.json" in capsys.readouterr().err
