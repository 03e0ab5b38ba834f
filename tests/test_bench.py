"""The benchmark suite (``geonorm-jax bench``): FLOP count, exponent fit, targets, a tiny
end-to-end run in process with resume. The figures themselves are printed by the benchmark,
never asserted on (timing in tests is noise)."""

from __future__ import annotations

import json
import math

import pytest

from geonorm_jax import cli
from geonorm_jax.bench import ModelCase, fit_exponent, scaling_fits, step_flops
from geonorm_jax.bench.suite import PRESETS, evaluate_targets, format_tables, model_cases, run_suite


def test_step_flops_counts_the_matrix_products():
    # N=3, B=2, L=1, H=4 dense: E = 2*3*2 = 12 edges, 6 nodes.
    # per edge 4H^2+2H = 72, per node 12H^2+2H = 200, embedding 2H = 8 per node.
    case = ModelCase("c", nodes=3, batch=2, layers=1, hidden=4)
    assert step_flops(case) == 3 * (12 * 72 + 6 * 200 + 6 * 8)
    knn = ModelCase("k", nodes=10, batch=1, layers=2, graph="knn", neighbors=32, hidden=4)
    assert knn.k == 9  # capped at N - 1
    assert step_flops(knn) == 3 * (2 * (10 * 9 * 72 + 10 * 200) + 10 * 8)


def test_fit_exponent_recovers_power_laws():
    nodes = [10, 20, 50, 100, 200]
    assert fit_exponent(nodes, [3e-4 * n**2 for n in nodes]) == pytest.approx(2.0)
    assert fit_exponent(nodes, [7.0 * n for n in nodes]) == pytest.approx(1.0)
    # a constant overhead flattens the small-N end: the large-N fit sees the true exponent
    rows = [{"group": "scaling", "graph": "dense", "nodes": n, "step_ms_best": 50 + 1e-2 * n**2}
            for n in (5, 20, 50, 100, 200, 500, 1000)]
    fit = scaling_fits(rows, n_min=200)["dense"]
    assert fit["exponent_all"] < 1.8 < fit["exponent_large"] <= 2.0
    assert fit_exponent([5], [1.0]) is None


def test_model_case_rejects_bad_input():
    with pytest.raises(ValueError, match="graph: expected 'dense' or 'knn'; received 'radius'"):
        ModelCase("x", 5, 1, 1, graph="radius")
    with pytest.raises(ValueError, match="neighbors >= 1; received None"):
        ModelCase("x", 5, 1, 1, graph="knn")
    with pytest.raises(ValueError, match="nodes: expected >= 1; received 0"):
        ModelCase("x", 0, 1, 1)


def test_presets_cover_the_documented_sweep():
    cases = model_cases(PRESETS["cpu"])
    for graph in ("dense", "knn"):
        assert sorted(c.nodes for c in cases if c.graph == graph and c.group == "scaling") == [
            5, 20, 50, 100, 200, 500, 1000]
    names = {c.name for c in cases}
    assert {"target-dense-n100-b50-l5", "target-knn32-n1000-b50-l5"} <= names
    assert all(c.remat for c in cases if c.group == "scaling" and c.nodes >= 500)


def _results(**model):
    rows = [{"name": "target-dense-n100-b50-l5", "step_ms_best": 100.0,
             "fraction_of_matmul": model.get("fraction", 0.2), "peak_rss_gb": 0.8},
            {"name": "target-knn32-n1000-b50-l5", "step_ms_best": model.get("knn_ms", 500.0)}]
    return {"machine": {"backend": model.get("backend", "cpu")}, "model": rows,
            "epoch": model.get("epoch")}


def test_targets_are_met_or_missed_by_the_numbers():
    t = evaluate_targets(_results())
    assert [x["met"] for x in t] == [False, True, True]
    assert t[0]["value"] == 0.2 and t[2]["value"] == pytest.approx(5.0)
    t = evaluate_targets(_results(fraction=0.35, knn_ms=1500.0))
    assert [x["met"] for x in t] == [True, True, False]
    gpu = evaluate_targets(_results(backend="gpu", epoch={"epoch_s": 1.5}))
    assert len(gpu) == 3 and gpu[-1]["value"] == pytest.approx(25.0) and gpu[-1]["met"]


