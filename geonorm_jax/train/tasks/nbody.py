"""The charged N-body task: predict positions after ``frame_out - frame_in`` steps (EGNN and
GeoNorm papers), with a registered model of the task: the velocity EGNN
(:class:`geonorm_jax.models.EGNN`).

Arrays per split (``S`` simulations of ``N`` particles): ``loc [S, N, 3]``, ``vel [S, N, 3]``,
``charges [S, N, 1]``, ``target [S, N, 3]``, float32. Loss: ``nn.MSELoss()`` of the predicted
positions, the mean of the squared error over batch, particles and the 3 axes
(:func:`geonorm_jax.train.step.mse`); the per-sample ``mse`` averages over particles and axes.
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp

from geonorm_jax.data.config import SPLITS
from geonorm_jax.train.config import RunConfig
from geonorm_jax.train.step import mse, per_sample_mse
from geonorm_jax.train.tasks.base import Task

__all__ = ["NBodyTask", "load_data", "data_source"]


def load_data(config: RunConfig, *, data_dir=None, cache_dir=None, progress=False) -> dict:
    """``{"train": {...}, "valid": {...}, "test": {...}}`` of float32 ``jnp`` arrays.

    ``data_dir``: an existing dataset directory (as written by ``geonorm-jax data``);
    otherwise the dataset of ``config.data`` from the cache (generated if missing).
    Non-finite values raise ``ValueError`` naming the split, field and sample index.
    """
    return _load(config, data_dir, cache_dir, progress)[0]


def data_source(path: str | Path) -> dict:
    """The provenance of an N-body dataset directory: its name, the generation parameters,
    format and cache key of its ``metadata.json`` (no machine paths)."""
    from geonorm_jax.data.files import read_metadata

    path = Path(path)
    try:
        meta = read_metadata(path)
    except Exception:  # noqa: BLE001 - the split loader reports unreadable data
        meta = {}
    return {"name": path.name, "config": meta.get("config"),
            "format_version": meta.get("format_version"), "cache_key": meta.get("cache_key")}


def _load(config: RunConfig, data_dir, cache_dir, progress) -> tuple[dict, Path]:
    from geonorm_jax import data as data_lib

    if data_dir is not None:
        path = Path(data_dir)
        if not path.is_dir():
            raise ValueError(f"data directory {str(path)!r} does not exist")
    else:
        path = Path(data_lib.get_dataset(config.data, cache_dir=cache_dir, progress=progress))
    out = {}
    for split in SPLITS:
        try:
            samples = data_lib.load_split(
                path, split, frame_in=config.data.frame_in, frame_out=config.data.frame_out
            )
        except Exception as e:  # noqa: BLE001 - any failure to read is "corrupt or missing"
            raise ValueError(f"data directory {str(path)!r}: cannot load split {split!r}: {e}") \
                from None
        arrays = samples._asdict()  # loc, vel, charges, target
        from geonorm_jax.train.provenance import check_finite

        check_finite({split: arrays}, where=f"data directory {str(path)!r}")
        out[split] = {k: jnp.asarray(v, jnp.float32) for k, v in arrays.items()}
    n = out["train"]["loc"].shape[1]
    if n != config.data.particles:
        raise ValueError(
            f"data directory {str(path)!r} has {n} particles; config data.particles is "
            f"{config.data.particles}"
        )
    limit = config.train.train_samples
    available = out["train"]["loc"].shape[0]
    if limit is not None:
        if limit > available:
            raise ValueError(
                f"train.train_samples: {limit} requested, the data has {available} training "
                "samples"
            )
        out["train"] = {k: v[:limit] for k, v in out["train"].items()}
    num = out["train"]["loc"].shape[0]
    if config.train.batch_size > num:
        raise ValueError(
            f"train.batch_size: {config.train.batch_size} is larger than the number of "
            f"training samples ({num})"
        )
    return out, path


class NBodyTask(Task):
    """Charged N-body position prediction (module docstring) with a registered model of task
    ``"nbody"`` (the EGNN)."""

    name = "nbody"

    def check(self, config: RunConfig) -> None:
        self.build_model(config, {})  # cheap: unknown model or norm, bad place or argument

    def load(self, config: RunConfig, *, data_dir=None, cache_dir=None, progress=False):
        data, path = _load(config, data_dir, cache_dir, progress)
        return data, {"particles": int(data["train"]["loc"].shape[1]),
                      "provenance": data_source(path)}

    def loss(self, pred, batch):
        return mse(pred, batch["target"], batch.get("mask"))

    def sample_metrics(self, pred, batch):
        return {"mse": per_sample_mse(pred, batch["target"], batch.get("mask"))}
