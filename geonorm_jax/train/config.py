"""Run configuration: :class:`RunConfig`, the named presets, versions and JSON round trips.

A run is described by a :class:`RunConfig`: the task and five sections
(:mod:`geonorm_jax.train.sections`)::

    RunConfig(task="nbody",                   # or "molecules" (geonorm_jax.train.tasks)
              data=DataConfig(...),           # nbody: the N-body simulation and split sizes
              molecules=MolecularTaskConfig(...),  # molecules: frames, split, targets, loss
              model=ModelConfig(...),         # a registered model, its knobs and its norm
              optimizer=OptimizerConfig(...),  # Adam + L2 weight decay, clipping, schedule
              train=TrainConfig(...),         # epochs, batch, seeds, evaluation, checkpoints
              version=CONFIG_VERSION)

Only the data section of the run's task is written to ``config.json`` (:func:`save_config`);
the other keeps its defaults.

``config.json`` in every run directory is ``config_dict(config)``; :func:`load_config` reads it
back and raises ``ValueError`` naming the offending key (``"model.num_layers: expected an
integer >= 1, got 0"``, ``"unknown config key 'optimizer.learnig_rate'"``).

Versions (:func:`migrate`): version 1 (files without ``version``) had one flat model section
for every model: ``graph`` and ``neighbors`` (EGNN only) and ``target_norm``,
``neighbor_norm``, ``scale_norm`` (molecular models only). Version 2 keeps in ``model`` what
every model shares and moves the rest where it belongs: ``graph``/``neighbors`` into
``model.model_kwargs`` (the EGNN's own argument names), ``target_norm`` into ``molecules``,
and the two architecture switches into the one ``model.builtin_norm``. A version-1 file whose
two switches disagree cannot be read unambiguously and is refused with a message naming the
version. ``num_layers`` was once spelled ``layers``; that still loads (:data:`OLD_KEYS`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Literal

from geonorm_jax.data import DataConfig
from geonorm_jax.models import registry
from geonorm_jax.train import config_codec
from geonorm_jax.train.config_codec import diff, to_dict
from geonorm_jax.train.sections import (
    ModelConfig,
    MolecularTaskConfig,
    OptimizerConfig,
    TrainConfig,
)

__all__ = [
    "ModelConfig",
    "MolecularTaskConfig",
    "OptimizerConfig",
    "TrainConfig",
    "RunConfig",
    "CONFIG_VERSION",
    "PRESETS",
    "preset",
    "to_dict",
    "from_dict",
    "merge",
    "migrate",
    "load_config",
    "save_config",
    "config_dict",
    "validate",
    "diff",
    "OLD_KEYS",
]

#: the layout of ``config.json`` written by this version of the library (:func:`migrate`)
CONFIG_VERSION = 2


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A whole run: the task, its data section, model, optimizer and training sections.

    ``task`` picks the data section that counts: ``data`` (charged N-body) for ``"nbody"``,
    ``molecules`` for ``"molecules"`` (:mod:`geonorm_jax.train.tasks`). ``version`` is the
    layout of the configuration (:data:`CONFIG_VERSION`); older files are read through
    :func:`migrate`."""

    task: Literal[tuple(registry.TASKS)] = "nbody"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    molecules: MolecularTaskConfig = dataclasses.field(default_factory=MolecularTaskConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    version: int = CONFIG_VERSION


# ---------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------

def _potential_preset(model: str, hidden: int, num_layers: int, lr: float) -> dict:
    """A molecular preset: ``model`` on 2000 md17-xtb uracil frames, rMD17 split (1000 / 50 /
    950), batch 8, Adam ``lr`` without weight decay, 100 epochs, evaluated every 5. A loss
    above 1e30 counts as an explosion (unnormalized energies start around 1e5 eV^2 without
    diverging)."""
    return {
        "task": "molecules",
        "molecules": {"dataset": "md17-xtb", "molecule": "uracil", "frames": 2000},
        "model": {"name": model, "hidden": hidden, "num_layers": num_layers, "norm": None},
        "optimizer": {"lr": lr, "weight_decay": 0.0},
        "train": {"epochs": 100, "batch_size": 8, "seeds": [0], "eval_every": 5,
                  "checkpoint_every": 5, "eval_batch_size": 50, "explosion_threshold": 1e30},
    }


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
        "model": {"hidden": 64, "num_layers": 4, "norm": "geo_norm_shared",
                  "model_kwargs": {"graph": "knn", "neighbors": 32}},
        "optimizer": {"lr": 1e-3},
        "train": {"epochs": 30, "batch_size": 10, "seeds": [30], "eval_every": 5,
                  "checkpoint_every": 5, "eval_batch_size": 25},
    },
    # The molecular presets (_potential_preset): each potential at its published size with its
    # normalizations (per-species shift and scale; its built-in normalization) on the
    # md17-xtb uracil frames. Allegro (the survey's Figure 1): the authors' tutorial
    # configuration (ALLEGRO_TUTORIAL: 2 layers, 64 scalar latents, 32 tensor channels, l_max
    # 1, r_c 5 Å), lr 2e-3. SchNet: SCHNET_MD17 (F = 64, 3 interactions, 51 Gaussians, r_c
    # 5 Å), lr 5e-4. GemNet-T: GEMNET_T_MD17 (the authors' MD17 model: 4 blocks, atom and
    # edge width 128, r_c 5 Å), lr 1e-3 (the authors' MD17 setting).
    "allegro-uracil": _potential_preset("allegro", 64, 2, 2e-3),
    "schnet-uracil": _potential_preset("schnet", 64, 3, 5e-4),
    "gemnet-uracil": _potential_preset("gemnet", 128, 4, 1e-3),
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
# Dict / JSON round trip with type checking (geonorm_jax.train.config_codec), older key names
# ---------------------------------------------------------------------------------------------

