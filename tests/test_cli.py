"""The ``geonorm-jax`` command assembles every subcommand and fails loudly on a broken one."""

from __future__ import annotations

import pytest

from geonorm_jax import cli


def test_every_subcommand_is_registered():
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    assert {"norms", "data", "train", "eval", "plot", "audit", "bench"} <= set(sub.choices)


def test_subcommand_modules_live_in_their_package_cli():
    assert all(m.startswith("geonorm_jax.") and m.endswith(".cli")
               for m in cli.SUBCOMMAND_MODULES)


def test_missing_subcommand_module_raises(monkeypatch):
    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES",
                        (*cli.SUBCOMMAND_MODULES, "geonorm_jax.no_such_package.cli"))
    with pytest.raises(ModuleNotFoundError, match="no_such_package"):
        cli.build_parser()
