r"""XLA's cost of a compiled step, and where its achieved rates sit under the machine's roofs.

:func:`compiled_cost` reads ``Compiled.cost_analysis()`` (XLA's own count of the step's
floating-point operations and of the bytes its operations access, after fusion), and
:func:`roofline` compares the rates a step achieves with the two roofs measured on the same
machine by :class:`~geonorm_jax.bench.machine.MatmulTimer` (square float32 matmul, FLOP/s)
and :class:`~geonorm_jax.bench.machine.CopyTimer` (large-array copy, bytes/s):

.. math::

    \text{fraction of matmul} = \frac{F / t}{R_\text{matmul}}, \qquad
    \text{fraction of copy} = \frac{Q / t}{R_\text{copy}}, \qquad
    I = F / Q

with ``F`` the step's FLOPs, ``Q`` its bytes accessed, ``t`` its time and ``I`` its arithmetic
intensity (FLOP/byte). A step with ``I`` below the ridge ``R_matmul / R_copy`` is bound by
memory traffic (its best possible time is ``Q / R_copy``), above it by compute
(``F / R_matmul``); ``roofline_fraction`` is that best possible time over the measured one.

XLA counts what it runs: recomputation (``jax.checkpoint`` of chunked edges, ``remat``) is
counted, and on the CPU a ``while`` loop's body (``lax.map``/``lax.scan`` over edge chunks)
is counted once, not once per iteration, so for chunked steps the count is a lower bound;
the bench therefore counts a chunked step on its unchunked twin
(:func:`~geonorm_jax.bench.model.step_cost`; the analytic count,
:func:`~geonorm_jax.bench.model.step_flops`, does not have that blind spot either).
"""

from __future__ import annotations

from typing import Any

__all__ = ["compiled_cost", "flop_rate", "roofline"]


def compiled_cost(compiled: Any) -> dict[str, float]:
    """``{"xla_gflop", "xla_gbytes"}`` of ``compiled.cost_analysis()`` (those reported, > 0;
    empty where the backend reports nothing)."""
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
    except Exception:  # noqa: BLE001 - not every backend reports it
        cost = None
    out = {}
    for key, name in (("xla_gflop", "flops"), ("xla_gbytes", "bytes accessed")):
        value = cost.get(name) if cost else None
        if value is not None and value > 0:
            out[key] = float(value) / 1e9
    return out


def flop_rate(flops: float, seconds: float) -> float:
    """FLOP/s (or any count per second) of ``flops`` done in ``seconds``; ValueError unless
    ``seconds > 0``."""
    if not seconds > 0:
        raise ValueError(f"seconds: expected > 0; received {seconds}")
    return flops / seconds


def roofline(cost: dict, seconds: float, matmul_rate: float | None = None,
             copy_rate: float | None = None) -> dict[str, float]:
    """Achieved rates of a step of ``seconds`` with XLA cost ``cost`` (:func:`compiled_cost`)
    and their fractions of the measured roofs (FLOP/s, bytes/s; None: not reported).

    Returns (keys present where their inputs are): ``xla_gflops_per_s``,
    ``xla_gbytes_per_s``, ``xla_fraction_of_matmul``, ``xla_fraction_of_copy``,
    ``intensity_flop_per_byte``, ``bound`` (``"compute"``/``"memory"``) and
    ``roofline_fraction`` (best possible time under the roofs over ``seconds``).
    """
    out: dict[str, Any] = {}
    flops = cost.get("xla_gflop", 0.0) * 1e9
    nbytes = cost.get("xla_gbytes", 0.0) * 1e9
    if flops:
        out["xla_gflops_per_s"] = flop_rate(flops, seconds) / 1e9
        if matmul_rate:
            out["xla_fraction_of_matmul"] = flop_rate(flops, seconds) / matmul_rate
    if nbytes:
        out["xla_gbytes_per_s"] = flop_rate(nbytes, seconds) / 1e9
        if copy_rate:
            out["xla_fraction_of_copy"] = flop_rate(nbytes, seconds) / copy_rate
    if flops and nbytes and matmul_rate and copy_rate:
        out["intensity_flop_per_byte"] = flops / nbytes
        compute_s, memory_s = flops / matmul_rate, nbytes / copy_rate
        out["bound"] = "compute" if compute_s >= memory_s else "memory"
        out["roofline_fraction"] = max(compute_s, memory_s) / seconds
    return out
