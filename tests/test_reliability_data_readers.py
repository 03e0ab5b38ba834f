"""``geonorm-jax data info`` beside a running ``data generate`` (reliability, readers): the
reader runs again and again, as a separate process, while a generation process writes its
resumable chunks and then the data set into the same directory. The reader answers either
with the data set or with one line saying the directory holds no finished data set yet, never
a traceback; the generation ends cleanly and writes a data set that verifies against its
SHA-256 and holds the frames it was asked for; the reader leaves no file of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from geonorm_jax.data.molecules.store import load_molecular_dataset

FRAMES = 30


def _cli(*args: str, **kwargs):
    return [sys.executable, "-m", "geonorm_jax.cli", *args], dict(
        capture_output=True, text=True, env=dict(os.environ), **kwargs
    )


def test_data_info_beside_a_running_generation_changes_nothing(tmp_path):
    out = tmp_path / "water"
    cmd, _ = _cli()
    generator = subprocess.Popen(
        [*cmd, "data", "generate", "--dataset", "md17-xtb", "--molecule", "water",
         "--frames", str(FRAMES), "--chunk-frames", "5", "--trajectories", "2",
         "--workers", "1", "--out", str(out), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    answers = {"pending": 0, "done": 0}
    try:
        deadline = time.time() + 300
        while True:
            finished = generator.poll() is not None
            args, kw = _cli("data", "info", str(out))
            info = subprocess.run(args, timeout=120, **kw)
            assert "Traceback" not in info.stderr, info.stderr
            if info.returncode == 0:
                assert f"frames: {FRAMES} over 2 trajectories" in info.stdout, info.stdout
                answers["done"] += 1
            else:
                # exit 2 with one line naming the directory, as for any bad input
                assert info.returncode == 2, (info.returncode, info.stderr)
                lines = info.stderr.strip().splitlines()
                assert len(lines) == 1 and "no data set metadata" in lines[0], info.stderr
                assert not finished, "the finished generation left no readable data set"
                answers["pending"] += 1
            if finished or time.time() > deadline:
                break
    finally:
        if generator.poll() is None:
            generator.kill()
        _, err = generator.communicate(timeout=60)
    assert generator.returncode == 0, err
    assert "Traceback" not in err and "warning" not in err.lower(), err
    assert answers["pending"] >= 1, answers  # a reader did meet the generation in progress
    assert answers["done"] >= 1, answers
    data = load_molecular_dataset(out)  # checks data.npz against the recorded SHA-256
    assert data.positions.shape == (FRAMES, 3, 3)
    assert sorted(p.name for p in out.iterdir()) == ["data.npz", "metadata.json"]
