"""``geonorm-jax audit``: the measured geometric-match table (the survey's Definition 3) for the
whole catalogue or selected layers; prints it and writes ``audit.md`` and ``audit.json``."""

from __future__ import annotations

import argparse
import pathlib
import time

from geonorm_jax._io import atomic_write_text

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    """Register the ``audit`` subcommand on ``subparsers`` (an argparse subparsers action)."""
    from geonorm_jax.audit.symmetries import TASK_SYMMETRIES

    p = subparsers.add_parser(
        "audit",
        help="measure every layer's symmetries and introduced invariances (Definition 3)",
        description="Measure, for every normalization layer in the catalogue, rotation / "
        "reflection / translation / permutation equivariance, batch and graph-size "
        "independence, and the invariances it introduces (scale, feature shift, per-node "
        "scale, radial distance). With --task, add the survey's geometric-match verdict. "
        "Prints a table and writes <out-dir>/audit.{md,json}.",
    )
    p.add_argument("--task", choices=sorted(TASK_SYMMETRIES),
                   help="add the match verdict for this task")
    p.add_argument("--model", metavar="NAME",
                   help="a registered model (`geonorm-jax models`): audit the layers that fit "
                        "one of its norm places, judged for its task's symmetry")
    p.add_argument("--kind", choices=["features", "vectors", "coordinates", "weights"],
                   help="only layers of this kind")
    p.add_argument("--only", nargs="+", metavar="NAME", help="only these catalogue names")
    p.add_argument("--inputs", type=int, default=3, help="random inputs per probe (default 3)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    p.add_argument("--out-dir", default="geonorm-audit",
                   help="where to write audit.md and audit.json (default ./geonorm-audit)")
    p.add_argument("--no-write", action="store_true", help="print only, write no files")
    p.add_argument("--markdown", action="store_true", help="print Markdown instead of text")
    p.set_defaults(func=run)


def _model_layers(name: str, entries: list, task: str | None) -> tuple[list, str]:
    """The catalogue ``entries`` that fit a place of registered model ``name`` (their kind is
    one the place accepts), and the symmetry of the model's task (``--task`` must agree)."""
    from geonorm_jax.models import registry

    spec = registry.get(name)
    symmetry = registry.TASKS[spec.task]
    if task is not None and task != symmetry:
        raise ValueError(f"--task {task} and --model {name}: the model's task {spec.task!r} has "
                         f"the symmetry {symmetry!r}; give one of them")
    kinds = {k for p in spec.placement.places for k in p.kinds}
    places = ", ".join(f"{p.name} ({'/'.join(p.kinds)})" for p in spec.placement.places)
    print(f"{name}: task {spec.task!r} ({symmetry}); norm places {places}")
    return [e for e in entries if e.kind in kinds], symmetry


def run(args: argparse.Namespace) -> int:
    """Run ``geonorm-jax audit`` with parsed ``args``; returns the exit status (0).

    Raises:
      ValueError: ``--inputs`` below 1, or ``--only`` / ``--kind`` select no layer.
    """
    import jax

    from geonorm_jax.audit import audit_table, to_json, to_markdown, to_text
    from geonorm_jax.audit.report import LEGEND
    from geonorm_jax.norms.catalog import CATALOG, get

    if args.inputs < 1:
        raise ValueError(f"--inputs: expected a positive integer; received {args.inputs}")
    entries = [get(n) for n in args.only] if args.only else list(CATALOG)
    entries = [e for e in entries if args.kind is None or e.kind == args.kind]
    if args.model is not None:
        entries, args.task = _model_layers(args.model, entries, args.task)
    if not entries:
        raise ValueError("no layer selected: check --only / --kind / --model")
    t0 = time.perf_counter()
    results = audit_table(entries, task=args.task, key=jax.random.PRNGKey(args.seed),
                          num_inputs=args.inputs)
    seconds = time.perf_counter() - t0
    if args.markdown:
        print(to_markdown(results, task=args.task))
        print("\n" + LEGEND)
    else:
        print(to_text(results, task=args.task))
    print(f"\n{len(results)} layers audited in {seconds:.1f} s (float64, {args.inputs} inputs)")
    if not args.no_write:
        out = pathlib.Path(args.out_dir)
        md = to_markdown(results, task=args.task, formula=True) + "\n\n" + LEGEND + "\n"
        atomic_write_text(out / "audit.md", md)
        meta = {"task": args.task, "seed": args.seed, "num_inputs": args.inputs,
                "seconds": round(seconds, 2)}
        atomic_write_text(out / "audit.json", to_json(results, meta=meta))
        print(f"wrote {out / 'audit.md'} and {out / 'audit.json'}")
    return 0