# Older names of config keys, per section: {section class: {old key: key}}. An old key is read
# as the new one (``config.json`` files and override dicts written before the rename).
OLD_KEYS: dict[type, dict[str, str]] = {ModelConfig: {"layers": "num_layers"}}

# Dict-valued fields that an override replaces whole instead of merging into.
_OPAQUE = ("norm_kwargs", "model_kwargs")

# Version 1's model keys that version 2 moved, and where they went (see migrate).
_V1_SWITCHES = ("neighbor_norm", "scale_norm")


def migrate(data: dict, where: str = "config") -> dict:
    """A configuration dict (full or partial) in the current layout.

    Version 1 (no ``version`` key, or ``1``) is rewritten as described in the module
    docstring: ``model.graph``/``neighbors`` -> ``model.model_kwargs`` (dropped when they are
    version 1's defaults ``"dense"``/32, which the EGNN shares), ``model.target_norm`` ->
    ``molecules.target_norm``, ``model.neighbor_norm``/``scale_norm`` ->
    ``model.builtin_norm``. A dict of the current version is returned unchanged.

    Raises:
      ValueError: a version this library does not know, or a version-1 file whose two
        architecture switches disagree (its meaning in version 2 would be a guess).
    """
    if not isinstance(data, dict):
        return data
    version = data.get("version", 1)
    if version == CONFIG_VERSION:
        return data
    if version != 1:
        raise ValueError(f"{where}: version {version!r} is not a configuration layout this "
                         f"geonorm-jax reads (it reads versions 1 to {CONFIG_VERSION}); written "
                         "by a newer release?")
    out = {k: v for k, v in data.items() if k != "version"}
    model = dict(out.get("model") or {})
    if not model:
        return out
    extra = dict(model.get("model_kwargs") or {})
    graph = model.pop("graph", "dense")
    neighbors = model.pop("neighbors", 32)
    if graph != "dense":
        extra.setdefault("graph", graph)
        extra.setdefault("neighbors", neighbors)
    if extra:
        model["model_kwargs"] = extra
    if "target_norm" in model:
        molecules = dict(out.get("molecules") or {})
        molecules.setdefault("target_norm", model.pop("target_norm"))
        out["molecules"] = molecules
    switches = {k: model.pop(k) for k in _V1_SWITCHES if k in model}
    if switches:
        values = set(switches.values())
        if len(values) > 1:
            given = ", ".join(f"model.{k} = {v}" for k, v in switches.items())
            raise ValueError(
                f"{where}: written in configuration version 1, which had two switches for a "
                f"model's own normalization ({given}); version {CONFIG_VERSION} has one, "
                "model.builtin_norm, and which of the two counted depends on the model. Set "
                "model.builtin_norm and remove the two keys (and add \"version\": "
                f"{CONFIG_VERSION})")
        model.setdefault("builtin_norm", values.pop())
    out["model"] = model
    return out


def from_dict(cls: type, data: dict, path: str = "") -> Any:
    """Build dataclass ``cls`` (a config section or :class:`RunConfig`) from ``data``, checking
    keys and value types; a :class:`RunConfig` dict of an older version is migrated first
    (:func:`migrate`), older key names (:data:`OLD_KEYS`) are read as the new ones.

    Raises:
      ValueError: naming the dotted key of an unknown key or a value of the wrong type.
    """
    if cls is RunConfig:
        data = migrate(data, path or "config")
    return config_codec.from_dict(cls, data, path, old_keys=OLD_KEYS)


