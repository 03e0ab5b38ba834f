"""Tests of ``experiments/``: every experiment's ``test`` preset end to end, and the README
results section generated from the JSON files.

The default tests replace the training step (``experiments.training.run_cell`` and friends) with
a fast fake, so they check the experiment plumbing (cells, resume, results.json fields, plots,
verdict logic, the report) in seconds. The ``slow`` tests run the real ``test`` presets
end to end (real training, a few steps each).
"""

from __future__ import annotations

import json
import math
import pathlib
import sys

import pytest

# ``experiments`` is a top-level folder of the repository, not part of the installed package.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from experiments import (  # noqa: E402
    beyond,
    common,
    egnn_5body,
    egnn_5body_spread,
    instability,
    norm_comparison,
    norm_zoo,
    report,
    rte_table,
    training,
)

MODULES = {
    "egnn_5body": egnn_5body,
    "instability": instability,
    "norm_comparison": norm_comparison,
    "rte_table": rte_table,
    "norm_zoo": norm_zoo,
    "beyond": beyond,
}

TOP_FIELDS = ("experiment", "preset", "command", "version", "device", "machine", "wall_time_s",
              "config", "results", "plots", "skipped_cells", "complete")


def fake_run_cell(config, run_dir, *, cache=None):
    """A stand-in for training: deterministic curves; a depth-10 or N>=50 model 'explodes'."""
    from geonorm_jax import train

    seeds = list(config.train.seeds)
    epochs = config.train.epochs
    boom = config.model.num_layers >= 10 or config.data.particles >= 50
    ev = list(range(config.train.eval_every, epochs + 1, config.train.eval_every))
    per_seed, curves = [], {"epoch": list(range(1, epochs + 1)), "eval_epoch": ev,
                            "train_loss": {}, "val_mse": {}, "test_mse": {}}
    for i, s in enumerate(seeds):
        base = 0.1 * (1 + i) / (1 + config.model.num_layers)
        tl = [base / e for e in range(1, epochs + 1)]
        if boom:
            tl[-1] = None
        curves["train_loss"][str(s)] = tl
        curves["val_mse"][str(s)] = [base / e for e in ev]
        curves["test_mse"][str(s)] = [1.1 * base / e for e in ev]
        per_seed.append({"seed": s, "test_mse_at_best_val": 1.1 * base / ev[-1],
                         "best_val_mse": base / ev[-1], "best_epoch": ev[-1],
                         "final_test_mse": 1.1 * base / ev[-1],
                         "best_test_mse": 1.1 * base / ev[-1], "final_train_loss": tl[-2],
                         "exploded": boom, "exploded_epoch": epochs if boom else None})
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    train.save_config(config, run_dir / "config.json")
    return {"config": train.to_dict(config), "run_dir": str(run_dir),
            "summary": {"epochs_completed": epochs}, "curves": curves, "per_seed": per_seed}


def fake_equivariance(run_dir, *, cache=None, samples=200, seed=0):
    """Equivariance errors: per-particle GeoNorm breaks permutations, LayerNorm rotations."""
    from geonorm_jax import train

    config = train.load_config(run_dir / "config.json") if (
        run_dir / "config.json").exists() else None
    norm = config.model.norm if config else None
    return [{"seed": 30, "rot": 1e-7 if norm != "layer_norm_coords" else 0.3, "trans": 1e-7,
             "perm": 0.2 if norm == "geo_norm" else 1e-7}]


def fake_evaluate_run(run_dir, *, rte=False, cache_dir=None, **kw):
    """RTE rows: zero increments for GeoNorm, large ΔT for ScaleNorm."""
    name = str(run_dir)
    d_r = 0.0 if ("geo_norm" in name or "scale_norm" in name) else 0.5
    d_t = 0.0 if "geo_norm" in name else 0.5
    row = {"mse": 1.0, "mean_R_err": 1 + d_r, "median_R_err": 1.0, "max_R_err": 2.0,
           "delta_R_err": d_r, "mean_T_err": 1 + d_t, "median_T_err": 1.0, "max_T_err": 2.0,
           "delta_T_err": d_t}
    return {"seeds": [30, 40], "rte": [row, row], "best_epoch": [2, 2],
            "rte_protocol": {"draws": 2}}


