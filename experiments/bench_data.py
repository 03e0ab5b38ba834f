"""Speed benchmark of the charged N-body generator (prints figures; not a test).

Compares the JAX generator with the reference generator's NumPy loop
(:func:`geonorm_jax.data.reference.simulate_numpy`), generates the full splits (3000/2000/2000
by default) and prints wall times, trajectories per second, the throughput ratio, peak RSS and
energy drift.

    python experiments/bench_data.py                  # N = 5 and N = 100, full splits
    python experiments/bench_data.py --particles 5     # one N
    python experiments/bench_data.py --particles 100 --subset 700
        # times 700 trajectories per split-size ratio and extrapolates (labelled as such)

Each N runs in its own process so that its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def numpy_seconds_per_trajectory(particles: int, steps: int, repeats: int) -> tuple[float, float]:
    """(wall, CPU) seconds per trajectory of the NumPy loop, scaled to 5000 steps."""
    from geonorm_jax.data.reference import simulate_numpy as simulate

    rng = np.random.default_rng(0)
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        loc = rng.normal(size=(particles, 3)) * (particles / 5) ** (1 / 3)
        vel = rng.normal(size=(particles, 3))
        vel *= 0.5 / np.linalg.norm(vel, axis=-1, keepdims=True)
        charges = rng.choice([-1.0, 1.0], size=(particles, 1))
        start, cpu = time.perf_counter(), time.process_time()
        simulate(loc, vel, charges, steps=steps, sample_freq=100)
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best * 5000 / steps, best_cpu * 5000 / steps


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux


def run_one(args) -> dict:
    from geonorm_jax.data import DataConfig, energy_drift, load_trajectories, write_dataset

    load_start = round(os.getloadavg()[0], 2)
    n = args.particles
    sizes = dict(train=args.train, valid=args.valid, test=args.test)
    full = sum(sizes.values())
    if args.subset:
        scale = args.subset / full
        sizes = {k: max(1, round(v * scale)) for k, v in sizes.items()}
    config = DataConfig(particles=n, **sizes)
    generated = sum(sizes.values())

    np_steps = 5000 if n <= 20 else 500
    np_sec, np_cpu = numpy_seconds_per_trajectory(n, np_steps, repeats=2 if n <= 20 else 1)

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cpu0 = time.process_time()
        write_dataset(config, tmp, progress=True, workers=args.workers, chunk_size=args.chunk)
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu0
        rss_generation = peak_rss_gb()
        drifts, clipped = [], []
        for split in ("train", "valid", "test"):
            a = load_trajectories(tmp, split)
            m = min(300, a["loc"].shape[0])
            drifts.append(energy_drift(a["loc"][:m], a["vel"][:m], a["charges"][:m]))
            clipped.append(a["clipped"][:m])
    drift, clip = np.concatenate(drifts), np.concatenate(clipped)
    per_traj = wall / generated
    result = {
        "particles": n,
        "trajectories_generated": generated,
        "extrapolated_from_subset": bool(args.subset),
        "generation_wall_s": round(wall, 2),
        "generation_cpu_s": round(cpu, 2),
        "full_splits_wall_s": round(per_traj * full, 1),
        "jax_wall_ms_per_trajectory": round(per_traj * 1e3, 3),
        "numpy_wall_s_per_trajectory": round(np_sec, 4),
        "numpy_steps_timed": np_steps,
        "throughput_ratio_jax_over_numpy": round(np_sec / per_traj, 1),
        "numpy_cpu_s_per_trajectory": round(np_cpu, 4),
        "jax_cpu_ms_per_trajectory": round(cpu / generated * 1e3, 3),
        "cpu_time_ratio_numpy_over_jax": round(np_cpu / (cpu / generated), 1),
        "full_splits_cpu_s": round(cpu / generated * full, 1),
        "full_splits_wall_s_projected_idle_2_cores": round(cpu / generated * full / 2, 1),
        "peak_rss_generation_gb": round(rss_generation, 3),
        "peak_rss_gb": round(peak_rss_gb(), 3),
        "clipped_fraction": round(float(clip.mean()), 3),
        "energy_drift_unclipped_median": float(np.median(drift[~clip])) if (~clip).any() else None,
        "energy_drift_unclipped_p90": float(np.quantile(drift[~clip], 0.9))
        if (~clip).any()
        else None,
        "energy_drift_all_median": float(np.median(drift)),
        "load_average_1min_at_start": load_start,
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
    }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, nargs="*", default=[5, 100])
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--valid", type=int, default=2000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument(
        "--subset", type=int, default=0, help="generate only this many (then extrapolate)"
    )
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--chunk", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    if len(args.particles) == 1:
        args.particles = args.particles[0]
        result = run_one(args)
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    results = []
    for n in args.particles:  # one process per N, so each peak RSS is its own
        cmd = [sys.executable, __file__, "--particles", str(n)]
        for flag in ("train", "valid", "test", "subset", "workers", "chunk"):
            value = getattr(args, flag)
            if value:
                cmd += [f"--{flag}", str(value)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
        results.append(json.loads(line[len("RESULT ") :]))
    for r in results:
        label = " (EXTRAPOLATED from a subset)" if r["extrapolated_from_subset"] else ""
        print(f"N={r['particles']}{label}")
        for key, value in r.items():
            print(f"  {key}: {value}")
    if args.json:
        from geonorm_jax._io import write_json_atomic

        write_json_atomic(args.json, results, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
