"""Generate the experiment pages of the documentation, and the short results summary of the
READMEs, from the results JSON files.

Every experiment's section (:func:`sections`, written from
``experiments/results/<name>/results.json`` with the papers' numbers beside ours) becomes the
page ``docs/experiments/<name>.md`` with its figures and result files
(:mod:`experiments.report_docs`); ``docs/experiments/index.md`` and the part of ``README.md``
and ``experiments/README.md`` between ``<!-- results:begin -->`` and ``<!-- results:end -->``
get a one-line verdict per experiment. ``tests/test_experiments.py`` checks that the committed
pages and summaries equal the generator's output.

Usage::

    python -m experiments.report            # rewrite the pages and the summaries
    python -m experiments.report --check    # exit 1 if any is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from experiments.common import RESULTS, ROOT
from experiments.report_format import (
    _audit,
    _budget,
    _f,
    _intro,
    _load,
    _ms,
    _paper,
    _read,
    _section,
    _table,
    _verdicts,
)
from experiments.survey_anchor import anchor_markdown

BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"
README = ROOT / "experiments" / "README.md"
DOCS = ROOT / "docs"
EXPERIMENTS = ("egnn_5body", "instability", "norm_comparison", "rte_table", "norm_zoo",
               "beyond")


@_section(1, "EGNN paper, charged 5-body")
def egnn_5body(doc: dict) -> list[str]:
    """EGNN paper anchor section."""
    c = doc["config"]
    out = _intro(doc, f"Split {c['train']}/{c['valid']}/{c['test']}, hidden {c['hidden']}, "
                 f"{c['layers']} layers, batch {c['batch_size']}, lr 5e-4, "
                 f"{c['epochs']} epochs (paper: 10000).")
    rows = [[r["model"], str(r["seed"]), _f(r["test_mse_at_best_val"]), str(r["best_epoch"]),
             str(r["epochs"]), "0.0071", "reproduced" if r["reached_paper"] else
             "not reproduced"] for r in doc["results"]["rows"]]
    out += _table(["model", "seed", "test MSE @ best val", "best epoch", "epochs",
                   "paper", "≤ 0.0071?"], rows)
    return out + [""]


def egnn_5body_paper(doc: dict | None, spread: dict | None,
                     others: list[dict] = ()) -> list[str]:
    """The EGNN paper's protocol run on CPU (``paper-cpu``), its split-sampling spread, and
    runs of further training seeds (``paper-cpu-seedN``, ``others``)."""
    if doc is None:
        return []
    r, g = doc["results"], doc["results"]["progress"]
    m = doc["machine"]
    state = ("Complete" if doc.get("complete")
             else "**In progress** (the numbers below are partial)")
    out = ["#### The EGNN paper's protocol, run to the end on CPU (`paper-cpu`)", "",
           f"*`{doc['command']}` (repeated until done), geonorm-jax {doc['version']}, "
           f"{doc['device']} ({m['cpu_count']} cores), results written {doc['finished']}.*", "",
           f"Split 3000/2000/2000, hidden 64, 4 layers, batch 100, Adam lr 5e-4, weight "
           f"decay 1e-12, validation and test every 5 epochs, one seed, no normalization. "
           f"{state}: epoch {g['epochs_done']} of {g['epochs']}, "
           f"{g['train_wall_hours']:.2f} h of training "
           f"({_f(g['sec_per_epoch'], 3)} s per epoch over the last 100). Curve: "
           f"`results/egnn_5body/paper-cpu/{doc['plots'][0]}`.", ""]
    def row(d: dict) -> list[str]:
        q, pr = d["results"]["progress"], d["results"]
        sd = str(d["config"]["seeds"][0])
        last = ((pr.get("curves") or {}).get("test_mse", {}).get(sd) or [None])[-1]
        done = str(q["epochs_done"]) + ("" if d.get("complete") else " (partial)")
        return [sd, done, str(q["best_epoch"]), _f(q["best_val_mse"]),
                _f(q["test_mse_at_best_val"]), _f(last), _f(pr["paper_mse"]),
                _f(pr["jax_port_mse"]),
                "reproduced" if pr["rows"][0]["reached_paper"] else "not reproduced"]

    out += _table(
        ["seed", "epochs", "best val epoch", "val MSE", "test MSE @ best val",
         "test MSE, last eval", "EGNN paper", "JAX port", "≤ 0.0071?"],
        [row(doc)] + [row(d) for d in others])
    if others:
        out += ["", "Further seeds: "
                + "; ".join(f"`{d['command']}`, {d['results']['progress']['train_wall_hours']:.2f}"
                            f" h, results written {d['finished']}" for d in others) + "."]
    out.append("")
    if not spread:
        return out
    rows = [[str(x["data_seed"]) + (" (the run's)" if x["own"] else ""), x["split"],
             str(x["systems"]), _f(x["mse"]), f"{_f(x['ci95'][0])}–{_f(x['ci95'][1])}",
             _f(x["median"]), f"{100 * x['top1_share']:.0f}%"] for x in spread["rows"]]
    sm = spread["summary"]
    own_test = next(x for x in spread["rows"] if x["own"] and x["split"] == "test")
    inside = own_test["ci95"][0] <= r["paper_mse"] <= own_test["ci95"][1]
    out += [f"**Split sampling** (`{spread['command']}`): the best-validation parameters "
            f"(epoch {spread['best_epoch']}) on the run's validation and test splits and on "
            f"those of further data seeds (same generator and settings); 95% interval of the "
            f"mean from {spread['bootstrap_resamples']} bootstrap resamples of the systems."
            + ("" if spread["best_epoch"] == g["best_epoch"] else
               f" **Stale:** the run's best epoch is now {g['best_epoch']}; rerun the "
               f"command."), ""]
    out += _table(["data seed", "split", "systems", "MSE", "95% interval", "median",
                   "error share of the worst 1%"], rows)
    out += ["", f"Over the {sm['splits']} splits the MSE of the same parameters is "
            f"{_f(sm['mean'])} ± {_f(sm['std'], 2)} (min {_f(sm['min'])}, max {_f(sm['max'])}); "
            f"the run's test MSE is {_f(sm['own_test_over_val'], 3)}× its validation MSE. "
            f"The EGNN paper's {_f(r['paper_mse'])} lies "
            f"{'inside' if inside else 'outside'} the 95% interval of the run's test MSE.", ""]
    return out


@_section(2, "GeoNorm paper Figure 2 (vanilla EGNN explodes)")
def instability(doc: dict) -> list[str]:
    """GeoNorm paper Figure 2 section."""
    c = doc["config"]
    lrs = ", ".join(f"{x:g}" for x in c["lrs"])
    out = _intro(doc, f"{_budget(c)}, hidden {c['hidden']}, lr {lrs}, seeds {c['seeds']}; "
                 "explosion = batch loss NaN/inf or > 1e3.", _paper(doc))
    claimed = {tuple(x) for x in doc["results"]["paper"]["explodes"]}
    rows = [[str(r["particles"]), str(r["depth"]), f"{r['lr']:g}",
             "explodes" if (r["particles"], r["depth"]) in claimed else "stable",
             f"{r['exploded_seeds']}/{r['seeds']}",
             ", ".join(map(str, r["exploded_epochs"])) or "—",
             _ms(r["test_mse_at_best_val"]), _f(r["max_train_loss"])]
            for r in doc["results"]["rows"]]
    out += _table(["N", "depth", "lr", "paper", "exploded seeds (ours)", "explosion epoch",
                   "test MSE @ best val", "max train loss"], rows)
    v = doc["results"]["verdicts"]
    out += ["", f"**Verdict: {v['status']}.** Paper explosions seen: "
            f"{v['claimed_explosions_seen'] or 'none'}; missing: "
            f"{v['claimed_explosions_missing'] or 'none'}; unexpected: "
            f"{v['unexpected_explosions'] or 'none'}.", ""]
    return out


@_section(3, "GeoNorm paper Figure 5")
def norm_comparison(doc: dict) -> list[str]:
    """GeoNorm paper Figure 5 section."""
    c = doc["config"]
    out = _intro(doc, f"N = {c['particles']}, depth {c['depth']}, hidden {c['hidden']}, "
                 f"{_budget(c)}, seeds {c['seeds']} (vmapped). Final test MSE excludes "
                 "exploded seeds.", _paper(doc))
    rows = [[r["norm"], str(r["particles"]), f"{r['lr']:g}", _ms(r["final_test_mse"]),
             _ms(r["best_test_mse"]), _ms(r["test_mse_at_best_val"]),
             f"{r['exploded_seeds']}/{len(r['seeds'])}"] for r in doc["results"]["rows"]]
    out += _table(["norm", "N", "lr", "final test MSE", "best test MSE",
                   "test MSE @ best val", "exploded"], rows)
    return out + [""] + _verdicts(doc) + [""]


@_section(4, "GeoNorm paper Table 1 (rotation/translation errors)")
def rte_table(doc: dict) -> list[str]:
    """GeoNorm paper Table 1 section."""
    cols = doc["results"]["paper_columns"]
    short = ["mean R", "median R", "max R", "ΔR", "mean T", "median T", "max T", "ΔT"]
    out = _intro(doc, _paper(doc), "Ours (MSE units; Δ = mean error under the transform − "
                 "untransformed test MSE):")
    rows = [[r["norm"], f"N{r['particles']} L{r['depth']}", str(r["seed"]), f"{r['lr']:g}",
             _f(r["mse"])] + [_f(r[k]) for k in cols] for r in doc["results"]["rows"]]
    out += _table(["norm", "cell", "seed", "lr", "test MSE", *short], rows)
    if doc["results"].get("missing_models"):
        out += ["", "Models missing (norm_comparison cells not run): "
                + ", ".join(doc["results"]["missing_models"])]
    out += ["", "Paper (the GeoNorm paper's Table 1, Meng et al.; its units are as printed "
            "there):", ""]
    prow = []
    for cell, norms in doc["results"]["paper_table"].items():
        for norm, vals in norms.items():
            prow.append([norm, cell] + [_f(v) for v in vals])
    out += _table(["norm", "cell", *short], prow)
    return out + [""] + _verdicts(doc) + [""]


@_section(5, "does geometric match predict which layers train well?")
def norm_zoo(doc: dict) -> list[str]:
    """Survey Section 4 question over the whole catalogue."""
    c = doc["config"]
    out = _intro(doc, f"N = {c['particles']}, depth {c['depth']}, hidden {c['hidden']}, "
                 f"{c['train']} training samples, {c['epochs']} epochs, seeds {c['seeds']}. "
                 "Equivariance errors are relative RMS output errors of the trained model.")
    rows = [[f"`{r['layer']}`", r["kind"] or "—", r["place"] or "—", _audit(r),
             _ms(r["test_mse"]), str(r["exploded_seeds"]), _f(r["equiv_rot"], 2),
             _f(r["equiv_trans"], 2), _f(r["equiv_perm"], 2),
             (r["error"] or "")[:60]] for r in doc["results"]["rows"]]
    out += _table(["layer", "kind", "place", "nbody-dynamics audit", "test MSE", "exploded",
                   "rot err", "trans err", "perm err", "error"], rows)
    a = doc["results"]["analysis"]
    out += ["", f"Matched layers: {a['matched_n']} (median test MSE "
            f"{_f(a['matched_median_mse'])}); mismatched: {a['mismatched_n']} (median "
            f"{_f(a['mismatched_median_mse'])}); no normalization: {_f(a['none_mse'])}."]
    if "matched_better_pair_fraction" in a:
        counter = a["counterexamples_mismatched_beating_median_matched"]
        out.append(f"A matched layer beats a mismatched one in "
                   f"{a['matched_better_pair_fraction']:.0%} of (matched, mismatched) pairs; "
                   f"mismatched layers below the matched median: "
                   f"{', '.join(counter) or 'none'}.")
    return out + [""]


@_section(6, "GeoNorm's stated limits")
def beyond(doc: dict) -> list[str]:
    """Beyond-the-paper section."""
    res = doc["results"]
    out = _intro(doc, "Equivariance errors of the trained `norm_comparison` models "
                 "(max over seeds; relative RMS):")
    out += _table(["cell", "rot", "trans", "perm"],
                  [[e["cell"], _f(e["rot"], 2), _f(e["trans"], 2), _f(e["perm"], 2)]
                   for e in res["equivariance"]])
    b = res["best_variant"]
    if b.get("answer"):
        w = b["answer"]
        out += ["", f"Stable (no exploded seed) with the lowest best test MSE at the largest N "
                f"of `norm_comparison` (N = {b['largest_n']}): **{w['norm']}** at lr "
                f"{w['lr']:g}, {_ms(w['best_test_mse'])}."]
    c = doc["config"]
    out += ["", f"N = {c['particles']} with the edge-list EGNN (k = {c['knn']} nearest "
            f"neighbours, depth {c['layers']}, hidden {c['hidden']}, {c['train']} training "
            f"samples, {c['epochs']} epochs, batch {c['batch_size']}):", ""]
    out += _table(["variant", "test MSE @ best val", "best epoch", "exploded", "train time (s)"],
                  [[r["variant"], _f(r["test_mse_at_best_val"]), str(r["best_epoch"]),
                    f"epoch {r['exploded_epoch']}" if r["exploded"] else "no",
                    _f(r["train_time_s"])] for r in res["large_n"]])
    return out + [""]


def gpu_campaign(doc: dict | None, estimate: dict | None = None) -> list[str]:
    """The paper-scale GPU campaign (``experiments/gpu_campaign.py``): visits, finished cells,
    step times, and the estimated GPU time left. Absent when neither its ``results.json`` nor
    its ``estimate.json`` exists."""
    if doc is None and estimate is None:
        return []
    out = ["### 7. `gpu_campaign`: the GeoNorm paper's cells at the paper's scale", ""]
    if doc is not None:
        res = doc["results"]
        kinds = sorted({v["device_kind"] for v in res["visits"]})
        out += [f"*`{doc['command']}`, geonorm-jax {doc['version']}; {len(res['visits'])} "
                f"visit(s) on {', '.join(kinds)}; cells finished {len(res['done'])}/"
                f"{len(doc['config']['cells'])}, partial: "
                + (", ".join(f"`{k}` (epoch {v['epochs_done']})"
                             for k, v in res["partial"].items()) or "none") + ".*", ""]
        out += _table(["visit", "device", "bench train step, best (ms)"],
                      [[v["started"], v["device_kind"],
                        "; ".join(f"{r['name']}: {_f(r.get('step_ms_best'))}"
                                  for r in v["bench"])] for v in res["visits"]])
        if res["rows"]:
            out += [""]
            out += _table(["cell", "phase", "exploded seeds", "explosion epoch",
                           "test MSE @ best val", "best test MSE", "device"],
                          [[r["cell"], r["phase"], f"{r['exploded_seeds']}/{r['seeds']}",
                            ", ".join(map(str, r["exploded_epochs"])) or "—",
                            _ms(r["test_mse_at_best_val"]), _ms(r["best_test_mse"]),
                            r["device_kind"] or "—"] for r in res["rows"]])
        if res.get("rte"):
            out += ["", f"Table 1 rows (RTE) measured: {len(res['rte'])}."]
        estimate = res["estimate"]
        out += [""]
    else:
        out += ["Not run on a GPU yet: `python -m experiments.gpu_campaign --preset paper` "
                "(one 11-minute visit per call; results accumulate).", ""]
    rate = (f", assumed {estimate['assumed_gpu_tflops']:g} TFLOP/s sustained"
            if estimate.get("assumed_gpu_tflops") else "")
    out += [f"Estimated (not measured) time left, from {estimate['source_description']}"
            f"{rate}; {estimate['budget_min']:g}-minute visits with "
            f"{estimate['visit_overhead_min']:g} min overhead (method: "
            "`experiments/gpu_campaign.py`):", ""]
    out += _table(["phase", "cells", f"minutes in all ({estimate['device_kind']})"
                   if estimate["source"] == "measured" else "GPU minutes in all",
                   "minutes left", "visits left"],
                  [[name, str(ph["cells"]), f"{ph['minutes']:.0f}",
                    f"{ph['minutes_left']:.0f}", str(ph["visits_left"])]
                   for name, ph in estimate["phases"].items()])
    return out + [""]


def _dft_table(dft: dict) -> list[str]:
    """Per kind of energy target: the losses with both of Allegro's normalizations and with
    neither, the gap in orders of magnitude at the first epoch and the last, what the energy
    zero alone predicts for the start, and the status against the survey."""
    rows = {r["cell"]: r for r in dft.get("rows", [])}
    body = []
    for targets, t in dft["verdicts"].get("targets", {}).items():
        both = rows.get(f"dft_{targets}_both") or rows.get(f"dft_{targets}_neighbor") or {}
        none = rows.get(f"dft_{targets}_none") or {}
        zero = t.get("zero_predicts_start_orders") or {}
        body.append([targets, t.get("energy_unit", ""), _f(both.get("first_train_loss"), 3),
                     _f(none.get("first_train_loss"), 3), _f(both.get("final_test_loss"), 3),
                     _f(none.get("final_test_loss"), 3), _f(t.get("start_orders"), 3),
                     _f(t.get("end_orders"), 3), _f(zero.get("per_atom"), 3),
                     _f(zero.get("per_frame"), 3), t.get("status", "")])
    return _table(["targets", "unit", "first train loss (with)", "(without)",
                   "final test loss (with)", "(without)", "start gap (orders)",
                   "end gap (orders)", "zero predicts: per-atom loss", "per-frame loss",
                   "verdict (survey: 11 and 5)"], body) + [
        "", "*With*: shift+scale and 1/√N̄ on (for shifted targets: the per-species shift "
        "without the scale, with 1/√N̄); *without*: both off. The energy zero's prediction is "
        "`log10((E/A)² / loss_with)` (per-atom loss, this trainer's) and `log10(E² / "
        "loss_with)` (a per-frame total-energy loss), with `E` the mean total energy."]


@_section(8, "the survey's Figures 1-2 (molecular models with and without their "
          "normalizations)")
def survey_case_studies(doc: dict) -> list[str]:
    """The survey's Section 4: Allegro and SchNet with and without their normalizations."""
    c, res = doc["config"], doc["results"]
    d = c["data"]
    out = _intro(doc, f"{d['molecule']}, {d['frames']} {d['method']} frames at "
                 f"{d['temperature_K']} K; {c['train']} / {c['valid']} / {c['test']} train / "
                 f"validation / test frames, {c['epochs']} epochs, batch {c['batch_size']}, "
                 f"seeds {c['seeds']}. Loss: {c['loss']}. MAEs at the best validation epoch.")
    flag = lambda b: "yes" if b else "no"
    out += _table(
        ["cell", "molecule", "params", "epochs × seeds", "shift+scale", "own norm",
         "first train loss", "final test loss", "energy MAE (meV)", "force MAE (meV/Å)",
         "step (ms)", "exploded"],
        [[f"`{r['cell']}`", r.get("molecule", "uracil"), _f(r["params"]),
          f"{r.get('epochs', '—')} × {r.get('seeds', '—')}",
          flag(r["target_norm"]), flag(r["neighbor_norm"]), _f(r["first_train_loss"], 3),
          _f(r["final_test_loss"], 3), _ms(r["energy_mae_meV"]), _ms(r["force_mae_meV_per_A"]),
          _f(r.get("step_ms"), 3), str(r["exploded_seeds"])] for r in res["rows"]])
    out += ["", "*Own norm*: Allegro's `1/sqrt(N̄)`, SchNet's mean over neighbours, GemNet's "
            "fitted scale factors and `1/sqrt(2)` residual scaling. *Step*: wall time per "
            "optimizer step of all seeds together (evaluation epochs included)."]
    v = res["verdicts"]
    out += ["", "| survey claim | measured | verdict |", "|---|---|---|"]
    if "allegro" in v:
        a = v["allegro"]
        out.append(f"| Allegro without normalization: losses start ~{a['claim_start_orders']:g} "
                   f"and end ~{a['claim_end_orders']:g} orders of magnitude higher | start "
                   f"{_f(a['start_orders'], 3)}, end {_f(a['end_orders'], 3)} orders | "
                   f"{a['status']} |")
    split = v.get("allegro_split", {})
    if "carries_the_gap" in split:
        t, n = split["target"], split["neighbor"]
        out.append(f"| which Allegro normalization carries the gap | without shift+scale: "
                   f"{_f(n['end_orders_vs_both'], 3)} orders; without 1/√N̄: "
                   f"{_f(t['end_orders_vs_both'], 3)} orders | {split['carries_the_gap']} |")
    for key, name in (("schnet", "SchNet"), ("gemnet", "GemNet-T"), ("gemnet2", "GemNet-T")):
        if key in v:
            sv = v[key]
            out.append(f"| {name} without normalization ({sv['molecule']}): "
                       f"~{sv['claim_orders']:g} order of magnitude worse | final test loss "
                       f"{_f(sv['end_orders'], 3)} orders, force MAE "
                       f"{_f(sv['force_mae_orders'], 3)} orders | {sv['status']} |")
    if "gemnet_scale_factors_only" in v:
        sv = v["gemnet_scale_factors_only"]
        out.append(f"| GemNet-T without its scale factors and residual scaling only (shift and "
                   f"scale kept) | final test loss {_f(sv['end_orders'], 3)} orders, force MAE "
                   f"{_f(sv['force_mae_orders'], 3)} orders | {sv['status']} |")
    dft = res.get("dft") or {}
    if dft.get("verdicts"):
        out += ["", f"Figure 1 at DFT scale (`dft_*` cells): {dft['verdicts']['verdict']}."]
        out += [""] + _dft_table(dft)
    if dft.get("anchor"):
        out += [""] + anchor_markdown(dft["anchor"]["table"])
    if res.get("zoo"):
        out += ["", "Norm zoo on Allegro (with its own normalizations), one catalogue layer "
                "at a time:", ""]
        out += _table(
            ["layer", "kind", "place", "md-energy-forces audit", "force MAE (meV/Å)",
             "energy MAE (meV)", "exploded", "error"],
            [[f"`{r['layer']}`", r["kind"] or "—", r["place"] or "—", _audit(r),
              _ms(r["force_mae_meV_per_A"]),
              _ms(r["energy_mae_meV"]), str(r["exploded_seeds"]), (r["error"] or "")[:70]]
             for r in res["zoo"]])
    return out + [""]


