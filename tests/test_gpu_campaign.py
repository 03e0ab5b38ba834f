"""Tests of ``experiments/gpu_campaign.py``: the cell list, the estimates, and the ``test``
preset end to end on CPU (bench, a cell stopped by the budget, then resumed by the next visit).
"""

from __future__ import annotations

import json
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from experiments import gpu_campaign as gc  # noqa: E402
from experiments import report  # noqa: E402


def test_paper_cells_in_priority_order_without_duplicates():
    cells = gc.cells(gc.PRESETS["paper"])
    keys = [c["key"] for c in cells]
    assert len(keys) == len(set(keys)) == 35
    fig2 = [c for c in cells if c["phase"] == "figure2"]
    assert keys[:8] == [c["key"] for c in fig2]
    assert {(c["particles"], c["depth"]) for c in fig2} == {(50, 5), (100, 3)}
    assert {c["norm"] for c in fig2} == {"none", "geo_norm_shared", "geo_norm_system",
                                         "scale_norm"}
    # Figure 5's N = 50 cells at lr 5e-3 that Figure 2 trained are not trained twice
    assert sum(c["key"] == "N50_L5_none_lr0.005" for c in cells) == 1
    assert len([c for c in cells if c["phase"] == "figure5"]) == 28 - 4
    rte = [c for c in cells if c["rte"]]
    assert len(rte) == 9 and all(c["lr"] == 5e-4 for c in rte)
    assert {c["norm"] for c in rte} == {"layer_norm", "scale_norm", "geo_norm_particle"}
    assert gc.PRESETS["paper"]["sizes"]["epochs"] == 1000
    assert gc.PRESETS["paper"]["sizes"]["seeds"] == [30, 40, 50, 60]


def test_step_model_scales_with_flops_and_has_a_floor():
    rows = [{"name": "a", "nodes": 5, "batch": 100, "layers": 4, "hidden": 64,
             "step_ms_best": 2.0},
            {"name": "b", "nodes": 100, "batch": 50, "layers": 5, "hidden": 64,
             "step_ms_best": 20.0}]
    step = gc.step_model(rows, "measured")
    assert step(100, 50, 5, 64) == pytest.approx(0.020)
    assert step(100, 50, 3, 64) == pytest.approx(0.012, rel=0.02)  # ~linear in depth
    assert step(50, 50, 5, 64) == pytest.approx(0.020 / 4, rel=0.1)  # ~N^2
    assert step(5, 50, 4, 64) == pytest.approx(0.002)  # the latency floor
    assumed = gc.step_model([], "cpu-assumed-gpu", gpu_tflops=10.0)
    assert assumed(100, 50, 5, 64) == pytest.approx(gc._flops(100, 50, 5, 64) / 1e13)


def test_estimate_table_counts_visits():
    est = gc.estimate_table(gc.PRESETS["paper"], None, "cpu", 11.0)
    assert est["source"] in ("cpu-assumed-gpu", "measured")
    assert len(est["cells"]) == 35
    for ph in ("figure2", "figure5", "table1"):
        p = est["phases"][ph]
        assert p["visits"] == p["visits_left"] >= 1
        assert p["minutes"] > 0
    text = gc.format_estimate(est)
    assert "figure2: 8 cells" in text


def _visit(tmp_path, budget="0", *extra):
    argv = ["--preset", "test", "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs"),
            "--cache", str(tmp_path / "cache"), "--budget-min", budget, *extra]
    assert gc.main(argv) == 0
    return json.loads((tmp_path / "out" / "results.json").read_text())


