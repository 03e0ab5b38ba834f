"""MD throughput of a potential on uracil: the JAX driver (one jitted ``lax.scan``, vmapped over
replicas) beside the same potential driven step by step from ASE, measured in one run.

For each registered potential at its published size (or ``tiny``), on uracil (12 atoms,
RDKit geometry relaxed with GFN2-xTB; ``--no-relax`` skips the relaxation) and in float32:

* ``jax``: :func:`geonorm_jax.potentials.simulate`, velocity Verlet, ``--steps`` steps of
  0.5 fs after one compiled warm-up call, for 1 replica and for ``--replicas`` replicas;
* ``ase``: ``ase.md.verlet.VelocityVerlet`` with
  :class:`~geonorm_jax.potentials.GeonormCalculator` (one jitted energy-and-forces call per
  step, padded to its size bucket), ``--ase-steps`` steps after a warm-up step.

Throughput is steps/s and ns/day (the simulated time of all replicas per day of wall time).
The parameters are freshly initialised (throughput does not depend on training). Writes
``experiments/results/md_throughput/results.json``::

    python -m experiments.md_throughput                      # allegro, schnet, gemnet
    python -m experiments.md_throughput --models schnet --size tiny --no-relax   # seconds
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from experiments import common

NAME = "md_throughput"
DT_FS = 0.5


def potential(model: str, size: str, z, pos):
    """A :class:`~geonorm_jax.potentials.Potential` of registered ``model`` at ``size``
    (``published`` or a spec size), initialised on the geometry ``(z [A], pos [A, 3])``."""
    import jax
    import jax.numpy as jnp

    from geonorm_jax.models import registry
    from geonorm_jax.potentials import Potential

    spec = registry.get(model)
    kwargs = spec.resolve(size=None if size == "published" else size,
                          data={"avg_num_neighbors": float(len(z) - 1),
                                "max_atomic_number": int(max(z))})
    module = spec.build(kwargs)
    batch = {"positions": jnp.asarray(pos[None], jnp.float32),
             "atomic_numbers": jnp.asarray(z[None])}
    variables = spec.init(module, jax.random.key(0), batch)
    return Potential(model=module, variables=variables, spec=spec, atomic_numbers=z)


def jax_rate(pot, pos, masses, steps: int, replicas: int) -> dict:
    """Steps/s of :func:`~geonorm_jax.potentials.simulate` after a compiled warm-up."""
    import jax
    import numpy as np

    from geonorm_jax.potentials import ns_per_day, simulate

    x = np.broadcast_to(pos, (replicas, *pos.shape)).astype(np.float32)
    fn = pot.energy_forces_fn()
    run = lambda: simulate(fn, x, masses, steps=steps, dt=DT_FS, record_every=steps,  # noqa: E731
                           temperature=300.0, key=jax.random.key(0))
    t = time.perf_counter()
    jax.block_until_ready(run().positions)
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    traj = run()
    jax.block_until_ready(traj.positions)
    s = time.perf_counter() - t
    return {"replicas": replicas, "steps": steps, "seconds": s, "compile_and_run_s": compile_s,
            "steps_per_s": steps / s, "ns_per_day": ns_per_day(steps, DT_FS, s, replicas),
            "finite": bool(np.isfinite(np.asarray(traj.total_energy)).all())}


def ase_rate(pot, z, pos, steps: int) -> dict:
    """Steps/s of ASE's velocity Verlet with the geonorm-jax calculator."""
    import jax
    import numpy as np
    from ase import Atoms, units
    from ase.md.verlet import VelocityVerlet

    from geonorm_jax.potentials import (
        GeonormCalculator,
        initial_velocities,
        masses_of,
        ns_per_day,
    )

    atoms = Atoms(numbers=z, positions=pos)
    atoms.calc = GeonormCalculator(pot)
    v = initial_velocities(jax.random.key(0), masses_of(z), 300.0)[0]  # Å/fs, as the JAX run
    atoms.set_velocities(np.asarray(v, np.float64) / units.fs)
    dyn = VelocityVerlet(atoms, timestep=DT_FS * units.fs)
    dyn.run(1)  # compile
    t = time.perf_counter()
    dyn.run(steps)
    s = time.perf_counter() - t
    return {"replicas": 1, "steps": steps, "seconds": s, "steps_per_s": steps / s,
            "ns_per_day": ns_per_day(steps, DT_FS, s, 1)}


def main(argv: list[str] | None = None) -> dict:
    import numpy as np

    from geonorm_jax.data.molecules import structures
    from geonorm_jax.potentials import masses_of

    p = argparse.ArgumentParser(prog=f"python -m experiments.{NAME}",
                                description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["allegro", "schnet", "gemnet"])
    p.add_argument("--size", default="published", help="published or a spec size (tiny)")
    p.add_argument("--steps", type=int, default=2000, help="JAX steps timed")
    p.add_argument("--ase-steps", type=int, default=200, help="ASE steps timed")
    p.add_argument("--replicas", type=int, default=8, help="replicas of the vmapped run")
    p.add_argument("--no-relax", action="store_true", help="RDKit geometry, no xTB relaxation")
    p.add_argument("--out", type=Path, default=common.RESULTS / NAME / "results.json")
    args = p.parse_args(argv)
    z, pos = structures.geometry("uracil", relax=not args.no_relax)
    z, pos = np.asarray(z, np.int32), np.asarray(pos, np.float64)
    m = masses_of(z)
    rows = []
    for model in args.models:
        pot = potential(model, args.size, z, pos)
        row = {"model": model, "size": args.size,
               "jax_1": jax_rate(pot, pos, m, args.steps, 1),
               f"jax_{args.replicas}": jax_rate(pot, pos, m, args.steps, args.replicas),
               "ase": ase_rate(pot, z, pos, args.ase_steps)}
        row["jax_over_ase"] = row["jax_1"]["steps_per_s"] / row["ase"]["steps_per_s"]
        rows.append(row)
        print(f"{model}: JAX {row['jax_1']['steps_per_s']:.0f} steps/s "
              f"({row['jax_1']['ns_per_day']:.3g} ns/day), {args.replicas} replicas "
              f"{row[f'jax_{args.replicas}']['ns_per_day']:.3g} ns/day; ASE "
              f"{row['ase']['steps_per_s']:.0f} steps/s ({row['ase']['ns_per_day']:.3g} "
              f"ns/day); JAX/ASE {row['jax_over_ase']:.1f}x", flush=True)
    return common.write_results(args.out, NAME, argv, {
        "molecule": "uracil", "atoms": int(len(z)), "dt_fs": DT_FS,
        "relaxed": not args.no_relax, "dtype": "float32", "rows": rows})


if __name__ == "__main__":
    main()
