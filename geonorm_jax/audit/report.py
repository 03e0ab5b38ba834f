"""Render audit results as a Markdown table, plain text, or JSON."""

from __future__ import annotations

import json

from geonorm_jax.audit.probes import BROKEN_TOL, HOLDS_TOL, INVARIANCE_PROBES, PROBES

__all__ = [
    "cell",
    "to_markdown",
    "to_json",
    "to_text",
    "LEGEND",
    "VIOLATION_LABELS",
    "describe_violations",
]

_HEADERS = {
    "SO3": "SO(3)", "O3": "O(3)", "translation": "transl.", "permutation": "perm.",
    "batch": "batch indep.", "padding": "padding indep.", "replication": "replication",
    "scale": "inv. scale", "shift": "inv. shift", "node_scale": "inv. node scale",
    "radial": "inv. radial",
}

# How a violated condition of the survey's Definition 3 is named in a verdict cell: a broken
# symmetry by its group, an introduced invariance by "inv. <quantity>".
VIOLATION_LABELS = {
    "SO3": "SO(3)", "O3": "O(3)", "translation": "translation", "permutation": "permutation",
    "batch": "batch-dependent", "padding": "padding-dependent",
    "replication": "not size-consistent", "scale": "inv. scale", "shift": "inv. shift",
    "node_scale": "inv. node scale", "radial": "inv. radial",
}


def describe_violations(violated) -> str:
    """The probe names in ``violated`` (e.g. ``AuditResult.violated``) as one comma-separated
    label list, ``"SO(3), inv. scale"`` (:data:`VIOLATION_LABELS`; unknown names as given)."""
    return ", ".join(VIOLATION_LABELS.get(k, k) for k in violated)

LEGEND = (
    f"Symmetry columns (SO(3) ... replication): ✓ holds (worst relative error < {HOLDS_TOL:g}), "
    f"✗ broken (> {BROKEN_TOL:g}), ≈ in between; ○ holds trivially (the input kind does not "
    "transform: scalar features under E(3), vectors under translation); n/a does not apply; "
    "'err' the layer cannot run the probe (see JSON). Invariance columns (inv. ...): **inv** the "
    f"layer discards that quantity (relative output change < {HOLDS_TOL:g} under the change), "
    f"· it keeps it (> {BROKEN_TOL:g}), ≈ in between. Numbers are the worst relative error "
    "(symmetries) or the largest relative output change (invariances) over 3 random inputs in "
    "float64 with trained-like parameters; batch is measured in training mode, and in eval mode "
    "in brackets for layers with running state."
)


def _num(v) -> str:
    if v is None:
        return ""
    if v == float("inf"):
        return "inf"
    return f"{v:.2g}" if v >= 0.01 else f"{v:.0e}"


def cell(r) -> str:
    """One table cell for a :class:`~geonorm_jax.audit.probes.ProbeResult`."""
    v = r.verdict
    if v == "n/a":
        return "n/a"
    if v == "trivial":
        return "○"
    if v == "error":
        return "✗ err"
    mark = {"holds": "✓", "approx": "≈", "broken": "✗",
            "invariant": "**inv**", "partial": "≈", "sensitive": "·"}[v]
    s = f"{mark} {_num(r.value)}"
    if "eval" in r.extra:
        e = r.extra["eval"]
        s += f" (eval {'✓' if e < HOLDS_TOL else '✗'} {_num(e)})"
    return s


def to_markdown(results, *, task: str | None = None, formula: bool = False,
                probes=PROBES) -> str:
    """A Markdown table: one row per layer, one column per probe, a verdict column with a
    task, and the survey's formula beside the layer when ``formula=True``."""
    head = ["layer", "kind"] + (["formula (survey / paper)"] if formula else [])
    head += [_HEADERS[p] for p in probes]
    if task is not None:
        head.append(f"match: {task}")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in results:
        row = [f"`{res.name}`", res.kind]
        if formula:
            f = res.info.formula if res.info is not None else ""
            row.append(f"`{f}`" if f else "")
        row += [cell(res.properties[p]) if p in res.properties else "" for p in probes]
        if task is not None:
            if res.matched is None:
                row.append("n/a")
            elif res.matched:
                row.append("✓ matched")
            else:
                row.append("✗ " + describe_violations(res.violated))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def to_text(results, *, task: str | None = None, probes=PROBES) -> str:
    """A plain-text table for the terminal (symbols only, values in the JSON)."""
    sym = {"holds": "ok", "approx": "~", "broken": "X", "trivial": "o", "n/a": "-",
           "error": "ERR", "invariant": "INV", "partial": "~", "sensitive": "."}
    w = max(len(r.name) for r in results)
    cols = [(_HEADERS[p].replace("inv. ", "i:"), p) for p in probes]
    header = f"{'layer':<{w}}  {'kind':<11} " + " ".join(f"{h:>8.8}" for h, _ in cols)
    lines = [header]
    for r in results:
        cells = []
        for _, p in cols:
            pr = r.properties.get(p)
            if pr is None:
                cells.append(f"{'':>8}")
                continue
            s = sym[pr.verdict]
            if pr.verdict not in ("n/a", "trivial", "error") and pr.value is not None:
                s = f"{s} {_num(pr.value)}"
            if p == "batch" and "eval" in pr.extra:
                s += "/e" + ("ok" if pr.extra["eval"] < HOLDS_TOL else "X")
            cells.append(f"{s:>8.8}")
        line = f"{r.name:<{w}}  {r.kind:<11} " + " ".join(cells)
        if task is not None:
            line += "  " + ("-" if r.matched is None else "MATCH" if r.matched else
                            "mismatch: " + describe_violations(r.violated))
        lines.append(line)
    lines.append(
        "ok = symmetry holds, X = broken, ~ = approximate, o = trivial, - = n/a; "
        "INV = the layer is invariant to (discards) that quantity, . = keeps it; "
        "b/e = batch independence in eval mode")
    return "\n".join(lines)


def to_json(results, *, meta: dict | None = None) -> str:
    """Every number, as JSON: ``{"meta": ..., "layers": [AuditResult.to_dict(), ...]}``."""
    payload = {
        "meta": {
            "holds_tol": HOLDS_TOL,
            "broken_tol": BROKEN_TOL,
            "invariance_probes": list(INVARIANCE_PROBES),
            **(meta or {}),
        },
        "layers": [r.to_dict() for r in results],
    }
    return json.dumps(payload, indent=1, default=_default)


def _default(o):
    if hasattr(o, "item"):
        return o.item()
    return str(o)
