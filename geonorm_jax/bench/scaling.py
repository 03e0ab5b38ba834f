r"""How the step time grows with N: a power-law fit and the log-log plot.

The fit is least squares of :math:`\log t = a + p \log N` over the scaling rows of one graph
(same ``B``, ``L``, ``H``). Expectations: the dense graph does :math:`O(B N^2)` edge work, so
:math:`p \to 2` once the edge work dominates; the kNN edge list does :math:`O(B N k)`, so
:math:`p \to 1`. At small ``N`` fixed per-step costs (dispatch, per-node work, Adam) flatten
the curve, so the exponent is also fitted over ``N >= n_min`` only.
"""

from __future__ import annotations

import math
from pathlib import Path

__all__ = ["fit_exponent", "scaling_fits", "plot_scaling", "EXPECTED"]

EXPECTED = {"dense": 2.0, "knn": 1.0}


def fit_exponent(nodes, times) -> float | None:
    """Slope ``p`` of the least-squares line through ``(log N, log t)`` (None if < 2 points)."""
    pts = [(math.log(n), math.log(t)) for n, t in zip(nodes, times, strict=True) if t and t > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def scaling_fits(rows: list[dict], n_min: int = 100) -> dict:
    """Per graph: exponent over all N and over ``N >= n_min``, with the expectation."""
    out = {}
    for graph in ("dense", "knn"):
        sel = sorted((r for r in rows if r.get("group") == "scaling" and r["graph"] == graph
                      and "step_ms_best" in r), key=lambda r: r["nodes"])
        if not sel:
            continue
        nodes = [r["nodes"] for r in sel]
        times = [r["step_ms_best"] for r in sel]
        large = [(n, t) for n, t in zip(nodes, times, strict=True) if n >= n_min]
        out[graph] = {
            "nodes": nodes,
            "step_ms": times,
            "exponent_all": fit_exponent(nodes, times),
            "exponent_large": fit_exponent(*zip(*large, strict=True)) if len(large) >= 2 else None,
            "n_min": n_min,
            "expected": EXPECTED[graph],
        }
    return out


def plot_scaling(fits: dict, path: str | Path, title: str = "") -> Path:
    """Log-log step time vs N for each graph, with ``N^2`` and ``N`` guides through the
    largest point; written atomically as PNG."""
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from geonorm_jax._io import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=120)
    colours = {"dense": "tab:blue", "knn": "tab:red"}
    labels = {"dense": "dense (fully connected)", "knn": "kNN edge list"}
    for graph, fit in fits.items():
        n, t = fit["nodes"], fit["step_ms"]
        p = fit["exponent_large"] if fit["exponent_large"] is not None else fit["exponent_all"]
        fitted = "" if p is None else f": fitted N^{p:.2f}"
        ax.loglog(n, t, "o-", color=colours[graph], label=labels[graph] + fitted)
        e = fit["expected"]
        guide = [t[-1] * (x / n[-1]) ** e for x in n]
        ax.loglog(n, guide, ":", color=colours[graph], alpha=0.6, label=f"O(N^{e:g}) guide")
    ax.set_xlabel("particles N")
    ax.set_ylabel("train step (ms, best)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
