"""``geonorm-jax train``, ``geonorm-jax eval`` and ``geonorm-jax plot``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import time
import types
import typing
from pathlib import Path
from typing import Any

__all__ = [
    "FLAGS",
    "Flag",
    "OLD_FLAGS",
    "add_parser",
    "config_from_args",
    "accept_negative_numbers",
    "enable_compile_cache",
    "run_train",
    "run_eval",
    "run_plot",
]

PRESET_HELP = (
    "quick (default: EGNN + GeoNorm on charged 5-body, about 3 minutes on 2 CPU cores), "
    "egnn-5body (the EGNN paper's protocol: 3000 train samples, batch 100, lr 5e-4, 10000 "
    "epochs, no normalization), geonorm-paper (the GeoNorm paper's Section 5: N=50, 5 layers, "
    "batch 50, 1000 epochs, seeds 30 40 50 60, GeoNorm), knn-500 (N=500 on a kNN edge list, "
    "k=32, shared GeoNorm, a short run), test (tiny, seconds); molecular energies and forces: "
    "allegro-uracil (Allegro, the authors' tutorial size, on GFN2-xTB uracil frames, 100 "
    "epochs), schnet-uracil (SchNet, published MD17 size, 100 epochs), gemnet-uracil (GemNet-T, "
    "the authors' MD17 size, 100 epochs)"
)

#: the preset a task starts from when ``--model`` names a model with no ``MODEL-uracil``
#: preset (the model's published defaults replace the preset's model section)
TASK_PRESETS = {"nbody": "quick", "molecules": "allegro-uracil"}


@dataclasses.dataclass(frozen=True)
class Flag:
    """One ``geonorm-jax train`` flag that sets one config key.

    The flag's type (and choices, for a ``Literal``) comes from the typed config field of
    ``key`` (:mod:`geonorm_jax.train.sections`), so the parser and the configuration cannot
    disagree. ``value``: a constant the flag stores (``--no-target-norm`` stores False);
    ``type``: the type of an entry of the free-form ``model.model_kwargs``.
    """

    key: str
    help: str
    flag: str | None = None
    value: Any = None
    metavar: str | None = None
    type: Any = None

    @property
    def name(self) -> str:
        return self.flag or "--" + self.key.rsplit(".", 1)[-1].replace("_", "-")

    @property
    def dest(self) -> str:
        return self.name.lstrip("-").replace("-", "_")


def _model_places() -> str:
    from geonorm_jax.models import registry

    return "; ".join(f"{s.name}: {', '.join(s.placement.names())}" for s in registry.specs())


# Every flag that sets a config key, in help order (group, flags).
FLAGS: tuple[tuple[str, tuple[Flag, ...]], ...] = (
    ("data and model", (
        Flag("model.name", "a registered model (`geonorm-jax models`): egnn (charged N-body), "
             "allegro, schnet, gemnet (molecules), or one added with --import; without "
             "--preset: MODEL-uracil if it exists, else the task's default preset",
             flag="--model"),
        Flag("molecules.dataset", "molecules: generated GFN2-xTB frames (md17-xtb), their "
             "PBE/def2-SVP relabelling (md17-dft), or a file (--data-file)"),
        Flag("molecules.energy_unit", "molecules: the unit trained in, eV or kcal/mol (MD17's)"),
        Flag("molecules.molecule", "molecules: uracil, ethanol, aspirin or water (generated "
             "GFN2-xTB frames)"),
        Flag("molecules.frames", "molecules: frames to generate in all"),
        Flag("molecules.train", "molecules: training frames (rMD17: 1000)",
             flag="--train-frames"),
        Flag("molecules.valid", "molecules: validation frames (rMD17: 50)",
             flag="--valid-frames"),
        Flag("molecules.target_norm", "molecules: no per-species energy shift and scale",
             flag="--no-target-norm", value=False),
        Flag("model.builtin_norm", "the model without its authors' own normalization "
             "(Allegro 1/sqrt(N̄), SchNet's mean over neighbours, GemNet-T's scale factors "
             "and residual scaling)", flag="--no-builtin-norm", value=False),
        Flag("data.particles", "nbody: number of particles N"),
        Flag("train.train_samples", "use the first this many training samples"),
        Flag("model.num_layers", "depth: EGNN layers, Allegro layers, SchNet interactions, "
             "GemNet-T blocks (>= 1); --layers is the older spelling"),
        Flag("model.hidden", "width: EGNN hidden, Allegro latent_dim, SchNet features, "
             "GemNet-T atom and edge embeddings"),
        Flag("model.cutoff", "cutoff radius in Å (molecular models; the EGNN's kNN radius)"),
        Flag("model.norm", "normalization: a catalogue name (see `geonorm-jax norms`) or "
             "'none'", metavar="NAME"),
        Flag("model.norm_place", "where the norm goes (default: the model's place for its "
             "kind); places per model: {places}"),
        Flag("model.model_kwargs", "further constructor arguments of the model, as a JSON "
             "object in its own argument names (`geonorm-jax models --json`), e.g. "
             "'{\"tanh\": true}'", metavar="JSON"),
        Flag("model.model_kwargs.graph", "EGNN: dense (fully connected, the papers') or knn "
             "(edge list, O(N k); for large N)", flag="--graph", type=str),
        Flag("model.model_kwargs.neighbors", "EGNN: k of the kNN graph (--graph knn)",
             flag="--neighbors", type=int),
    )),
    ("optimization", (
        Flag("optimizer.lr", "learning rate (Adam)"),
        Flag("optimizer.weight_decay", "L2 weight decay, PyTorch-Adam style"),
        Flag("optimizer.clip_norm", "clip gradients to this global norm"),
        Flag("optimizer.schedule", "learning-rate schedule"),
        Flag("train.epochs", "number of epochs"),
        Flag("train.batch_size", "batch size (train); drop_last"),
        Flag("train.seeds", "seeds trained together with jax.vmap, e.g. --seeds 30 40 50 60",
             metavar="SEED"),
        Flag("train.eval_every", "evaluate val/test every k epochs"),
        Flag("train.checkpoint_every", "checkpoint every k epochs"),
        Flag("train.devices", "data-parallel devices (default: as many as divide the batch)"),
        Flag("train.explosion_threshold", "a seed whose batch loss is NaN/inf or above this "
             "is frozen and recorded as exploded"),
    )),
)

# Older spellings of flags, accepted but not listed: {flag: the flag it stands for}.
OLD_FLAGS = {"--layers": "--num-layers", "--no-neighbor-norm": "--no-builtin-norm",
             "--no-scale-norm": "--no-builtin-norm"}


def _field_type(key: str):
    """The annotation of config field ``key`` (``"model.hidden"``); ``dict`` entries of
    ``model.model_kwargs`` are free-form (None)."""
    from geonorm_jax.train.config import RunConfig

    tp = RunConfig
    for part in key.split("."):
        if not dataclasses.is_dataclass(tp):
            return None
        tp = typing.get_type_hints(tp)[part]
    return tp


def _argparse_kwargs(f: Flag) -> dict:
    """``add_argument`` keywords of ``f`` from the typed config (type, choices, nargs)."""
    out: dict = {"dest": f.dest, "default": None, "help": f"{f.help} [{f.key}]"}
    if f.metavar:
        out["metavar"] = f.metavar
    if f.value is not None:
        return {**out, "action": "store_const", "const": f.value}
    tp = _field_type(f.key)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        tp, args = args[0], list(typing.get_args(args[0]))
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return {**out, "choices": list(args)}
    if origin is tuple:
        return {**out, "type": args[0], "nargs": "+"}
    if tp is dict:
        return {**out, "type": _json_object}
    if tp in (int, float):
        return {**out, "type": tp}
    return {**out, "type": f.type} if f.type is not None else out


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"expected a JSON object; {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object; received {text!r}")
    return value


def add_parser(subparsers) -> None:
    """Register ``train``, ``eval`` and ``plot``.

    The flags of ``train`` that set config keys come from :data:`FLAGS`, typed by the config
    dataclasses; the older spellings in :data:`OLD_FLAGS` are accepted (not listed).
    """
    from geonorm_jax.models.cli import add_import_flag
    from geonorm_jax.train.config import PRESETS

    p = subparsers.add_parser(
        "train",
        help="train an EGNN on charged N-body (default: the quick GeoNorm job), or a "
             "registered potential (Allegro / SchNet / GemNet-T / your own) on molecular "
             "energies and forces",
        description=(
            "Train the velocity EGNN on the charged N-body task, or a molecular model (--model "
            "allegro|schnet|gemnet, or --preset allegro-uracil|schnet-uracil|gemnet-uracil) on "
            "the energies and forces of MD frames. With no arguments: the quick preset "
            "(5-body data from the cache, generated if missing; EGNN + GeoNorm; about 3 "
            "minutes on 2 CPU cores). Several --seeds train together in one jitted program "
            "(jax.vmap). Writes RUN_DIR/{config.json, metrics.jsonl, checkpoints/, "
            "curves.png, summary.json} and prints a table. Flags override the preset "
            "(each flag's config key in brackets); the result is saved as config.json. "
            "Ctrl-C saves a checkpoint; --resume RUN_DIR continues."
        ),
    )
    g = p.add_argument_group("run")
    g.add_argument("--preset", choices=list(PRESETS),
                   default=None, help=f"named configuration: {PRESET_HELP}")
    g.add_argument("--test", action="store_true",
                   help="the tiny 'test' preset (same as --preset test)")
    g.add_argument("--config", metavar="JSON", default=None,
                   help="a config.json (full or partial) to start from instead of a preset")
    g.add_argument("--out", metavar="RUN_DIR", default=None,
                   help="run directory to create (default: runs/<preset>-<date>-<time>)")
    g.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue the run in RUN_DIR from its newest checkpoint; other flags "
                        "must agree with its config.json")
    g.add_argument("--data-dir", metavar="DIR", default=None,
                   help="dataset directory to use instead of the cache (N-body, or a "
                        "molecular dataset written by `geonorm-jax data generate`)")
    g.add_argument("--data-file", metavar="NPZ",
                   help="molecules: train on an MD17 (R, E, F, z) or revised MD17 (coords, "
                        "energies, forces, nuclear_charges) .npz file, or an extended XYZ "
                        "(.xyz, .extxyz) file of one molecule with energy (eV) and forces "
                        "(eV/Å) [molecules.dataset = file, molecules.data_file]")
    g.add_argument("--cache-dir", metavar="DIR", default=None,
                   help="dataset cache (default: $GEONORM_JAX_CACHE or the data default)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_import_flag(g)
    for title, flags in FLAGS:
        g = p.add_argument_group(title)
        for f in flags:
            kwargs = _argparse_kwargs(f)
            if "{places}" in kwargs["help"]:
                kwargs["help"] = kwargs["help"].replace("{places}", _model_places())
            g.add_argument(f.name, **kwargs)
    for old, new in OLD_FLAGS.items():
        f = next(f for _, flags in FLAGS for f in flags if f.name == new)
        p.add_argument(old, **{**_argparse_kwargs(f), "help": argparse.SUPPRESS})
    p.set_defaults(func=run_train)
    accept_negative_numbers(p)

    e = subparsers.add_parser(
        "eval",
        help="evaluate a run's best parameters (MSE; --rte: rotation/translation errors)",
        description=(
            "Evaluate the best-validation parameters of RUN_DIR on the validation and test "
            "splits. --rte adds the GeoNorm paper's Table 1 columns: mean/median/max test MSE "
            "under a random rotation and under a random translation of every test input and "
            "target, and their increase over the untransformed MSE (delta_R_err, delta_T_err); "
            "writes RUN_DIR/rte.json."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    e.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by train")
    e.add_argument("--rte", action="store_true", help="also compute the 8 RTE columns")
    e.add_argument("--draws", type=int, default=None,
                   help="random transforms per test sample (default: the run's rte_draws)")
    e.add_argument("--translation-scale", type=float, default=None,
                   help="translation std in units of the test positions' std (default: the "
                        "run's rte_translation_scale)")
    e.add_argument("--data-dir", metavar="DIR", default=None, help="dataset directory")
    e.add_argument("--cache-dir", metavar="DIR", default=None, help="dataset cache")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    add_import_flag(e)
    e.set_defaults(func=run_eval)
    accept_negative_numbers(e)

    pl = subparsers.add_parser(
        "plot",
        help="overlay the training curves of several runs",
        description="Overlay log-scale train and validation curves of one or more runs "
                    "(one line per run and seed; explosions marked) into a PNG.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    pl.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="run directories")
    pl.add_argument("--out", metavar="PNG", default="curves.png", help="output image")
    pl.add_argument("--title", default=None, help="figure title")
    pl.set_defaults(func=run_plot)


# A negative number in any notation: -1, -.5, -1e-3, -2.5E+4, -inf, -nan.
_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$",
                              re.IGNORECASE)


def accept_negative_numbers(parser: argparse.ArgumentParser) -> None:
    """Read ``--lr -1e-3`` as the value ``-1e-3``, not as an unknown flag.

    argparse takes an argument for a negative number only if it matches its pattern
    ``^-\\d+$|^-\\d*\\.\\d+$``, which misses exponents (``-1e-3``); anything else that
    starts with ``-`` is read as a flag and the option before it fails with "expected one
    argument". The wider pattern lets the value through, so validation can say what is wrong
    with it (``optimizer.lr: expected a positive number, got -0.001``). No flag of these
    commands looks like a negative number, so nothing else changes.
    """
    parser._negative_number_matcher = _NEGATIVE_NUMBER  # noqa: SLF001 - argparse has no API


def enable_compile_cache() -> None:
    """Keep compiled XLA programs on disk so that resuming, evaluating or re-running the same
    configuration skips compilation: ``$JAX_COMPILATION_CACHE_DIR`` if set (JAX reads it),
    else ``<data cache>/xla`` (``$GEONORM_JAX_CACHE/xla`` or ``~/.cache/geonorm-jax/xla``).
    ``GEONORM_JAX_NO_COMPILE_CACHE=1`` turns it off."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.environ.get(
        "GEONORM_JAX_NO_COMPILE_CACHE"
    ):
        return
    import jax

    from geonorm_jax.data import default_cache_dir

    if jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", str(default_cache_dir() / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _set(d: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    for key in path:
        d = d.setdefault(key, {})
    d[last] = value


