"""Large-N generation with bounded memory (no N x N arrays), format-3 files without ``edges``,
the memory estimate, blockwise energies and the generation-throughput benchmark."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from geonorm_jax.bench.data import generation_throughput
from geonorm_jax.data import (
    DataConfig,
    edge_attributes,
    load_split,
    load_trajectories,
    read_metadata,
    simulate_from_state,
    total_energy,
    write_dataset,
)
from geonorm_jax.data.energy import _blockwise
from geonorm_jax.data.generate import generate_split, generation_memory, split_key
from geonorm_jax.data.simulate import sample_initial_state

LARGE = dict(
    particles=500, train=3, valid=1, test=1, steps=30, sample_freq=10, frame_in=0, frame_out=1
)


@pytest.fixture(scope="module")
def large_dataset(tmp_path_factory):
    config = DataConfig(**LARGE)
    return config, write_dataset(config, tmp_path_factory.mktemp("large") / "n500")


def test_large_n_files_are_float32_finite_and_linear_in_n(large_dataset):
    config, path = large_dataset
    n, f = 500, config.num_frames
    metadata = read_metadata(path)
    assert metadata["format_version"] == 3 and metadata["num_frames"] == f == 2
    for split, s in config.split_sizes.items():
        with np.load(path / f"{split}.npz") as npz:
            stored = {name: npz[name] for name in npz.files}
        assert sorted(stored) == ["charges", "clipped", "loc", "vel"]  # no edges [S, N, N]
        for name, a in stored.items():
            assert list(a.shape).count(n) <= 1, f"{name} has an N x N shape {a.shape}"
        assert stored["loc"].shape == stored["vel"].shape == (s, f, n, 3)
        assert stored["loc"].dtype == stored["vel"].dtype == stored["charges"].dtype == np.float32
        assert np.isfinite(stored["loc"]).all() and np.isfinite(stored["vel"]).all()
        assert set(np.unique(stored["charges"])) == {-1.0, 1.0}
        # the file is the arrays plus a small zip/npy overhead: linear in N
        payload = sum(a.nbytes for a in stored.values())
        assert payload == generation_memory(n, f, s)["output"] == s * (24 * f * n + 4 * n + 1)
        assert (path / f"{split}.npz").stat().st_size < payload + 2000


def test_large_n_loader_samples_and_derived_edges(large_dataset):
    _, path = large_dataset
    arrays = load_trajectories(path, "train")
    assert "edges" not in arrays
    samples = load_split(path, "train", 0, 1)
    assert all(a.dtype == np.float32 for a in samples)
    assert samples.loc.shape == samples.target.shape == (3, 500, 3)
    np.testing.assert_array_equal(samples.loc, arrays["loc"][:, 0])
    np.testing.assert_array_equal(samples.vel, arrays["vel"][:, 0])
    np.testing.assert_array_equal(samples.target, arrays["loc"][:, 1])
    np.testing.assert_array_equal(samples.charges, arrays["charges"])
    edges = edge_attributes(samples.charges)
    q = samples.charges[:, :, 0]
    assert edges.shape == (3, 500, 500)
    for s in range(3):
        np.testing.assert_array_equal(edges[s], np.outer(q[s], q[s]))


def test_format_2_file_with_edges_still_loads(tmp_path):
    # A file of the previous format (with an ``edges`` member) loads; edges are not returned.
    config = DataConfig(**{**LARGE, "particles": 6})
    path = write_dataset(config, tmp_path / "ds")
    with np.load(path / "valid.npz") as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["edges"] = edge_attributes(arrays["charges"])
    np.savez(path / "valid.npz", **arrays)
    meta = json.loads((path / "metadata.json").read_text())
    digest = hashlib.sha256((path / "valid.npz").read_bytes()).hexdigest()
    meta["splits"]["valid"]["sha256"] = digest
    (path / "metadata.json").write_text(json.dumps(meta))
    loaded = load_trajectories(path, "valid")
    assert sorted(loaded) == ["charges", "clipped", "loc", "vel"]
    np.testing.assert_array_equal(loaded["loc"], arrays["loc"])


def test_frames_cast_in_jit_equal_numpy_rounding_of_float64():
    # generate_split casts frames to float32 inside the jitted integrator; the result must be
    # NumPy's rounding of the float64 simulation of the same initial states.
    config = DataConfig(particles=7, train=5, valid=1, test=1, steps=300, sample_freq=50,
                        frame_in=0, frame_out=1)
    arrays = generate_split(config, "train", chunk_size=2)
    state = sample_initial_state(split_key(config.seed, "train"), 5, 7)
    ref = simulate_from_state(*state, steps=300, sample_freq=50)
    assert arrays["loc"].dtype == np.float32
    np.testing.assert_array_equal(arrays["loc"], np.asarray(ref.loc).astype(np.float32))
    np.testing.assert_array_equal(arrays["vel"], np.asarray(ref.vel).astype(np.float32))
    np.testing.assert_array_equal(arrays["clipped"], np.asarray(ref.clipped))


def test_generation_memory_formula():
    m = generation_memory(1000, 49, 3000, chunk_size=32, workers=2)
    assert m["per_chunk"] == 48 * 49 * 1000 * 32 + 256 * 1000 * 32  # 83.5 MB
    assert m["chunks"] == 2 * m["per_chunk"]
    assert m["output"] == 3000 * (24 * 49 * 1000 + 4000 + 1)  # 3.5 GB: grows with S
    assert m["total"] == m["chunks"] + m["output"] + m["initial"]
    small = generation_memory(1000, 49, 10, chunk_size=32, workers=2)  # one chunk of 10
    assert small["chunks"] == small["per_chunk"] == 48 * 49 * 1000 * 10 + 256 * 1000 * 10


def test_total_energy_blockwise_matches_direct_formula():
    rng = np.random.default_rng(0)
    loc = rng.normal(size=(3, 4, 9, 3)).astype(np.float32)
    vel = rng.normal(size=(3, 4, 9, 3))
    q = rng.choice([-1.0, 1.0], size=(3, 9, 1))
    expected = np.zeros((3, 4))
    for s in range(3):
        for t in range(4):
            x = loc[s, t].astype(np.float64)
            e = 0.5 * np.sum(vel[s, t] ** 2)
            for i in range(9):
                for j in range(i + 1, 9):
                    e += q[s, i, 0] * q[s, j, 0] / np.linalg.norm(x[i] - x[j])
            expected[s, t] = e
    np.testing.assert_allclose(total_energy(loc, vel, q), expected, rtol=1e-12)
    kinetic, pair = _blockwise(loc, vel, q, 1.0, False, budget=200)  # 2 states per block
    np.testing.assert_allclose(kinetic + pair, expected, rtol=1e-12)
    np.testing.assert_allclose(total_energy(loc[0, 0], vel[0, 0], q[0]), expected[0, 0])


def _check_row(row, n, workers):
    assert row["particles"] == n and row["workers"] == workers
    assert row["trajectories"] == row["chunk_size"] * workers
    assert row["steps_run_full"] == row["steps_full"] - row["sample_freq"]
    assert row["seconds"] > 0 and row["compile_s"] > 0 and row["trajectories_per_s"] > 0
    assert row["extrapolated"] == (row["steps_timed"] < row["steps_run_full"])
    np.testing.assert_allclose(
        row["trajectories_per_s"],
        row["trajectories"] * row["steps_timed"] / (row["seconds"] * row["steps_run_full"]),
    )
    np.testing.assert_allclose(
        row["ns_per_pair_step"],
        1e9 * row["seconds"] / (row["trajectories"] * row["steps_timed"] * n * (n - 1)),
    )
    json.dumps(row)  # plain values


def test_generation_throughput_rows_and_extrapolation():
    # a tiny budget: the one-frame probe is the timed run, extrapolated to the full length
    rows = generation_throughput((5, 50), seconds_per_n=1e-6, steps=300, sample_freq=100,
                                 workers=1)
    assert [r["particles"] for r in rows] == [5, 50]
    for row, n in zip(rows, (5, 50), strict=True):
        _check_row(row, n, 1)
        assert row["steps_timed"] == 100 and row["extrapolated"]
        assert row["seconds"] == row["probe_s"]
    assert rows[0]["chunk_size"] == 1024 and rows[1]["chunk_size"] == 32
    # an ample budget: the whole trajectory (200 steps run) is timed, nothing extrapolated
    (row,) = generation_throughput((5,), seconds_per_n=30.0, steps=300, workers=2)
    _check_row(row, 5, 2)
    assert row["steps_timed"] == 200 and not row["extrapolated"]
    np.testing.assert_allclose(row["seconds_full"], row["seconds"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(seconds_per_n=0.0), "seconds_per_n"),
        (dict(steps=250), "divide"),
        (dict(steps=100), "frames"),
        (dict(particles=(1,)), "particles"),
    ],
)
def test_generation_throughput_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        generation_throughput(**{"particles": (5,), **kwargs})


_RSS_SCRIPT = """
import json, resource
from geonorm_jax.data import DataConfig
from geonorm_jax.data.generate import generate_split, generation_memory
c = DataConfig(particles={n}, train=96, valid=1, test=1, steps=100, sample_freq=2,
               frame_in=0, frame_out=1)
small = DataConfig(particles=5, train=96, valid=1, test=1, steps=100, sample_freq=2,
                   frame_in=0, frame_out=1)
generate_split(small, "train")  # the runtime and a compilation: the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
generate_split(c, "train")
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(dict(base=base, peak=peak, estimate=generation_memory({n}, 49, 96)["total"])))
"""


@pytest.mark.slow
@pytest.mark.parametrize("n", [500, 1000])
def test_peak_rss_within_the_estimate(n):
    # 49 frames as in the real data (steps=100, sample_freq=2: memory depends on the frames,
    # not on the steps), 3 chunks of 32, 2 workers; in a fresh process.
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # full optimisation
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT.format(n=n)], check=True,
                         capture_output=True, text=True, env=env).stdout
    r = json.loads(out.strip().splitlines()[-1])
    print(r)
    assert r["peak"] - r["base"] < 1.5 * r["estimate"] + 100e6, r
