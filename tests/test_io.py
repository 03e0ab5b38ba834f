"""The package's atomic file writer."""

from __future__ import annotations

import json
import stat

import numpy as np
import pytest

from geonorm_jax._io import atomic_write, atomic_write_bytes, atomic_write_text, write_json_atomic


def test_streaming_writer_and_parent_directories(tmp_path):
    path = tmp_path / "a" / "b" / "x.npz"
    arrays = {"loc": np.arange(6.0).reshape(2, 3)}
    assert atomic_write(path, lambda f: np.savez(f, **arrays)) == path
    with np.load(path) as npz:
        np.testing.assert_array_equal(npz["loc"], arrays["loc"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_text_mode_and_helpers(tmp_path):
    atomic_write(tmp_path / "l.jsonl", lambda f: [f.write(f"{i}\n") for i in range(3)], text=True)
    assert (tmp_path / "l.jsonl").read_text() == "0\n1\n2\n"
    atomic_write_text(tmp_path / "t.txt", "μ₀\n")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "μ₀\n"
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    write_json_atomic(tmp_path / "j.json", {"b": 1, "a": [1.5]}, indent=2)
    assert (tmp_path / "j.json").read_text() == json.dumps({"b": 1, "a": [1.5]}, indent=2) + "\n"


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "keep.txt"
    atomic_write_text(path, "old\n")

    def broken(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
