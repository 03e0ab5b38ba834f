"""The ``md17-xtb`` parts of ``geonorm-jax data generate`` and ``geonorm-jax data info``.

``geonorm-jax data generate --dataset md17-xtb --molecule uracil --frames 2000`` generates (or
finds in the cache, or resumes) a GFN2-xTB Langevin data set, shows a tqdm progress bar and
prints the directory and the generation rate (frames/s and xTB evaluations/s).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from geonorm_jax.data.molecules.config import MoleculeConfig
from geonorm_jax.data.molecules.structures import MOLECULES

__all__ = ["add_generate_arguments", "generate_molecules", "info_molecules"]


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``md17-xtb`` options to the ``data generate`` parser (``--seed``, ``--out``,
    ``--cache-dir``, ``--workers`` and ``--no-progress`` are shared with the N-body data)."""
    d = MoleculeConfig()
    g = parser.add_argument_group("md17-xtb (with --dataset md17-xtb)")
    g.add_argument("--molecule", choices=sorted(MOLECULES), default=d.molecule)
    g.add_argument("--frames", type=int, default=d.frames, help=f"default {d.frames}")
    g.add_argument("--temperature", type=float, default=d.temperature, help="K (default 500)")
    g.add_argument("--timestep", type=float, default=d.timestep, help="fs (default 0.5)")
    g.add_argument(
        "--stride", type=int, default=d.stride, help=f"steps between frames ({d.stride})"
    )
    g.add_argument("--friction", type=float, default=d.friction, help="1/fs (default 0.02)")
    g.add_argument("--equilibration", type=int, default=d.equilibration, help="steps")
    g.add_argument("--trajectories", type=int, default=d.trajectories)
    g.add_argument("--method", choices=("GFN2-xTB", "GFN1-xTB"), default=d.method)
    g.add_argument("--chunk-frames", type=int, default=50, help="frames per resumable chunk")


def generate_molecules(args: argparse.Namespace) -> int:
    """Runs ``data generate --dataset md17-xtb``; prints the directory and the rate."""
    from geonorm_jax.data.files import cache_root
    from geonorm_jax.data.molecules.files import generate_molecular_dataset, is_complete

    config = MoleculeConfig(
        molecule=args.molecule,
        frames=args.frames,
        seed=MoleculeConfig.seed if args.seed is None else args.seed,
        temperature=args.temperature,
        timestep=args.timestep,
        stride=args.stride,
        friction=args.friction,
        equilibration=args.equilibration,
        trajectories=args.trajectories,
        method=args.method,
    )
    if args.out is not None:
        directory = Path(args.out)
    else:
        directory = cache_root(args.cache_dir) / config.dataset_name()
    if is_complete(directory, config):
        print(f"already generated with these parameters: {directory}")
        return 0
    report = generate_molecular_dataset(
        config,
        directory,
        progress=not args.no_progress,
        workers=args.workers,
        chunk_frames=args.chunk_frames,
    )
    print(directory)
    _print_rate(report)
    return 0


def _print_rate(report) -> None:
    print(
        f"generated {report['frames']} frames ({report['resumed_frames']} resumed) and "
        f"{report['evaluations']} xTB evaluations in {report['seconds']:.1f} s with "
        f"{report['workers']} workers: {report['frames_per_second']:.2f} frames/s, "
        f"{report['evaluations_per_second']:.1f} xTB evaluations/s"
    )


def info_molecules(directory: Path) -> int:
    """Prints :func:`~geonorm_jax.data.molecules.files.describe_molecular_dataset`."""
    from geonorm_jax.data.molecules.files import describe_molecular_dataset

    print(describe_molecular_dataset(directory))
    return 0
