"""``experiments/survey_case_studies.py``: cells, verdicts, plots and the README section with a
fast stand-in for training; the real ``test`` preset end to end is ``slow``."""

from __future__ import annotations

import json
import math
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from experiments import report, survey_anchor, survey_case_studies, survey_dft  # noqa: E402


def fake_run_cell(config, run_dir, data_dir):
    """Deterministic curves: without shift+scale the loss is 1e4 times higher; a layer named
    ``ev_norm`` cannot be placed."""
    if config.model.norm == "ev_norm":
        raise ValueError("tensor_norm: cannot place")
    m = config.model
    scale = 1.0 if config.molecules.target_norm else 1e4
    scale *= 1.0 if m.builtin_norm else 1.5
    if config.molecules.energy_unit == "kcal/mol" and not config.molecules.target_norm:
        scale *= 1e3
    epochs = config.train.epochs
    seeds = [str(s) for s in config.train.seeds]
    train = {s: [scale / e for e in range(1, epochs + 1)] for s in seeds}
    test = {s: [2 * scale / e for e in range(1, epochs + 1)] for s in seeds}
    return {
        "config": {}, "run_dir": "x", "task_info": {}, "num_params": 100, "wall_time_s": 1.0,
        "step_ms": 2.0,
        "curves": {"epoch": list(range(1, epochs + 1)), "eval_epoch": list(range(1, epochs + 1)),
                   "train_loss": train, "val_mse": test, "test_mse": test},
        "per_seed": [{"seed": int(s), "best_epoch": epochs, "best_val_mse": test[s][-1],
                      "test_mse": test[s][-1], "test_energy_mae": 10 * scale,
                      "test_force_mae": 5 * scale**0.5, "exploded": False,
                      "final_train_loss": train[s][-1]} for s in seeds],
    }


def test_cells_verdicts_plots_and_report(tmp_path, monkeypatch):
    monkeypatch.setattr(survey_case_studies, "run_cell", fake_run_cell)
    monkeypatch.setattr(survey_case_studies, "dataset", lambda data, cache: None)
    doc = survey_case_studies.run(survey_case_studies.common.parse_args(
        "survey_case_studies", ["--preset", "test", "--out", str(tmp_path / "out"),
                                "--runs", str(tmp_path / "runs")]), [])
    res = doc["results"]
    assert [r["cell"] for r in res["rows"]] == [
        "allegro_both", "allegro_target", "allegro_neighbor", "allegro_none", "schnet_both",
        "schnet_none", "gemnet_both", "gemnet_scale_off", "gemnet_none"]
    v = res["verdicts"]
    assert v["allegro"]["start_orders"] == pytest.approx(4 + 0.17609, abs=1e-4)
    assert v["allegro"]["status"] == "partially reproduced"
    assert v["allegro_split"]["carries_the_gap"] == "target scale and shift"
    assert v["schnet"]["status"] == "partially reproduced"  # 4.2 orders, not about 1
    assert v["gemnet_scale_factors_only"]["end_orders"] == pytest.approx(0.17609, abs=1e-4)
    assert v["gemnet_scale_factors_only"]["status"] == "not reproduced"
    assert (tmp_path / "out" / "survey_three_models.png").exists()
    zoo = {r["layer"]: r for r in res["zoo"]}
    assert zoo["ev_norm"]["error"].startswith("ValueError: tensor_norm")
    assert zoo["layer_norm"]["matched"] is False and zoo["layer_norm"]["error"] is None
    assert (tmp_path / "out" / "survey_case_studies.png").exists()
    dft = res["dft"]
    assert [r["cell"] for r in dft["rows"]] == [
        "dft_kcal_both", "dft_kcal_none", "dft_ev_both", "dft_ev_none", "dft_shifted_none"]
    t = dft["verdicts"]["targets"]
    assert t["kcal"]["start_orders"] == pytest.approx(7 + 0.17609, abs=1e-4)
    assert t["ev"]["start_orders"] == pytest.approx(4 + 0.17609, abs=1e-4)
    assert t["shifted"]["start_orders"] == pytest.approx(0.17609, abs=1e-4)
    assert t["shifted"]["status"] == "not reproduced"
    assert dft["verdicts"]["closest"] == ["kcal"]
    assert "raw total energies in kcal/mol" in dft["verdicts"]["verdict"]
    assert (tmp_path / "out" / "survey_figure1_dft.png").exists()
    # the anchor: the tiny size in the test preset, with both normalizations, beside the
    # published errors (fake MAEs: 10 meV and 5 meV/Å)
    anchor = dft["anchor"]
    assert anchor["cell"]["config"] == {} and anchor["row"]["cell"] == "dft_anchor"
    m = anchor["table"]["metrics"]
    published = survey_anchor.PUBLISHED_URACIL
    assert m["energy_mae_meV"]["ratio"] == pytest.approx(10 / published["energy_mae_meV"])
    assert m["force_mae_meV_per_A"]["ratio"] == pytest.approx(
        5 / published["force_mae_meV_per_A"])
    assert anchor["table"]["size"] == "tiny" and anchor["table"]["train_frames"] == 12
    assert "dft_anchor" not in dft["cells"]
    assert (tmp_path / "out" / "survey_dft_anchor.png").exists()
    text = "\n".join(report.survey_case_studies(json.loads(
        (tmp_path / "out" / "results.json").read_text())))
    assert "| `allegro_none` |" in text and "partially reproduced" in text
    assert "| force MAE (meV/Å) | 5 | 1.8 | 2.78 |" in text
    assert "closest to the survey's 11 and 5 orders" in text


