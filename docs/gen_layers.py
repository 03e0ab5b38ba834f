"""The layer pages: one page per catalogue family, generated from the catalogue.

Each layer gets its formula, source paper, tensor shapes, reduced axes, parameters, the
symmetry measurements and task verdicts of the audit
(``experiments/results/survey_audit/table.json``) and its measured cost inside a training step
(``experiments/results/bench/results.json``, section ``norms``). Called by ``docs/gen.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from geonorm_jax.audit.report import LEGEND, cell, describe_violations
from geonorm_jax.norms import catalog

ROOT = Path(__file__).resolve().parents[1]
AUDIT = "experiments/results/survey_audit/table.json"
BENCH = "experiments/results/bench/results.json"

#: The catalogue's families (page slug, module, title, summary), in the catalogue's order.
FAMILIES = catalog.FAMILIES

SYMMETRY_PROBES = ("SO3", "O3", "translation", "permutation", "batch", "padding", "replication")
INVARIANCE_PROBES = ("scale", "shift", "node_scale", "radial")
PROBE_LABELS = {"SO3": "SO(3)", "O3": "O(3)", "translation": "transl.", "permutation": "perm.",
                "batch": "batch indep.", "padding": "padding indep.",
                "replication": "replication", "scale": "inv. scale", "shift": "inv. shift",
                "node_scale": "inv. node scale", "radial": "inv. radial"}

_SHAPES = {
    "features": "`x [batch, nodes, channels]`, `mask [batch, nodes]` (bool, optional)",
    "coordinates": "`x [batch, nodes, 3]`, `mask [batch, nodes]` (bool, optional)",
    "weights": "a kernel `[fan_in, fan_out]` (the layer returns the reparametrised kernel)",
    "vectors": "`x [batch, nodes, channels, 3]` (read as `channels x 1o`) or an "
               "`e3nn.IrrepsArray [batch, nodes, irreps]`, `mask [batch, nodes]`",
}
_SPECIAL_SHAPES = {
    "tensor_norm": "`X [batch, nodes, channels, 3, 3]` (TensorNet's rank-2 tensors), "
                   "`mask [batch, nodes]`",
    "mv_layer_norm": "multivectors `[batch, nodes, channels, 2^n]` (plain vectors "
                     "`[..., 3]` are read as their grade-1 part), `mask [batch, nodes]`",
    "grade_norm": "multivectors `[batch, nodes, channels, 2^n]`, `mask [batch, nodes]`",
    "gatr_layer_norm": "projective-GA multivectors `[batch, nodes, channels, 16]`, "
                       "`mask [batch, nodes]`",
}


def family_of(info) -> str:
    """The page slug of the family module that registers ``info``."""
    for family in FAMILIES:
        if any(e.name == info.name for e in family.module.CATALOG_ENTRIES):
            return family.slug
    raise ValueError(f"family_of: expected {info.name!r} in one of the family modules "
                     f"{[f.module.__name__ for f in FAMILIES]}; received none")


def _esc(text: str) -> str:
    """``text`` with square brackets escaped (the survey's citation numbers ``[26]`` would
    read as Markdown references)."""
    return text.replace("[", "\\[").replace("]", "\\]")


def _load(rel: str) -> dict:
    return json.loads((ROOT / rel).read_text())


def shapes(info) -> str:
    """The input shapes of a layer, in words."""
    text = _SPECIAL_SHAPES.get(info.name, _SHAPES.get(info.kind, "see the docstring"))
    if "flat" in info.layouts and info.kind != "weights":
        text += ("; or the flat layout `x [total_nodes, ...]` with `segment_ids=` and "
                 "`num_graphs=`, or `n_node=` (see [Layouts and masks](../concepts/layouts.md))")
    return text


def _probe_row(props: dict, probes) -> list[str]:
    return [cell(SimpleNamespace(**props[p])) if p in props else "" for p in probes]


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            + ["| " + " | ".join(r) + " |" for r in rows])


def _cost(row: dict | None, finished: str) -> str:
    if row is None:
        return "not measured (not in the benchmark's results)."
    if "cost_percent" not in row:
        return f"not measured: {row['skipped']}."
    return (f"**{row['cost_percent']:+.0f}%** of a full training step (dense EGNN, "
            f"N = {row['nodes']}, B = {row['batch']}, L = {row['layers']}, hidden "
            f"{row['hidden']}, at the `{row['place']}` place; median of {row['pairs']} paired "
            f"vanilla/normalized step ratios; `geonorm-jax bench`, {finished[:10]}). At this "
            f"size the per-edge work dominates, and values within about ±11% are noise "
            f"([Performance](../performance.md)).")


def layer_section(info, audit: dict | None, bench: dict | None, finished: str) -> list[str]:
    """The Markdown of one layer."""
    ctor = f"{info.constructor.__module__}.{info.constructor.__name__}"
    out = [f"## `{info.name}`", "",
           f"**Paper:** {_esc(info.paper)}" + (f" (survey Table 1 row: {_esc(info.survey_row)})"
                                          if info.survey_row else ""), "",
           f"**Formula:** `{info.formula}`", "",
           f"**Built by:** [`{ctor}`][{ctor}]"
           + (f" with `{', '.join(f'{k}={v!r}' for k, v in info.kwargs.items())}`"
              if info.kwargs else "")
           + f"; `gj.norms.catalog.make({info.name!r})`.", "",
           f"- **Kind:** `{info.kind}`",
           f"- **Input:** {shapes(info)}; output: the same shape as the input.",
           f"- **Reduced axes** (b = batch, x = nodes, v = channels, d = spatial "
           f"components): {info.reduced_axes}",
           f"- **Learnable parameters:** {', '.join(f'`{p}`' for p in info.params) or 'none'}; "
           f"**running state:** {', '.join(f'`{s}`' for s in info.running_state) or 'none'}",
           f"- **Context arguments of `apply`:** "
           f"{', '.join(f'`{c}=`' for c in info.context) or 'none'}",
           f"- **Claimed symmetries:** {', '.join(info.symmetries or ()) or 'none'}",
           ""]
    if info.notes:
        out += [f"**Notes:** {_esc(info.notes)}", ""]
    out += ["**Measured symmetries** ([audit](../audit.md), "
            f"[`table.json`](../{AUDIT})):", ""]
    if audit is None:
        out += ["Not in the committed audit table; run `python experiments/survey_audit/run.py`.",
                ""]
    else:
        for probes in (SYMMETRY_PROBES, INVARIANCE_PROBES):
            out += _table([PROBE_LABELS[p] for p in probes],
                          [_probe_row(audit["properties"], probes)]) + [""]
        verdicts = audit.get("verdicts") or {}
        out += ["**Geometric match (survey, Definition 3) per task:** "
                + "; ".join(f"`{t}` " + ("✓" if v["matched"] else
                                         "✗ " + describe_violations(v["violated"]))
                            for t, v in verdicts.items()) + ".", ""]
    out += [f"**Cost** ([`bench/results.json`](../{BENCH})): {_cost(bench, finished)}", ""]
    return out


def pages() -> dict[str, str]:
    """``{path under docs/: text}`` for the family pages and the catalogue index."""
    audit_doc, bench_doc = _load(AUDIT), _load(BENCH)
    audit = {r["name"]: r for r in audit_doc["layers"]}
    bench = {r["norm"]: r for r in bench_doc["norms"]}
    by_family: dict[str, list] = {f.slug: [] for f in FAMILIES}
    for info in catalog.CATALOG:
        by_family[family_of(info)].append(info)
    out: dict[str, str] = {}
    index = ["# Layer catalogue", "",
             f"Every layer of the catalogue ({len(catalog.CATALOG)} in all), one page per "
             "family, generated from `geonorm_jax/norms/catalog.py`, the audit's measurements "
             "and the benchmark by `python docs/gen.py`. How the catalogue is organised: "
             "[The catalogue](../concepts/catalogue.md); which layer to pick: "
             "[Choosing a normalization](../guide/choosing.md).", "",
             LEGEND, ""]
    rows = []
    for slug, module, title, blurb in FAMILIES:
        infos = by_family[slug]
        text = [f"# {title}", "", blurb, "",
                f"{len(infos)} layers, registered in `{module.__name__}`.", "",
                '??? info "Symbols in the measured tables"', "", "    " + LEGEND, ""]
        for info in infos:
            text += layer_section(info, audit.get(info.name), bench.get(info.name),
                                  bench_doc["finished"])
            rows.append([f"[`{info.name}`]({slug}.md#{info.name})", title, info.kind,
                         _esc(info.paper).replace("|", "/")])
        out[f"layers/{slug}.md"] = "\n".join(text).rstrip() + "\n"
    index += _table(["layer", "family", "kind", "paper"], rows)
    out["layers/index.md"] = "\n".join(index).rstrip() + "\n"
    return out


def nav() -> list[tuple[str, str]]:
    """``(title, path)`` of the family pages, in order."""
    return [(title, f"layers/{slug}.md") for slug, _, title, _ in FAMILIES]
