"""Time the molecular models' training step on MD frames read from a file, on any machine.

``geonorm-jax bench --sections molecules`` builds its uracil geometry with RDKit and GFN2-xTB;
an accelerator machine often has neither. This script takes ``B`` frames of a molecular data
set written by ``geonorm-jax data generate --dataset md17-xtb`` (exported here to a small
``.npz`` with ``--export``), and times the same compiled step as the bench
(:func:`geonorm_jax.bench.molecules.compile_step`: energies and forces, Adam, parameters and
optimizer state donated; targets drawn from ``N(0, 1)`` as in the bench) for Allegro, SchNet
and GemNet-T at their published sizes, in this process.

Usage::

    python -m experiments.bench_molecules_frames --export DATA_DIR --out frames.npz
    python -m experiments.bench_molecules_frames --frames frames.npz --json results.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

MODELS = ("allegro", "schnet", "gemnet")


def export(data_dir: str, out: str, batch: int = 8) -> Path:
    """Write the first ``batch`` frames of a molecular data set (positions, species)."""
    from geonorm_jax.data.molecules import load_molecular_dataset

    data = load_molecular_dataset(data_dir)
    np.savez(out, positions=data.positions[:batch], atomic_numbers=data.atomic_numbers,
             molecule=str(data.meta.get("molecule", "")))
    return Path(out)


def frames_from(path: str, cutoff: float = 5.0, seed: int = 0):
    """:class:`geonorm_jax.bench.molecules.Frames` of the file, seeded ``N(0, 1)`` targets."""
    from geonorm_jax.bench.molecules import Frames

    f = np.load(path)
    pos, z = np.asarray(f["positions"], np.float64), np.asarray(f["atomic_numbers"], np.int64)
    if pos.ndim != 3 or pos.shape[1:] != (z.shape[0], 3):
        raise ValueError(f"{path}: expected positions [B, {z.shape[0]}, 3]; received "
                         f"{pos.shape}")
    rng = np.random.default_rng(seed)
    d = np.linalg.norm(pos[:, :, None] - pos[:, None], axis=-1)
    within = (d < cutoff) & ~np.eye(z.shape[0], dtype=bool)[None]
    return Frames(z, pos, rng.standard_normal(pos.shape[0]), rng.standard_normal(pos.shape),
                  float(within.sum() / (pos.shape[0] * z.shape[0])))


def time_model(model: str, frames, seconds: float = 5.0, max_repeats: int = 50) -> dict:
    """Compile and time one model's step; a row of plain JSON values."""
    import jax

    from geonorm_jax.bench.molecules import MoleculeCase, compile_step

    case = MoleculeCase(model, "published", "uracil", int(frames.positions.shape[0]),
                        seconds=seconds, max_repeats=max_repeats)
    c = compile_step(case, frames)
    first, _ = c.run()
    repeats = int(min(max_repeats, max(2, seconds // max(first, 1e-6))))
    times = sorted(c.run()[0] for _ in range(repeats))
    return {"model": model, "params": c.params, "batch": case.batch,
            "step_ms_best": 1e3 * times[0], "step_ms_median": 1e3 * times[len(times) // 2],
            "repeats": repeats, "compile_s": c.compile_s, **c.memory,
            "device": jax.devices()[0].device_kind, "backend": jax.default_backend()}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--export", metavar="DATA_DIR", help="write frames of this data set")
    p.add_argument("--out", default="frames.npz", help="the exported frames file")
    p.add_argument("--frames", metavar="NPZ", help="time the models on these frames")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--seconds", type=float, default=5.0, help="timed seconds per model")
    p.add_argument("--json", metavar="FILE", help="write the rows here")
    args = p.parse_args(argv)
    if args.export:
        print(export(args.export, args.out))
        return 0
    if not args.frames:
        p.error("give --export DATA_DIR or --frames NPZ")
    frames = frames_from(args.frames)
    rows = []
    for model in args.models:
        t = time.perf_counter()
        row = time_model(model, frames, args.seconds)
        row["wall_s"] = round(time.perf_counter() - t, 1)
        rows.append(row)
        print(f"{model}: {row['params']} params, step {row['step_ms_best']:.2f} ms best / "
              f"{row['step_ms_median']:.2f} ms median, compile {row['compile_s']:.1f} s on "
              f"{row['device']}", flush=True)
    if args.json:  # the command with file names only (no machine paths)
        shown = [Path(a).name if a in (args.json, args.frames) else a for a in argv]
        Path(args.json).write_text(json.dumps({"command": "python -m experiments."
                                               "bench_molecules_frames " + " ".join(shown),
                                               "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
