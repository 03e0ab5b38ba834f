"""The norm-choice guide, generated from the committed results so that it cannot drift.

Sources: the audit (``survey_audit/table.json``: which layers keep each task's symmetries and
which match it in the survey's Definition 3 sense), the N-body norm zoo (``norm_zoo``), the
molecular norm zoo (``survey_case_studies``), the GeoNorm comparison (``norm_comparison``), the
large-N run (``large_n``), the batch-coupling measurement (``batch_correlation``), the
instability sweep (``instability``), MD stability (``md_stability``, when present) and the
per-layer cost (``bench``). Called by ``docs/gen.py``.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from geonorm_jax.audit.report import describe_violations
from geonorm_jax.norms import catalog

ROOT = Path(__file__).resolve().parents[1]
RES = "experiments/results"
SYMMETRY = ("SO3", "O3", "translation", "permutation", "batch", "padding", "replication")

#: (row title, catalogue kind or "edges", audit task, experiment, metric description)
ROWS = (
    ("Scalar features `h` (N-body)", "features", "nbody-dynamics", "norm_zoo", "test MSE"),
    ("Coordinates `x` (N-body)", "coordinates", "nbody-dynamics", "norm_zoo", "test MSE"),
    ("Vectors / irreps (N-body, EGNN coordinate update)", "vectors", "nbody-dynamics",
     "norm_zoo", "test MSE"),
    ("Scalar edge latents (molecules, Allegro `latent`)", "features", "md-energy-forces",
     "survey_case_studies", "force MAE meV/Å"),
    ("Vectors / irreps (molecules, Allegro `tensor`)", "vectors", "md-energy-forces",
     "survey_case_studies", "force MAE meV/Å"),
    ("Edges / neighbour sums (molecules)", "edges", "md-energy-forces",
     "survey_case_studies", "force MAE meV/Å"),
    ("Edges / neighbour sums (N-body)", "edges", "nbody-dynamics", "norm_zoo", "test MSE"),
)

#: context arguments that mark a layer normalising sums over neighbours or messages
EDGE_CONTEXT = {"num_neighbors", "adjacency", "message", "positions", "species"}


def _read(rel: str) -> dict | None:
    path = ROOT / rel
    return json.loads(path.read_text()) if path.exists() else None


def _link(rel: str, label: str | None = None) -> str:
    return f"[`{label or rel.removeprefix(RES + '/')}`](../{rel})"


def _layer(name: str) -> str:
    from gen_layers import family_of

    return f"[`{name}`](../layers/{family_of(catalog.get(name))}.md#{name})"


def _members(kind: str) -> list[str]:
    if kind == "edges":
        return [e.name for e in catalog.CATALOG if EDGE_CONTEXT & set(e.context)
                or "neighbor" in e.name]
    return list(catalog.names(kind))


def _trained(exp: str, kind: str, members: list[str]) -> tuple[list[tuple[str, float]], float]:
    """``([(layer, metric)] best first, baseline metric)`` of one experiment's zoo."""
    doc = _read(f"{RES}/{exp}/results.json")
    if doc is None:
        return [], float("nan")
    rows = doc["results"]["rows"] if exp == "norm_zoo" else doc["results"]["zoo"]
    key = "test_mse" if exp == "norm_zoo" else "force_mae_meV_per_A"
    got, base = [], float("nan")
    for r in rows:
        v = (r.get(key) or {}).get("mean")
        if v is None:
            continue
        if r["layer"] == "none":
            base = v
        elif r["layer"] in members and (kind == "edges" or r["kind"] == kind):
            got.append((r["layer"], v))
    return sorted(got, key=lambda t: t[1]), base


def _cost(names: list[str], bench: dict) -> str:
    vals = [bench[n]["cost_percent"] for n in names if "cost_percent" in bench.get(n, {})]
    if not vals:
        return "not measured"
    return (f"{min(vals):+.0f}% to {max(vals):+.0f}% of a step (median "
            f"{statistics.median(vals):+.0f}%, {len(vals)} layers; noise ±11%)")


def _first_choice(trained, keeps, matched, base) -> str:
    """The rule of the table's first column: the best-trained layer that matches the task;
    else the best-trained that keeps its symmetries; and no normalization when that trained
    worse than none."""
    for pool, why in ((matched, "matches the task"), (keeps, "keeps the symmetries")):
        got = [(n, v) for n, v in trained if n in pool]
        if got:
            n, v = got[0]
            if v > base:
                return (f"no normalization ({base:.3g}; the best layer that {why}, "
                        f"{_layer(n)}, reached {v:.3g})")
            return f"{_layer(n)} ({v:.3g}; {why})"
    return "no measurement here"


def row(title, kind, task, exp, metric, audit, bench) -> tuple[list[str], list[str]]:
    """One decision-table row (features and task, first choice, trained best, cost, sources)
    and its detail lines (which layers keep the symmetries, which match the task)."""
    members = _members(kind)
    keeps, matched = [], []
    for n in members:
        a = audit.get(n)
        if a is None:
            continue
        v = a["verdicts"][task]
        if not [p for p in v["violated"] if p in SYMMETRY]:
            keeps.append(n)
        if v["matched"]:
            matched.append(n)
    trained, base = _trained(exp, kind, members)
    best = ", ".join(f"{_layer(n)} {v:.3g}" + ("" if n in keeps else " (breaks a symmetry)")
                     for n, v in trained[:3]) or "not trained here"
    if trained:
        best += f"; no norm {base:.3g}; {len(trained)} layers trained"
    sources = [_link(f"{RES}/survey_audit/table.json"), _link(f"{RES}/{exp}/results.json"),
               _link(f"{RES}/bench/results.json")]
    cells = [title, _first_choice(trained, keeps, matched, base), f"{metric}: {best}",
             _cost(keeps, bench), ", ".join(sources)]
    detail = [f"### {title}", "",
              f"- **Keep the task's symmetries** (`{task}`): "
              + (", ".join(_layer(n) for n in keeps) or "none"),
              "- **Match the task** (Definition 3): "
              + (", ".join(_layer(n) for n in matched) or "none"),
              f"- **Trained here** ({metric}, best first): "
              + (", ".join(f"{_layer(n)} {v:.3g}" for n, v in trained) or "none")
              + (f"; no normalization {base:.3g}" if trained else ""), ""]
    return cells, detail