@pytest.fixture
def fake_training(monkeypatch):
    """Replace training, equivariance measurement, RTE and the audit with fast fakes."""
    import geonorm_jax.audit
    from geonorm_jax import train

    monkeypatch.setattr(training, "run_cell", fake_run_cell)
    monkeypatch.setattr(training, "equivariance_errors", fake_equivariance)
    monkeypatch.setattr(train, "evaluate_run", fake_evaluate_run)

    class FakeAudit:
        def __init__(self, matched):
            self.matched, self.violated, self.violations = matched, [] if matched else [
                "SO3"], [] if matched else ["SO3 broken"]

    monkeypatch.setattr(geonorm_jax.audit, "audit",
                        lambda info, task: FakeAudit(info.name != "layer_norm"))

    def fake_edges(p, variant, cache=None):
        return {"variant": variant, "curves": {"epoch": [1, 2], "train_loss": [0.2, 0.1],
                                               "val_mse": [0.2, 0.1], "test_mse": [0.2, 0.1]},
                "test_mse_at_best_val": 0.1, "best_val_mse": 0.1, "best_epoch": 2,
                "exploded": False, "exploded_epoch": None, "train_time_s": 1.0}

    monkeypatch.setattr(beyond, "train_edges", fake_edges)


def run_preset(name, tmp_path, extra=()):
    """Run experiment ``name``'s test preset into ``tmp_path``; returns results.json."""
    out = tmp_path / name
    argv = ["--preset", "test", "--out", str(out), "--runs", str(tmp_path / "runs" / name),
            *extra]
    assert MODULES[name].main(argv) == 0
    return json.loads((out / "results.json").read_text()), out


def check_results(doc, out):
    """Every top-level field, machine info, and the plots exist and are PNG files."""
    for field in TOP_FIELDS:
        assert field in doc, field
    assert doc["preset"] == "test"
    assert doc["device"] in ("cpu", "gpu")
    assert doc["machine"]["jax_devices"]
    assert "--preset test" in doc["command"]
    assert doc["plots"], "no plots listed"
    for name in doc["plots"]:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name


@pytest.mark.parametrize("name", ["egnn_5body", "instability", "norm_comparison", "norm_zoo"])
def test_experiment_test_preset_plumbing(name, tmp_path, fake_training):
    doc, out = run_preset(name, tmp_path)
    check_results(doc, out)
    assert doc["complete"] is True
    assert doc["results"]["rows"]
    cells = sorted((out / "cells").glob("test__*.json"))
    assert cells, "per-cell results not stored"


def test_rte_table_and_beyond_plumbing(tmp_path, fake_training):
    doc, out = run_preset("rte_table", tmp_path)
    check_results(doc, out)
    v = doc["results"]["verdicts"]
    assert v["geo_only_zero"]["status"] == "reproduced"
    assert v["scale_T_large"]["status"] == "reproduced"
    assert {r["norm"] for r in doc["results"]["rows"]} == {
        "none", "scale_norm", "geo_norm_particle"}
    assert doc["results"]["paper_table"]["N50_L5_seed30"]["geo_norm_particle"][3] == 0.0
    # beyond reads the norm_comparison models that rte_table trained
    doc_b, out_b = run_preset("beyond", tmp_path)
    check_results(doc_b, out_b)
    perm = {e["norm"]: e["perm"] for e in doc_b["results"]["equivariance"]}
    assert perm["geo_norm_particle"] > 0.1 and perm["none"] < 1e-6
    assert doc_b["results"]["large_n"][0]["variant"] == "none"


