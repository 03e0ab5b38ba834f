"""Mixed precision: every normalization layer computes in at least float32.

The rule is applied once, where ``Norm`` wraps ``apply`` (``norms.base.at_least_float32``).
Over the whole catalogue, a bfloat16 input gives the float32 result on the same (bf16-rounded)
values within 1 % of the output's scale, in bfloat16; the EGNN's ``matmul_dtype`` keeps
positions, sums, norms and the loss in float32.
"""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geonorm_jax.audit.cases import make_case
from geonorm_jax.norms import catalog
from geonorm_jax.norms.base import Norm, at_least_float32

KEY = jax.random.PRNGKey(3)
TOL = 0.01  # of the output scale


def _cast(tree, dtype):
    return jax.tree_util.tree_map(
        lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def _bf16_error(info, nodes=12) -> float:
    """max |y(bf16 input) - y(f32 input)| / max |y(f32)|, same rounded input values."""
    case = make_case(info.make(), info.kind, KEY, context=info.context, nodes=nodes,
                     dtype=jnp.float32)
    x16 = case.x.astype(jnp.bfloat16)
    ctx16 = _cast(case.context, jnp.bfloat16)
    y16, _ = case.norm.apply(case.params, case.state, x16, training=True, **ctx16)
    assert y16.dtype == jnp.bfloat16, info.name
    y32, _ = case.norm.apply(case.params, case.state, x16.astype(jnp.float32), training=True,
                             **_cast(ctx16, jnp.float32))
    a16 = np.asarray(getattr(y16, "array", y16), np.float64)
    a32 = np.asarray(getattr(y32, "array", y32), np.float64)
    return float(np.abs(a16 - a32).max() / max(np.abs(a32).max(), 1e-30))


@pytest.mark.slow
def test_every_catalogue_layer_in_bfloat16_is_within_one_percent_of_float32():
    errors = {info.name: _bf16_error(info) for info in catalog.CATALOG}
    by_family = collections.defaultdict(list)
    for info in catalog.CATALOG:
        by_family[info.family].append(errors[info.name])
    print("\nbf16 vs float32, max error / output scale, per family:")
    for family, errs in sorted(by_family.items()):
        print(f"  {family}: {len(errs)} layers, worst {max(errs):.2e}, median "
              f"{float(np.median(errs)):.2e}")
    worst = max(errors, key=errors.get)
    print(f"  worst layer: {worst} {errors[worst]:.2e}")
    bad = {k: v for k, v in errors.items() if not v <= TOL}
    assert not bad, f"layers off by more than {TOL:.0%} in bfloat16: {bad}"


def test_the_layer_body_sees_float32_and_the_output_keeps_the_input_dtype():
    seen = []

    def apply(params, state, x, **kw):
        seen.append((x.dtype, kw["mu0"].dtype))
        return x * 2, {"count": state["count"] + 1.0}

    norm = Norm(lambda key, x, **kw: ({}, {"count": jnp.zeros((), jnp.bfloat16)}), apply)
    x = jnp.ones((2, 3, 3), jnp.bfloat16)
    y, state = norm.apply({}, {"count": jnp.zeros((), jnp.bfloat16)}, x, mu0=x[:, 0])
    assert seen[-1] == (jnp.float32, jnp.float32)
    assert y.dtype == jnp.bfloat16 and state["count"].dtype == jnp.bfloat16
    for dtype in (jnp.float32, jnp.float64):  # untouched
        y, _ = norm.apply({}, {"count": jnp.zeros((), dtype)}, x.astype(dtype), mu0=x[:, 0])
        assert seen[-1][0] == dtype and y.dtype == dtype
    assert at_least_float32(norm.apply) is norm.apply  # wrapped once


def test_geo_norm_in_bfloat16_on_the_bench_case_is_within_one_percent():
    """GeoNorm on the N = 100, batch 50 inputs of ``geonorm-jax bench``'s target case."""
    from geonorm_jax import geometry
    from geonorm_jax.bench.model import ModelCase, case_inputs

    x = case_inputs(ModelCase("target", 100, 50, 5))["x"].astype(jnp.bfloat16)
    norm = catalog.make("geo_norm")
    mu0 = geometry.centroid(x.astype(jnp.float32), None)
    params, state = norm.init(KEY, x.astype(jnp.float32), mu0=mu0)
    y16, _ = norm.apply(params, state, x, mu0=mu0.astype(jnp.bfloat16))
    y32, _ = norm.apply(params, state, x.astype(jnp.float32), mu0=mu0.astype(jnp.bfloat16)
                        .astype(jnp.float32))
    err = float(jnp.abs(y16.astype(jnp.float32) - y32).max() / jnp.abs(y32).max())
    assert y16.dtype == jnp.bfloat16
    assert err < TOL, err


def test_egnn_bfloat16_matmuls_keep_float32_and_stay_close():
    from geonorm_jax.bench.model import ModelCase, case_inputs
    from geonorm_jax.models import make_egnn

    inp = case_inputs(ModelCase("c", 10, 4, 2, hidden=16))
    x, v, q = (inp[k] for k in ("x", "v", "q"))
    kw = dict(hidden=16, num_layers=2, place="coord")
    m32 = make_egnn("geo_norm", **kw)
    m16 = make_egnn("geo_norm", matmul_dtype=jnp.bfloat16, **kw)
    variables = m32.init(KEY, x, v, q)
    y32 = m32.apply(variables, x, v, q)
    y16 = m16.apply(variables, x, v, q)
    assert y16.dtype == jnp.float32
    err = float(jnp.abs(y16 - y32).max() / jnp.abs(y32 - x).max())
    assert 0 < err < 0.05, err  # bf16 products differ, but only by their rounding
    text = jax.jit(m16.apply).lower(variables, x, v, q).as_text()
    assert "bf16" in text


@pytest.mark.parametrize("bad", ["float16x", 3])
def test_bench_case_precision_is_checked(bad):
    from geonorm_jax.bench.model import ModelCase

    with pytest.raises(ValueError, match="precision: expected"):
        ModelCase("c", 5, 2, 2, precision=bad)
