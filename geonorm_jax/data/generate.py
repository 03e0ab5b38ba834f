"""Chunked, multi-threaded generation of whole splits (float64 simulation, float32 storage).

Memory is bounded per chunk and linear in the split size, never quadratic in N (the force
kernel holds ``O(N C)`` values; no ``N x N`` array is built or stored). With ``F`` saved
frames, ``C`` trajectories per chunk, ``W`` worker threads and ``S`` trajectories in the
split (:func:`generation_memory` computes these):

* per chunk in flight: ``48 F N C + 256 N C`` bytes (float32 frame buffers ``[F, N, C, 3]``
  for positions and velocities and their ``[C, F, N, 3]`` transposes; float64 state and
  inputs). At N = 1000, F = 49, C = 32: 83 MB; at most ``W`` chunks (2) are in flight;
* the float32 result, which grows with the split: ``24 F N + 4 N`` bytes per trajectory,
  1.18 MB at N = 1000 and F = 49 (588 KB each for ``loc`` and ``vel``), 3.5 GB for 3000
  trajectories;
* the float64 initial states: ``56 N`` bytes per trajectory.

The peak RSS is about 0.4 GB (the JAX runtime and compilations) plus
``generation_memory(...)["total"]``: measured 0.68 GB for 96 trajectories at N = 1000 with 49
frames and 0.98 GB for 320 (table in :func:`generation_memory`). Writing the file streams the
arrays (no second copy); loading a split holds it once (:mod:`geonorm_jax.data.files`).
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from geonorm_jax.data.config import SPLITS, DataConfig, canonical_split
from geonorm_jax.data.simulate import default_unroll, integrate, sample_initial_state

__all__ = [
    "generate_split",
    "default_chunk_size",
    "default_workers",
    "generation_memory",
    "integrate_statics",
    "split_key",
]


def default_chunk_size(particles: int) -> int:
    """Trajectories simulated together: about 50k particle pairs per chunk, 32 to 1024.

    32 for every N >= 40; the chunk's memory is ``O(F N C)`` (see :func:`generation_memory`),
    83 MB at N = 1000 with 49 frames.
    """
    size = 50_000 // (particles * particles)
    return int(min(1024, max(32, size)))


def default_workers() -> int:
    """Threads running chunks concurrently: the CPU count, at most 2 (XLA:CPU runs each
    small fusion on one core, so two chunks in flight use both cores of the target machine)."""
    return max(1, min(2, os.cpu_count() or 1))


def generation_memory(
    particles: int,
    num_frames: int,
    trajectories: int,
    *,
    chunk_size: int | None = None,
    workers: int | None = None,
) -> dict[str, int]:
    """Estimated bytes held while :func:`generate_split` simulates one split.

    Args:
      particles: N.
      num_frames: F, saved frames per trajectory (``DataConfig.num_frames``).
      trajectories: S, the split size.
      chunk_size: C (default :func:`default_chunk_size`; at most S).
      workers: W, chunks in flight (default :func:`default_workers`).

    Returns:
      dict of byte counts: ``per_chunk`` (``48 F N C + 256 N C``), ``chunks``
      (``min(W, chunks) * per_chunk``), ``output`` (``S (24 F N + 4 N + 1)``), ``initial``
      (``56 N S``) and ``total``, their sum. The JAX runtime and compiled code come on top
      (about 0.3-0.5 GB RSS).

    Peak RSS (Linux ``ru_maxrss``) measured in a fresh process per row, ``generate_split`` with
    F = 49 frames as in the real data but ``steps=100, sample_freq=2`` (the memory depends on
    the saved frames, not on the number of steps), C = 32, W = 2, in MB (1e6 bytes); the
    "above N = 5" column subtracts the N = 5 run (the JAX runtime and compilations):

    ====  ====  ==============  ========  ===========
    N     S     estimate total  peak RSS  above N = 5
    ====  ====  ==============  ========  ===========
    5     96    2               402
    500   96    143             560       158
    1000  96    286             676       275
    1000  320   562             977       576
    ====  ====  ==============  ========  ===========

    Before format 3 (float64 frame buffers, ``edges [S, N, N]`` in the result) the N = 1000,
    S = 96 run peaked at 942 MB.
    """
    n, f = int(particles), int(num_frames)
    chunk = min(int(chunk_size or default_chunk_size(n)), int(trajectories))
    in_flight = min(int(workers or default_workers()), -(-int(trajectories) // chunk))
    per_chunk = 48 * f * n * chunk + 256 * n * chunk
    sizes = {
        "per_chunk": per_chunk,
        "chunks": in_flight * per_chunk,
        "output": int(trajectories) * (24 * f * n + 4 * n + 1),
        "initial": 56 * n * int(trajectories),
    }
    sizes["total"] = sizes["chunks"] + sizes["output"] + sizes["initial"]
    return sizes


def integrate_statics(config: DataConfig, num_frames: int | None = None) -> dict:
    """The static keyword arguments of :func:`geonorm_jax.data.simulate.integrate` for
    generating ``config``'s files: ``num_frames`` (default ``config.num_frames``),
    ``sample_freq``, ``dt``, ``box_size``, ``k``, ``max_force``, ``unroll`` and
    ``out_dtype=float32`` (:mod:`geonorm_jax.bench.data` times the same compiled function)."""
    return dict(
        num_frames=int(config.num_frames if num_frames is None else num_frames),
        sample_freq=config.sample_freq,
        dt=float(config.dt),
        box_size=float(config.box_size),
        k=float(config.interaction_strength),
        max_force=float(config.max_force),
        unroll=default_unroll(config.particles),
        out_dtype=jnp.float32,  # frames are cast as they are recorded: half the chunk memory
    )


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
      chunk_size: trajectories per jitted call; each chunk in flight holds about
        ``48 F N C + 256 N C`` bytes (:func:`generation_memory`); the last chunk is padded so
        one compilation serves all.
      workers: threads running chunks concurrently.
      on_progress: called with the number of trajectories finished by each chunk.

    Returns:
      dict with ``loc``, ``vel`` (float32 ``[S, F, N, 3]``), ``charges`` (float32 ``[S, N, 1]``)
      and ``clipped`` (bool ``[S]``). The edge attribute ``q_i q_j`` is not returned (it is
      ``O(N^2)`` per trajectory); :func:`geonorm_jax.data.samples.edge_attributes` builds it
      from ``charges``.
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
    del state
    out = {
        "loc": np.empty((total, frames, n, 3), np.float32),
        "vel": np.empty((total, frames, n, 3), np.float32),
        "clipped": np.empty((total,), bool),
    }
    statics = integrate_statics(config)

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
            xs, vs, clipped = integrate(*args, **statics)
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

    out["charges"] = init[2].astype(np.float32)
    return out
