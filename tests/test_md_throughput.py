"""The MD throughput comparison (JAX scan vs ASE loop) runs end to end on a tiny model."""

import json

import pytest

pytest.importorskip("ase")
pytest.importorskip("rdkit")


def test_md_throughput_tiny(tmp_path):
    from experiments import md_throughput

    out = tmp_path / "results.json"
    md_throughput.main(["--models", "schnet", "--size", "tiny", "--no-relax", "--steps", "40",
                        "--ase-steps", "4", "--replicas", "2", "--out", str(out)])
    (row,) = json.loads(out.read_text())["rows"]
    assert row["jax_1"]["finite"] and row["jax_2"]["finite"]
    assert row["jax_1"]["steps_per_s"] > 0 and row["ase"]["steps_per_s"] > 0
    assert row["jax_over_ase"] == pytest.approx(
        row["jax_1"]["steps_per_s"] / row["ase"]["steps_per_s"])
