"""``geonorm-jax md RUN_DIR``: molecular dynamics with a trained potential, in JAX.

Loads the run's best parameters (:func:`~geonorm_jax.potentials.trained.load_potential`),
starts each replica from a test-split frame of the run's data with Maxwell–Boltzmann
velocities, and runs :func:`~geonorm_jax.potentials.md.simulate` in chunks (one jitted
``lax.scan`` each; the first chunk includes compilation) so that a progress bar can show the
simulated ps and the rate in ns/day. Writes the trajectory as extended XYZ (one file per
replica when there are several) and prints a summary: the energy drift per atom per ps for NVE,
the mean temperature for Langevin, and the time to instability of each replica (Fu et al.'s
bond-length criterion against the mean bond lengths of the training frames).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

__all__ = ["add_parser", "run", "run_md"]


def add_parser(subparsers) -> None:
    from geonorm_jax.models.cli import add_import_flag
    from geonorm_jax.potentials.md import THERMOSTATS

    p = subparsers.add_parser(
        "md",
        help="molecular dynamics with a trained potential (JAX, lax.scan over steps, vmap over "
             "replicas); writes extended XYZ",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a molecular run written by train")
    p.add_argument("--temperature", type=float, default=500.0,
                   help="K: initial velocities and the Langevin bath")
    p.add_argument("--dt", type=float, default=0.5, help="time step (fs)")
    p.add_argument("--ps", type=float, default=1.0, help="simulated time per replica (ps)")
    p.add_argument("--replicas", type=int, default=1, help="replicas run together (vmap)")
    p.add_argument("--thermostat", choices=THERMOSTATS, default="langevin",
                   help="nve: velocity Verlet; langevin: BAOAB")
    p.add_argument("--friction", type=float, default=0.01, help="Langevin friction (1/fs)")
    p.add_argument("--record-every", type=int, default=20, help="steps between frames")
    p.add_argument("--chunks", type=int, default=10, help="progress updates (scan calls)")
    p.add_argument("--start", type=int, default=0,
                   help="test-split frame of the first replica (replica r starts at start + r)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the initial velocities and the Langevin noise")
    p.add_argument("--model-seed", type=int, default=None,
                   help="the training seed whose parameters drive the MD (default: the run's "
                        "first)")
    p.add_argument("--float64", action="store_true", help="run in float64 (enables x64)")
    p.add_argument("--out", metavar="XYZ", default="md.xyz", help="extended XYZ output")
    p.add_argument("--data-dir", metavar="DIR", default=None, help="the run's dataset")
    p.add_argument("--cache-dir", metavar="DIR", default=None, help="dataset cache")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_import_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geonorm_jax.models.cli import import_plugins

    import_plugins(args.imports)
    summary = run_md(args.run_dir, temperature=args.temperature, dt=args.dt, ps=args.ps,
                     replicas=args.replicas, thermostat=args.thermostat,
                     friction=args.friction, record_every=args.record_every,
                     chunks=args.chunks, start=args.start, seed=args.seed,
                     model_seed=args.model_seed, float64=args.float64, out=args.out,
                     data_dir=args.data_dir, cache_dir=args.cache_dir,
                     progress=not args.no_progress)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
    return 0


def _steps(ps: float, dt: float, record_every: int, chunks: int) -> tuple[int, int]:
    """``(steps per chunk, chunks)``: the simulated time rounded up to whole recorded frames
    per chunk."""
    if not (math.isfinite(ps) and ps > 0 and math.isfinite(dt) and dt > 0):
        raise ValueError(f"--ps, --dt: expected positive numbers; received {ps!r}, {dt!r}")
    if record_every < 1 or chunks < 1:
        raise ValueError(f"--record-every, --chunks: expected integers >= 1; received "
                         f"{record_every}, {chunks}")
    total = math.ceil(ps * 1000.0 / dt)
    chunks = min(chunks, max(1, total // record_every))
    per = math.ceil(total / chunks / record_every) * record_every
    return per, chunks


def run_md(run_dir, *, temperature=500.0, dt=0.5, ps=1.0, replicas=1, thermostat="langevin",
           friction=0.01, record_every=20, chunks=10, start=0, seed=0, model_seed=None,
           float64=False, out="md.xyz", data_dir=None, cache_dir=None,
           progress=True) -> dict:
    """Run ``geonorm-jax md`` (module docstring); returns the summary dict."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from tqdm.auto import tqdm

    from geonorm_jax.data.molecules.extxyz import write_extxyz
    from geonorm_jax.potentials import observables as obs
    from geonorm_jax.potentials.md import masses_of, ns_per_day, simulate
    from geonorm_jax.potentials.trained import load_potential

    if replicas < 1:
        raise ValueError(f"--replicas: expected an integer >= 1; received {replicas}")
    per, chunks = _steps(ps, dt, record_every, chunks)
    if float64:
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.float64 if float64 else jnp.float32
    pot = load_potential(run_dir, seed=model_seed, dtype=dtype, data_dir=data_dir,
                         cache_dir=cache_dir)
    z = pot.atomic_numbers
    test, train = pot.frames["test"], pot.frames["train"]
    if not 0 <= start < len(test):
        raise ValueError(f"--start: expected a test frame index in 0..{len(test) - 1}; "
                         f"received {start}")
    x = np.stack([test[(start + r) % len(test)] for r in range(replicas)]).astype(dtype)
    m = masses_of(z)
    pairs = obs.bonds(z, train[0])
    ref = np.asarray(obs.bond_lengths(jnp.asarray(train), pairs)).mean(0)
    energy_forces = pot.energy_forces_fn()
    key = jax.random.key(seed)
    pieces, v, seconds = [], None, []
    bar = tqdm(total=chunks * per * dt / 1000.0, unit="ps", disable=not progress,
               bar_format="{l_bar}{bar}| {n:.3f}/{total:.3f} ps [{elapsed}<{remaining}"
                          "{postfix}]")
    for c in range(chunks):
        t0 = time.perf_counter()
        traj = simulate(energy_forces, x, m, steps=per, dt=dt, record_every=record_every,
                        thermostat=thermostat, temperature=temperature, friction=friction,
                        key=jax.random.fold_in(key, c), velocities=v)
        jax.block_until_ready(traj.positions)
        seconds.append(time.perf_counter() - t0)
        x, v = traj.positions[:, -1], traj.velocities[:, -1]
        pieces.append(traj if c == 0 else traj._replace(
            **{k: getattr(traj, k)[:, 1:] for k in traj._fields if k != "time_fs"},
            time_fs=traj.time_fs[1:] + c * per * dt))
        rate = ns_per_day(per, dt, seconds[-1], replicas)
        bar.set_postfix_str(f"{rate:.3g} ns/day", refresh=False)
        bar.update(per * dt / 1000.0)
    bar.close()
    traj = type(pieces[0])(*(jnp.concatenate([getattr(p, k) for p in pieces],
                                             axis=0 if k == "time_fs" else 1)
                             for k in pieces[0]._fields))
    times_ps = np.asarray(traj.time_fs) / 1000.0
    stab = jax.vmap(obs.time_to_instability, in_axes=(0, None, None, None))(
        traj.positions, jnp.asarray(pairs), jnp.asarray(ref), jnp.asarray(times_ps))
    steady = seconds[1:] or seconds
    summary = {
        "run_dir": str(run_dir), "molecule": pot.info.get("molecule"), "atoms": int(len(z)),
        "model": pot.spec.name, "model_seed": pot.seed, "thermostat": thermostat,
        "temperature_K": temperature, "dt_fs": dt, "steps": chunks * per,
        "simulated_ps": chunks * per * dt / 1000.0, "replicas": replicas,
        "dtype": str(jnp.dtype(dtype)), "backend": jax.default_backend(),
        "compile_and_first_chunk_s": seconds[0],
        "steps_per_s": per * len(steady) / sum(steady),
        "ns_per_day": ns_per_day(per * len(steady), dt, sum(steady), replicas),
        "stable": [bool(s) for s in np.asarray(stab.stable)],
        "time_to_instability_ps": [float(t) for t in np.asarray(stab.time)],
        "mean_temperature_K": float(np.mean(np.asarray(traj.temperature)[:, 1:])),
    }
    if thermostat == "nve":
        total = jnp.asarray(traj.total_energy)
        summary["energy_drift_eV_per_atom_ps"] = [
            float(obs.energy_drift(e, jnp.asarray(times_ps), len(z))) for e in total]
        summary["max_energy_deviation_eV_per_atom"] = [
            float(obs.max_energy_deviation(e, len(z))) for e in total]
    summary["files"] = _write(out, traj, z, write_extxyz)
    return summary


