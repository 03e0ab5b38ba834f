"""``experiments/md_stability.py``: the real ``test`` preset end to end (water, tiny models,
real training and JAX MD), resume, verdict logic and the README section."""

from __future__ import annotations

import json
import math
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from experiments import md_stability, report  # noqa: E402

pytest.importorskip("ase")

VERDICT_KEYS = ("force_mae_ratio_without_over_with", "time_to_instability_with_ps",
                "time_to_instability_without_ps", "stability_ratio_with_over_without",
                "h_error_with", "h_error_without", "status", "h_status")


def _args(tmp_path):
    return md_stability.common.parse_args(
        md_stability.NAME, ["--preset", "test", "--out", str(tmp_path / "out"),
                            "--runs", str(tmp_path / "runs")])


def test_test_preset_end_to_end_and_resume(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tblite")
    doc = md_stability.run(_args(tmp_path), [])
    out = tmp_path / "out"
    saved = json.loads((out / "results.json").read_text())
    assert saved["complete"] and saved["preset"] == "test"
    expected = [c["key"] for c in md_stability.cells(md_stability.PRESETS["test"])]
    rows = {r["cell"]: r for r in saved["results"]["rows"]}
    assert list(rows) == expected
    md = md_stability.PRESETS["test"]["md"]
    for key, r in rows.items():
        assert r["error"] is None, key
        assert math.isfinite(r["force_mae_meV_per_A"]) and r["force_mae_meV_per_A"] > 0
        assert r["replicas"] == md["replicas"]
        t = r["time_to_instability_ps"]
        assert t["n"] == md["replicas"] and 0 <= t["mean"] <= r["simulated_ps"] + 1e-9
        assert r["simulated_ps"] <= md["steps"] * md["dt_fs"] / 1000 + 1e-9
        assert r["trained_by"] == "md_stability"
    v = saved["results"]["verdicts"]
    for model in md_stability.MODELS:
        assert set(VERDICT_KEYS) <= set(v[model]), model
        assert v[model]["status"].split(":")[0] in ("yes", "no")
    assert v["allegro_layer_norm"]["against"] == "allegro_on"
    assert set(v["all_cells"]) == {"cells", "spearman_force_mae_vs_time_to_instability",
                                   "spearman_force_mae_vs_h_error"}
    assert v["all_cells"]["cells"] == len(expected)
    for name in doc["plots"]:
        assert (out / name).stat().st_size > 0
    assert "md_stability.png" in doc["plots"] and "md_stability_hr.png" in doc["plots"]
    cell = json.loads((out / "cells" / "test__allegro_on.json").read_text())
    assert len(cell["h_ref"]) == 500 and len(cell["md"]["h"]) == 500

    # a second invocation resumes: no cell is trained or simulated again
    def boom(*a, **k):
        raise AssertionError("a finished cell ran again")

    monkeypatch.setattr(md_stability, "run_cell", boom)
    capsys.readouterr()
    again = md_stability.run(_args(tmp_path), [])
    assert capsys.readouterr().out.count("done earlier (cached)") == len(expected)
    assert again["results"]["rows"] == saved["results"]["rows"]
    text = "\n".join(report.md_stability(again))
    assert "| `allegro_off` |" in text and "Not run yet" not in text


def _row(mae, times, stable, h):
    n = len(times)
    mean = sum(times) / n
    return {"force_mae_meV_per_A": mae, "error": None, "simulated_ps": 10.0,
            "stable_fraction": sum(stable) / n,
            "time_to_instability_ps": {"mean": mean, "std": 0.0, "n": n},
            "h_error": {"mean": h, "std": 0.0, "n": n}}


@pytest.mark.parametrize("with_, without, status", [
    (_row(100, [10, 10], [1, 1], 0.1), _row(110, [10, 10], [1, 1], 0.1), "no: equally stable"),
    (_row(100, [10, 10], [1, 1], 0.1), _row(300, [1, 1], [0, 0], 0.5),
     "no: more stable with it, as its lower force MAE predicts"),
    (_row(300, [1, 1], [0, 0], 0.5), _row(100, [10, 10], [1, 1], 0.1),
     "no: less stable with it, as its higher force MAE predicts"),
    (_row(100, [10, 10], [1, 1], 0.1), _row(105, [1, 1], [0, 0], 0.1),
     "yes: stability differs at similar force MAE"),
    (_row(300, [10, 10], [1, 1], 0.1), _row(100, [1, 1], [0, 0], 0.1),
     "yes: stability opposes force MAE"),
    (_row(100, [10, 10], [1, 1], 0.1), _row(100, [10, 0.0], [1, 0], 0.1),
     "yes: stability differs at similar force MAE"),  # half the replicas lost: fraction gap
])
def test_verdict(with_, without, status):
    assert md_stability.verdict(with_, without)["status"] == status


def test_verdict_h_error_and_missing():
    v = md_stability.verdict(_row(100, [10], [1], 0.1), _row(100, [10], [1], 0.5))
    assert v["status"] == "no: equally stable"
    assert v["h_status"] == "yes: h(r) error differs at similar force MAE"
    assert md_stability.verdict(None, _row(1, [1], [1], 1))["status"] == "not tested"
    assert md_stability.verdict(_row(1, [1], [1], 1), dict(_row(1, [1], [1], 1),
                                                         error="x"))["status"] == "not tested"


def test_spearman_and_initial_frames():
    assert md_stability.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert md_stability.spearman([1, None, 3], [1, 2, 3]) is None
    assert md_stability.initial_frames(list(range(16)), 4).tolist() == [0, 5, 10, 15]


def test_report_section_not_run_yet(tmp_path):
    assert "Not run yet: `python -m experiments.md_stability --preset cpu`" in "\n".join(
        report.md_stability(None))
    assert "md_stability" in report.render(tmp_path)