def merge(config: Any, overrides: dict, path: str = "") -> Any:
    """``config`` with the (nested, partial) ``overrides`` dict applied, type-checked;
    ``norm_kwargs`` and ``model_kwargs`` are replaced whole, not merged. Overrides of a
    :class:`RunConfig` in the version-1 layout are migrated first (:func:`migrate`)."""
    if isinstance(config, RunConfig):
        overrides = migrate(overrides, path or "config")
    return config_codec.merge(config, overrides, path, old_keys=OLD_KEYS, opaque=_OPAQUE)


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
    need(m.num_layers is None or m.num_layers >= 1, "model.num_layers",
         "an integer >= 1 or null", m.num_layers)
    need(m.hidden is None or m.hidden >= 1, "model.hidden", "an integer >= 1 or null", m.hidden)
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
    for i, seed in enumerate(t.seeds):  # PRNGKey keeps 32 bits: larger seeds would alias
        need(0 <= seed < SEED_LIMIT, f"train.seeds[{i}]", f"an integer in 0..2**32-1 "
             f"({SEED_LIMIT - 1}; larger seeds would alias smaller ones)", seed)
    for key, seed in (("molecules.data_seed", config.molecules.data_seed),
                      ("molecules.split_seed", config.molecules.split_seed),
                      ("data.seed", config.data.seed)):
        need(0 <= seed < SEED_LIMIT, key, f"an integer in 0..2**32-1 ({SEED_LIMIT - 1})", seed)
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
    models = registry.names(config.task)
    need(m.name in models, "model.name",
         f"a model of task {config.task!r} ({', '.join(models)}; `geonorm-jax models`)", m.name)
    if config.task != "nbody":
        need(t.train_samples is None, "train.train_samples", "null for the molecules task "
             "(it reads molecules.train, --train-frames)", t.train_samples)
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
    _check_memory(config)
    return config


#: seeds are drawn into ``jax.random.PRNGKey``, which keeps 32 bits
SEED_LIMIT = 2**32


def _memory_bytes() -> int | None:
    """The machine's physical memory in bytes (None where unknown)."""
    import os

    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _check_memory(config: RunConfig) -> None:
    """Refuse an N-body run whose data or one layer's edge features cannot fit in this
    machine's memory (a lower bound; otherwise XLA aborts mid-generation or mid-step)."""
    available = _memory_bytes()
    if available is None:
        return
    d, m, t = config.data, config.model, config.train
    n = d.particles
    samples = d.train + d.valid + d.test
    data = samples * n * 10 * 4  # loc, vel, target [N, 3] and charges [N] in float32
    kwargs = m.model_kwargs or {}
    neighbors = n - 1
    k = kwargs.get("neighbors", 32)
    if kwargs.get("graph") == "knn" and isinstance(k, int) and k >= 1:
        neighbors = min(n - 1, k)
    edges = t.batch_size * n * neighbors * (m.hidden or 64) * 4  # one layer's edge messages
    gib = lambda b: f"{b / 2**30:,.1f} GiB"
    if data > available:
        raise ValueError(f"data.particles: {n} particles x {samples} samples need at least "
                         f"{gib(data)} for the data alone; this machine has {gib(available)} "
                         "(lower --particles or the split sizes)")
    if edges > available:
        raise ValueError(f"data.particles: {n} particles need at least {gib(edges)} for one "
                         f"layer's edge features ({t.batch_size} x {n} x {neighbors} edges x "
                         f"{m.hidden or 64} channels); this machine has {gib(available)} "
                         "(lower --particles or --batch-size, or use --graph knn)")


def config_dict(config: RunConfig) -> dict:
    """``to_dict(config)`` without the data section of the other task (``molecules`` for an
    N-body run, ``data`` for a molecular one): what ``config.json`` holds."""
    out = to_dict(config)
    out.pop("molecules" if config.task == "nbody" else "data")
    return out


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write ``config`` as indented JSON (:func:`config_dict`), atomically (a reader beside
    the trainer never sees half a file)."""
    from geonorm_jax._io import write_json_atomic

    write_json_atomic(path, config_dict(config), indent=2)


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
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text (UTF-8) file ({e.reason})") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory; expected a config.json file") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of config sections ({{\"model\": "
                         f"{{...}}, \"train\": {{...}}}}); received a JSON "
                         f"{_json_kind(data)}")
    return merge(RunConfig(), data)


def _json_kind(value) -> str:
    return {list: "list", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)