def _default_preset(model: str | None) -> str:
    """The preset of ``--model`` without ``--preset``: ``MODEL-uracil`` if it exists, else the
    default preset of the model's task (``quick`` for N-body)."""
    from geonorm_jax.models import registry
    from geonorm_jax.train.config import PRESETS

    if model is None:
        return TASK_PRESETS["nbody"]
    if f"{model}-uracil" in PRESETS:
        return f"{model}-uracil"
    return TASK_PRESETS[registry.get(model).task]


def config_from_args(args):
    """``(config, preset_name)`` from the parsed flags (preset, then --config, then flags).

    A model named by ``--model`` that differs from the preset's starts from its published
    defaults (the preset's ``hidden``, ``num_layers``, ``cutoff`` and ``model_kwargs`` belong
    to the preset's model and are dropped)."""
    from geonorm_jax.models.cli import import_plugins
    from geonorm_jax.train import config as cfg

    import_plugins(getattr(args, "imports", ()))
    if args.test:
        if args.preset not in (None, "test"):
            raise ValueError(f"--test conflicts with --preset {args.preset}")
        args.preset = "test"
    overrides: dict = {}
    extra: dict = {}
    for _, flags in FLAGS:
        for f in flags:
            value = getattr(args, f.dest, None)
            if value is None:
                continue
            if f.key == "model.norm" and value.lower() == "none":
                value = None
            if f.key.startswith("model.model_kwargs."):
                extra[f.key.rsplit(".", 1)[-1]] = value
            elif f.key == "model.model_kwargs":
                extra = {**value, **extra}
            else:
                _set(overrides, f.key, value)
    if getattr(args, "data_file", None):
        _set(overrides, "molecules.dataset", "file")
        _set(overrides, "molecules.data_file", str(args.data_file))
    model = getattr(args, "model", None)
    if args.resume and args.preset is None and args.config is None:
        from geonorm_jax.train.rundir import check_resume

        base = check_resume(args.resume, None)
        name = "resume"
    elif args.config is not None:
        base = cfg.load_config(args.config)
        name = Path(args.config).stem
    else:
        name = args.preset or _default_preset(model)
        base = cfg.preset(name)
    if model is not None and model != base.model.name:
        from geonorm_jax.models import registry

        base = cfg.merge(base, {"task": registry.get(model).task,
                                "model": {"hidden": None, "num_layers": None, "cutoff": None,
                                          "model_kwargs": {}}})
    if extra:
        _set(overrides, "model.model_kwargs", {**base.model.model_kwargs, **extra})
    config = cfg.merge(base, overrides)
    _refuse_other_task_flags(args, config)
    return config, name


