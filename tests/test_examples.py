"""The runnable examples: a model defined outside the package registers once and is served by
the trainer, evaluation and the CLI (each in its own process, so that the registration does not
leak into the other tests)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tblite")
pytest.importorskip("rdkit")
pytest.importorskip("ase")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "custom_model.py"


def _run(*args, cwd=ROOT) -> str:
    done = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_custom_model_example_trains_evaluates_and_prints(tmp_path):
    out = _run(EXAMPLE, "--out", tmp_path)
    assert "pair_potential + layer_norm on water, 2 epochs" in out
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["epoch"] for r in records] == [1, 2]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["name"] == "pair_potential" and config["model"]["norm"] == "layer_norm"

    # the same model through the CLI: --import registers it, `models` lists it, `train` trains it
    listed = json.loads(_run("-m", "geonorm_jax.cli", "models", "--json", "--import", EXAMPLE))
    mine = {m["name"]: m for m in listed}["pair_potential"]
    assert mine["task"] == "molecules" and mine["defaults"]["cutoff"] == 4.0
    assert [p["name"] for p in mine["norm_places"]] == ["feature"]
    data_dir = next((tmp_path / "data-cache").iterdir())
    text = _run("-m", "geonorm_jax.cli", "train", "--import", EXAMPLE, "--model",
                "pair_potential", "--data-dir", data_dir, "--molecule", "water",
                "--train-frames", "12", "--valid-frames", "4", "--epochs", "1",
                "--batch-size", "4", "--seeds", "0", "--norm", "none", "--out",
                tmp_path / "cli", "--no-progress")
    assert "test force mae" in text
    saved = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert saved["model"]["name"] == "pair_potential" and saved["model"]["hidden"] is None
