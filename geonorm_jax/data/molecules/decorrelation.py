"""Measures how fast the potential energy of a Langevin GFN2-xTB trajectory decorrelates, to
choose the stride between kept frames.

Command::

    python -m geonorm_jax.data.molecules.decorrelation --molecule uracil --steps 20000

relaxes the molecule, equilibrates, runs ``--steps`` BAOAB steps, and prints the normalised
autocorrelation ``C(t)`` of the potential energy at a few lags, the time after which ``C``
stays below 1/e and the integrated autocorrelation time ``tau_int``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

__all__ = ["energy_series", "main"]


def energy_series(
    molecule: str = "uracil",
    steps: int = 20000,
    dt: float = 0.5,
    temperature: float = 500.0,
    friction: float = 0.02,
    equilibration: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """Potential energies (eV) ``[steps]`` of one Langevin trajectory after ``equilibration``
    steps, starting from the relaxed geometry with Maxwell-Boltzmann velocities."""
    from geonorm_jax.data.molecules.md import (
        MDState,
        atomic_masses,
        langevin_steps,
        maxwell_boltzmann,
    )
    from geonorm_jax.data.molecules.structures import build_geometry
    from geonorm_jax.data.molecules.xtb import XTB

    geometry = build_geometry(molecule, seed=seed)
    z = geometry["atomic_numbers"]
    xtb, masses = XTB(z), atomic_masses(z)
    rng = np.random.default_rng(seed)
    x = geometry["positions"]
    energy, forces = xtb(x)
    state = MDState(x, maxwell_boltzmann(masses, temperature, rng), energy, forces, 0)
    state = langevin_steps(state, xtb, masses, equilibration, dt, temperature, friction, rng)
    series = np.empty(steps)

    def record(s):
        series[s.step - equilibration - 1] = s.energy

    langevin_steps(state, xtb, masses, steps, dt, temperature, friction, rng, on_step=record)
    return series


def main(argv=None) -> int:
    from geonorm_jax.data.molecules.md import autocorrelation, decorrelation_time

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--molecule", default="uracil")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--dt", type=float, default=0.5, help="fs")
    p.add_argument("--temperature", type=float, default=500.0, help="K")
    p.add_argument("--friction", type=float, default=0.02, help="1/fs")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    e = energy_series(
        args.molecule, args.steps, args.dt, args.temperature, args.friction, seed=args.seed
    )
    wall = time.perf_counter() - t0
    c = autocorrelation(e)
    t_dec, tau_int = decorrelation_time(e, args.dt)
    print(f"{args.molecule}: {args.steps} steps of {args.dt} fs in {wall:.1f} s")
    print(f"energy mean {e.mean():.4f} eV, std {e.std():.4f} eV")
    for lag_fs in (1, 2, 5, 10, 20, 50, 100, 200, 500):
        k = int(round(lag_fs / args.dt))
        if k < c.size:
            print(f"  C({lag_fs:>4} fs) = {c[k]:+.3f}")
    print(f"C stays below 1/e after {t_dec:.1f} fs; tau_int = {tau_int:.1f} fs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
