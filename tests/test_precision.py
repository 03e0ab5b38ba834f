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


def _equations(jaxpr):
    """Every equation of a jaxpr and of the jaxprs nested in its equations' parameters."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)


def _molecular_setup(model: str, precision: str):
    from geonorm_jax.bench.molecules import build_model, model_kwargs, molecule_frames
    from geonorm_jax.models import registry
    from geonorm_jax.models.molecular_graph import batch_frames

    frames = molecule_frames("water", 2, relax=False)
    spec = registry.get(model)
    module = build_model(model, "tiny", frames.avg_num_neighbors, precision)
    pos = jnp.asarray(frames.positions, jnp.float32)
    z = jnp.asarray(frames.atomic_numbers)
    graph = batch_frames(pos, z, spec.cutoff_of(model_kwargs(model, "tiny")))
    return frames, module, graph


@pytest.mark.parametrize("model", ["allegro", "schnet", "gemnet"])
def test_molecular_bfloat16_products_keep_sums_and_outputs_in_float32(model):
    """``matmul_dtype``: some products take bfloat16 operands; every product returns float32
    and every sum over neighbours (scatter-add) runs in float32, forces included."""
    from geonorm_jax.models.molecular_graph import energy_and_forces

    _, m16, graph = _molecular_setup(model, "bfloat16")
    variables = m16.init(KEY, graph)
    closed = jax.make_jaxpr(lambda v: energy_and_forces(m16, v, graph))(variables)
    eqns = list(_equations(closed.jaxpr))
    dots = [e for e in eqns if e.primitive.name == "dot_general"]
    bf16 = [e for e in dots if all(v.aval.dtype == jnp.bfloat16 for v in e.invars)]
    assert bf16, f"{model}: no product with bfloat16 operands"
    assert {e.outvars[0].aval.dtype for e in dots} == {jnp.dtype(jnp.float32)}
    sums = [e for e in eqns if e.primitive.name.startswith("scatter")
            and jnp.issubdtype(e.outvars[0].aval.dtype, jnp.floating)]
    assert sums and {e.outvars[0].aval.dtype for e in sums} == {jnp.dtype(jnp.float32)}
    assert {a.dtype for a in closed.out_avals} == {jnp.dtype(jnp.float32)}
    # float32 (the default) has no bfloat16 anywhere
    _, m32, _ = _molecular_setup(model, "float32")
    text = jax.jit(lambda v: energy_and_forces(m32, v, graph)).lower(variables).as_text()
    assert "bf16" not in text


@pytest.mark.parametrize("model", ["allegro", "schnet", "gemnet"])
def test_molecular_bfloat16_forces_and_gradients_stay_close_to_float32(model):
    from experiments.precision_molecules import evaluate
    from geonorm_jax.bench.molecules import molecule_frames

    row = evaluate(model, "tiny", molecule_frames("water", 2, relax=False))
    assert row["finite"]
    assert 0 < row["force_rel_rms"] < 0.05, row  # differ, by their rounding only
    assert 0 < row["grad_rel_l2"] < 0.05 and row["grad_cosine"] > 0.999, row


@pytest.mark.parametrize("model", ["SchNet", "Allegro", "GemNetT", "EGNN"])
def test_matmul_dtype_is_checked(model):
    from geonorm_jax import models

    with pytest.raises(ValueError, match=rf"{model}.matmul_dtype: expected .*'int8'"):
        extra = {"avg_num_neighbors": 2.0} if model == "Allegro" else {}
        getattr(models, model)(matmul_dtype="int8", **extra)


def test_molecule_bench_case_precision_is_checked_and_named():
    from geonorm_jax.bench.molecules import MoleculeCase

    assert MoleculeCase("schnet", precision="bfloat16").name.endswith("-bfloat16")
    assert MoleculeCase("schnet").name == "schnet-published-uracil-b8"
    with pytest.raises(ValueError, match="precision: expected"):
        MoleculeCase("schnet", precision="half")
