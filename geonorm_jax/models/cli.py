"""``geonorm-jax models``: list the registered models (:mod:`geonorm_jax.models.registry`)."""

from __future__ import annotations

import argparse
import json

__all__ = ["add_parser", "run", "import_plugins"]


def import_plugins(modules) -> None:
    """Import each module named in ``modules`` (``--import``), so that the models it registers
    are known (a module path such as ``my_package.my_model``, or a ``.py`` file).

    Raises:
      ValueError: a module that cannot be imported (named, with the reason).
    """
    import importlib.util
    import sys
    from pathlib import Path

    for name in modules or ():
        try:
            if name.endswith(".py"):
                path = Path(name)
                spec = importlib.util.spec_from_file_location(path.stem, path)
                if spec is None or not path.is_file():
                    raise FileNotFoundError(f"no such file: {name}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[path.stem] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(name)
        except (ImportError, OSError) as e:
            raise ValueError(f"--import {name}: cannot import it ({e})") from None


def add_import_flag(parser: argparse.ArgumentParser) -> None:
    """``--import MODULE`` (repeatable): modules that register models, imported first."""
    parser.add_argument("--import", dest="imports", action="append", metavar="MODULE",
                        default=[], help="import MODULE (a module path or a .py file) before "
                        "running, so that the models it registers are available; repeatable")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "models",
        help="list the registered models with their task, defaults and normalization places",
        description="List every registered model: its task, published defaults of the shared "
        "knobs (hidden, num_layers, cutoff), the places where a catalogue normalization can "
        "go (and the kinds each accepts), and its paper.",
    )
    p.add_argument("--task", choices=None, help="only models of this task (nbody, molecules)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_import_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geonorm_jax.models import registry

    import_plugins(args.imports)
    if args.task is not None and args.task not in registry.TASKS:
        raise ValueError(f"--task: expected one of {list(registry.TASKS)}; received "
                         f"{args.task!r}")
    rows = registry.describe(args.task)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    w = max(len(r["name"]) for r in rows)
    print(f"{'name':<{w}}  {'task':<9}  {'hidden':>6}  {'layers':>6}  {'cutoff':>6}  norm places")
    for r in rows:
        d = r["defaults"]
        places = ", ".join(f"{p['name']} ({'/'.join(p['kinds'])})" for p in r["norm_places"])
        cutoff = "-" if d["cutoff"] is None else f"{d['cutoff']:g}"
        print(f"{r['name']:<{w}}  {r['task']:<9}  {d['hidden']!s:>6}  {d['num_layers']!s:>6}  "
              f"{cutoff:>6}  {places}")
        print(f"{'':<{w}}  {r['description']}")
        print(f"{'':<{w}}  {r['citation']}")
    print(f"\n{len(rows)} models")
    return 0
