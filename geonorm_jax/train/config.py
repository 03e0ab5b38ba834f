"""Run configuration as typed dataclasses, the named presets, and JSON round trips.

A run is described by a :class:`RunConfig`: the task and five sections::

    RunConfig(task="nbody",                # or "molecules" (geonorm_jax.train.tasks)
              data=DataConfig(...),        # nbody: the N-body simulation and split sizes
              molecules=MoleculesConfig(...),  # molecules: frames, split, loss weights
              model=ModelConfig(...),      # model, width/depth, the normalization and its place
              optimizer=OptimizerConfig(...),  # Adam + L2 weight decay, clipping, schedule
              train=TrainConfig(...))      # epochs, batch, seeds, evaluation, checkpoints, RTE

Only the data section of the run's task is written to ``config.json`` (:func:`save_config`);
the other keeps its defaults.

``config.json`` in every run directory is ``to_dict(config)``; :func:`from_dict` reads it back
and raises ``ValueError`` naming the offending key (``"model.num_layers: expected an integer >= 1,
got 0"``, ``"unknown config key 'optimizer.learnig_rate'"``).

The model section uses the model's own names (:class:`geonorm_jax.models.EGNN`): ``num_layers``,
``graph``, ``neighbors``, ``cutoff``, and the places of
:data:`geonorm_jax.models.EGNN_PLACEMENT` for ``norm_place``. Older ``config.json`` files
spelled ``num_layers`` as ``layers``; they still load (:data:`OLD_KEYS`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Literal

from geonorm_jax.data import DataConfig
from geonorm_jax.train import typed_config
from geonorm_jax.train.molecules_config import MoleculesConfig
from geonorm_jax.train.typed_config import diff, to_dict

__all__ = [
    "ModelConfig",
    "MoleculesConfig",
    "OptimizerConfig",
    "TASKS",
    "MODELS",
    "NORM_PLACES",
    "TrainConfig",
    "RunConfig",
    "PRESETS",
    "preset",
    "to_dict",
    "from_dict",
    "merge",
    "load_config",
    "save_config",
    "config_dict",
    "validate",
    "diff",
    "OLD_KEYS",
]

# The tasks and the models each one trains (the first is the task's default model).
TASKS: dict[str, tuple[str, ...]] = {"nbody": ("egnn",),
                                     "molecules": ("allegro", "schnet", "gemnet")}
MODELS: tuple[str, ...] = tuple(m for models in TASKS.values() for m in models)
# Every place name of those models (EGNN_PLACEMENT, ALLEGRO_PLACEMENT, SCHNET_PLACEMENT,
# GEMNET_PLACEMENT; a test keeps this equal to their union). Whether a place belongs to the
# chosen model is checked by the task when the run is built.
NORM_PLACES: tuple[str, ...] = ("coord", "update", "feature", "latent", "tensor", "aggregate",
                                "atom", "edge")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The model (the EGNN for ``nbody``; Allegro, SchNet or GemNet-T for ``molecules``) and
    where its normalization goes.

    Attributes:
      name: ``"egnn"`` (:class:`geonorm_jax.models.EGNN`), ``"allegro"``
        (:class:`geonorm_jax.models.Allegro`), ``"schnet"``
        (:class:`geonorm_jax.models.SchNet`) or ``"gemnet"``
        (:class:`geonorm_jax.models.GemNetT`).
      hidden: width: every MLP of the EGNN (the papers use 64), Allegro's scalar latent
        ``latent_dim``, SchNet's ``features``, GemNet's atom and edge embeddings.
      num_layers: EGNN layers, Allegro tensor-product layers, SchNet interactions, GemNet
        blocks (>= 1); ``layers`` in older config files.
      norm: a catalogue name (``geonorm-jax norms``) or ``None`` for none.
      norm_place: a place of the model (:data:`geonorm_jax.models.EGNN_PLACEMENT`,
        ``ALLEGRO_PLACEMENT``, ``SCHNET_PLACEMENT``); for the EGNN ``"coord"`` (coordinates
        after each layer, the GeoNorm paper's place), ``"update"`` (the coordinate update)
        or ``"feature"`` (the invariant features ``h``). ``None`` asks the model for the
        default place of the catalogue entry's kind (EGNN: coordinates -> coord, vectors ->
        update, features -> feature).
      norm_kwargs: hyperparameters passed to the norm's constructor.
      model_kwargs: extra keyword arguments for the model's constructor (e.g. ``{"tanh":
        true}`` for the EGNN, ``{"l_max": 2}`` for Allegro), over the model's published
        configuration (molecular models: ``ALLEGRO_TUTORIAL``, ``SCHNET_MD17``).
      target_norm: molecular models: the per-species energy shift ``mu_Z`` and scale
        ``sigma`` fitted on the training split (``E_i = sigma E_i^net + mu_Z``; Allegro's
        and SchNet's output normalization). False: the network predicts raw energies.
      neighbor_norm: molecular models: Allegro's ``1/sqrt(N̄)`` on its environment sums
        (``env_normalization="sqrt"``, else ``"none"``); SchNet's mean over neighbours
        (``neighbor_normalization``, else the plain sum). GemNet has none.
      scale_norm: GemNet: its scale factors fitted on a training batch so each scaled
        activation has unit variance, and the ``1/sqrt(2)`` of its residual sums (each alone
        through ``model_kwargs``: ``scale_factors``, ``residual_scaling``). Others: unused.
      graph: the EGNN's ``graph``: ``"dense"`` (fully connected, the papers' setting,
        ``O(N^2)`` edges per system) or ``"knn"`` (edge list of the ``neighbors`` nearest
        particles of the *input* positions, built by the model inside the jitted step:
        ``O(N k)`` edges, for large ``N``). The EGNN's third choice, ``"edges"`` (an edge
        list given by the caller), has no source in a training run.
      neighbors: ``k`` of the kNN graph (``graph="knn"`` only); ``k >= N - 1`` gives the
        fully connected graph as an edge list.
      cutoff: optional radius for the kNN graph (longer edges are masked), or ``None``.
    """

    name: Literal[MODELS] = "egnn"
    hidden: int = 64
    num_layers: int = 4
    norm: str | None = "geo_norm"
    norm_place: Literal[NORM_PLACES] | None = None
    norm_kwargs: dict = dataclasses.field(default_factory=dict)
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    graph: Literal["dense", "knn"] = "dense"
    neighbors: int = 32
    cutoff: float | None = None
    target_norm: bool = True
    neighbor_norm: bool = True
    scale_norm: bool = True

    @property
    def layers(self) -> int:
        """``num_layers`` under its older name (read-only)."""
        return self.num_layers


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Adam with PyTorch-style weight decay, optional clipping and schedule (all optax).

    The update is ``optax.chain(clip_by_global_norm(clip_norm)?, add_decayed_weights(wd),
    adam(lr_schedule))``: PyTorch's ``Adam(weight_decay=wd)`` adds ``wd * param`` to the
    gradient *before* the moment estimates (L2 regularisation, not AdamW), and
    ``clip_grad_norm_`` runs on the raw gradient before ``optimizer.step()``.

    Attributes:
      lr: peak learning rate (EGNN paper 5e-4; GeoNorm paper 5e-3 and 5e-4).
      weight_decay: L2 coefficient (both papers: 1e-12).
      clip_norm: global gradient-norm clip, or ``None``.
      schedule: ``"constant"`` or ``"cosine"`` (cosine decay to 0 over the run).
      warmup_epochs: linear warm-up from 0 (cosine schedule only).
    """

    lr: float = 5e-4
    weight_decay: float = 1e-12
    clip_norm: float | None = None
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_epochs: int = 0


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Epochs, batch, seeds, evaluation, explosion detection, checkpoints and RTE.

    Attributes:
      epochs: number of passes over the training samples.
      batch_size: samples per step (EGNN protocol 100, GeoNorm paper 50); the last partial
        batch is dropped, as the EGNN code does (``drop_last=True``).
      seeds: one model per seed, all trained together with ``jax.vmap``; the seed fixes the
        initialisation and the data order.
      train_samples: use the first ``train_samples`` training simulations (EGNN: 3000);
        ``None`` uses all of ``data.train``.
      eval_every: evaluate validation and test MSE every this many epochs (and at the end).
      checkpoint_every: save a checkpoint every this many epochs (and at the end).
      keep_checkpoints: how many interval checkpoints orbax keeps.
      explosion_threshold: a seed whose batch loss is NaN/inf or above this is frozen.
      eval_batch_size: samples per evaluation chunk (padded; does not change results).
      devices: data-parallel devices (``None``: all local devices; the batch must divide).
      rte_draws: random (rotation, translation) draws per test sample for RTE.
      rte_translation_scale: RTE translation std, in units of the test positions' std.
      fast_compile: compile with XLA's backend optimization level 0. About halves compile
        time and slows the steps down; for smoke tests and tiny runs, where compiling
        dominates.
    """

    epochs: int = 100
    batch_size: int = 100
    seeds: tuple[int, ...] = (30,)
    train_samples: int | None = None
    eval_every: int = 5
    checkpoint_every: int = 5
    keep_checkpoints: int = 3
    explosion_threshold: float = 1e3
    eval_batch_size: int = 500
    devices: int | None = None
    rte_draws: int = 3
    rte_translation_scale: float = 1.0
    fast_compile: bool = False


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A whole run: the task, its data section, model, optimizer and training sections.

    ``task`` picks the data section that counts: ``data`` (charged N-body) for ``"nbody"``,
    ``molecules`` for ``"molecules"`` (:mod:`geonorm_jax.train.tasks`)."""

    task: Literal[tuple(TASKS)] = "nbody"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    molecules: MoleculesConfig = dataclasses.field(default_factory=MoleculesConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


# ---------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------

# Each preset is a nested dict of overrides on the defaults above.
PRESETS: dict[str, dict[str, Any]] = {
    # The default job: EGNN + GeoNorm on the EGNN 5-body data (the same files as egnn-5body),
    # 60 epochs x 30 steps: about 3 minutes on 2 CPU cores including data generation and
    # compilation (about 50 ms per step of 100 samples on CPU).
    "quick": {
        "data": {"particles": 5, "train": 3000, "valid": 2000, "test": 2000},
        "model": {"hidden": 64, "num_layers": 4, "norm": "geo_norm"},
        "optimizer": {"lr": 5e-4},
        "train": {"epochs": 60, "batch_size": 100, "seeds": [30], "eval_every": 5,
                  "checkpoint_every": 10},
    },
    # The EGNN paper's N-body protocol (Satorras et al. 2021; official main_nbody.py).
    "egnn-5body": {
        "data": {"particles": 5, "train": 3000, "valid": 2000, "test": 2000},
        "model": {"hidden": 64, "num_layers": 4, "norm": None},
        "optimizer": {"lr": 5e-4, "weight_decay": 1e-12},
        "train": {"epochs": 10000, "batch_size": 100, "seeds": [1], "train_samples": 3000,
                  "eval_every": 5, "checkpoint_every": 50},
    },
    # The GeoNorm paper's Section 5 (N = 50, depth 5, seeds 30/40/50/60, batch 50, 1000 epochs).
    "geonorm-paper": {
        "data": {"particles": 50, "train": 3000, "valid": 2000, "test": 2000},
        "model": {"hidden": 64, "num_layers": 5, "norm": "geo_norm"},
        "optimizer": {"lr": 5e-4, "weight_decay": 1e-12},
        "train": {"epochs": 1000, "batch_size": 50, "seeds": [30, 40, 50, 60],
                  "eval_every": 5, "checkpoint_every": 25},
    },
    # Large N: N = 500 on a kNN edge list (k = 32) with shared-parameter GeoNorm
    # (the best GeoNorm variant of experiments/norm_comparison, and the only one that is
    # permutation-equivariant and independent of N). A short run: 100 training systems of
    # 500 particles, batch 10, 30 epochs; lr 1e-3 because the run is short.
    "knn-500": {
        "data": {"particles": 500, "train": 100, "valid": 25, "test": 25},
        "model": {"hidden": 64, "num_layers": 4, "norm": "geo_norm_shared", "graph": "knn",
                  "neighbors": 32},
        "optimizer": {"lr": 1e-3},
        "train": {"epochs": 30, "batch_size": 10, "seeds": [30], "eval_every": 5,
                  "checkpoint_every": 5, "eval_batch_size": 25},
    },
    # Allegro on uracil (the survey's Figure 1) with its normalizations (per-species shift and
    # scale, 1/sqrt(N̄)): the authors' tutorial configuration (ALLEGRO_TUTORIAL: 2 layers, 64
    # scalar latents, 32 tensor channels, l_max 1, r_c 5 Å) on the md17-xtb uracil frames,
    # rMD17 split (1000 / 50 / 950), batch 8, Adam lr 2e-3. A loss above 1e30 counts as an
    # explosion (unnormalized energies start around 1e5 eV^2 without diverging).
    "allegro-uracil": {
        "task": "molecules",
        "molecules": {"dataset": "md17-xtb", "molecule": "uracil", "frames": 2000},
        "model": {"name": "allegro", "hidden": 64, "num_layers": 2, "norm": None},
        "optimizer": {"lr": 2e-3, "weight_decay": 0.0},
        "train": {"epochs": 100, "batch_size": 8, "seeds": [0], "eval_every": 5,
                  "checkpoint_every": 5, "eval_batch_size": 50, "explosion_threshold": 1e30},
    },
    # SchNet on uracil with its normalizations (mean over neighbours, per-species shift and
    # scale): SCHNET_MD17 (F = 64, 3 interactions, 51 Gaussians, r_c 5 Å), lr 5e-4.
    "schnet-uracil": {
        "task": "molecules",
        "molecules": {"dataset": "md17-xtb", "molecule": "uracil", "frames": 2000},
        "model": {"name": "schnet", "hidden": 64, "num_layers": 3, "norm": None},
        "optimizer": {"lr": 5e-4, "weight_decay": 0.0},
        "train": {"epochs": 100, "batch_size": 8, "seeds": [0], "eval_every": 5,
                  "checkpoint_every": 5, "eval_batch_size": 50, "explosion_threshold": 1e30},
    },
    # GemNet-T on uracil with its normalizations (fitted scale factors, 1/sqrt(2) residual
    # scaling, per-species shift and scale): GEMNET_T_MD17 (the authors' MD17 model: 4 blocks,
    # atom and edge width 128, r_c 5 Å), lr 1e-3 (the authors' MD17 setting).
    "gemnet-uracil": {
        "task": "molecules",
        "molecules": {"dataset": "md17-xtb", "molecule": "uracil", "frames": 2000},
        "model": {"name": "gemnet", "hidden": 128, "num_layers": 4, "norm": None},
        "optimizer": {"lr": 1e-3, "weight_decay": 0.0},
        "train": {"epochs": 100, "batch_size": 8, "seeds": [0], "eval_every": 5,
                  "checkpoint_every": 5, "eval_batch_size": 50, "explosion_threshold": 1e30},
    },
    # Tiny: for tests and smoke runs (seconds).
    "test": {
        "data": {"particles": 5, "train": 40, "valid": 20, "test": 20},
        "model": {"hidden": 16, "num_layers": 2, "norm": "geo_norm"},
        "optimizer": {"lr": 1e-3},
        "train": {"epochs": 4, "batch_size": 10, "seeds": [30], "eval_every": 2,
                  "checkpoint_every": 1, "eval_batch_size": 20, "rte_draws": 2,
                  "fast_compile": True},
    },
}

# Short trajectories for the test preset.
_TEST_DATA_EXTRA = {"steps": 600, "sample_freq": 100, "frame_in": 2, "frame_out": 4}


def preset(name: str) -> RunConfig:
    """The :class:`RunConfig` of a named preset (``ValueError`` listing the names otherwise)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of: {', '.join(PRESETS)}")
    overrides = json.loads(json.dumps(PRESETS[name]))
    if name == "test":
        overrides["data"].update(_TEST_DATA_EXTRA)
    return merge(RunConfig(), overrides)


