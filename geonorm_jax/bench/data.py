"""Charged N-body generation throughput: trajectories per second for each N.

What is timed, for each N: one chunk of :func:`~geonorm_jax.data.generate.default_chunk_size`
trajectories per worker thread (``workers`` threads, default
:func:`~geonorm_jax.data.generate.default_workers`, each with its own chunk, run concurrently as
:func:`~geonorm_jax.data.generate.generate_split` runs them), through the same jitted
:func:`~geonorm_jax.data.simulate.integrate` with the same static arguments (float64
integration, frames cast to float32 as they are recorded), including the copy of the frames
back to the host. The wall time from starting the threads until every chunk is on the host is
``seconds``. Not timed: the compilation (the function is compiled ahead of time with
``jit(...).lower(...).compile()``; its duration is reported as ``compile_s``; near 0 when the
same executable was already compiled in this process), the sampling of initial states and the
file writing.

How many steps: a trajectory of ``steps`` steps saves ``F = steps / sample_freq - 1`` frames
and runs ``steps_run_full = F * sample_freq`` integration steps (the steps after the last saved
frame cannot change a saved value and are not run). A probe run of one frame (``sample_freq``
steps) gives the cost of a frame; the timed run then records as many frames as fit in
``seconds_per_n`` (at least one, at most ``F``). If the probe alone used half the budget or
more, it is the timed run. ``steps_timed`` is the number of integration steps of the timed run.

Extrapolation: the cost per step does not depend on the state (fixed step size, no neighbour
lists; clipping is a ``min``/``max``), so the time of a full trajectory is extrapolated
linearly: ``trajectories_per_s = trajectories * steps_timed / (seconds * steps_run_full)``,
with ``extrapolated = steps_timed < steps_run_full``. ``ns_per_pair_step`` is the wall time
per ordered pair and step, ``seconds / (trajectories * steps_timed * N * (N - 1))`` in ns.

Threads: each worker runs its own chunk; at large N (seen at N >= 500) XLA:CPU also splits
one chunk's fusions across cores, so ``cpu_s / seconds`` (reported; ``cpu_s`` is the process
CPU time of the timed run) can reach the core count with one worker as well as with two. On a
shared machine ``cpu_s / seconds`` well below the core count means other processes took CPU
time and the throughput is understated.
"""

from __future__ import annotations

import concurrent.futures
import os
import time

import jax
import numpy as np

from geonorm_jax.data.config import DataConfig
from geonorm_jax.data.generate import (
    default_chunk_size,
    default_workers,
    integrate_statics,
    split_key,
)
from geonorm_jax.data.simulate import integrate, sample_initial_state

__all__ = ["generation_throughput", "SWEEP"]

SWEEP = (5, 20, 50, 100, 200, 500, 1000)


def _compile(args, statics):
    start = time.perf_counter()
    with jax.enable_x64(True):
        compiled = integrate.lower(*args, **statics).compile()
    return compiled, time.perf_counter() - start


def _run_chunks(compiled, chunks) -> tuple[float, float]:
    """Runs one chunk per thread concurrently; returns (wall seconds, process CPU seconds)."""

    def one(args):
        with jax.enable_x64(True):  # thread-local, as in generate_split
            return jax.device_get(compiled(*args))

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(chunks)) as pool:
        start, cpu = time.perf_counter(), time.process_time()
        results = list(pool.map(one, chunks))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    if not all(np.isfinite(r[0]).all() for r in results):
        raise FloatingPointError("non-finite positions in the benchmark trajectories")
    return wall, cpu


def _one(n: int, seconds_per_n: float, steps: int, sample_freq: int, workers: int) -> dict:
    config = DataConfig(particles=n, steps=steps, sample_freq=sample_freq, frame_in=0, frame_out=1)
    chunk = default_chunk_size(n)
    with jax.enable_x64(True):
        state = sample_initial_state(split_key(config.seed, "train"), chunk * workers, n)
        init = [np.asarray(a) for a in state]
    chunks = [[a[w * chunk : (w + 1) * chunk] for a in init] for w in range(workers)]
    full_frames = config.num_frames

    probe, compile_s = _compile(chunks[0], integrate_statics(config, num_frames=1))
    probe_s, probe_cpu = _run_chunks(probe, chunks)
    frames = 1
    if probe_s < 0.5 * seconds_per_n:
        frames = int(min(full_frames, max(1, seconds_per_n // probe_s)))
    if frames > 1:
        timed, more = _compile(chunks[0], integrate_statics(config, num_frames=frames))
        compile_s += more
        seconds, cpu_s = _run_chunks(timed, chunks)
    else:
        seconds, cpu_s = probe_s, probe_cpu

    trajectories = chunk * workers
    steps_timed = frames * sample_freq
    steps_run_full = full_frames * sample_freq
    seconds_full = seconds * steps_run_full / steps_timed
    return {
        "particles": n,
        "trajectories": trajectories,
        "chunk_size": chunk,
        "workers": workers,
        "steps_timed": steps_timed,
        "steps_full": steps,
        "steps_run_full": steps_run_full,
        "sample_freq": sample_freq,
        "seconds": seconds,
        "cpu_s": cpu_s,
        "seconds_full": seconds_full,
        "trajectories_per_s": trajectories / seconds_full,
        "extrapolated": steps_timed < steps_run_full,
        "ns_per_pair_step": 1e9 * seconds / (trajectories * steps_timed * n * (n - 1)),
        "compile_s": compile_s,
        "probe_s": probe_s,
        "cpu_count": os.cpu_count(),
    }


def generation_throughput(
    particles=SWEEP,
    *,
    seconds_per_n: float = 5.0,
    steps: int = 5000,
    sample_freq: int = 100,
    workers: int | None = None,
) -> list[dict]:
    """Times the N-body generator for each N (see the module docstring for what is timed).

    The default call takes about 1-1.5 minutes on 2 CPU cores: ``seconds_per_n`` of timed
    simulation per N plus two compilations (1-3 s each) and a one-frame probe (6 s at
    N = 1000, where the probe is the timed run).

    Args:
      particles: the values of N (each >= 2).
      seconds_per_n: wall-time budget of the timed run for each N.
      steps: trajectory length T the throughput is stated for (``sample_freq`` must divide it,
        and ``steps >= 2 * sample_freq``).
      sample_freq: steps between saved frames.
      workers: threads, each simulating its own chunk (default: as ``generate_split``).

    Returns:
      One dict per N with ``particles``, ``trajectories`` (timed: chunk size x workers),
      ``chunk_size``, ``workers``, ``steps_timed``, ``steps_full`` (= ``steps``),
      ``steps_run_full``, ``sample_freq``, ``seconds`` (timed wall time), ``cpu_s``,
      ``seconds_full`` (extrapolated to ``steps_run_full``), ``trajectories_per_s`` (for
      ``steps``-long trajectories), ``extrapolated``, ``ns_per_pair_step``, ``compile_s``,
      ``probe_s`` and ``cpu_count``.
    """
    if not seconds_per_n > 0:
        raise ValueError(f"seconds_per_n: expected a positive number; received {seconds_per_n}")
    workers = int(workers or default_workers())
    if workers < 1:
        raise ValueError(f"workers: expected a positive integer; received {workers}")
    DataConfig(steps=steps, sample_freq=sample_freq, frame_in=0, frame_out=1)  # validates
    rows = []
    for n in particles:
        if int(n) < 2:
            raise ValueError(f"particles: expected values >= 2; received {n}")
        rows.append(_one(int(n), float(seconds_per_n), int(steps), int(sample_freq), workers))
    return rows
