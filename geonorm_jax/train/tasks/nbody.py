"""The charged N-body task: predict positions after ``frame_out - frame_in`` steps (EGNN and
GeoNorm papers), with the velocity EGNN (:class:`geonorm_jax.models.EGNN`).

Arrays per split (``S`` simulations of ``N`` particles): ``loc [S, N, 3]``, ``vel [S, N, 3]``,
``charges [S, N, 1]``, ``target [S, N, 3]``, float32. Loss: ``nn.MSELoss()`` of the predicted
positions, the mean of the squared error over batch, particles and the 3 axes
(:func:`geonorm_jax.train.step.mse`); the per-sample ``mse`` averages over particles and axes.
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp

from geonorm_jax.data.config import SPLITS
from geonorm_jax.train.config import ModelConfig, RunConfig
from geonorm_jax.train.step import mse, per_sample_mse
from geonorm_jax.train.tasks.base import Task

__all__ = ["NBodyTask", "build_model", "load_data", "data_source", "norm_place"]


def norm_place(model: ModelConfig) -> str | None:
    """The place of ``model.norm``: explicit, or the model's default place for the norm's
    catalogue kind (:data:`geonorm_jax.models.EGNN_PLACEMENT`; ValueError if it has none)."""
    if model.norm is None:
        return None
    from geonorm_jax.models import EGNN
    from geonorm_jax.norms import catalog

    info = catalog.get(model.norm)
    if model.norm_place is not None:
        EGNN.placement.place(model.norm_place)  # ValueError naming the EGNN's places
        return model.norm_place
    return EGNN.placement.default_place(info.kind, model.norm)


def build_model(model: ModelConfig):
    """The ``EGNN`` of ``model`` (``ValueError`` for an unknown norm or a wrong place).

    ``model.graph``, ``neighbors`` and ``cutoff`` are the EGNN's attributes of the same names:
    with ``graph="knn"`` the model builds the kNN graph of its input positions inside the
    jitted step.
    """
    from geonorm_jax.models import make_egnn

    place = norm_place(model)
    kwargs = dict(hidden=model.hidden, num_layers=model.num_layers, graph=model.graph,
                  neighbors=model.neighbors, cutoff=model.cutoff)
    kwargs.update(model.model_kwargs)
    try:
        if place is None:
            return make_egnn(None, **kwargs)
        return make_egnn(model.norm, place=place, norm_kwargs=model.norm_kwargs, **kwargs)
    except TypeError as e:  # unknown keyword in norm_kwargs / model_kwargs
        raise ValueError(f"model: {e}") from None


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
    """Charged N-body position prediction with the EGNN (module docstring)."""

    name = "nbody"

    def check(self, config: RunConfig) -> None:
        if config.model.name != "egnn":
            raise ValueError(f"model.name: the nbody task trains the 'egnn'; received "
                             f"{config.model.name!r} (molecular models need task 'molecules')")
        self.build_model(config, {})  # cheap: unknown norm, bad place

    def load(self, config: RunConfig, *, data_dir=None, cache_dir=None, progress=False):
        data, path = _load(config, data_dir, cache_dir, progress)
        return data, {"particles": int(data["train"]["loc"].shape[1]),
                      "provenance": data_source(path)}

    def build_model(self, config: RunConfig, info: dict):
        return build_model(config.model)

    def init(self, model, key, batch):
        return model.init(key, batch["loc"], batch["vel"], batch["charges"], training=False)

    def apply(self, model, variables, batch, training):
        """A kNN graph (``model.graph="knn"``) is built by the model from ``batch["loc"]``; it
        depends only on distances, so it is unchanged by the rotations, translations and
        permutations that the equivariance checks apply (up to ties)."""
        args = (batch["loc"], batch["vel"], batch["charges"])
        if training:
            pred, updates = model.apply(variables, *args, training=True, mutable=["batch_stats"])
            return pred, updates.get("batch_stats", variables.get("batch_stats", {}))
        return model.apply(variables, *args, training=False), variables.get("batch_stats", {})

    def loss(self, pred, batch):
        return mse(pred, batch["target"], batch.get("mask"))

    def sample_metrics(self, pred, batch):
        return {"mse": per_sample_mse(pred, batch["target"], batch.get("mask"))}
