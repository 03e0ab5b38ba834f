"""``geonorm-jax train``, ``geonorm-jax eval`` and ``geonorm-jax plot``."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import typing
from pathlib import Path

__all__ = [
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
PRESET_NAMES = ["quick", "egnn-5body", "geonorm-paper", "knn-500", "test", "allegro-uracil",
                "schnet-uracil", "gemnet-uracil"]

# flag dest -> dotted config key
_OVERRIDES = {
    "particles": "data.particles",
    "model": "model.name",
    "molecule": "molecules.molecule",
    "frames": "molecules.frames",
    "train_frames": "molecules.train",
    "valid_frames": "molecules.valid",
    "num_layers": "model.num_layers",
    "hidden": "model.hidden",
    "norm": "model.norm",
    "norm_place": "model.norm_place",
    "graph": "model.graph",
    "neighbors": "model.neighbors",
    "lr": "optimizer.lr",
    "weight_decay": "optimizer.weight_decay",
    "clip_norm": "optimizer.clip_norm",
    "schedule": "optimizer.schedule",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "seeds": "train.seeds",
    "train_samples": "train.train_samples",
    "eval_every": "train.eval_every",
    "checkpoint_every": "train.checkpoint_every",
    "devices": "train.devices",
    "explosion_threshold": "train.explosion_threshold",
}


def add_parser(subparsers) -> None:
    """Register ``train``, ``eval`` and ``plot``.

    The model flags use the model's names (``--num-layers``, ``--graph``), and the choices of
    ``--norm-place`` are the places the models declare (:data:`geonorm_jax.models.EGNN_PLACEMENT`,
    ``ALLEGRO_PLACEMENT``, ``SCHNET_PLACEMENT``).
    ``--layers`` is accepted as the older spelling of ``--num-layers`` (not listed).
    """
    from geonorm_jax.models import ALLEGRO_PLACEMENT, EGNN, GEMNET_PLACEMENT, SCHNET_PLACEMENT
    from geonorm_jax.train.config import MODELS, ModelConfig
    p = subparsers.add_parser(
        "train",
        help="train an EGNN on charged N-body (default: the quick GeoNorm job), or Allegro / "
             "SchNet / GemNet-T on molecular energies and forces",
        description=(
            "Train the velocity EGNN on the charged N-body task, or a molecular model (--model "
            "allegro|schnet|gemnet, or --preset allegro-uracil|schnet-uracil|gemnet-uracil) on "
            "the energies and "
            "forces of MD frames. With no arguments: the quick preset (5-body data from the "
            "cache, generated if missing; EGNN + GeoNorm; about 3 minutes on 2 CPU cores). "
            "Several --seeds train together in one jitted program (jax.vmap). Writes "
            "RUN_DIR/{config.json, metrics.jsonl, checkpoints/, curves.png, summary.json} and "
            "prints a table. Flags override the preset; the result is saved as config.json. "
            "Ctrl-C saves a checkpoint; --resume RUN_DIR continues."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("run")
    g.add_argument("--preset", choices=PRESET_NAMES,
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
    g.add_argument("--cache-dir", metavar="DIR", default=None,
                   help="dataset cache (default: $GEONORM_JAX_CACHE or the data default)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("data and model")
    g.add_argument("--model", choices=list(MODELS),
                   help="egnn (charged N-body), allegro, schnet or gemnet (molecules; without "
                        "--preset the MODEL-uracil preset)")
    g.add_argument("--molecule", help="molecules: uracil, ethanol, aspirin or water "
                                      "(generated GFN2-xTB frames)")
    g.add_argument("--frames", type=int, help="molecules: frames to generate in all")
    g.add_argument("--train-frames", type=int, help="molecules: training frames (rMD17: 1000)")
    g.add_argument("--valid-frames", type=int, help="molecules: validation frames (rMD17: 50)")
    g.add_argument("--data-file", metavar="NPZ",
                   help="molecules: train on an MD17 (R, E, F, z) or revised MD17 (coords, "
                        "energies, forces, nuclear_charges) .npz file")
    g.add_argument("--no-target-norm", action="store_true",
                   help="molecules: no per-species energy shift and scale")
    g.add_argument("--no-neighbor-norm", action="store_true",
                   help="molecules: no neighbour normalization (Allegro 1/sqrt(N̄), SchNet's "
                        "mean over neighbours)")
    g.add_argument("--no-scale-norm", action="store_true",
                   help="molecules: GemNet without its fitted scale factors and 1/sqrt(2) "
                        "residual scaling")
    g.add_argument("--particles", type=int, help="number of particles N")
    g.add_argument("--train-samples", type=int,
                   help="use the first this many training simulations")
    g.add_argument("--num-layers", type=int,
                   help="number of EGNN layers (>= 1); --layers is the older spelling")
    g.add_argument("--layers", type=int, dest="num_layers", help=argparse.SUPPRESS)
    g.add_argument("--hidden", type=int, help="hidden width")
    g.add_argument("--norm", metavar="NAME",
                   help="normalization: a catalogue name (see `geonorm-jax norms`) or 'none'")
    placements = (EGNN.placement, ALLEGRO_PLACEMENT, SCHNET_PLACEMENT, GEMNET_PLACEMENT)
    places = list(dict.fromkeys(n for pl in placements for n in pl.names()))
    g.add_argument("--norm-place", choices=places,
                   help="where the norm goes (default: the model's place for its kind; EGNN: "
                        + ", ".join(f"{kind} -> {place}" for kind, place in
                                    EGNN.placement.defaults)
                        + "; Allegro: " + ", ".join(ALLEGRO_PLACEMENT.names())
                        + "; SchNet: " + ", ".join(SCHNET_PLACEMENT.names())
                        + "; GemNet: " + ", ".join(GEMNET_PLACEMENT.names()) + ")")
    g.add_argument("--graph", choices=typing.get_args(typing.get_type_hints(ModelConfig)["graph"]),
                   help="dense (fully connected, the papers') or knn (edge list, O(N k); "
                        "for large N)")
    g.add_argument("--neighbors", type=int, help="k of the kNN graph (--graph knn)")
    g = p.add_argument_group("optimization")
    g.add_argument("--lr", type=float, help="learning rate (Adam)")
    g.add_argument("--weight-decay", type=float, help="L2 weight decay, PyTorch-Adam style")
    g.add_argument("--clip-norm", type=float, help="clip gradients to this global norm")
    g.add_argument("--schedule", choices=["constant", "cosine"], help="learning-rate schedule")
    g.add_argument("--epochs", type=int, help="number of epochs")
    g.add_argument("--batch-size", type=int, help="batch size (train); drop_last")
    g.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                   help="seeds trained together with jax.vmap, e.g. --seeds 30 40 50 60")
    g.add_argument("--eval-every", type=int, help="evaluate val/test every k epochs")
    g.add_argument("--checkpoint-every", type=int, help="checkpoint every k epochs")
    g.add_argument("--devices", type=int,
                   help="data-parallel devices (default: as many as divide the batch)")
    g.add_argument("--explosion-threshold", type=float,
                   help="a seed whose batch loss is NaN/inf or above this is frozen and "
                        "recorded as exploded")
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


def config_from_args(args):
    """``(config, preset_name)`` from the parsed flags (preset, then --config, then flags)."""
    from geonorm_jax.train import config as cfg

    if args.test:
        if args.preset not in (None, "test"):
            raise ValueError(f"--test conflicts with --preset {args.preset}")
        args.preset = "test"
    overrides: dict = {}
    for dest, key in _OVERRIDES.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if dest == "norm" and value.lower() == "none":
            value = None
        _set(overrides, key, value)
    if getattr(args, "data_file", None):
        _set(overrides, "molecules.dataset", "file")
        _set(overrides, "molecules.data_file", str(args.data_file))
    for flag, key in (("no_target_norm", "model.target_norm"),
                      ("no_neighbor_norm", "model.neighbor_norm"),
                      ("no_scale_norm", "model.scale_norm")):
        if getattr(args, flag, False):
            _set(overrides, key, False)
    model = getattr(args, "model", None)
    if args.resume and args.preset is None and args.config is None:
        from geonorm_jax.train.rundir import check_resume

        base = check_resume(args.resume, None)
        name = "resume"
    elif args.config is not None:
        base = cfg.load_config(args.config)
        name = Path(args.config).stem
    else:
        name = args.preset or (f"{model}-uracil" if model not in (None, "egnn") else "quick")
        base = cfg.preset(name)
    return cfg.merge(base, overrides), name


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
    from geonorm_jax.train.eval_run import evaluate_run, format_rte_table

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

    for d in args.run_dirs:
        if not (Path(d) / "metrics.jsonl").exists():
            raise ValueError(f"{d!r} is not a run directory (no metrics.jsonl)")
    out = plot_runs(args.run_dirs, args.out, title=args.title)
    print(out)
    return 0