def _write(out, traj, z, write_extxyz) -> list[str]:
    """Each replica's frames as extended XYZ (``out``, or ``out`` with ``.r<k>`` before the
    suffix when there are several)."""
    import numpy as np

    out = Path(out)
    r = traj.positions.shape[0]
    files = []
    for k in range(r):
        path = out if r == 1 else out.with_name(f"{out.stem}.r{k}{out.suffix}")
        write_extxyz(path, z, np.asarray(traj.positions[k], np.float64),
                     energies=np.asarray(traj.potential_energy[k], np.float64),
                     velocities=np.asarray(traj.velocities[k], np.float64),
                     info={"time_fs": np.asarray(traj.time_fs, np.float64),
                           "temperature_K": np.asarray(traj.temperature[k], np.float64)})
        files.append(str(path))
    return files


def format_summary(s: dict) -> str:
    """The summary as lines of text."""
    lines = [
        f"{s['model']} on {s['molecule'] or 'the run molecule'} ({s['atoms']} atoms), "
        f"{s['thermostat']} at {s['temperature_K']:g} K, dt {s['dt_fs']:g} fs, "
        f"{s['simulated_ps']:.3f} ps x {s['replicas']} replicas ({s['dtype']}, "
        f"{s['backend']})",
        f"speed: {s['steps_per_s']:.1f} steps/s, {s['ns_per_day']:.3g} ns/day (all replicas; "
        f"compilation and first chunk {s['compile_and_first_chunk_s']:.1f} s)",
        f"mean temperature: {s['mean_temperature_K']:.1f} K",
    ]
    if "energy_drift_eV_per_atom_ps" in s:
        drift = ", ".join(f"{d:.2e}" for d in s["energy_drift_eV_per_atom_ps"])
        dev = ", ".join(f"{d:.2e}" for d in s["max_energy_deviation_eV_per_atom"])
        lines.append(f"energy drift: {drift} eV/atom/ps; max deviation {dev} eV/atom")
    unstable = [f"replica {i}: {t:.3f} ps" for i, (ok, t) in
                enumerate(zip(s["stable"], s["time_to_instability_ps"], strict=True)) if not ok]
    lines.append("stable: all replicas" if not unstable else
                 "unstable (bond length off by > 0.5 Å): " + "; ".join(unstable))
    lines.append("trajectory: " + ", ".join(s["files"]))
    return "\n".join(lines)
