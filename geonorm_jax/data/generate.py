"""Chunked, multi-threaded generation of whole splits (float64 simulation, float32 storage)."""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable

import jax
import numpy as np

from geonorm_jax.data.config import SPLITS, DataConfig, canonical_split
from geonorm_jax.data.simulate import _default_unroll, _integrate, sample_initial_state

__all__ = ["generate_split", "default_chunk_size", "default_workers", "split_key"]


def default_chunk_size(particles: int) -> int:
    """Trajectories simulated together: about 50k particle pairs per chunk, 32 to 1024."""
    size = 50_000 // (particles * particles)
    return int(min(1024, max(32, size)))


def default_workers() -> int:
    """Threads running chunks concurrently: the CPU count, at most 2 (XLA:CPU runs each
    small fusion on one core, so two chunks in flight use both cores of the target machine)."""
    return max(1, min(2, os.cpu_count() or 1))


def split_key(seed: int, split: str) -> jax.Array:
    """``fold_in(PRNGKey(seed), index of split in ("train", "valid", "test"))``."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), SPLITS.index(canonical_split(split)))


def generate_split(
    config: DataConfig,
    split: str,
    *,
    chunk_size: int | None = None,
    workers: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Simulates every trajectory of one split.

    Args:
      config: the data set parameters.
      split: ``"train"``, ``"valid"`` or ``"test"``.
      chunk_size: trajectories per jitted call (memory is about ``chunk_size * N^2 * 100``
        bytes plus the float32 output); the last chunk is padded so one compilation serves all.
      workers: threads running chunks concurrently.
      on_progress: called with the number of trajectories finished by each chunk.

    Returns:
      dict with ``loc``, ``vel`` (float32 ``[S, F, N, 3]``), ``charges`` (float32 ``[S, N, 1]``),
      ``edges`` (float32 ``[S, N, N]``, ``q_i q_j``) and ``clipped`` (bool ``[S]``).
    """
    split = canonical_split(split)
    total = config.split_sizes[split]
    n, frames = config.particles, config.num_frames
    chunk = int(chunk_size or default_chunk_size(n))
    if chunk < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    # One chunk shape for every split of the config: one compilation serves all three.
    chunk = min(chunk, max(config.split_sizes.values()))
    workers = int(workers or default_workers())

    state = sample_initial_state(
        split_key(config.seed, split),
        total,
        n,
        loc_std=config.loc_std,
        vel_norm=config.vel_norm,
    )
    init = [np.asarray(a) for a in state]  # float64 host copies
    out = {
        "loc": np.empty((total, frames, n, 3), np.float32),
        "vel": np.empty((total, frames, n, 3), np.float32),
        "clipped": np.empty((total,), bool),
    }
    statics = dict(
        num_frames=frames,
        sample_freq=config.sample_freq,
        dt=float(config.dt),
        box_size=float(config.box_size),
        k=float(config.interaction_strength),
        max_force=float(config.max_force),
        unroll=_default_unroll(n),
    )

    def run(start: int) -> int:
        stop = min(start + chunk, total)
        pad = chunk - (stop - start)
        args = []
        for a in init:
            part = a[start:stop]
            if pad:  # repeat the last trajectory so the shape (and the compilation) is static
                part = np.concatenate([part, np.repeat(part[-1:], pad, axis=0)])
            args.append(part)
        with jax.enable_x64(True):  # thread-local: each worker turns it on for its own calls
            xs, vs, clipped = _integrate(*args, **statics)
            xs, vs, clipped = jax.device_get((xs, vs, clipped))
        m = stop - start
        out["loc"][start:stop] = xs[:m]
        out["vel"][start:stop] = vs[:m]
        out["clipped"][start:stop] = clipped[:m]
        return m

    starts = list(range(0, total, chunk))
    run(starts[0])  # compiles once before the threads start
    if on_progress:
        on_progress(min(chunk, total))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run, start) for start in starts[1:]]
        for future in concurrent.futures.as_completed(futures):
            done = future.result()
            if on_progress:
                on_progress(done)

    charges = init[2].astype(np.float32)
    out["charges"] = charges
    out["edges"] = charges * np.swapaxes(charges, 1, 2)
    return out
