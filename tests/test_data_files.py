"""Data set files: generation, determinism, caching, hashes, corruption, config validation."""

import hashlib
import json

import numpy as np
import pytest

from geonorm_jax.data import (
    DataConfig,
    DataFileError,
    edge_attributes,
    get_dataset,
    load_split,
    load_trajectories,
    read_metadata,
    verify_dataset,
    write_dataset,
)
from geonorm_jax.data.files import default_cache_dir

TINY = dict(
    particles=5, train=6, valid=3, test=3, steps=500, sample_freq=100, frame_in=1, frame_out=3
)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    config = DataConfig(**TINY)
    root = tmp_path_factory.mktemp("cache")
    return config, root, get_dataset(config, root)


def test_files_shapes_dtypes_and_metadata(tiny_dataset):
    config, _, path = tiny_dataset
    metadata = read_metadata(path)
    assert metadata["config"] == config.generation_dict()
    assert metadata["package_version"] and len(metadata["splits"]["train"]["sha256"]) == 64
    import geonorm_jax

    assert metadata["package_version"] == geonorm_jax.__version__
    assert metadata["num_frames"] == 4
    arrays = load_trajectories(path, "train")
    assert arrays["loc"].shape == (6, 4, 5, 3) and arrays["loc"].dtype == np.float32
    assert arrays["vel"].shape == (6, 4, 5, 3) and arrays["vel"].dtype == np.float32
    assert arrays["charges"].shape == (6, 5, 1)
    # format 3 stores no edges (q_i q_j is O(N^2)); they are derived from the charges
    assert sorted(arrays) == ["charges", "clipped", "loc", "vel"]
    with np.load(path / "train.npz") as npz:
        assert sorted(npz.files) == ["charges", "clipped", "loc", "vel"]
    q = arrays["charges"][..., 0]
    np.testing.assert_array_equal(edge_attributes(arrays["charges"]), q[:, :, None] * q[:, None])
    assert load_trajectories(path, "val")["loc"].shape[0] == 3


def test_load_split_selects_frames(tiny_dataset):
    _, _, path = tiny_dataset
    arrays = load_trajectories(path, "test")
    samples = load_split(path, "test", frame_in=1, frame_out=3)
    np.testing.assert_array_equal(samples.loc, arrays["loc"][:, 1])
    np.testing.assert_array_equal(samples.vel, arrays["vel"][:, 1])
    np.testing.assert_array_equal(samples.target, arrays["loc"][:, 3])
    assert all(a.dtype == np.float32 for a in samples)
    with pytest.raises(ValueError, match="before the target"):
        load_split(path, "test", frame_in=3, frame_out=3)
    with pytest.raises(ValueError, match="out of range"):
        load_split(path, "test", frame_in=1, frame_out=4)
    with pytest.raises(ValueError, match="split"):
        load_split(path, "training")


def test_same_config_same_bytes_and_cache_reuse(tiny_dataset, tmp_path):
    config, root, path = tiny_dataset
    before = (path / "train.npz").stat().st_mtime_ns
    assert get_dataset(config, root) == path  # reused, not rewritten
    assert (path / "train.npz").stat().st_mtime_ns == before
    again = write_dataset(config, tmp_path / "again", chunk_size=4, workers=1)
    for split in ("train", "valid", "test"):
        assert (again / f"{split}.npz").read_bytes() == (path / f"{split}.npz").read_bytes()


def test_changed_parameter_gets_a_new_directory(tiny_dataset):
    config, root, path = tiny_dataset
    other = DataConfig(**{**TINY, "dt": 0.0011})
    assert other.cache_key() != config.cache_key()
    other_path = get_dataset(other, root)
    assert other_path != path
    assert not np.array_equal(
        load_trajectories(other_path, "train")["loc"], load_trajectories(path, "train")["loc"]
    )
    # frames are not part of the key: they only select from the same files
    assert DataConfig(**{**TINY, "frame_in": 0}).cache_key() == config.cache_key()


def test_seed_and_split_give_different_trajectories(tiny_dataset, tmp_path):
    _, _, path = tiny_dataset
    train, valid = load_trajectories(path, "train"), load_trajectories(path, "valid")
    assert not np.allclose(train["loc"][:3, 0], valid["loc"][:, 0])
    other = write_dataset(DataConfig(**{**TINY, "seed": 7}), tmp_path / "s7")
    assert not np.allclose(load_trajectories(other, "train")["loc"], train["loc"])


