"""The ``geonorm-jax`` command. Each subcommand lives next to the code it drives and registers
itself through an ``add_parser(subparsers)`` function; this module only assembles them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main", "build_parser"]

# (module, function) pairs that add one or more subcommands. Modules are imported lazily so
# that `geonorm-jax norms` does not pay for importing the trainer.
_SUBCOMMANDS = (
    ("geonorm_jax.norms.cli", "add_parser"),
    ("geonorm_jax.data.cli", "add_parser"),
    ("geonorm_jax.train.cli", "add_parser"),
    ("geonorm_jax.audit_cli", "add_parser"),
    ("geonorm_jax.bench", "add_parser"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geonorm-jax",
        description="Normalization layers for equivariant GNNs: catalogue, data, training, audit.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module_name, fn in _SUBCOMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name == module_name:  # subcommand not built yet
                continue
            raise
        getattr(module, fn)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        print(f"geonorm-jax {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
