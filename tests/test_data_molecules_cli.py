"""``geonorm-jax data generate --dataset md17-xtb`` and ``geonorm-jax data info`` on a tiny
water set."""

import pytest

pytest.importorskip("tblite")
pytest.importorskip("rdkit")
pytest.importorskip("ase")


def test_cli_generate_and_info(tmp_path, capsys):
    from geonorm_jax.cli import main

    out = tmp_path / "water"
    argv = [
        "data",
        "generate",
        "--dataset",
        "md17-xtb",
        "--molecule",
        "water",
        "--frames",
        "2",
        "--trajectories",
        "1",
        "--stride",
        "2",
        "--equilibration",
        "2",
        "--workers",
        "1",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "frames/s" in text and "xTB evaluations/s" in text
    assert main(argv) == 0
    assert "already generated" in capsys.readouterr().out
    assert main(["data", "info", str(out)]) == 0
    info = capsys.readouterr().out
    for word in ("water", "500.0 K", "eV", "force", "RMS", "sha256", "frames: 2"):
        assert word in info