def test_verdict_thresholds():
    def cells(start, end, schnet):
        rows = {}
        for key, s, e in (("allegro_both", 1.0, 1.0), ("allegro_none", start, end),
                          ("schnet_both", 1.0, 1.0), ("schnet_none", schnet, schnet)):
            rows[key] = {"per_seed": [{"test_mse": e, "test_energy_mae": 1.0,
                                       "test_force_mae": 1.0, "exploded": False}],
                         "curves": {"train_loss": {"0": [s]}, "test_mse": {"0": [e]}},
                         "model": key.split("_")[0], "molecule": "uracil", "target_norm": True,
                         "neighbor_norm": True}
        return rows

    v = survey_case_studies.compare(cells(1e11, 1e5, 10.0))
    assert v["allegro"]["status"] == "reproduced" and v["schnet"]["status"] == "reproduced"
    v = survey_case_studies.compare(cells(1.0, 1.0, 1.0))
    assert v["allegro"]["status"] == "not reproduced"
    assert v["schnet"]["status"] == "not reproduced"


def test_dft_cells_configs_and_verdict():
    p = survey_case_studies.PRESETS["cpu"]
    cells = survey_dft.dft_cells(p["dft"]["cells"])
    assert [c[0] for c in cells] == [
        "dft_kcal_both", "dft_kcal_target", "dft_kcal_neighbor", "dft_kcal_none",
        "dft_ev_both", "dft_ev_target", "dft_ev_neighbor", "dft_ev_none",
        "dft_shifted_neighbor", "dft_shifted_none"]
    with pytest.raises(ValueError, match="DFT cell must be one of .* got 'half'"):
        survey_dft.dft_cells(["half"])
    key, _, unit, target, own = cells[-1]
    c = survey_case_studies.make_config(p, "allegro", target, own, data=p["dft"]["data"],
                                        energy_unit=unit, split=p["dft"],
                                        epochs=p["dft"]["epochs"])
    assert c.train.epochs == 100
    m = c.molecules
    assert (m.dataset, m.energy_unit, m.target_norm, m.train, m.frames) == (
        "md17-dft", "eV", "shift", 130, 180)
    assert c.model.builtin_norm is False
    c = survey_case_studies.make_config(p, "allegro", False, False, data=p["dft"]["data"],
                                        energy_unit="kcal/mol", split=p["dft"])
    assert c.molecules.energy_unit == "kcal/mol" and c.molecules.target_norm is False
    # the xTB cells' configuration is unchanged by the DFT options
    assert survey_case_studies.make_config(p, "allegro", True, True).molecules.dataset == \
        "md17-xtb"

    def r(first, final):
        return {"first_train_loss": first, "final_test_loss": final}

    rows = {"dft_kcal_both": r(1.0, 1.0), "dft_kcal_none": r(1e11, 1e5),
            "dft_ev_both": r(1.0, 1.0), "dft_ev_none": r(1e3, 1e2)}
    cells = {"dft_kcal_none": {"task_info": {"energy_mean": -2.6e5, "atoms": 12}},
             "dft_ev_none": {"task_info": {}}}
    v = survey_dft.compare_dft(rows, cells, survey_case_studies.SURVEY_CLAIMS)
    assert v["targets"]["kcal"]["status"] == "reproduced"
    assert v["targets"]["ev"]["status"] == "partially reproduced"
    assert v["closest"] == ["kcal"]
    zero = v["targets"]["kcal"]["zero_predicts_start_orders"]
    assert zero["per_atom"] == pytest.approx(2 * math.log10(2.6e5 / 12))
    assert zero["per_frame"] == pytest.approx(2 * math.log10(2.6e5))
    assert v["targets"]["ev"]["zero_predicts_start_orders"]["per_atom"] is None