@_section(9, "does normalization keep MD stable, beyond what force MAE says?")
def md_stability(doc: dict) -> list[str]:
    """Fu et al.'s MD stability and h(r) error of the survey's models with and without their
    normalizations (``experiments/md_stability.py``)."""
    c, res = doc["config"], doc["results"]
    d, md = c["data"], c["md"]
    out = _intro(doc, f"{d['molecule']}, {d['frames']} {d['method']} frames; "
                 f"{c['train']} / {c['valid']} / {c['test']} train / validation / test frames, "
                 f"{c['epochs']} epochs (GemNet-T: its own), seed 0. MD in JAX "
                 f"(`geonorm_jax.potentials.simulate`): {md['replicas']} replicas from test "
                 f"frames, {c['thermostat_note']}, {md['temperature_K']:g} K, friction "
                 f"{md['friction_per_fs']:g}/fs, {md['dt_fs']:g} fs × {md['steps']} steps "
                 f"({md['steps'] * md['dt_fs'] / 1000:g} ps), a frame every "
                 f"{md['record_every']} steps"
                 + (f", at most {md['md_budget_s']:g} s of MD per cell" if md.get("md_budget_s")
                    else "") + f". Reference: {c['reference']}. Time to instability: first "
                 f"frame with a bond off by > 0.5 Å (Fu et al.); a stable replica counts the "
                 f"simulated time. h(r) error: ∫|h - h_ref| dr over the stable frames (0 to 2). "
                 f"Plots: `results/md_stability/{'`, `results/md_stability/'.join(doc['plots'])}`.")
    out += _table(
        ["cell", "norm", "params", "force MAE (meV/Å)", "energy MAE (meV)", "simulated (ps)",
         "stable", "time to instability (ps)", "h(r) error", "mean T (K)", "ns/day", "trained by"],
        [[f"`{r['cell']}`", r["norm"], _f(r["params"]), _f(r["force_mae_meV_per_A"]),
          _f(r["energy_mae_meV"]), _f(r["simulated_ps"], 3),
          f"{r['stable_replicas']}/{r['replicas']}", _ms(r["time_to_instability_ps"]),
          _ms(r["h_error"]), _ms(r["mean_temperature_K"]), _f(r["ns_per_day"], 3),
          (r["trained_by"] or "—") if not r.get("error") else "error: " + r["error"][:60]]
         for r in res["rows"]])
    v = res["verdicts"]
    out += ["", "| comparison | force MAE ratio (without / with) | time to instability, with "
            "→ without (ps) | h(r) error, with → without | stability beyond MAE? | h(r) "
            "beyond MAE? |", "|---|---|---|---|---|---|"]
    for key, x in v.items():
        if key == "all_cells":
            continue
        name = (f"`{key}` against `{x['against']}`" if "against" in x
                else f"`{key}_on` against `{key}_off`")
        out.append(f"| {name} | {_f(x.get('force_mae_ratio_without_over_with'), 3)} | "
                   f"{_f(x.get('time_to_instability_with_ps'), 3)} → "
                   f"{_f(x.get('time_to_instability_without_ps'), 3)} | "
                   f"{_f(x.get('h_error_with'), 3)} → {_f(x.get('h_error_without'), 3)} | "
                   f"{x['status']} | {x.get('h_status', '—')} |")
    a = v.get("all_cells", {})
    t = c["thresholds"]
    out += ["", f"Over all {a.get('cells', 0)} cells, Spearman's rank correlation of force MAE "
            f"with time to instability: {_f(a.get('spearman_force_mae_vs_time_to_instability'), 3)}"
            f"; with h(r) error: {_f(a.get('spearman_force_mae_vs_h_error'), 3)}. Stability "
            f"*differs* at a factor {t['stability_ratio']:g} in mean time to instability or a "
            f"gap of {t['stable_fraction_gap']:g} in the fraction of stable replicas; force MAE "
            f"at a factor {t['mae_ratio']:g}; h(r) error at a factor {t['h_ratio']:g}. Times "
            f"are censored at the simulated time."]
    return out + [""]


