"""``geonorm-jax norms``: list the catalogue."""

from __future__ import annotations

import argparse
import json

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "norms",
        help="list every normalization layer in the catalogue",
        description="List every normalization layer with its kind, paper, formula and "
        "reduced axes (b=batch, x=nodes, v=channels, d=spatial).",
    )
    p.add_argument("--kind", choices=["features", "vectors", "coordinates", "weights"],
                   help="only layers of this kind")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geonorm_jax.norms.catalog import CATALOG

    rows = [e for e in CATALOG if args.kind is None or e.kind == args.kind]
    if args.json:
        print(json.dumps([
            {"name": e.name, "kind": e.kind, "family": e.family, "paper": e.paper,
             "formula": e.formula, "reduced_axes": e.reduced_axes, "params": list(e.params),
             "running_state": list(e.running_state), "context": list(e.context)}
            for e in rows], indent=2))
        return 0
    w = max(len(e.name) for e in rows)
    print(f"{'name':<{w}}  {'kind':<11}  {'reduces':<12}  paper / formula")
    for e in rows:
        print(f"{e.name:<{w}}  {e.kind:<11}  {e.reduced_axes:<12}  {e.paper}")
        print(f"{'':<{w}}  {'':<11}  {'':<12}    {e.formula}")
    print(f"\n{len(rows)} layers")
    return 0
