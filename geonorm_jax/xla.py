"""XLA compiler options of the library's jitted steps, chosen per backend.

Every step the library compiles (the trainer's epochs, ``geonorm-jax bench``, the trained
potentials' energy functions and molecular dynamics) goes through :func:`jit`, which passes
:func:`compiler_options` to ``jax.jit(..., compiler_options=...)``. The options apply to that
compilation only; they change nothing else in the user's program.

On the CPU the options turn XLA's YNNPACK fusions off
(``xla_cpu_experimental_ynn_fusion_type=""``): recent jaxlib builds hand the dots and
reductions of a fusion to YNNPACK, which on this library's edge blocks (``[E, 64]``
operands, many sibling reductions in the backward pass) ran slower than XLA's own loop and
dot emitters. Measured on a 2-core AMD EPYC (AVX-512) with jax 0.10.2, the EGNN training step
at ``N = 100``, batch 50, 5 layers took 1.95 s with these options against 2.52 s without them
(and the revision before the execution plan 2.22 s against 3.13 s), alternating fresh
processes in one run of ``python -m experiments.bench_egnn_versions``; the step's loss agrees
to float32 rounding. On the same machine, one train step of the molecular models
(``geonorm_jax.bench.molecules``, uracil, batch 8, published sizes; two alternating rounds of
fresh processes, with / without): Allegro 29.5 / 36.2 and 28.0 / 41.5 ms, SchNet 6.5 / 7.8 and
4.5 / 4.8 ms, GemNet-T 429 / 536 and 402 / 390 ms; the EGNN at ``N = 5``, batch 100 (2,500
edges) 11.2 / 11.2 and 11.6 / 15.3 ms.

An option the installed jaxlib does not know is dropped (checked once by compiling an
identity). ``GEONORM_JAX_XLA_DEFAULTS=0`` turns the defaults off (only ``fast_compile``
remains), for comparing against XLA's own choices.
"""

from __future__ import annotations

import functools
import os

import jax

__all__ = ["CPU_OPTIONS", "FAST_COMPILE", "DEFAULTS_ENV", "compiler_options", "jit"]

#: The CPU backend's options (see the module docstring for the measurement).
CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
#: ``fast_compile``: XLA's backend optimization level 0 (about half the compile time).
FAST_COMPILE = {"xla_backend_optimization_level": 0}
#: Set to ``0`` to compile with XLA's own defaults (``fast_compile`` still applies).
DEFAULTS_ENV = "GEONORM_JAX_XLA_DEFAULTS"

_BACKEND_OPTIONS = {"cpu": CPU_OPTIONS}


@functools.cache
def _supported(name: str, value) -> bool:
    """Whether the installed jaxlib accepts the compiler option ``name=value``."""
    try:
        jax.jit(lambda x: x, compiler_options={name: value}).lower(0.0).compile()
    except Exception:  # noqa: BLE001 - an unknown option raises a backend-specific error
        return False
    return True


def compiler_options(backend: str | None = None, *, fast_compile: bool = False) -> dict:
    """The options :func:`jit` passes for ``backend`` (default: ``jax.default_backend()``).

    Args:
      backend: ``"cpu"``, ``"gpu"`` or ``"tpu"``.
      fast_compile: add :data:`FAST_COMPILE`.

    Returns:
      a new dict of option names to values (empty on accelerators without ``fast_compile``).
    """
    backend = backend or jax.default_backend()
    options = {}
    if os.environ.get(DEFAULTS_ENV, "1") != "0" and backend == jax.default_backend():
        options.update({k: v for k, v in _BACKEND_OPTIONS.get(backend, {}).items()
                        if _supported(k, v)})
    if fast_compile:
        options.update(FAST_COMPILE)
    return options


def jit(fn, *, fast_compile: bool = False, **kwargs):
    """``jax.jit(fn, **kwargs)`` with :func:`compiler_options` of the default backend.

    ``kwargs`` are those of ``jax.jit`` (``donate_argnums``, ``static_argnames``, ...); a
    ``compiler_options`` among them is merged over the defaults.
    """
    options = {**compiler_options(fast_compile=fast_compile),
               **kwargs.pop("compiler_options", {})}
    return jax.jit(fn, compiler_options=options or None, **kwargs)