#: Each experiment's page under ``docs/experiments/``, in the order of the results section.
PAGES = EXPERIMENTS + ("gpu_campaign", "survey_case_studies", "md_stability")


def sections(results: Path = RESULTS) -> dict[str, list[str]]:
    """``{experiment: its section's lines}`` in :data:`PAGES` order."""
    results = Path(results)
    bodies = {"egnn_5body": egnn_5body, "instability": instability,
              "norm_comparison": norm_comparison, "rte_table": rte_table,
              "norm_zoo": norm_zoo, "beyond": beyond}
    out = {}
    for name in EXPERIMENTS:
        out[name] = bodies[name](_load(results, name))
        if name == "egnn_5body":
            others = [_read(f) for f in
                      sorted((results / name).glob("paper-cpu-seed*/results.json"))]
            out[name] += egnn_5body_paper(_load(results / name, "paper-cpu"),
                                          _read(results / name / "paper-cpu" / "spread.json"),
                                          others)
    out["gpu_campaign"] = gpu_campaign(_load(results, "gpu_campaign"),
                                       _read(results / "gpu_campaign" / "estimate.json"))
    out["survey_case_studies"] = survey_case_studies(_load(results, "survey_case_studies"))
    out["md_stability"] = md_stability(_load(results, "md_stability"))
    return out