def _copy(path, tmp_path):
    target = tmp_path / "copy"
    target.mkdir()
    for f in path.iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    return target


def test_corrupted_file_is_an_error_naming_it(tiny_dataset, tmp_path):
    _, _, path = tiny_dataset
    copy = _copy(path, tmp_path)
    data = bytearray((copy / "valid.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "valid.npz").write_bytes(bytes(data))
    with pytest.raises(DataFileError, match=r"valid\.npz.*hash"):
        load_split(copy, "valid", 1, 3)
    with pytest.raises(DataFileError, match=r"valid\.npz"):
        verify_dataset(copy)
    load_split(copy, "train", 1, 3)  # the other files still load


def test_truncated_file_and_missing_metadata(tiny_dataset, tmp_path):
    config, _, path = tiny_dataset
    copy = _copy(path, tmp_path)
    (copy / "test.npz").write_bytes((copy / "test.npz").read_bytes()[:100])
    with pytest.raises(DataFileError, match=r"test\.npz"):
        load_trajectories(copy, "test")
    # an unreadable file whose hash matches (e.g. metadata edited) is still named
    meta = json.loads((copy / "metadata.json").read_text())
    meta["splits"]["test"]["sha256"] = hashlib.sha256((copy / "test.npz").read_bytes()).hexdigest()
    (copy / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(DataFileError, match=r"test\.npz.*unreadable"):
        load_trajectories(copy, "test")
    # an interrupted generation (no metadata) never loads and is regenerated by get_dataset
    (copy / "metadata.json").unlink()
    with pytest.raises(DataFileError, match=r"metadata\.json"):
        load_split(copy, "train", 1, 3)
    (copy / "metadata.json").write_text("{not json")
    with pytest.raises(DataFileError, match=r"metadata\.json"):
        read_metadata(copy)


def test_interrupted_generation_leaves_nothing_loadable(tmp_path, monkeypatch):
    from geonorm_jax.data import generate

    calls = []
    real = generate.generate_split

    def failing(config, split, **kwargs):
        calls.append(split)
        if split == "valid":
            raise KeyboardInterrupt
        return real(config, split, **kwargs)

    monkeypatch.setattr(generate, "generate_split", failing)
    config = DataConfig(**TINY)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(config, tmp_path / "ds")
    assert calls == ["train", "valid"]
    assert not (tmp_path / "ds" / "metadata.json").exists()
    assert not list((tmp_path / "ds").glob("*.tmp"))
    with pytest.raises(DataFileError):
        load_split(tmp_path / "ds", "train", 1, 3)


def test_cache_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("GEONORM_JAX_CACHE", str(tmp_path / "envcache"))
    assert default_cache_dir() == tmp_path / "envcache"
    monkeypatch.delenv("GEONORM_JAX_CACHE")
    assert default_cache_dir().parts[-2:] == (".cache", "geonorm-jax")


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(particles=1), "particles"),
        (dict(train=0), "train"),
        (dict(valid=-5), "valid"),
        (dict(test=2.5), "test"),
        (dict(steps=5000, sample_freq=300), "divide"),
        (dict(steps=100, sample_freq=100), "frames"),
        (dict(frame_in=40, frame_out=30), "before the target"),
        (dict(frame_in=30, frame_out=30), "before the target"),
        (dict(frame_out=49), "out of range"),
        (dict(dt=0.0), "dt"),
        (dict(dt=float("nan")), "dt"),
        (dict(seed=-1), "seed"),
        (dict(particles=True), "particles"),
    ],
)
def test_bad_config_raises(changes, match):
    with pytest.raises(ValueError, match=match):
        DataConfig(**changes)


def test_defaults_are_the_reference_values():
    c = DataConfig()
    assert (c.particles, c.train, c.valid, c.test, c.seed) == (5, 3000, 2000, 2000, 43)
    assert (c.steps, c.sample_freq, c.dt, c.box_size) == (5000, 100, 0.001, 5.0)
    assert (c.loc_std, c.vel_norm, c.interaction_strength) == (1.0, 0.5, 1.0)
    assert (c.frame_in, c.frame_out, c.num_frames, c.max_force) == (30, 40, 49, 100.0)
