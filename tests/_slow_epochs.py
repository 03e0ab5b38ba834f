"""``python tests/_slow_epochs.py SECONDS ARGS...`` runs ``geonorm-jax ARGS...`` with a pause of
SECONDS after every training epoch, so that a test can kill the run in the middle.

The pause goes through the trainer's public ``on_epoch_end`` callback: ``loop.train`` is
wrapped before the command line is parsed (``geonorm_jax.train.cli`` looks ``train`` up when
the command runs), so the library itself has no test hook.
"""

from __future__ import annotations

import functools
import sys
import time


def slow_down(seconds: float) -> None:
    """Make every later ``geonorm_jax.train.loop.train`` call sleep ``seconds`` per epoch."""
    from geonorm_jax.train import loop

    original = loop.train

    @functools.wraps(original)
    def train(*args, on_epoch_end=None, **kwargs):
        def pause(epoch, record):
            if on_epoch_end is not None:
                on_epoch_end(epoch, record)
            time.sleep(seconds)

        return original(*args, on_epoch_end=pause, **kwargs)

    loop.train = train


def main(argv: list[str]) -> int:
    if len(argv) < 1:
        print(__doc__, file=sys.stderr)
        return 2
    slow_down(float(argv[0]))
    from geonorm_jax import cli

    return cli.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
