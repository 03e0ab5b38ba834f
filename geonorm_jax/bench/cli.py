"""``geonorm-jax bench``: run the benchmark suite, print the tables, write the results."""

from __future__ import annotations

import argparse
import shlex
import sys

__all__ = ["add_parser", "run_bench"]


def add_parser(subparsers) -> None:
    """Register ``bench``."""
    from geonorm_jax.bench.suite import PRESETS, SECTIONS

    p = subparsers.add_parser(
        "bench",
        help="benchmark: train-step time, FLOP rate, roofline and memory vs N; norm cost; "
             "data speed",
        description=(
            "Time the EGNN train step (dense and kNN edge list) over N = 5..1000 with the "
            "achieved fraction of the square-matmul rate and peak memory, XLA's FLOPs and "
            "bytes of each compiled step against the measured matmul and array-copy rates "
            "(roofline), the EGNN's edge execution plan, fit how step time "
            "grows with N, measure each catalogue norm's cost inside a full step and the N-body "
            "generation throughput. Prints Markdown tables; writes the results JSON (default "
            "experiments/results/bench/results.json on CPU, results_<backend>.json otherwise) "
            "and the scaling plot next to it. Each model case runs in a fresh process."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--preset", choices=list(PRESETS), default=None,
                   help="sizes: quick (seconds), cpu (about 25 min on 2 cores), gpu "
                        "(default: gpu on an accelerator, cpu otherwise)")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=None,
                   help="what to run (default: the preset's sections; 'epoch' needs the "
                        "N = 100 data set)")
    p.add_argument("--cases", nargs="+", metavar="NAME", default=None,
                   help="only these model cases (e.g. target-dense-n100-b50-l5)")
    p.add_argument("--out", metavar="JSON", default=None, help="results file")
    p.add_argument("--plot", metavar="PNG", default=None,
                   help="scaling plot (default: scaling*.png next to the results)")
    p.add_argument("--resume", action="store_true",
                   help="keep finished rows of an interrupted run of the same preset in --out")
    p.add_argument("--in-process", action="store_true",
                   help="run every case in this process (faster start; peak RSS is then the "
                        "maximum so far, not per case)")
    p.set_defaults(func=run_bench)


def run_bench(args) -> int:
    import jax

    from geonorm_jax.bench.suite import format_tables, run_suite

    preset = args.preset or ("cpu" if jax.default_backend() == "cpu" else "gpu")
    extra = sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] == "bench" else []
    command = " ".join(["geonorm-jax", "bench", *map(shlex.quote, extra)])
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    results = run_suite(preset, sections=args.sections, out=args.out, plot=args.plot,
                        resume=args.resume, subprocesses=not args.in_process,
                        only=args.cases, command=command, log=log)
    print(format_tables(results))
    return 0