def _notes(audit: dict) -> list[str]:
    out = []
    comp = _read(f"{RES}/norm_comparison/results.json")
    if comp:
        v = comp["results"]["verdicts"]
        out.append("- **GeoNorm against ScaleNorm and none (GeoNorm paper, Figure 5):** "
                   + "; ".join(f"{k.replace('_', ' ')}: {x['status']}" for k, x in v.items())
                   + f" (`{comp['command']}`, preset `{comp['preset']}`; "
                   + _link(f"{RES}/norm_comparison/results.json") + ").")
    large = _read(f"{RES}/large_n/results.json")
    if large:
        runs = "; ".join(f"`{r['norm'] or 'none'}` test MSE {r['test_mse']:.3g}"
                         for r in large["runs"])
        out.append(f"- **Large N (N = {large['particles']}, kNN):** {runs} "
                   f"(`{large['command']}`; " + _link(f"{RES}/large_n/results.json") + ").")
    inst = _read(f"{RES}/instability/results.json")
    if inst:
        v = inst["results"]["verdicts"]
        out.append(f"- **Does the vanilla EGNN explode (GeoNorm paper, Figure 2)?** "
                   f"{v['status']} at preset `{inst['preset']}` ("
                   + _link(f"{RES}/instability/results.json") + ").")
    bc = _read(f"{RES}/batch_correlation/results.json")
    if bc:
        dep = [n for n, a in audit.items() if a["properties"].get("batch", {}).get("verdict")
               == "broken"]
        out.append("- **Batch statistics couple samples** (the survey's Case 1): the audit "
                   "marks " + ", ".join(_layer(n) for n in dep) + " batch-dependent in "
                   "training mode; in a trained GemNet-T they change one molecule's energy "
                   "when another molecule of the batch moves ("
                   + _link(f"{RES}/batch_correlation/results.json") + "). Avoid them for "
                   "molecules, or use their eval mode.")
    md = _read(f"{RES}/md_stability/results.json")
    if md:
        out.append("- **MD stability:** see [MD stability](../experiments/md_stability.md) ("
                   + _link(f"{RES}/md_stability/results.json") + ").")
    else:
        out.append("- **MD stability:** not yet in the committed results "
                   "(`python -m experiments.md_stability --preset cpu`).")
    return out


def page() -> dict[str, str]:
    """``{"guide/choosing.md": text}``."""
    audit = {r["name"]: r for r in _read(f"{RES}/survey_audit/table.json")["layers"]}
    bench = {r["norm"]: r for r in _read(f"{RES}/bench/results.json")["norms"]}
    text = [
        "# Choosing a normalization", "",
        "A decision table built from what this project measured, regenerated by "
        "`python docs/gen.py` from the committed result files, each linked from its row. "
        "Columns:", "",
        "- **first choice here**: the best-trained layer that *matches the task* (the "
        "survey's Definition 3 read strictly: it keeps the task's symmetries and discards no "
        "quantity the task depends on, such as the global or per-node scale); if none was "
        "trained, the best-trained layer that *keeps the task's symmetries* (no broken "
        "equivariance, batch, padding or replication probe in the audit); and no "
        "normalization where that layer trained worse than none;",
        "- **trained best here**: the three lowest errors of that kind in the norm zoos "
        "(N-body: EGNN test MSE, `norm_zoo`; molecules: Allegro force MAE, "
        "`survey_case_studies`), beside the model without a normalization. These are small "
        "`cpu`-preset runs with one seed: differences of a few per cent are within "
        "seed-to-seed noise;",
        "- **cost**: the layers that keep the symmetries, inside a full EGNN training step "
        "(`geonorm-jax bench`).", "",
        "| features and task | first choice here | trained best here | cost | sources |",
        "|---|---|---|---|---|",
    ]
    details = []
    for spec in ROWS:
        cells, detail = row(*spec, audit, bench)
        text.append("| " + " | ".join(cells) + " |")
        details += detail
    text += ["", "## Per row: which layers keep the symmetries, which match", ""] + details
    text += ["", "## What else the measurements say", ""] + _notes(audit)
    md = "md-energy-forces"
    text += ["", "## Verdicts by layer", "",
             "Why a layer fails a task (the audit's violated probes): "
             + ", ".join(f"{_layer(n)} ({describe_violations(a['verdicts'][md]['violated'])})"
                         for n, a in audit.items()
                         if not a["verdicts"].get(md, {}).get("matched", True)
                         and a["kind"] != "weights")
             + " for `md-energy-forces`; every page of the [layer catalogue](../layers/index.md) "
             "lists each task's verdict.", ""]
    return {"guide/choosing.md": "\n".join(text).rstrip() + "\n"}
