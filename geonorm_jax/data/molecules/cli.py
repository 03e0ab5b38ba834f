"""The molecular parts of ``geonorm-jax data generate`` and ``geonorm-jax data info``.

``geonorm-jax data generate --dataset md17-xtb --molecule uracil --frames 2000`` generates (or
finds in the cache, or resumes) a GFN2-xTB Langevin data set, shows a tqdm progress bar and
prints the directory and the generation rate (frames/s and xTB evaluations/s).
``geonorm-jax data generate --dataset md17-dft --molecule uracil --frames 180`` relabels the
frames of the md17-xtb data set with the same settings with PBE/def2-SVP (PySCF) and prints
the rate in frames/s. The data sets are those of
:data:`geonorm_jax.data.molecules.sources.SOURCES`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from geonorm_jax.data.molecules.config import MoleculeConfig
from geonorm_jax.data.molecules.dft import DFTConfig
from geonorm_jax.data.molecules.sources import source
from geonorm_jax.data.molecules.structures import MOLECULES

__all__ = ["add_generate_arguments", "generate_molecules", "info_molecules"]


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``md17-xtb`` and ``md17-dft`` options to the ``data generate`` parser
    (``--seed``, ``--out``, ``--cache-dir``, ``--workers`` and ``--no-progress`` are shared
    with the N-body data)."""
    d = MoleculeConfig()
    g = parser.add_argument_group("md17-xtb and md17-dft (the geometries)")
    g.add_argument("--molecule", choices=sorted(MOLECULES), default=d.molecule)
    g.add_argument("--frames", type=int, default=None,
                   help=f"default {d.frames} (md17-xtb), {source('md17-dft').default_frames} "
                        "(md17-dft)")
    g.add_argument("--temperature", type=float, default=d.temperature, help="K (default 500)")
    g.add_argument("--timestep", type=float, default=d.timestep, help="fs (default 0.5)")
    g.add_argument(
        "--stride", type=int, default=d.stride, help=f"steps between frames ({d.stride})"
    )
    g.add_argument("--friction", type=float, default=d.friction, help="1/fs (default 0.02)")
    g.add_argument("--equilibration", type=int, default=d.equilibration, help="steps")
    g.add_argument("--trajectories", type=int, default=d.trajectories)
    g.add_argument("--method", choices=("GFN2-xTB", "GFN1-xTB"), default=d.method)
    g.add_argument("--chunk-frames", type=int, default=None,
                   help="frames per resumable chunk (default 50 md17-xtb, 10 md17-dft)")
    e = DFTConfig()
    g = parser.add_argument_group("md17-dft (with --dataset md17-dft)")
    g.add_argument("--xc", default=e.xc, help=f"functional (default {e.xc}, as rMD17)")
    g.add_argument("--basis", default=e.basis, help=f"basis set (default {e.basis}, as rMD17)")
    g.add_argument("--no-density-fit", action="store_true",
                   help="exact two-electron integrals (default: density fitting)")
    g.add_argument("--threads", type=int, default=None,
                   help="PySCF threads per worker process (default: cores / workers)")


def _geometry(args: argparse.Namespace, frames_default: int) -> MoleculeConfig:
    return MoleculeConfig(
        molecule=args.molecule,
        frames=frames_default if args.frames is None else args.frames,
        seed=MoleculeConfig.seed if args.seed is None else args.seed,
        temperature=args.temperature,
        timestep=args.timestep,
        stride=args.stride,
        friction=args.friction,
        equilibration=args.equilibration,
        trajectories=args.trajectories,
        method=args.method,
    )


def _generate_dft(args: argparse.Namespace) -> int:
    """``data generate --dataset md17-dft``: prints the directory and the rate."""
    from geonorm_jax.data.molecules.dft_files import generate_dft_dataset

    config = DFTConfig(geometry=_geometry(args, source("md17-dft").default_frames),
                       xc=args.xc, basis=args.basis, density_fit=not args.no_density_fit)
    directory = _directory(args, config)
    if directory is None:
        return 0
    report = generate_dft_dataset(
        config, directory, cache_dir=args.cache_dir, progress=not args.no_progress,
        workers=args.workers, threads=args.threads,
        chunk_frames=10 if args.chunk_frames is None else args.chunk_frames)
    print(directory)
    print(f"labelled {report['frames']} frames ({report['resumed_frames']} resumed) with "
          f"{config.method} in {report['seconds']:.1f} s with {report['workers']} workers x "
          f"{report['threads']} threads: {report['frames_per_second']:.4f} frames/s "
          f"({report['seconds'] / max(report['frames'], 1):.1f} s per frame)")
    return 0


def _directory(args: argparse.Namespace, config) -> Path | None:
    """Where ``data generate`` writes ``config``'s data set (``--out``, else the cache), or
    None, said on stdout, when a complete one of these parameters is already there."""
    from geonorm_jax.data.files import cache_root
    from geonorm_jax.data.molecules.files import is_complete

    if args.out is not None:
        directory = Path(args.out)
    else:
        directory = cache_root(args.cache_dir) / config.dataset_name()
    if is_complete(directory, config):
        print(f"already generated with these parameters: {directory}")
        return None
    return directory


def generate_molecules(args: argparse.Namespace) -> int:
    """Runs ``data generate --dataset md17-xtb`` (or ``md17-dft``); prints the directory and
    the rate."""
    from geonorm_jax.data.molecules.files import generate_molecular_dataset

    if args.dataset == "md17-dft":
        return _generate_dft(args)
    config = _geometry(args, MoleculeConfig.frames)
    directory = _directory(args, config)
    if directory is None:
        return 0
    report = generate_molecular_dataset(
        config,
        directory,
        progress=not args.no_progress,
        workers=args.workers,
        chunk_frames=50 if args.chunk_frames is None else args.chunk_frames,
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
    """Prints :func:`~geonorm_jax.data.molecules.files.describe_molecular_dataset` (or
    :func:`~geonorm_jax.data.molecules.dft_files.describe_dft_dataset`)."""
    from geonorm_jax.data.molecules.files import describe_molecular_dataset
    from geonorm_jax.data.molecules.store import DFT_FORMAT, read_molecular_metadata

    if read_molecular_metadata(directory).get("format") == DFT_FORMAT:
        from geonorm_jax.data.molecules.dft_files import describe_dft_dataset

        print(describe_dft_dataset(directory))
        return 0
    print(describe_molecular_dataset(directory))
    return 0
