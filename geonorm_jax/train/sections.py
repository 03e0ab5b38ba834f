"""The sections of a run configuration, as typed frozen dataclasses.

* :class:`ModelConfig` (``model``): which registered model
  (:mod:`geonorm_jax.models.registry`), its shared knobs, the catalogue normalization and its
  place, the model's own normalization switch, further constructor arguments;
* :class:`MolecularTaskConfig` (``molecules``): frames, split, target normalization and loss
  weights of the molecular task (the N-body task's section is
  :class:`geonorm_jax.data.DataConfig`, ``data``);
* :class:`OptimizerConfig` (``optimizer``) and :class:`TrainConfig` (``train``), shared by
  every task.

:class:`~geonorm_jax.train.config.RunConfig` puts them together.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from geonorm_jax.data.molecules.sources import SOURCES

__all__ = ["ModelConfig", "MolecularTaskConfig", "OptimizerConfig", "TrainConfig"]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The model of a run and where its normalization goes; the same fields for every model.

    Attributes:
      name: a registered model (``geonorm-jax models``): ``"egnn"`` (task ``nbody``),
        ``"allegro"``, ``"schnet"``, ``"gemnet"`` (task ``molecules``), or one registered
        with :func:`geonorm_jax.models.registry.register`.
      hidden: width (EGNN ``hidden``, Allegro ``latent_dim``, SchNet ``features``, GemNet-T
        ``emb_size_atom`` and ``emb_size_edge``); None: the published value.
      num_layers: depth (EGNN layers, Allegro layers, SchNet interactions, GemNet-T blocks);
        None: the published value.
      cutoff: radius in Å (molecular models; the EGNN's optional kNN radius); None: the
        published value. Its one source: the neighbour statistics fitted on the training
        data use exactly the value the model receives. The model's own name for it inside
        ``model_kwargs`` is accepted as an alias (both given with different values is an
        error).
      norm: a catalogue name (``geonorm-jax norms``) or ``None`` for none.
      norm_place: one of the model's places (``geonorm-jax models``); ``None`` asks the model
        for the default place of the catalogue entry's kind (EGNN: coordinates -> coord,
        vectors -> update, features -> feature).
      norm_kwargs: hyperparameters passed to the norm's constructor.
      builtin_norm: the normalization the model's authors built into the architecture
        (Allegro's ``1/sqrt(N̄)`` on environment sums, SchNet's mean over neighbours,
        GemNet-T's fitted scale factors and ``1/sqrt(2)`` residual scaling); False switches
        it off (the survey's Section 4). The EGNN has none.
      model_kwargs: further constructor arguments in the model's own names, over its
        published configuration (e.g. ``{"graph": "knn", "neighbors": 32}`` or ``{"tanh":
        true}`` for the EGNN, ``{"l_max": 2}`` for Allegro).
    """

    name: str = "egnn"
    hidden: int | None = None
    num_layers: int | None = None
    cutoff: float | None = None
    norm: str | None = "geo_norm"
    norm_place: str | None = None
    norm_kwargs: dict = dataclasses.field(default_factory=dict)
    builtin_norm: bool = True
    model_kwargs: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class MolecularTaskConfig:
    """The ``molecules`` section: molecular frames, their split, the targets' normalization
    and the loss weights (task ``"molecules"``; units Å, eV, eV/Å).

    Attributes:
      dataset: ``"md17-xtb"`` (generated GFN2-xTB trajectories, cached), ``"md17-dft"``
        (their frames relabelled with PBE/def2-SVP, the revised MD17 level of theory, cached;
        :data:`geonorm_jax.data.molecules.sources.SOURCES`) or ``"file"`` (``data_file``).
      molecule: ``"uracil"`` (the survey's Figure 1), ``"ethanol"``, ``"aspirin"`` or
        ``"water"`` (generated data sets only).
      frames: frames generated in all (generated data sets; the cache key includes it).
      data_seed: seed of the generated trajectories (generated data sets).
      data_file: an MD17 (``R, E, F, z``) or revised MD17 (``coords, energies, forces,
        nuclear_charges``) ``.npz`` file, or an extended XYZ file (``.xyz`` / ``.extxyz``, one
        molecule, ``energy`` in eV and ``forces`` in eV/Å:
        :func:`geonorm_jax.data.molecules.load_extxyz`), chosen by the suffix; used when
        ``dataset == "file"``.
      train, valid: frames in the training and validation splits (rMD17 protocol: 1000 and
        50, drawn at random).
      test: test frames (``None``: the rest, at most 1000).
      split_seed: seed of the random split (:func:`geonorm_jax.data.molecules.split_indices`).
      energy_weight, force_weight: ``lambda_E``, ``lambda_F`` of the loss
        ``lambda_E mean_g ((E_g - E_g^ref) / A_g)^2 + lambda_F mean_{i,a} (F_ia - F_ia^ref)^2``
        (per-atom energy MSE plus force MSE, eV^2 and eV^2/Å^2, as the Allegro authors'
        configurations weight them: 1 and 1).
      target_norm: the per-species energy shift ``mu_Z`` and scale ``sigma`` fitted on the
        training split (``E_i = sigma E_i^net + mu_Z``; Allegro's, SchNet's and GemNet's
        output normalization), passed to models that declare ``species_shift`` and
        ``species_scale``. ``"shift"``: the shift only (``sigma = 1``: the targets are the
        per-species residuals, unscaled). False: the network predicts raw energies (unshifted
        totals).
      energy_unit: the unit the model is trained in: ``"eV"`` (energies eV, forces eV/Å; the
        loss in eV² and eV²/Å²) or ``"kcal/mol"`` (kcal/mol and kcal/mol/Å, as the MD17 files
        ship them; the loss in their squares; the model then predicts kcal/mol and the
        energy/force MAEs are in mkcal/mol and mkcal/mol/Å).
    """

    dataset: Literal[(*SOURCES, "file")] = "md17-xtb"
    molecule: str = "uracil"
    frames: int = 2000
    data_seed: int = 0
    data_file: str | None = None
    train: int = 1000
    valid: int = 50
    test: int | None = None
    split_seed: int = 0
    energy_weight: float = 1.0
    force_weight: float = 1.0
    target_norm: bool | Literal["shift"] = True
    energy_unit: Literal["eV", "kcal/mol"] = "eV"


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
