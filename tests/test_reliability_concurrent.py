"""Readers beside a running trainer (issue 27): ``geonorm-jax eval``, ``geonorm-jax plot`` and
in-process evaluations run again and again, as separate processes, while a training process
writes checkpoints every epoch into the same run directory. The trainer must not notice: it
ends cleanly, every checkpoint it kept verifies against its checksums and its metrics hold
every epoch once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from geonorm_jax.train.checkpoint import RunCheckpoints
from geonorm_jax.train.eval_run import evaluate_run
from geonorm_jax.train.rundir import read_metrics


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "geonorm_jax.cli", *args],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ))


def _start_trainer(run):
    trainer = subprocess.Popen(
        [sys.executable, "-m", "geonorm_jax.cli", "train", "--test", "--epochs", "100000",
         "--checkpoint-every", "1", "--eval-every", "1", "--out", str(run), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    interval = run / "checkpoints" / "interval"
    deadline = time.time() + 240
    while not (interval.is_dir() and any(p.name.isdigit() for p in interval.iterdir())):
        if trainer.poll() is not None or time.time() > deadline:
            trainer.kill()
            raise AssertionError(f"no checkpoint: {trainer.communicate()}")
        time.sleep(0.2)
    return trainer


def _stop_and_check(trainer, run):
    """SIGINT (a clean stop: the epoch ends, a checkpoint), then: the trainer ended by that
    signal and not before, its checkpoints verify, its metrics hold each epoch once."""
    try:
        assert trainer.poll() is None, trainer.communicate()  # still training
        trainer.send_signal(signal.SIGINT)
        _, err = trainer.communicate(timeout=120)
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait()
    assert trainer.returncode == 130, err  # interrupted cleanly, not killed by a reader
    assert "warning" not in err and "Traceback" not in err, err
    assert not (run / "checkpoints" / "damaged").exists()
    epochs = [r["epoch"] for r in read_metrics(run)]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) >= 2
    ck = RunCheckpoints(run)
    try:
        kept = {"interval": ck.interval.all_steps(), "best": ck.best.all_steps()}
        assert kept["interval"] and max(kept["interval"]) == epochs[-1]
        for kind, steps in kept.items():
            for epoch in steps:
                assert ck.verify(kind, epoch) is None, (kind, epoch, ck.verify(kind, epoch))
    finally:
        ck.close()


def test_evaluations_beside_a_running_trainer_change_nothing(tmp_path):
    """This process evaluates the run twice while a training process writes a
    checkpoint every epoch (the reader used to delete the trainer's in-progress step)."""
    run = tmp_path / "run"
    trainer = _start_trainer(run)
    try:
        seen = set()
        for _ in range(2):
            result = evaluate_run(run)
            assert len(result["test_mse"]) == 1
            seen.add(max(RunCheckpoints(run).interval.all_steps()))
    except BaseException:
        trainer.kill()
        raise
    _stop_and_check(trainer, run)
    assert len(seen) > 1  # the trainer went on checkpointing meanwhile


@pytest.mark.slow
def test_eval_and_plot_beside_a_running_trainer_change_nothing(tmp_path):
    """``geonorm-jax eval`` and ``plot`` as processes, twice each, and six evaluations in this
    process beside the trainer (1 to 3 minutes on 2 CPU cores)."""
    run = tmp_path / "run"
    trainer = _start_trainer(run)
    try:
        reads = 0
        for _ in range(2):
            for _ in range(3):  # in-process readers: the checkpoints change between calls
                assert len(evaluate_run(run)["test_mse"]) == 1
                reads += 1
            done = _cli("eval", str(run), "--json")
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["seeds"] == [30]
            done = _cli("plot", str(run), "--out", str(tmp_path / "curves.png"))
            assert done.returncode == 0, done.stderr
            reads += 2
    except BaseException:
        trainer.kill()
        raise
    _stop_and_check(trainer, run)
    assert reads == 10
