"""Benchmark worker: ``python -m geonorm_jax.bench.worker KIND JSON``.

Runs one unit of the suite (``case``, ``norms``, ``data`` or ``epoch``) and prints each result
row as a line ``ROW {json}`` on stdout. The suite runs each model case in its own worker
process so that the process's peak RSS belongs to that case alone.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

__all__ = ["run", "main"]


def _epoch(payload: dict) -> dict:
    """Time one trainer epoch (after a compiling epoch) of a preset with overrides."""
    import jax

    from geonorm_jax.train import config as cfg
    from geonorm_jax.train import setup

    config = cfg.merge(cfg.preset(payload["preset"]), payload.get("overrides", {}))
    config = cfg.merge(config, {"train": {"epochs": 2}})
    t = time.perf_counter()
    s = setup.build(config)
    build_s = time.perf_counter() - t
    state = s.init_state()
    t = time.perf_counter()
    state, losses, _ = s.epoch_fn(state, s.data["train"])
    jax.block_until_ready(losses)
    first = time.perf_counter() - t
    t = time.perf_counter()
    state, losses, _ = s.epoch_fn(state, s.data["train"])
    jax.block_until_ready(losses)
    epoch_s = time.perf_counter() - t
    d, m, tr = config.data, config.model, config.train
    return {
        "preset": payload["preset"], "overrides": payload.get("overrides", {}),
        "description": (f"{payload['preset']}: N={d.particles}, {m.num_layers} layers, norm "
                        f"{m.norm}, {s.steps_per_epoch} steps of batch {tr.batch_size}, "
                        f"{len(tr.seeds)} seeds vmapped"),
        "steps_per_epoch": s.steps_per_epoch, "seeds": len(tr.seeds), "epoch_s": epoch_s,
        "compile_s": first - epoch_s, "setup_s": build_s,
        "finite": bool(jax.numpy.all(jax.numpy.isfinite(losses))),
    }


def run(kind: str, payload: dict, emit: Callable[[dict], None]) -> None:
    """Run one unit of work, calling ``emit(row)`` for every result row."""
    if kind == "case":
        from geonorm_jax.bench.model import ModelCase, run_case

        emit(run_case(ModelCase(**payload)))
    elif kind == "norms":
        from geonorm_jax.bench.model import ModelCase
        from geonorm_jax.bench.norm_cost import norm_cost

        norm_cost(ModelCase(**payload["base"]), payload["names"], pairs=payload["pairs"],
                  on_row=emit)
    elif kind == "data":
        from geonorm_jax.bench.data import generation_throughput

        kwargs = {k: v for k, v in payload.items() if k != "particles"}
        for n in payload["particles"]:
            for row in generation_throughput(particles=(n,), **kwargs):
                emit(row)
    elif kind == "epoch":
        emit(_epoch(payload))
    else:
        raise ValueError(f"kind: expected case, norms, data or epoch; received {kind!r}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m geonorm_jax.bench.worker KIND JSON", file=sys.stderr)
        return 2

    def emit(row: dict) -> None:
        print("ROW " + json.dumps(row), flush=True)

    run(argv[0], json.loads(argv[1]), emit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
