"""Test configuration: float64 is enabled so that exactness tests (Theorem 1 to 1e-10) can run.

Tests that check float32 behaviour create float32 arrays explicitly.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