def test_test_preset_stops_on_budget_then_resumes(tmp_path):
    first = gc.cells(gc.PRESETS["test"])[0]["key"]
    doc = _visit(tmp_path)
    res = doc["results"]
    assert doc["device_kind"] and doc["complete"] is False
    (visit,) = res["visits"]
    assert visit["device_kind"] == doc["device_kind"]
    assert [r["nodes"] for r in visit["bench"]] == [5, 12, 12]
    assert all(r["step_ms_best"] > 0 for r in visit["bench"])
    # the visit records the execution plan and the roofline of every bench row
    for r in visit["bench"]:
        assert r["edge_chunk"] == "auto" and r["edge_plan"].startswith("unchunked")
        assert r["xla_gflop"] > 0 and 0 < r["xla_fraction_of_matmul"] < 1
        assert 0 < r["xla_fraction_of_copy"] and r["bound"] in ("compute", "memory")
    assert visit["bench"][2]["precision"] == "bfloat16" and visit["bench"][2]["finite"]
    # A zero budget still advances the first cell by one epoch and checkpoints it.
    assert list(visit["cells"]) == [first]
    moved = visit["cells"][first]
    assert (moved["epochs_from"], moved["epochs_to"]) == (0, 1)
    assert 0 <= moved["setup_s"] <= moved["wall_s"]
    assert res["partial"][first]["epochs_done"] == 1 and res["done"] == []
    assert res["remaining"]["cells"] == len(gc.cells(gc.PRESETS["test"]))
    assert res["estimate"]["cells"][0]["epochs_done"] == 1
    run_dir = tmp_path / "runs" / first
    epoch1 = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]

    doc = _visit(tmp_path)
    res = doc["results"]
    assert len(res["visits"]) == 2
    assert res["visits"][1]["cells"][first]["epochs_from"] == 1  # resumed, not restarted
    assert res["visits"][1]["cells"][first]["epochs_to"] == 2
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[0] == epoch1[0]

    text = "\n".join(report.gpu_campaign(doc))
    assert f"2 visit(s) on {doc['device_kind']}" in text and f"`{first}` (epoch 2)" in text
    assert report.gpu_campaign(None, None) == []


@pytest.mark.slow
def test_test_preset_runs_to_the_end(tmp_path):
    doc = _visit(tmp_path, "30", "--prune-checkpoints")
    res = doc["results"]
    assert doc["complete"] is True and res["remaining"]["cells"] == 0
    for c in gc.cells(gc.PRESETS["test"]):
        run_dir = tmp_path / "runs" / c["key"]
        assert (run_dir / "metrics.jsonl").exists()
        assert not (run_dir / "checkpoints").exists()
    assert {r["cell"] for r in res["rows"]} == {c["key"] for c in gc.cells(gc.PRESETS["test"])}
    assert res["rte"] and {r["norm"] for r in res["rte"]} == {"scale_norm"}
    assert res["rte"][0]["delta_T_err"] is not None


def test_paper_cell_configs_are_valid_and_match_the_paper():
    from geonorm_jax.bench.model import ModelCase
    from geonorm_jax.train import config as cfg

    preset = gc.PRESETS["paper"]
    for c in gc.cells(preset):
        config = gc.cell_config(preset["sizes"], c)
        cfg.validate(config)
        assert (config.data.particles, config.model.num_layers) == (c["particles"], c["depth"])
        assert (config.data.train, config.data.valid, config.data.test) == (3000, 2000, 2000)
        assert config.train.batch_size == 50 and config.model.hidden == 64
        assert config.optimizer.lr == c["lr"] and config.optimizer.weight_decay == 1e-12
        assert config.train.checkpoint_every == 10
    cases = [ModelCase(**{"group": "target", **b}) for b in preset["bench"]]
    assert [c.nodes for c in cases] == [5, 100, 100, 100]
    assert [c.edge_chunk for c in cases] == ["auto", "auto", 16384, "auto"]
    assert [c.group for c in cases] == ["target", "target", gc.VARIANT, gc.VARIANT]
    assert cases[3].precision == "bfloat16"


def test_variant_rows_are_not_estimate_references_and_budget_s_sets_the_budget():
    rows = [{"name": "a", "nodes": 5, "batch": 100, "layers": 4, "hidden": 64,
             "step_ms_best": 2.0},
            {"name": "b", "nodes": 100, "batch": 50, "layers": 5, "hidden": 64,
             "step_ms_best": 20.0},
            {"name": "c", "nodes": 100, "batch": 50, "layers": 5, "hidden": 64,
             "step_ms_best": 900.0, "group": gc.VARIANT}]
    assert gc.step_model(rows, "measured")(100, 50, 5, 64) == pytest.approx(0.020)
    assert gc.parse_args(["--budget-s", "420"]).budget_min == pytest.approx(7.0)
    with pytest.raises(SystemExit):
        gc.parse_args(["--budget-s", "0"])