def test_small_dft_experiment_runs_the_dft_cells(tmp_path, monkeypatch):
    from experiments import survey_dft_small

    monkeypatch.setattr(survey_case_studies, "run_cell", fake_run_cell)
    monkeypatch.setattr(survey_case_studies, "dataset", lambda data, cache: None)
    doc = survey_dft_small.run(survey_case_studies.common.parse_args(
        "survey_dft_small", ["--out", str(tmp_path / "out"), "--runs",
                             str(tmp_path / "runs")]), [])
    res = doc["results"]
    assert len(res["rows"]) == 5 and res["verdicts"]["closest"] == ["kcal"]
    assert not list(tmp_path.rglob("*dft_anchor*"))  # no anchor in the small run
    assert {r["molecule"] for r in res["rows"]} == {"uracil"}


@pytest.mark.slow
def test_real_dft_cells_of_the_test_preset(tmp_path):
    """Figure 1 at DFT scale end to end on 24 PBE/sto-3g water frames (the ``dft_`` cells)."""
    pytest.importorskip("pyscf")
    pytest.importorskip("tblite")
    doc = survey_case_studies.run(survey_case_studies.common.parse_args(
        "survey_case_studies", ["--preset", "test", "--only", "dft_", "--out",
                                str(tmp_path / "out"), "--runs", str(tmp_path / "runs"),
                                "--cache", str(tmp_path / "cache")]), [])
    dft = doc["results"]["dft"]
    rows = {r["cell"]: r for r in dft["rows"]}
    assert set(rows) == {"dft_kcal_both", "dft_kcal_none", "dft_ev_both", "dft_ev_none",
                         "dft_shifted_none"}
    info = dft["cells"]["dft_kcal_none"]["task_info"]
    assert info["energy_unit"] == "kcal/mol" and info["energy_targets"] == "total"
    assert dft["cells"]["dft_ev_both"]["task_info"]["energy_targets"] == "residual"
    t = dft["verdicts"]["targets"]
    # raw totals (|E| / A about 680 eV for water): orders of magnitude at the start in both
    # units; shifting per species removes most of the gap
    assert t["kcal"]["start_orders"] > 2 and t["ev"]["start_orders"] > 2
    assert t["shifted"]["start_orders"] < t["ev"]["start_orders"] - 1
    # the published-accuracy anchor trains (tiny size) and stands beside the published errors
    m = dft["anchor"]["table"]["metrics"]
    assert m["force_mae_meV_per_A"]["measured"] > 0 and m["force_mae_meV_per_A"]["ratio"] > 0
    assert dft["anchor"]["cell"]["config"]["model"]["hidden"] == 8


@pytest.mark.slow
def test_real_test_preset_end_to_end(tmp_path):
    pytest.importorskip("tblite")
    doc = survey_case_studies.run(survey_case_studies.common.parse_args(
        "survey_case_studies", ["--preset", "test", "--out", str(tmp_path / "out"),
                                "--runs", str(tmp_path / "runs")]), [])
    rows = {r["cell"]: r for r in doc["results"]["rows"]}
    # without the shift and scale the per-atom energy error starts near (E / A)^2
    assert rows["allegro_none"]["first_train_loss"] > 100 * rows["allegro_both"][
        "first_train_loss"]