#: the config section of each task's data (flags that set the other task's are refused)
_TASK_SECTIONS = {"nbody": "data", "molecules": "molecules"}
#: flags that only one task reads, outside the data sections: {config key: task}
_TASK_ONLY_KEYS = {"train.train_samples": "nbody"}


def _refuse_other_task_flags(args, config) -> None:
    """A flag that sets a key the run's task never reads (``--data-file``, ``--particles`` or
    ``--train-samples`` for a molecular run, ``--molecule`` or ``--train-frames`` for an
    N-body run) would be silently ignored: refuse it, naming the flag and the task."""
    given = []
    if getattr(args, "data_file", None):
        given.append(("--data-file", "molecules"))
    for _, flags in FLAGS:
        for f in flags:
            if getattr(args, f.dest, None) is None:
                continue
            section = f.key.split(".", 1)[0]
            task = next((t for t, sec in _TASK_SECTIONS.items() if sec == section),
                        _TASK_ONLY_KEYS.get(f.key))
            if task is not None:
                given.append((f.name, task))
    for flag, task in given:
        if task != config.task:
            other = ("--data-dir DIR (an N-body dataset directory)" if config.task == "nbody"
                     else "the molecular flags (--data-file, --molecule, --train-frames, ...)")
            raise ValueError(
                f"{flag}: applies to the {task!r} task only; this run trains the "
                f"{config.task!r} task (model {config.model.name!r}), which would ignore it; "
                f"for {config.task!r} data use {other}, or pick a {task} model with --model")


