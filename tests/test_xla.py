"""The library's compiler options (geonorm_jax.xla): what they are, that they reach the
compiled executable, and that they change no result beyond float32 rounding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geonorm_jax import xla


def _edge_block(w, x):
    """A miniature of the EGNN's edge block: products, SiLU and sibling reductions."""
    y = jax.nn.silu(x @ w)
    return jnp.sum(y, axis=0), jnp.sum(y * x, axis=1)


def test_cpu_options_where_supported(monkeypatch):
    monkeypatch.delenv(xla.DEFAULTS_ENV, raising=False)
    options = xla.compiler_options("cpu")
    for name, value in xla.CPU_OPTIONS.items():
        assert (name in options) == xla._supported(name, value)
    assert xla.compiler_options("cpu", fast_compile=True) == {**options, **xla.FAST_COMPILE}
    # another backend than the default one gets none of the CPU's options
    assert xla.compiler_options("gpu") == {}


def test_defaults_can_be_turned_off(monkeypatch):
    monkeypatch.setenv(xla.DEFAULTS_ENV, "0")
    assert xla.compiler_options("cpu") == {}
    assert xla.compiler_options("cpu", fast_compile=True) == xla.FAST_COMPILE


def test_unknown_option_is_dropped():
    assert not xla._supported("xla_no_such_option_for_geonorm_jax", "")


def test_options_reach_the_executable_and_keep_the_result(monkeypatch):
    monkeypatch.delenv(xla.DEFAULTS_ENV, raising=False)
    if not xla.compiler_options("cpu"):
        pytest.skip("this jaxlib has none of the CPU options")
    w = jax.random.normal(jax.random.key(0), (64, 64))
    x = jax.random.normal(jax.random.key(1), (512, 64))
    ours = xla.jit(_edge_block).lower(w, x).compile()
    plain = jax.jit(_edge_block).lower(w, x).compile()
    assert "__ynn_fusion" not in ours.as_text()
    if "__ynn_fusion" not in plain.as_text():
        pytest.skip("this jaxlib makes no YNNPACK fusions here: nothing to compare")
    for a, b in zip(ours(w, x), plain(w, x), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_user_options_merge_over_the_defaults(monkeypatch):
    monkeypatch.delenv(xla.DEFAULTS_ENV, raising=False)
    f = xla.jit(lambda a: a * 2.0, compiler_options={"xla_backend_optimization_level": 0})
    assert float(f(jnp.float32(1.5))) == 3.0
