"""``geonorm-jax data generate`` and ``geonorm-jax data info``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

__all__ = ["add_parser", "generate_command", "info_command"]


def add_parser(subparsers) -> None:
    """Adds the ``data`` subcommand (with ``generate`` and ``info``) to ``subparsers``."""
    from geonorm_jax.data.config import DataConfig
    from geonorm_jax.data.molecules.sources import SOURCES

    d = DataConfig()
    data = subparsers.add_parser(
        "data", help="generate and inspect charged N-body and md17-xtb molecular data"
    )
    sub = data.add_subparsers(dest="data_command", metavar="{generate,info}")
    sub.required = True

    gen = sub.add_parser("generate", help="simulate the train/valid/test splits")
    gen.add_argument(
        "--dataset",
        choices=("charged", *SOURCES),
        default="charged",
        help="charged N-body (default) or a molecule: " + "; ".join(
            f"{name}: {s.summary}" for name, s in SOURCES.items()),
    )
    gen.add_argument("--particles", type=int, default=d.particles, help="N (default 5)")
    gen.add_argument("--train", type=int, default=d.train)
    gen.add_argument("--valid", type=int, default=d.valid)
    gen.add_argument("--test", type=int, default=d.test)
    gen.add_argument("--seed", type=int, default=None, help="default 43 (charged), 0 (molecules)")
    gen.add_argument("--steps", type=int, default=d.steps, help="T (default 5000)")
    gen.add_argument("--sample-freq", type=int, default=d.sample_freq)
    gen.add_argument("--dt", type=float, default=d.dt)
    gen.add_argument("--box-size", type=float, default=d.box_size)
    gen.add_argument("--loc-std", type=float, default=d.loc_std)
    gen.add_argument("--vel-norm", type=float, default=d.vel_norm)
    gen.add_argument("--interaction-strength", type=float, default=d.interaction_strength)
    where = gen.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, help="write the data set into this directory")
    where.add_argument(
        "--cache-dir",
        type=Path,
        help="cache root (default $GEONORM_JAX_CACHE or ~/.cache/geonorm-jax)",
    )
    gen.add_argument("--chunk-size", type=int, default=None, help="trajectories per jitted call")
    gen.add_argument(
        "--workers",
        type=int,
        default=None,
        help="threads (charged) or processes (md17-xtb); default: up to 2",
    )
    gen.add_argument("--no-progress", action="store_true", help="no progress bar")
    from geonorm_jax.data.molecules.cli import add_generate_arguments

    add_generate_arguments(gen)
    gen.set_defaults(func=generate_command)

    info = sub.add_parser(
        "info",
        help="print shapes, parameters and energy drift (N-body) or molecule, units and "
        "energy/force statistics (md17-xtb) of a data set",
    )
    info.add_argument("directory", type=Path)
    info.add_argument(
        "--max-trajectories",
        type=int,
        default=200,
        help="trajectories per split used for the energy drift (default 200)",
    )
    info.set_defaults(func=info_command)


def generate_command(args: argparse.Namespace) -> int:
    """``data generate``; a file-system error (disk full, no permission) becomes one
    :class:`~geonorm_jax.data.files.DataFileError` line naming the file (every file is written
    atomically, so nothing is left half-written; a rerun resumes)."""
    from geonorm_jax.data.files import DataFileError

    try:
        return _generate(args)
    except FileNotFoundError:
        raise
    except OSError as e:
        where = e.filename or getattr(args, "out", None) or "the data directory"
        raise DataFileError(
            f"data generate: cannot write {where}: {e.strerror or e}; nothing was left "
            f"half-written (every file is written atomically); free space or choose another "
            f"--out / --cache-dir, then rerun to resume") from None


def _generate(args: argparse.Namespace) -> int:
    from geonorm_jax.data.config import DataConfig
    from geonorm_jax.data.files import get_dataset, is_complete, write_dataset
    from geonorm_jax.data.molecules.sources import SOURCES

    if args.dataset in SOURCES:
        from geonorm_jax.data.molecules.cli import generate_molecules

        return generate_molecules(args)
    _check_frames(args, DataConfig)
    try:
        config = _generation_config(args, DataConfig)
    except ValueError as e:  # name the flag, not the field
        raise ValueError(f"data generate: {_flag_names(str(e))}") from None
    options = dict(progress=not args.no_progress, chunk_size=args.chunk_size, workers=args.workers)
    if args.out is not None:
        if is_complete(args.out, config):
            print(f"already generated with these parameters: {args.out}")
            return 0
        directory = write_dataset(config, args.out, **options)
    else:
        directory = get_dataset(config, args.cache_dir, **options)
    print(directory)
    default = DataConfig()
    if config.num_frames <= default.frame_out:
        print(f"note: {config.num_frames} frames per trajectory; training with the default "
              f"frames (data.frame_in {default.frame_in}, data.frame_out {default.frame_out}) "
              f"needs at least {default.frame_out + 1}, i.e. --steps >= "
              f"{default.frame_out + 2} x --sample-freq; or set data.frame_in and "
              f"data.frame_out below {config.num_frames} in the run's --config")
    return 0


_FLAGS = {"sample_freq": "--sample-freq", "steps": "--steps", "box_size": "--box-size",
          "loc_std": "--loc-std", "vel_norm": "--vel-norm", "dt": "--dt",
          "interaction_strength": "--interaction-strength", "seed": "--seed"}


def _flag_names(message: str) -> str:
    """``message`` with DataConfig field names replaced by the command's flags."""
    import re

    return re.sub(r"\b(" + "|".join(_FLAGS) + r")\b", lambda m: _FLAGS[m.group(1)], message)