# ---------------------------------------------------------------------------------------------
# Dict / JSON round trip with type checking (geonorm_jax.train.typed_config), older key names
# ---------------------------------------------------------------------------------------------

# Older names of config keys, per section: {section class: {old key: key}}. An old key is read
# as the new one (``config.json`` files and override dicts written before the rename).
OLD_KEYS: dict[type, dict[str, str]] = {ModelConfig: {"layers": "num_layers"}}

# Dict-valued fields that an override replaces whole instead of merging into.
_OPAQUE = ("norm_kwargs", "model_kwargs")


def from_dict(cls: type, data: dict, path: str = "") -> Any:
    """Build dataclass ``cls`` (a config section or :class:`RunConfig`) from ``data``, checking
    keys and value types; older key names (:data:`OLD_KEYS`) are read as the new ones.

    Raises:
      ValueError: naming the dotted key of an unknown key or a value of the wrong type.
    """
    return typed_config.from_dict(cls, data, path, old_keys=OLD_KEYS)


def merge(config: Any, overrides: dict, path: str = "") -> Any:
    """``config`` with the (nested, partial) ``overrides`` dict applied, type-checked;
    ``norm_kwargs`` and ``model_kwargs`` are replaced whole, not merged."""
    return typed_config.merge(config, overrides, path, old_keys=OLD_KEYS, opaque=_OPAQUE)