def test_cells_are_resumed_not_rerun(tmp_path, fake_training, monkeypatch):
    run_preset("instability", tmp_path)
    calls = []
    monkeypatch.setattr(training, "run_cell", lambda *a, **k: calls.append(a) or 1 / 0)
    doc, _ = run_preset("instability", tmp_path)  # every cell cached: run_cell never called
    assert calls == []
    assert doc["complete"]


def test_budget_skips_cells(tmp_path, fake_training):
    doc, out = run_preset("norm_comparison", tmp_path, extra=["--budget-min", "0"])
    assert doc["complete"] is False
    assert len(doc["skipped_cells"]) == 3
    assert doc["results"]["rows"] == []


def test_instability_verdicts():
    rows = [{"particles": n, "depth": d, "exploded_seeds": int(boom)}
            for n, d, boom in [(20, 1, False), (50, 5, True), (100, 3, False)]]
    v = instability.compare(rows)
    assert v["status"] == "partially reproduced"
    assert v["claimed_explosions_missing"] == [[100, 3]]
    rows[2]["exploded_seeds"] = 1
    assert instability.compare(rows)["status"] == "reproduced"
    rows[0]["exploded_seeds"] = 1
    assert instability.compare(rows)["unexpected_explosions"] == [[20, 1]]


def test_rte_zero_tolerance():
    assert rte_table.is_zero({"delta_R_err": 1e-9, "mse": 0.1}, "delta_R_err")
    assert not rte_table.is_zero({"delta_R_err": 1e-2, "mse": 0.1}, "delta_R_err")
    assert not rte_table.is_zero({"delta_R_err": None, "mse": 0.1}, "delta_R_err")


def test_mean_std_and_json_cleaning(tmp_path):
    assert common.mean_std([1.0, 3.0, None, math.nan]) == {"mean": 2.0, "std": 1.0, "n": 2}
    assert common.mean_std([None])["mean"] is None
    path = common.write_json(tmp_path / "a" / "x.json", {"v": math.inf, "w": [1.5]})
    assert json.loads(path.read_text()) == {"v": None, "w": [1.5]}
    assert not list((tmp_path / "a").glob("*.tmp*"))


def test_make_config_is_valid():
    from geonorm_jax import train

    c = training.make_config(particles=20, layers=5, norm="geo_norm", lr=5e-3,
                             seeds=[30, 40, 50, 60], epochs=8, batch_size=10, train=50)
    train.validate(c)
    assert c.train.seeds == (30, 40, 50, 60) and c.model.num_layers == 5
    assert c.optimizer.weight_decay == 1e-12


def test_report_renders_missing_and_writes_pages(tmp_path):
    results, docs = tmp_path / "results", tmp_path / "docs"
    results.mkdir()
    text = report.render(results)
    for name in report.EXPERIMENTS:
        assert f"python -m experiments.{name} --preset cpu" in text
    readme = tmp_path / "README.md"
    readme.write_text("# Experiments\n\nintro\n")
    argv = ["--results", str(results), "--docs", str(docs), "--readme", str(readme)]
    assert report.main(argv) == 0
    for name in report.PAGES:
        page = (docs / "experiments" / f"{name}.md").read_text()
        assert "\n# " in page and "Not run yet" in page, name
    assert "(docs/experiments/norm_zoo.md)" in report.current(readme)
    assert "not run yet" in (docs / "experiments" / "index.md").read_text()
    assert report.main(["--check"] + argv) == 0
    readme.write_text(readme.read_text().replace("not run yet", "not run"))
    assert report.main(["--check"] + argv) == 1
    assert readme.read_text().startswith("# Experiments\n\nintro\n")
    assert report.main(argv) == 0
    page = docs / "experiments" / "beyond.md"
    page.write_text(page.read_text() + "edited\n")
    assert report.main(["--check"] + argv) == 1


def test_report_from_fake_results(tmp_path, fake_training):
    for name in ("egnn_5body", "instability", "norm_comparison", "norm_zoo"):
        run_preset(name, tmp_path)
    text = report.render(tmp_path)
    assert "0.0071" in text and "Verdict" in text
    assert "Not run yet: `python -m experiments.egnn_5body" not in text