def _check_frames(args: argparse.Namespace, data_config) -> None:
    """At least two saved frames per trajectory (an input and a target); else a message
    naming ``--steps`` and ``--sample-freq``."""
    steps, freq = args.steps, args.sample_freq
    if isinstance(steps, int) and isinstance(freq, int) and steps >= 1 and freq >= 1 \
            and steps % freq == 0 and steps // freq - 1 < 2:
        raise ValueError(
            f"data generate: --steps {steps} with --sample-freq {freq} saves "
            f"{steps // freq - 1} frame(s) per trajectory (steps / sample_freq - 1); at least 2 "
            f"are needed (an input and a target frame), so --steps >= {3 * freq}; the "
            f"default training frames (data.frame_in {data_config.frame_in}, data.frame_out "
            f"{data_config.frame_out}) need --steps >= {(data_config.frame_out + 2) * freq}")


def _generation_config(args: argparse.Namespace, data_config):
    return data_config(
        particles=args.particles,
        train=args.train,
        valid=args.valid,
        test=args.test,
        seed=data_config.seed if args.seed is None else args.seed,
        steps=args.steps,
        sample_freq=args.sample_freq,
        dt=args.dt,
        box_size=args.box_size,
        loc_std=args.loc_std,
        vel_norm=args.vel_norm,
        interaction_strength=args.interaction_strength,
        # the sampled frames do not change the files; (0, 1) is valid for >= 2 frames
        frame_in=0,
        frame_out=1,
    )


def _stats(values: np.ndarray) -> str:
    if values.size == 0:
        return "n/a"
    q = np.quantile(values, [0.5, 0.9])
    return f"median {q[0]:.2e}  p90 {q[1]:.2e}  max {values.max():.2e}  (n={values.size})"


def info_command(args: argparse.Namespace) -> int:
    from geonorm_jax.data.config import SPLITS
    from geonorm_jax.data.energy import energy_drift
    from geonorm_jax.data.files import load_trajectories, read_metadata
    from geonorm_jax.data.molecules.files import is_molecular_dataset

    if is_molecular_dataset(args.directory):
        from geonorm_jax.data.molecules.cli import info_molecules

        return info_molecules(args.directory)
    if args.max_trajectories < 1:
        raise ValueError(f"--max-trajectories must be positive, got {args.max_trajectories}")
    metadata = read_metadata(args.directory)
    config = metadata["config"]
    print(f"data set: {args.directory}")
    print(
        f"package version {metadata.get('package_version')}, format "
        f"{metadata.get('format_version')}, created {metadata.get('created')}, generated in "
        f"{metadata.get('generation_seconds')} s"
    )
    print("parameters: " + json.dumps(config, sort_keys=True))
    print(f"frames: {metadata.get('num_frames')} ({metadata.get('frame_steps')})")
    k = float(config["interaction_strength"])
    for split in SPLITS:
        arrays = load_trajectories(args.directory, split)
        shapes = ", ".join(f"{name} {list(a.shape)} {a.dtype}" for name, a in arrays.items())
        print(f"{split}: {shapes}")
        m = min(args.max_trajectories, arrays["loc"].shape[0])
        drift = energy_drift(arrays["loc"][:m], arrays["vel"][:m], arrays["charges"][:m], k)
        clipped = arrays["clipped"][:m]
        print(f"  force clipped in {arrays['clipped'].mean():.1%} of trajectories")
        print(f"  energy drift, no clipping ({m} first): {_stats(drift[~clipped])}")
        print(f"  energy drift, all ({m} first):         {_stats(drift)}")
    return 0
