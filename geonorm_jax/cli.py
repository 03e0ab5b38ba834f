"""The ``geonorm-jax`` command. Each subcommand lives in the ``cli`` module of the package it
drives and registers itself through an ``add_parser(subparsers)`` function; this module only
assembles them. A subcommand module that fails to import is an installation error and raises.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main", "build_parser", "SUBCOMMAND_MODULES"]

# Modules whose ``add_parser(subparsers)`` adds one or more subcommands. Each ``add_parser``
# imports what it needs lazily, so that `geonorm-jax norms` does not pay for the trainer.
SUBCOMMAND_MODULES = (
    "geonorm_jax.norms.cli",
    "geonorm_jax.models.cli",
    "geonorm_jax.data.cli",
    "geonorm_jax.train.cli",
    "geonorm_jax.potentials.cli",
    "geonorm_jax.audit.cli",
    "geonorm_jax.bench.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """The ``geonorm-jax`` parser with every subcommand of :data:`SUBCOMMAND_MODULES`.

    Raises:
      ImportError: a subcommand module is missing or fails to import (a broken installation).
    """
    parser = argparse.ArgumentParser(
        prog="geonorm-jax",
        description="Normalization layers for equivariant GNNs: catalogue, data, training, audit.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``geonorm-jax`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status:
    the command's, 2 for a ``ValueError`` or ``FileNotFoundError`` (printed as one line), 1 for
    another ``OSError`` (disk full, permission denied; one line), 130 on Ctrl-C."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        print(f"geonorm-jax {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, permission denied, ...: one line, not a traceback
        print(f"geonorm-jax {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
