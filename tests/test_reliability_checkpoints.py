"""Verified checkpoints: every kind of damage is detected at restore, the newest intact
checkpoint is used instead (with a one-line warning), and only when none is intact does
restoring fail, with one line. The unit tests save small pytrees (no training); the
end-to-end tests damage a finished tiny run and resume or evaluate it."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from geonorm_jax.train import config as cfg
from geonorm_jax.train import loop, setup
from geonorm_jax.train.checkpoint import CHECKSUMS, CheckpointError, RunCheckpoints
from geonorm_jax.train.eval_run import evaluate_run


def _tree(epoch: int) -> dict:
    rng = np.random.default_rng(epoch)
    return {"w": rng.normal(size=(3, 64)).astype(np.float32),
            "step": np.asarray(epoch, np.int32)}


def _largest(directory: Path) -> Path:
    return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _delete_array(step: Path) -> None:
    _largest(step / "state").unlink()


def _truncate_array(step: Path) -> None:
    path = _largest(step / "state")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _delete_state(step: Path) -> None:
    shutil.rmtree(step / "state")


def _bad_metadata(step: Path) -> None:
    (step / "meta" / "metadata").write_text('{"epoch": 3, "wall_t')


def _flip_array(step: Path) -> None:
    _flip_byte(_largest(step / "state"))


DAMAGES = {"deleted array file": (_delete_array, "missing"),
           "truncated array file": (_truncate_array, "does not match"),
           "deleted state dir": (_delete_state, "missing"),
           "bad metadata": (_bad_metadata, "does not match"),
           "one flipped byte": (_flip_array, "does not match")}


@pytest.fixture
def saved(tmp_path):
    ck = RunCheckpoints(tmp_path, keep=3, writable=True)
    for epoch in (1, 2, 3):
        ck.save(epoch, _tree(epoch), {"epoch": epoch})
    ck.close()
    return tmp_path


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_each_damage_is_detected_and_the_previous_checkpoint_restored(saved, damage):
    fn, reason = DAMAGES[damage]
    fn(saved / "checkpoints" / "interval" / "3")
    ck = RunCheckpoints(saved)
    like = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), _tree(0))
    tree, meta = ck.restore(like)
    assert meta["epoch"] == 2
    np.testing.assert_array_equal(tree["w"], _tree(2)["w"])
    [line] = ck.describe_skipped()
    assert line.startswith("checkpoint interval/3 skipped:") and reason in line, line
    ck.close()


def test_none_intact_fails_with_one_line_naming_each(saved):
    for epoch, fn in zip((1, 2, 3), (_flip_array, _delete_state, _bad_metadata), strict=True):
        fn(saved / "checkpoints" / "interval" / str(epoch))
    ck = RunCheckpoints(saved)
    like = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), _tree(0))
    with pytest.raises(CheckpointError) as info:
        ck.restore(like)
    ck.close()
    message = str(info.value)
    assert "\n" not in message and all(f"epoch {e}:" in message for e in (1, 2, 3)), message


def test_checkpoints_without_checksums_restore_unverified(saved):
    """Run directories written before checksums existed still restore (noted)."""
    shutil.rmtree(saved / "checkpoints" / CHECKSUMS)
    ck = RunCheckpoints(saved)
    like = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), _tree(0))
    _, meta = ck.restore(like)
    assert meta["epoch"] == 3 and ck.unverified == [("interval", 3)] and not ck.skipped
    ck.close()


def test_checksum_files_follow_orbax_retention(tmp_path):
    ck = RunCheckpoints(tmp_path, keep=2, writable=True)
    for epoch in (1, 2, 3, 4):
        ck.save(epoch, _tree(epoch), {"epoch": epoch})
    ck.close()
    names = sorted(p.name for p in (tmp_path / "checkpoints" / CHECKSUMS).iterdir())
    assert names == ["interval-3.json", "interval-4.json"]


# ---------------------------------------------------------------------------------------------
# End to end: resume and eval of a damaged tiny run (slow: data generation and compilation,
# about 30 s of CPU; run with -m slow)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    config = cfg.merge(cfg.preset("test"), {"train": {"epochs": 3, "eval_every": 1}})
    s = setup.build(config, cache_dir=cache)
    run_dir = tmp_path_factory.mktemp("runs") / "done"
    loop.train(config, run_dir, setup=s, progress=False)
    return s, run_dir, cache


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(run_dir, out)
    return out


@pytest.mark.slow
def test_resume_skips_a_flipped_byte_and_reproduces_the_run(finished, tmp_path):
    s, run_dir, _ = finished
    reference = loop.read_metrics(run_dir)
    run = _copy(run_dir, tmp_path)
    _flip_array(run / "checkpoints" / "interval" / "3")
    out = io.StringIO()
    summary = loop.train(s.config, run, setup=s, resume=True, progress=False, stream=out)
    lines = [x for x in out.getvalue().splitlines() if x.startswith("warning:")]
    assert len(lines) == 1 and "interval/3" in lines[0] and "resuming from epoch 2" in lines[0]
    assert summary["epochs_completed"] == 3
    resumed = loop.read_metrics(run)
    for a, b in zip(resumed, reference, strict=True):
        assert a["train_loss"] == b["train_loss"] and a.get("val_mse") == b.get("val_mse")
    assert list((run / "checkpoints" / "damaged").iterdir())  # kept for inspection


@pytest.mark.slow
def test_resume_with_no_intact_checkpoint_fails_with_one_line(finished, tmp_path):
    s, run_dir, _ = finished
    run = _copy(run_dir, tmp_path)
    for step in (run / "checkpoints" / "interval").iterdir():
        _delete_state(step)
    with pytest.raises(CheckpointError) as info:
        loop.train(s.config, run, setup=s, resume=True, progress=False, stream=io.StringIO())
    assert "\n" not in str(info.value) and "no intact checkpoint" in str(info.value)
    assert not (run / "run.lock").exists()


@pytest.mark.slow
def test_eval_with_a_damaged_best_uses_the_interval_best(finished, tmp_path, capsys):
    s, run_dir, cache = finished
    intact = evaluate_run(run_dir, cache_dir=cache)
    run = _copy(run_dir, tmp_path)
    [best] = list((run / "checkpoints" / "best").iterdir())
    _flip_byte(_largest(best / "best"))
    result = evaluate_run(run, cache_dir=cache)
    assert result["test_mse"] == intact["test_mse"]
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("warning:")]
    assert len(err) == 1 and f"best/{best.name}" in err[0], err
    for step in (run / "checkpoints" / "interval").iterdir():
        _flip_array(step)
    with pytest.raises(CheckpointError) as info:
        evaluate_run(run, cache_dir=cache)
    assert "\n" not in str(info.value)