# ---------------------------------------------------------------------------------------------
# Validation, files, differences
# ---------------------------------------------------------------------------------------------


def validate(config: RunConfig) -> RunConfig:
    """Check values that types cannot express; ``ValueError`` naming the key otherwise."""
    m, o, t = config.model, config.optimizer, config.train

    def need(ok: bool, key: str, what: str, value: Any) -> None:
        if not ok:
            raise ValueError(f"{key}: expected {what}, got {value!r}")

    # train.epochs first: other keys' ranges depend on it (optimizer.warmup_epochs)
    need(t.epochs >= 1, "train.epochs", "an integer >= 1", t.epochs)
    need(m.num_layers >= 1, "model.num_layers", "an integer >= 1", m.num_layers)
    need(m.hidden >= 1, "model.hidden", "an integer >= 1", m.hidden)
    need(m.neighbors >= 1, "model.neighbors", "an integer >= 1", m.neighbors)
    need(m.cutoff is None or (math.isfinite(m.cutoff) and m.cutoff > 0), "model.cutoff",
         "a positive number or null", m.cutoff)
    if m.norm is not None:
        from geonorm_jax.norms import catalog

        catalog.get(m.norm)  # ValueError listing the names
    need(math.isfinite(o.lr) and o.lr > 0, "optimizer.lr", "a positive number", o.lr)
    need(o.weight_decay >= 0, "optimizer.weight_decay", "a number >= 0", o.weight_decay)
    need(o.clip_norm is None or o.clip_norm > 0, "optimizer.clip_norm", "> 0 or null",
         o.clip_norm)
    need(0 <= o.warmup_epochs <= t.epochs, "optimizer.warmup_epochs", "0..train.epochs",
         o.warmup_epochs)
    need(t.batch_size >= 1, "train.batch_size", "an integer >= 1", t.batch_size)
    need(len(t.seeds) >= 1, "train.seeds", "at least one seed", list(t.seeds))
    need(len(set(t.seeds)) == len(t.seeds), "train.seeds", "distinct seeds", list(t.seeds))
    need(t.eval_every >= 1, "train.eval_every", "an integer >= 1", t.eval_every)
    need(t.checkpoint_every >= 1, "train.checkpoint_every", "an integer >= 1",
         t.checkpoint_every)
    need(t.keep_checkpoints >= 1, "train.keep_checkpoints", "an integer >= 1",
         t.keep_checkpoints)
    need(t.explosion_threshold > 0, "train.explosion_threshold", "a positive number",
         t.explosion_threshold)
    need(t.eval_batch_size >= 1, "train.eval_batch_size", "an integer >= 1", t.eval_batch_size)
    need(t.devices is None or t.devices >= 1, "train.devices", "an integer >= 1 or null",
         t.devices)
    need(t.rte_draws >= 1, "train.rte_draws", "an integer >= 1", t.rte_draws)
    need(t.rte_translation_scale >= 0, "train.rte_translation_scale", "a number >= 0",
         t.rte_translation_scale)
    need(m.name in TASKS[config.task], "model.name",
         f"a model of task {config.task!r} ({', '.join(TASKS[config.task])})", m.name)
    if config.task != "nbody":
        return config  # the task checks its own data section (geonorm_jax.train.tasks)
    n_train = t.train_samples if t.train_samples is not None else config.data.train
    if t.train_samples is not None:
        need(1 <= t.train_samples <= config.data.train, "train.train_samples",
             f"1..data.train ({config.data.train})", t.train_samples)
    if t.batch_size > n_train:
        raise ValueError(
            f"train.batch_size: {t.batch_size} is larger than the number of training samples "
            f"({n_train}); lower --batch-size or raise --train-samples"
        )
    return config


def config_dict(config: RunConfig) -> dict:
    """``to_dict(config)`` without the data section of the other task (``molecules`` for an
    N-body run, ``data`` for a molecular one): what ``config.json`` holds."""
    out = to_dict(config)
    out.pop("molecules" if config.task == "nbody" else "data")
    return out


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write ``config`` as indented JSON (:func:`config_dict`)."""
    Path(path).write_text(json.dumps(config_dict(config), indent=2, sort_keys=False) + "\n")


def load_config(path: str | Path) -> RunConfig:
    """Read a ``config.json`` (a full or partial config: missing keys take the defaults).

    Raises:
      ValueError: unreadable JSON, or an unknown key / bad value (named).
      FileNotFoundError: no such file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    return merge(RunConfig(), data)