def test_committed_pages_and_summaries_match_results():
    """The experiment pages and the READMEs' summaries cannot drift from the committed
    results JSON."""
    assert report.main(["--check"]) == 0, (
        "docs/experiments or a README summary is stale: run `python -m experiments.report`")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["egnn_5body", "instability", "norm_comparison", "norm_zoo"])
def test_experiment_test_preset_real_training(name, tmp_path):
    doc, out = run_preset(name, tmp_path)
    check_results(doc, out)
    assert doc["complete"]


@pytest.mark.slow
def test_rte_and_beyond_real_training(tmp_path):
    doc, out = run_preset("rte_table", tmp_path)
    check_results(doc, out)
    geo = [r for r in doc["results"]["rows"] if r["norm"] == "geo_norm_particle"]
    assert all(rte_table.is_zero(r, "delta_T_err") for r in geo)
    doc_b, out_b = run_preset("beyond", tmp_path)
    check_results(doc_b, out_b)


def test_egnn_5body_paper_cpu_stops_resumes_and_reports(tmp_path, monkeypatch, capsys):
    """The resumable ``paper-cpu`` preset at tiny size (real training): a zero budget trains
    one epoch, checkpoints and writes partial results; the next invocation resumes from that
    epoch; ``--status`` reports the progress."""
    tiny = dict(egnn_5body.PRESETS["test"], epochs=3, models=["none"])
    monkeypatch.setitem(egnn_5body.PRESETS, egnn_5body.RESUMABLE, tiny)
    out, runs = tmp_path / "out", tmp_path / "runs"
    argv = ["--preset", "paper-cpu", "--out", str(out), "--runs", str(runs),
            "--cache", str(tmp_path / "cache"), "--budget-min", "0"]
    assert egnn_5body.main(argv) == 0
    doc = json.loads((out / "results.json").read_text())
    prog = doc["results"]["progress"]
    assert doc["complete"] is False and doc["skipped_cells"] == ["none"]
    assert prog["epochs_done"] == 1 and prog["epochs"] == 3 and prog["state"] == "deadline"
    assert (runs / "none" / "checkpoints" / "interval" / "1").is_dir()
    assert (out / doc["plots"][0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first = (runs / "none" / "metrics.jsonl").read_text().splitlines()

    assert egnn_5body.main(argv) == 0
    lines = (runs / "none" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and lines[0] == first[0]  # resumed at epoch 1, not restarted
    capsys.readouterr()
    assert egnn_5body.main(["--preset", "paper-cpu", "--out", str(out), "--runs", str(runs),
                            "--status"]) == 0
    text = capsys.readouterr().out
    assert "epoch 2 / 3" in text and "s per epoch" in text and "egnn_5body_paper_cpu.png" in text

    argv[-1] = "30"
    assert egnn_5body.main(argv) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["complete"] is True and doc["results"]["progress"]["epochs_done"] == 3
    assert (out / "cells" / "paper-cpu__none.json").exists()

    # the split-sampling spread of the finished run, and both in the report
    from geonorm_jax import train

    spread_path = out / "spread.json"
    assert egnn_5body_spread.main(["--run-dir", str(runs / "none"), "--data-seeds", "44",
                                   "--cache", str(tmp_path / "cache"),
                                   "--out", str(spread_path)]) == 0
    spread = json.loads(spread_path.read_text())
    ev = train.evaluate_run(runs / "none", cache_dir=tmp_path / "cache")
    own = {r["split"]: r for r in spread["rows"] if r["own"]}
    other = {r["split"]: r for r in spread["rows"] if not r["own"]}
    assert own["valid"]["mse"] == pytest.approx(ev["val_mse"][0], rel=1e-6)
    assert own["test"]["mse"] == pytest.approx(ev["test_mse"][0], rel=1e-6)
    assert [r["data_seed"] for r in spread["rows"]] == [43, 43, 44, 44]
    assert other["test"]["mse"] != own["test"]["mse"]  # other data, other error
    assert spread["summary"]["splits"] == 4 and [spread["best_epoch"]] == ev["best_epoch"]
    assert spread["command"].endswith("--data-seeds 44")
    results = tmp_path / "results"
    (results / "egnn_5body" / "paper-cpu").mkdir(parents=True)
    (out / "results.json").rename(results / "egnn_5body" / "paper-cpu" / "results.json")
    (results / "egnn_5body" / "paper-cpu" / "spread.json").write_text(spread_path.read_text())
    text = report.render(results)
    assert "#### The EGNN paper's protocol" in text and "epoch 3 of 3" in text
    assert "| 44 | test | 10 |" in text and "Stale" not in text
    spread["best_epoch"] += 1
    (results / "egnn_5body" / "paper-cpu" / "spread.json").write_text(json.dumps(spread))
    assert "**Stale:**" in report.render(results)


def test_spread_split_stats():
    stats = egnn_5body_spread.split_stats([1.0] * 99 + [101.0], resamples=500)
    assert stats["mse"] == pytest.approx(2.0) and stats["median"] == 1.0
    assert stats["top1_share"] == pytest.approx(101.0 / 200.0)
    assert stats["ci95"][0] <= 2.0 <= stats["ci95"][1] and stats["ci95"][1] > stats["ci95"][0]
    flat = egnn_5body_spread.split_stats([0.5, 0.5, 0.5], resamples=50)
    assert flat["ci95"] == [0.5, 0.5]
    with pytest.raises(ValueError, match=r"1-D array of at least 2 systems, got shape \(2, 2\)"):
        egnn_5body_spread.split_stats([[1.0, 2.0], [3.0, 4.0]])


def test_egnn_5body_sparkline():
    assert egnn_5body.sparkline([]) == ""
    line = egnn_5body.sparkline([1.0, 0.1, 0.01] * 50, width=20)
    assert len(line) == 20
    assert egnn_5body.sparkline([1.0, 0.01]) == "@ "


def test_egnn_5body_paper_cpu_other_seed(tmp_path, monkeypatch):
    """``--seed N`` trains the same protocol with another seed in folders of its own, and the
    report lists it beside seed 1."""
    args = egnn_5body.parse_args(["--preset", "paper-cpu", "--seed", "2"])
    assert args.out.endswith("paper-cpu-seed2") and args.runs.endswith("paper-cpu-seed2")
    assert egnn_5body.parse_args(["--preset", "paper-cpu"]).out.endswith("paper-cpu")
    with pytest.raises(SystemExit):
        egnn_5body.parse_args(["--preset", "cpu", "--seed", "2"])
    tiny = dict(egnn_5body.PRESETS["test"], epochs=1, models=["none"])
    monkeypatch.setitem(egnn_5body.PRESETS, egnn_5body.RESUMABLE, tiny)
    results = tmp_path / "results" / "egnn_5body"
    docs = {}
    for seed in (1, 2):
        folder = egnn_5body.resumable_folder(seed)
        argv = ["--preset", "paper-cpu", "--seed", str(seed), "--out", str(results / folder),
                "--runs", str(tmp_path / "runs" / folder), "--cache", str(tmp_path / "cache")]
        assert egnn_5body.main(argv) == 0
        docs[seed] = json.loads((results / folder / "results.json").read_text())
        assert docs[seed]["config"]["seeds"] == [seed] and docs[seed]["complete"] is True
    loss = lambda seed: json.loads(
        (tmp_path / "runs" / egnn_5body.resumable_folder(seed) / "none" / "metrics.jsonl")
        .read_text().splitlines()[0])["train_loss"][0]
    assert loss(1) != loss(2)  # another initialization, not a copy
    text = report.render(tmp_path / "results")
    table = text.split("#### The EGNN paper's protocol", 1)[1]
    assert "\n| 1 | 1 |" in table and "\n| 2 | 1 |" in table and "--seed 2" in table