def render(results: Path = RESULTS) -> str:
    """The whole results text (every experiment's section), the source of the pages."""
    lines = ["## Results", "",
             "Generated by `python -m experiments.report` from "
             "`experiments/results/*/results.json`; do not edit by hand. The `cpu` presets "
             "are far smaller than the papers' runs (sizes in each section), so a "
             "'not reproduced' here can mean 'not reached at this budget'.", ""]
    for body in sections(results).values():
        lines += body
    return "\n".join(lines).rstrip() + "\n"


def splice(text: str, section: str) -> str:
    """``text`` with the part between the markers replaced by ``section``."""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
    else:
        head, tail = text.rstrip() + "\n\n", "\n"
    return f"{head}{BEGIN}\n{section}{END}{tail}"


def current(readme: Path = README) -> str | None:
    """The section currently between the markers of ``readme`` (None if absent)."""
    if not readme.exists():
        return None
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        return None
    return text.split(BEGIN, 1)[1].split(END, 1)[0].lstrip("\n")


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or ``--check``) the experiment pages of the documentation and the short
    results summary of ``README.md`` and ``experiments/README.md``."""
    from experiments import report_docs

    p = argparse.ArgumentParser(prog="python -m experiments.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true",
                   help="exit 1 if a page or a README summary is stale (nothing is written)")
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--docs", default=str(DOCS), help="the documentation folder (docs/)")
    p.add_argument("--readme", action="append", default=None,
                   help="a README whose summary to write (repeatable; default: README.md and "
                        "experiments/README.md)")
    args = p.parse_args(argv)
    readmes = [Path(r) for r in (args.readme or [ROOT / "README.md", README])]
    return report_docs.write(Path(args.results), Path(args.docs), readmes, check=args.check)


if __name__ == "__main__":
    sys.exit(main())
