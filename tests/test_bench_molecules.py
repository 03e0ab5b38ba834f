"""The molecular train-step benchmark at tiny size, and the reference comparison's torch part
(skipped where torch is not importable). No timing is asserted."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from geonorm_jax.bench import molecules as bm

ROOT = Path(__file__).resolve().parents[1]

ROW_FIELDS = {"name", "model", "size", "molecule", "batch", "params", "edges",
              "edges_within_cutoff", "step_ms_best", "step_ms_median", "repeats", "compile_s",
              "peak_rss_gb", "loss", "finite", "backend"}


def _tiny(model: str) -> bm.MoleculeCase:
    return bm.MoleculeCase(model, "tiny", "water", 2, relax=False, seconds=0.05, max_repeats=2)


def test_frames_shapes_and_seed():
    f = bm.molecule_frames("water", 3, relax=False, seed=1)
    assert f.atomic_numbers.shape == (3,) and f.positions.shape == (3, 3, 3)
    assert f.energies.shape == (3,) and f.forces.shape == (3, 3, 3)
    assert f.avg_num_neighbors == pytest.approx(2.0)  # water: every pair within 5 Å
    g = bm.molecule_frames("water", 3, relax=False, seed=1)
    np.testing.assert_array_equal(f.positions, g.positions)


@pytest.mark.parametrize("model", bm.MODELS)
def test_tiny_case_runs_end_to_end(model):
    rows = bm.run_molecules([_tiny(model)], subprocesses=False)
    assert len(rows) == 1
    row = rows[0]
    assert "error" not in row, row.get("error")
    assert ROW_FIELDS <= set(row)
    assert row["finite"] and row["params"] > 0 and row["step_ms_best"] > 0
    assert row["edges"] == 2 * 3 * 2 and row["edges_within_cutoff"] == 12
    # the plan of GemNet-T's triplet sums is recorded; the others have none
    assert (row["edge_plan"] or "").startswith("unchunked") == (model == "gemnet"), row
    table = bm.format_molecules(rows)
    assert row["name"] in table and table.count("\n") == 2


def test_published_sizes_are_the_presets():
    from geonorm_jax.models.allegro import ALLEGRO_TUTORIAL
    from geonorm_jax.models.gemnet import GEMNET_T_MD17
    from geonorm_jax.models.schnet import SCHNET_MD17, SCHNETPACK

    assert ALLEGRO_TUTORIAL.items() <= bm.model_kwargs("allegro").items()
    # SchNet: the published sizes in the peer's (schnetpack's) conventions
    assert {**SCHNET_MD17, **SCHNETPACK}.items() <= bm.model_kwargs("schnet").items()
    assert GEMNET_T_MD17.items() <= bm.model_kwargs("gemnet").items()
    assert {c.model for c in bm.PRESETS["cpu"]} == set(bm.MODELS)


def test_gemnet_step_needs_its_scale_factors():
    """A GemNet-T step without the ``scale_factors`` collection refuses to trace (the tiny
    end-to-end case runs the step with the fitted factors)."""
    import jax
    import jax.numpy as jnp

    from geonorm_jax.models.molecular_graph import batch_frames

    f = bm.molecule_frames("water", 2, relax=False)
    model = bm.build_model("gemnet", "tiny", f.avg_num_neighbors)
    g = batch_frames(jnp.asarray(f.positions, jnp.float32), jnp.asarray(f.atomic_numbers), 5.0)
    shapes = jax.eval_shape(model.init, jax.random.key(0), g)  # traced, not compiled
    assert "scale_factors" in shapes
    bare, tx = bm.build_train_step(model)
    opt = jax.eval_shape(tx.init, shapes["params"])
    with pytest.raises(ValueError, match="scale_factors"):
        bare.lower(shapes["params"], opt, g, jnp.zeros(2), jnp.zeros((6, 3)))


def test_serve_protocol():
    stdin = io.StringIO("RUN 2\n\nQUIT\n")
    stdout = io.StringIO()
    bm.serve({"case": _tiny("schnet").to_dict()}, stdin=stdin, stdout=stdout)
    lines = stdout.getvalue().splitlines()
    assert lines[0].startswith("READY ") and json.loads(lines[0][6:])["params"] > 0
    assert lines[1].startswith("TIMES ") and len(json.loads(lines[1][6:])) == 2
    assert lines[2].startswith("DONE ") and "peak_rss_gb" in json.loads(lines[2][5:])


def test_failed_case_is_a_row():
    rows = bm.run_molecules([bm.MoleculeCase("schnet", "tiny", "no-such-molecule", 1,
                                             relax=False)], subprocesses=False)
    assert "error" in rows[0] and "molecule" in rows[0]["error"]
    assert "failed" in bm.format_molecules(rows)


def _compare_script():
    spec = importlib.util.spec_from_file_location(
        "bench_reference_models", ROOT / "experiments" / "bench_reference_models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_compare_script_fails_clearly_without_references(tmp_path, capsys):
    mod = _compare_script()
    assert "--torch-python" in mod.check_references(None, ["schnet"])
    assert mod.main(["--torch-python", "", "--out", str(tmp_path / "r.json")]) == 2
    assert "torch" in capsys.readouterr().err
    missing = tmp_path / "no-python"
    assert "cannot run" in mod.check_references(str(missing), ["allegro"])


@pytest.mark.slow  # a subprocess run of both sides: about 80 s on 2 busy cores
@pytest.mark.skipif(importlib.util.find_spec("torch") is None
                    or importlib.util.find_spec("schnetpack") is None,
                    reason="the PyTorch references (torch, schnetpack) are not installed")
def test_compare_script_torch_part_tiny(tmp_path):
    mod = _compare_script()
    out = tmp_path / "results.json"
    table = tmp_path / "table.md"
    status = mod.main(["--torch-python", sys.executable, "--models", "schnet", "--size",
                       "tiny", "--molecule", "water", "--batch", "2", "--no-relax",
                       "--rounds", "2", "--steps", "1", "--warmup", "1", "--torch-modes",
                       "eager", "--out", str(out), "--table", str(table)])
    results = json.loads(out.read_text())
    assert status == 0, results
    row = results["models"][0]
    assert row["jax"]["params"] == row["torch"]["params"] and row["torch_best_mode"] == "eager"
    assert row["ratio_torch_over_jax"] > 0 and len(row["jax"]["times_s"]) == 2
    assert len(row["jax"]["warmup_times_s"]) == 1 and len(results["load"]["end"]) == 3
    assert table.read_text() == mod.format_table(results) + "\n"


def _fake_side(ms, **extra):
    return {"params": 100, "edges": 12, "step_ms_median": ms, "step_ms_best": ms - 1,
            "peak_rss_gb": 0.5, **extra}


def test_compare_table_uses_the_best_torch_mode_and_shows_failures(tmp_path):
    mod = _compare_script()
    jax_side = _fake_side(10.0, compile_s=2.0)
    modes = {"eager": _fake_side(30.0, first_step_s=0.1, mode="eager"),
             "compile": {"mode": "compile", "error": "RuntimeError: no | double backward"}}
    results = {
        "machine": {"cpu": "Test CPU", "cpu_count": 2}, "load": {"start": [1.0, 2.0, 3.0],
                                                                "end": [4.0, 5.0, 6.0]},
        "threads": 1, "molecule": "water", "batch": 2, "rounds": 2, "steps": 1, "warmup": 1,
        "command": "python experiments/bench_reference_models.py", "left_out": mod.LEFT_OUT,
        "models": [{"model": "schnet", "reference": "schnetpack", "jax": jax_side,
                    "torch": modes["eager"], "torch_modes": modes, "torch_best_mode": "eager",
                    "ratio_torch_over_jax": 3.0, "ratio_per_round_median": 2.9},
                   {"model": "allegro", "error": "RuntimeError: nothing ran"}],
    }
    table = mod.format_table(results)
    assert "Test CPU, 2 logical CPUs" in table and "[4.0, 5.0, 6.0] at the end" in table
    assert "| **3.00**; 2.90 (best mode) |" in table
    assert "schnetpack (compile) | failed: RuntimeError: no / double backward |" in table
    assert "| allegro | failed: RuntimeError: nothing ran |" in table and "Left out: mace" in table
    path = tmp_path / "r.json"
    path.write_text(json.dumps(results))
    out = tmp_path / "t.md"
    assert mod.main(["--from-json", str(path), "--table", str(out)]) == 0
    assert out.read_text() == table + "\n"