def test_bench_runs_end_to_end_and_resumes(tmp_path, monkeypatch):
    """The quick preset in process: one model case, two norms and one trainer epoch (the
    ``test`` preset); then --resume keeps them."""
    out = tmp_path / "bench" / "results.json"
    monkeypatch.setitem(PRESETS["quick"]["norms"], "names", ["geo_norm", "weight_norm"])
    monkeypatch.setenv("GEONORM_JAX_CACHE", str(tmp_path / "cache"))
    logs = []
    results = run_suite("quick", sections=["model", "norms", "epoch"], out=out,
                        subprocesses=False, only=["dense-n5-b2-l2"], log=logs.append)
    saved = json.loads(out.read_text())
    assert saved["preset"] == "quick" and saved["machine"]["versions"]["jax"]
    (row,) = saved["model"]
    assert row["name"] == "dense-n5-b2-l2" and row["finite"]
    assert 0 < row["step_ms_best"] <= row["step_ms_median"]
    assert 0 < row["fraction_of_matmul"] < 1 and row["peak_rss_gb"] > 0
    # roofline: XLA's cost of the compiled step against the measured matmul and copy rates
    assert saved["copy_gbytes_per_s"] > 0 and row["copy_gbytes_per_s"] > 0
    assert row["xla_gflop"] > 0 and row["xla_gbytes"] > 0
    assert 0 < row["xla_fraction_of_matmul"] < 1 and 0 < row["xla_fraction_of_copy"] < 1
    assert row["bound"] in ("compute", "memory") and 0 < row["roofline_fraction"] < 1
    assert row["edge_plan"].startswith("unchunked: CPU") and row["edge_plan_chunk"] is None
    geo, weight = saved["norms"]
    assert geo["place"] == "coord" and math.isfinite(geo["cost_percent"])
    assert "no place in the EGNN" in weight["skipped"]
    epoch = saved["epoch"]
    assert epoch["finite"] and epoch["epoch_s"] > 0 and epoch["steps_per_epoch"] == 4, epoch
    assert (tmp_path / "bench" / "scaling.png").stat().st_size > 1000
    table = format_tables(results)
    assert "| dense-n5-b2-l2 | dense | 5 | 2 | 2 |" in table and "geo_norm" in table
    assert "| dense-n5-b2-l2 | float32 | " in table and "of roofline" in table
    assert "array copy" in table

    logs.clear()
    again = run_suite("quick", sections=["model"], out=out, subprocesses=False,
                      only=["dense-n5-b2-l2"], resume=True, log=logs.append)
    assert any("kept from the earlier run" in line for line in logs)
    assert again["model"][0]["step_ms_best"] == row["step_ms_best"]
    assert [r["norm"] for r in again["norms"]] == ["geo_norm", "weight_norm"]
    with pytest.raises(ValueError, match="holds preset 'quick'; received 'cpu'"):
        run_suite("cpu", sections=["model"], out=out, resume=True, subprocesses=False,
                  log=logs.append)


def test_roofline_places_a_step_under_the_two_roofs():
    from geonorm_jax.bench.roofline import compiled_cost, flop_rate, roofline

    # 10 GFLOP and 2 GB in 0.1 s under roofs of 1000 GFLOP/s and 100 GB/s: intensity 5 is
    # below the ridge 10, so memory-bound; best possible 0.02 s -> 20 % of the roofline
    r = roofline({"xla_gflop": 10.0, "xla_gbytes": 2.0}, 0.1, 1e12, 1e11)
    assert r["xla_gflops_per_s"] == pytest.approx(100.0)
    assert r["xla_gbytes_per_s"] == pytest.approx(20.0)
    assert r["xla_fraction_of_matmul"] == pytest.approx(0.1)
    assert r["xla_fraction_of_copy"] == pytest.approx(0.2)
    assert r["intensity_flop_per_byte"] == pytest.approx(5.0) and r["bound"] == "memory"
    assert r["roofline_fraction"] == pytest.approx(0.2)
    assert roofline({"xla_gflop": 10.0, "xla_gbytes": 0.1}, 0.1, 1e12, 1e11)["bound"] == (
        "compute")
    assert roofline({}, 0.1, 1e12, 1e11) == {}
    with pytest.raises(ValueError, match="seconds: expected > 0; received 0"):
        flop_rate(1.0, 0)

    class Compiled:
        def cost_analysis(self):
            return [{"flops": 3e9, "bytes accessed": 5e8}]

    assert compiled_cost(Compiled()) == {"xla_gflop": 3.0, "xla_gbytes": 0.5}
    assert compiled_cost(object()) == {}


def test_a_chunked_step_is_counted_on_its_unchunked_twin():
    from geonorm_jax.bench.model import compile_case, edge_plan, step_cost
    from geonorm_jax.bench.roofline import compiled_cost

    whole = ModelCase("w", 6, 4, 1, hidden=8, edge_chunk=None)
    chunked = ModelCase("c", 6, 4, 1, hidden=8, edge_chunk=36)  # one graph per chunk
    c = compile_case(chunked)
    plan = edge_plan(chunked)
    assert plan.chunk == 36 and plan.num_chunks == 4
    own = compiled_cost(c.compiled)
    twin = step_cost(chunked, c.compiled, plan)
    assert twin["xla_cost_of"] == "unchunked twin"
    assert own["xla_gflop"] < 0.6 * twin["xla_gflop"]  # XLA counts the loop body once
    w = compile_case(whole)
    assert step_cost(whole, w.compiled, edge_plan(whole)) == {
        **compiled_cost(w.compiled), "xla_cost_of": "step"}
    assert twin["xla_gflop"] == pytest.approx(compiled_cost(w.compiled)["xla_gflop"])


def test_bench_cases_default_to_the_auto_plan_and_have_a_bf16_target():
    from geonorm_jax.bench.model import edge_plan

    cases = {c.name: c for c in model_cases(PRESETS["cpu"])}
    assert all(c.edge_chunk == "auto" for c in cases.values())
    assert cases["target-dense-n100-b50-l5-bf16"].precision == "bfloat16"
    plan = edge_plan(cases["target-dense-n100-b50-l5"])
    # CPU: blocks of 50 receiver rows (5000 edges), recomputed in the backward pass
    assert plan.chunk == 5000 and plan.num_edges == 50 * 100 * 100 and not plan.save_dots


def test_cli_has_bench_and_rejects_a_bad_section(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "--sections", "nonsense"])
    assert "invalid choice: 'nonsense'" in capsys.readouterr().err


def test_norm_cost_gives_the_reason_for_layers_without_a_place():
    from geonorm_jax.bench.norm_cost import placeable

    assert "atom types" in placeable("species_neighbor_norm")
    assert "second input" in placeable("message_norm")
    assert "weights" in placeable("weight_norm")
    assert placeable("geo_norm") is None and placeable("batch_norm") is None