def run_train(args) -> int:
    from geonorm_jax.train.loop import train  # looked up at call time (tests patch it)
    from geonorm_jax.train.rundir import format_table

    config, name = config_from_args(args)
    enable_compile_cache()
    if args.resume:
        run_dir = Path(args.resume)
        if args.out and Path(args.out) != run_dir:
            raise ValueError("--out and --resume name different directories; give only one")
    else:
        run_dir = Path(args.out or f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    t0 = time.perf_counter()
    summary = train(config, run_dir, resume=bool(args.resume), data_dir=args.data_dir,
                    cache_dir=args.cache_dir, progress=not args.no_progress)
    print(format_table(summary))
    print(f"run directory: {run_dir}  ({time.perf_counter() - t0:.1f} s)")
    return 130 if summary.get("interrupted") else 0


def run_eval(args) -> int:
    from geonorm_jax.models.cli import import_plugins
    from geonorm_jax.train.eval_run import evaluate_run, format_rte_table

    import_plugins(args.imports)
    enable_compile_cache()
    result = evaluate_run(args.run_dir, rte=args.rte, draws=args.draws,
                          translation_scale=args.translation_scale, data_dir=args.data_dir,
                          cache_dir=args.cache_dir)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for seed, val, test in zip(result["seeds"], result["val_mse"], result["test_mse"],
                               strict=True):
        print(f"seed {seed}: val MSE {val:.4e}  test MSE {test:.4e}")
    if args.rte:
        proto = result["rte_protocol"]
        print(f"\nRTE on {proto['test_samples']} test samples x {proto['draws']} draws; "
              f"translation std {proto['translation_std']:.3g} "
              f"({proto['translation_scale']} x position std)")
        print(format_rte_table(result))
    sys.stdout.flush()
    return 0


def run_plot(args) -> int:
    from geonorm_jax.train.plot import plot_runs

    out = plot_runs(args.run_dirs, args.out, title=args.title)
    print(out)
    return 0
