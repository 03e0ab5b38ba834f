"""The cost of each catalogue normalization inside a full EGNN training step.

For a base :class:`~geonorm_jax.bench.model.ModelCase` (vanilla EGNN), every catalogue layer
that the EGNN can take is put at its place (features -> ``feature``: ``h`` after each layer;
coordinates -> ``coord``: positions after each layer but the last; vectors -> ``update``:
the aggregated coordinate update) and the whole step (forward, backward, Adam, running
statistics) is timed against the vanilla step. To cancel drift in a noisy machine, the two
steps alternate, and the cost is the median of the paired ratios ``t_norm / t_none``:
``cost_percent = 100 (median ratio - 1)``. ``cost_percent_best`` uses the best time of each.

Layers of kind ``weights`` (weight, spectral and scaled-weight-standardised reparametrisations)
have no place in the EGNN, ``message_norm`` needs a message input the EGNN layer does not
expose, and layers that need atom types (``species_neighbor_norm``) have none to read; they are
reported with the reason instead of a number.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable

__all__ = ["norm_cost", "placeable"]


def placeable(name: str) -> str | None:
    """None if the EGNN can take catalogue layer ``name``; otherwise the reason."""
    from geonorm_jax.norms import catalog

    info = catalog.get(name)
    if info.kind == "weights":
        return "kind 'weights': a reparametrisation of weight matrices, no place in the EGNN"
    if name == "message_norm":
        return "needs the message m_ij as a second input; the EGNN layer has no such place"
    if "species" in info.context:
        return "needs per-node atom types (species=); the EGNN's particles have none"
    return None


def _compiled(case):
    """``(run, compile_s)``: ``run()`` does one warm step and returns its seconds."""
    from geonorm_jax.bench.model import compile_case

    c = compile_case(case)
    c.run()  # warm
    return (lambda: c.run()[0]), c.compile_s


def norm_cost(base, names: list[str] | None = None, *, pairs: int = 8,
              on_row: Callable[[dict], None] | None = None) -> list[dict]:
    """One row per catalogue layer (all of them when ``names`` is None).

    Args:
      base: the vanilla :class:`~geonorm_jax.bench.model.ModelCase` (its ``norm`` is ignored).
      names: catalogue names to measure.
      pairs: alternating (vanilla, normalized) step pairs per layer.
      on_row: called with each row as it is finished (for incremental saving).

    Returns:
      rows with ``norm``, ``kind``, ``place``, ``step_ms_none``, ``step_ms_norm`` (best),
      ``cost_percent`` (median paired ratio), ``cost_percent_best``, ``compile_s``; or
      ``skipped`` (the reason) / ``error``.
    """
    from geonorm_jax.models import EGNN_SPEC
    from geonorm_jax.norms import catalog

    names = list(catalog.names()) if names is None else list(names)
    none_run, _ = _compiled(dataclasses.replace(base, norm=None, norm_place=None))
    rows = []
    for name in names:
        info = catalog.get(name)
        row = {"norm": name, "kind": info.kind, "nodes": base.nodes, "batch": base.batch,
               "layers": base.layers, "hidden": base.hidden, "graph": base.graph}
        reason = placeable(name)
        if reason:
            row["skipped"] = reason
        else:
            place = EGNN_SPEC.norm_place(info.kind, name)
            row["place"] = place
            try:
                run, compile_s = _compiled(dataclasses.replace(base, norm=name, norm_place=place))
            except Exception as e:  # noqa: BLE001 - record and go on with the next layer
                row["error"] = f"{type(e).__name__}: {e}"[:300]
            else:
                t_none, t_norm = [], []
                for _ in range(pairs):
                    t_none.append(none_run())
                    t_norm.append(run())
                ratio = statistics.median(b / a for a, b in zip(t_none, t_norm, strict=True))
                row.update(
                    step_ms_none=1e3 * min(t_none),
                    step_ms_norm=1e3 * min(t_norm),
                    cost_percent=100.0 * (ratio - 1.0),
                    cost_percent_best=100.0 * (min(t_norm) / min(t_none) - 1.0),
                    compile_s=compile_s,
                    pairs=pairs,
                )
        rows.append(row)
        if on_row:
            on_row(row)
    return rows
