"""What the benchmark ran on, and the machine's attainable rates: square-matmul FLOP/s and
large-array-copy bytes/s (the two roofs of :mod:`geonorm_jax.bench.roofline`)."""

from __future__ import annotations

import os
import platform
import resource
import time
from importlib import metadata

__all__ = ["machine_info", "matmul_rate", "MatmulTimer", "CopyTimer", "copy_rate", "peak_rss_gb",
           "device_peak_gb"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    """The machine, library versions and the default JAX device, as plain JSON values."""
    import jax

    device = jax.devices()[0]
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "backend": jax.default_backend(),
        "device": str(device),
        "device_kind": getattr(device, "device_kind", None),
        "device_count": jax.device_count(),
        "versions": {name: _version(name) for name in
                     ("jax", "jaxlib", "flax", "optax", "geonorm-jax")},
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


class MatmulTimer:
    """Times ``a @ a`` for a square float32 ``a [size, size]``: ``2 size^3`` FLOPs per call.

    Call :meth:`sample` between the steps of another benchmark so that the rate is measured
    under the same conditions (clock, load) as the thing it is compared with; :attr:`rate`
    is the best observed FLOP/s.
    """

    def __init__(self, size: int | None = None, dtype=None):
        import jax
        import jax.numpy as jnp

        if size is None:
            size = 2048 if jax.default_backend() == "cpu" else 8192
        self.size = size
        self.a = jax.random.normal(jax.random.key(0), (size, size), dtype or jnp.float32)
        self.fn = jax.jit(lambda a: a @ a)
        self.fn(self.a).block_until_ready()
        self.best = float("inf")

    def sample(self, repeats: int = 3) -> None:
        for _ in range(repeats):
            t = time.perf_counter()
            self.fn(self.a).block_until_ready()
            self.best = min(self.best, time.perf_counter() - t)

    @property
    def rate(self) -> float:
        """Best FLOP/s observed so far."""
        return 2.0 * self.size**3 / self.best


def matmul_rate(size: int | None = None, repeats: int = 10) -> float:
    """The best FLOP/s of ``repeats`` square float32 matmuls (see :class:`MatmulTimer`)."""
    timer = MatmulTimer(size)
    timer.sample(repeats)
    return timer.rate


class CopyTimer:
    """Times ``a + 1`` in place (donated) for a large float32 ``a`` (``nbytes`` read, ``nbytes``
    written): the attainable memory bandwidth in bytes/s, the memory roof next to
    :class:`MatmulTimer`'s compute roof. ``size``: elements (default 2^25 = 128 MiB on the
    CPU, 2^28 = 1 GiB on an accelerator, well past every cache)."""

    def __init__(self, size: int | None = None):
        import jax
        import jax.numpy as jnp

        if size is None:
            size = 2**25 if jax.default_backend() == "cpu" else 2**28
        self.size = size
        # donated: the output reuses the input's buffer, so the time is the memory traffic,
        # not the allocation of a fresh buffer (page faults: 10x slower on the CPU)
        self.fn = jax.jit(lambda a: a + 1.0, donate_argnums=0)
        self.a = self.fn(jnp.zeros((size,), jnp.float32)).block_until_ready()
        self.best = float("inf")

    def sample(self, repeats: int = 3) -> None:
        for _ in range(repeats):
            t = time.perf_counter()
            self.a = self.fn(self.a).block_until_ready()
            self.best = min(self.best, time.perf_counter() - t)

    @property
    def rate(self) -> float:
        """Best bytes/s observed so far (``2 * 4 * size`` bytes per call)."""
        return 8.0 * self.size / self.best


def copy_rate(size: int | None = None, repeats: int = 10) -> float:
    """The best bytes/s of ``repeats`` large-array copies (see :class:`CopyTimer`)."""
    timer = CopyTimer(size)
    timer.sample(repeats)
    return timer.rate


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, in GB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def device_peak_gb() -> float | None:
    """Peak bytes in use on the default accelerator (GB), or None where not reported (CPU)."""
    import jax

    stats = getattr(jax.devices()[0], "memory_stats", lambda: None)()
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return stats["peak_bytes_in_use"] / 1e9
