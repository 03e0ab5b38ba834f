"""Tests for the Flax NNX wrapper (geonorm_jax.nnx) against the pure functions and Linen.

Every catalogue entry is checked: initialization, evaluation with the running averages,
training with the running-statistics update, ``nnx.jit`` and one ``nnx.Optimizer`` step.
Inputs are small float32 cases built by the audit's :func:`make_case` (random input of the
entry's kind, its context, trained-like perturbed parameters and state).
"""

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _catalog_cases import (
    CONSTANT_STATE,
    NAMES,
    B,
    C,
    N,
    as_array,
    assert_trees_equal,
    catalog_case,
)
from flax import nnx

from geonorm_jax import linen
from geonorm_jax.nnx import NormModule, norm_module
from geonorm_jax.norms import vector, vision


def _linen(norm, params, state, x, mask, context, training):
    layer = linen.NormLayer(norm)
    variables = {"params": {"norm": params}}
    if jax.tree_util.tree_leaves(state):
        variables["batch_stats"] = {"norm": state}
    y, updates = layer.apply(variables, x, mask=mask, training=training, **context,
                             mutable=["batch_stats"])
    return y, updates.get("batch_stats", {}).get("norm", state)


@pytest.mark.parametrize("name", NAMES)
def test_init_is_the_pure_init_with_one_params_key(name):
    info, norm, case, _ = catalog_case(name)
    module = NormModule(norm, case.x, rngs=nnx.Rngs(params=7), **case.context)
    key = nnx.Rngs(params=7).params()
    params, state = norm.init(key, case.x, **case.context)
    assert_trees_equal(module.variables(), (params, state))
    # the declared parameters are nnx.Param, the running state nnx.BatchStat
    assert _var_paths(module, nnx.Param) == {("params", *k) for k in _paths(params)}
    assert _var_paths(module, nnx.BatchStat) == {("stats", *k) for k in _paths(state)}
    # a declared running statistic with no entries for this input may be left out (a zero-size
    # array cannot be checkpointed): e3nn_batch_norm's "mean" when the input has no 0e channel
    assert set(info.params) <= set(params) and set(state) <= set(info.running_state)
    assert set(info.running_state) - set(state) <= ({"mean"} if name == "e3nn_batch_norm"
                                                    else set())


def _var_paths(module, kind):
    return {path for path, _ in nnx.to_flat_state(nnx.state(module, kind))}


def _paths(tree):
    return [tuple(p.key for p in path)
            for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


@pytest.mark.parametrize("name", NAMES)
def test_equals_pure_and_linen_in_training_and_evaluation(name):
    info, norm, case, mask = catalog_case(name)
    x, ctx, params, state = case.x, case.context, case.params, case.state
    module = NormModule(norm, x, rngs=nnx.Rngs(0), **ctx)
    module.set_variables(params, state)
    assert module.use_running_average is False  # training by default, as nnx.BatchNorm

    # training: batch statistics, running state written back
    y = module(x, mask=mask, **ctx)
    y_pure, new_state = norm.apply(params, state, x, mask=mask, training=True, **ctx)
    y_linen, new_linen = _linen(norm, params, state, x, mask, ctx, training=True)
    np.testing.assert_array_equal(as_array(y), as_array(y_pure))
    np.testing.assert_array_equal(as_array(y_linen), as_array(y_pure))
    assert_trees_equal(module.variables()[1], new_state)
    assert_trees_equal(new_linen, new_state)
    moving = (set(info.running_state) - CONSTANT_STATE) & set(state)
    if moving:  # a batch-statistics layer: the training call moved the running averages
        assert any(not np.allclose(module.variables()[1][k], state[k]) for k in moving)
    else:
        assert_trees_equal(module.variables()[1], state)
    assert_trees_equal(module.variables()[0], params)  # a forward pass never moves params

    # evaluation: the running averages just written, nothing updated
    module.eval()
    assert module.use_running_average is True
    y_eval = module(x, mask=mask, **ctx)
    y_eval_pure, _ = norm.apply(params, new_state, x, mask=mask, training=False, **ctx)
    y_eval_linen, kept = _linen(norm, params, new_state, x, mask, ctx, training=False)
    np.testing.assert_array_equal(as_array(y_eval), as_array(y_eval_pure))
    np.testing.assert_array_equal(as_array(y_eval_linen), as_array(y_eval_pure))
    assert_trees_equal(module.variables()[1], new_state)
    assert_trees_equal(kept, new_state)


@pytest.mark.parametrize("name", NAMES)
def test_jit_optimizer_step_changes_params_and_updates_stats(name):
    info, norm, case, mask = catalog_case(name, seed=1)
    x, ctx, params, state = case.x, case.context, case.params, case.state
    module = NormModule(norm, x, rngs=nnx.Rngs(0), **ctx)
    module.set_variables(params, state)
    weights = jnp.asarray(np.random.default_rng(0).normal(size=as_array(x).shape), jnp.float32)
    optimizer = nnx.Optimizer(module, optax.sgd(0.1), wrt=nnx.Param)

    def loss_fn(m):
        return jnp.sum(jnp.asarray(_arr_traced(m(x, mask=mask, **ctx))) * weights)

    @nnx.jit
    def step(m, opt):
        loss, grads = nnx.value_and_grad(loss_fn)(m)
        opt.update(m, grads)
        return loss, grads

    loss, grads = step(module, optimizer)
    y_pure, new_state = norm.apply(params, state, x, mask=mask, training=True, **ctx)

    def pure_loss(p):
        y, _ = norm.apply(p, state, x, mask=mask, training=True, **ctx)
        return jnp.sum(_arr_traced(y) * weights)

    np.testing.assert_allclose(loss, jnp.sum(as_array(y_pure) * weights), rtol=1e-5, atol=1e-5)
    expected = jax.tree.map(lambda p, g: p - 0.1 * g, params, jax.grad(pure_loss)(params))
    new_params, stats = module.variables()
    for a, b in zip(jax.tree.leaves(new_params), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    if jax.tree.leaves(params):  # the step moved at least one Param
        assert any(not np.allclose(a, b) for a, b in
                   zip(jax.tree.leaves(new_params), jax.tree.leaves(params), strict=True))
    for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(new_state), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _arr_traced(y):
    return y.array if isinstance(y, e3nn.IrrepsArray) else y


# ----------------------------------------------------------------------------- modes and API


def _features(seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(B, N, C)) + 1.0, jnp.float32)
    mask = jnp.ones((B, N), bool).at[1, -2:].set(False)
    return x, mask


def test_modes_like_nnx_batch_norm_train_eval_view_set_attributes_and_call_override():
    x, mask = _features()
    pure = vision.batch_norm(momentum=0.5)
    bn = NormModule(pure, x.shape, rngs=nnx.Rngs(0))  # a shape is enough for BatchNorm
    params, state = pure.init(None, x)
    assert_trees_equal(bn.variables(), (params, state))

    frozen = nnx.view(bn, use_running_average=True)  # shares the variables
    assert frozen.use_running_average and not bn.use_running_average
    # evaluation mode: the same running statistics with or without the mask on real nodes
    # (padded nodes are computed from zeros, their values unspecified)
    np.testing.assert_array_equal(frozen(x, mask=mask)[mask],
                                  pure.apply(params, state, x)[0][mask])
    assert_trees_equal(bn.variables()[1], state)

    bn(x, mask=mask, use_running_average=True)  # the call overrides the attribute
    assert_trees_equal(bn.variables()[1], state)
    y = bn(x, mask=mask)
    y_pure, new = pure.apply(params, state, x, mask=mask, training=True)
    np.testing.assert_array_equal(y, y_pure)
    assert_trees_equal(frozen.variables()[1], new)  # the view sees the update

    bn.set_attributes(use_running_average=True)
    np.testing.assert_array_equal(bn(x, mask=mask)[mask], pure.apply(params, new, x)[0][mask])
    bn.train()
    assert bn.use_running_average is False
    bn(x, mask=mask)
    assert not np.allclose(bn.variables()[1]["mean"], new["mean"])

    # matches flax's own nnx.BatchNorm on unmasked input (same momentum and epsilon)
    ours = NormModule(vision.batch_norm(momentum=0.9), x, rngs=nnx.Rngs(0))
    flax_bn = nnx.BatchNorm(C, momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(ours(x), flax_bn(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours.stats["mean"][...], flax_bn.mean[...], rtol=1e-6)
    np.testing.assert_allclose(ours.stats["var"][...], flax_bn.var[...], rtol=1e-5)


def test_inside_a_model_with_context_under_jit():
    class Model(nnx.Module):
        def __init__(self, x, coords, rngs):
            self.dense = nnx.Linear(C, C, rngs=rngs)
            self.bn = NormModule(vision.batch_norm(), x, rngs=rngs)
            self.geo = norm_module("geo_norm", coords, rngs=rngs, sigma="system")

        def __call__(self, x, coords, mask, mu0):
            return self.bn(self.dense(x), mask=mask), self.geo(coords, mask=mask, mu0=mu0)

    x, mask = _features()
    rng = np.random.default_rng(3)
    coords = jnp.asarray(rng.normal(size=(B, N, 3)), jnp.float32)
    mu0 = jnp.asarray(rng.normal(size=(B, 3)), jnp.float32)
    model = Model(x, coords, nnx.Rngs(0))
    assert _var_paths(model, nnx.BatchStat) == {
        ("bn", "stats", "mean"), ("bn", "stats", "var")}
    eager = nnx.clone(model)
    h, y = nnx.jit(lambda m, *a: m(*a))(model, x, coords, mask, mu0)
    h_eager, y_eager = eager(x, coords, mask, mu0)
    np.testing.assert_allclose(h, h_eager, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y, y_eager, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.bn.stats["mean"][...], eager.bn.stats["mean"][...],
                               rtol=1e-6)
    with pytest.raises(ValueError, match="mu0"):
        model.geo(coords, mask=mask)


def test_irreps_array_input():
    rng = np.random.default_rng(4)
    irreps = e3nn.Irreps("2x0e + 3x1o")
    v = e3nn.IrrepsArray(irreps, jnp.asarray(rng.normal(size=(B, N, irreps.dim)), jnp.float32))
    pure = vector.vector_neuron_batch_norm(momentum=0.5)
    module = NormModule(pure, v, rngs=nnx.Rngs(0))
    params, state = pure.init(None, v)
    assert_trees_equal(module.variables(), (params, state))
    assert module.stats["mean"][...].shape == (5,)  # one per irrep copy
    y = module(v)
    y_pure, new = pure.apply(params, state, v, training=True)
    assert isinstance(y, e3nn.IrrepsArray) and y.irreps == irreps
    np.testing.assert_array_equal(y.array, y_pure.array)
    assert_trees_equal(module.variables()[1], new)


def test_bad_arguments_raise_value_error_naming_what_was_expected():
    x, _ = _features()
    with pytest.raises(ValueError, match="expected a geonorm_jax.norms.Norm.*received dict"):
        NormModule({}, x, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="shape as a tuple of ints; received str"):
        NormModule(vision.layer_norm(), "x", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"features \[batch, nodes, channels\]"):
        NormModule(vision.layer_norm(), (B, C), rngs=nnx.Rngs(0))
    module = NormModule(vision.layer_norm(), x, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"shape \(4,\) expected; received shape \(3,\)"):
        module.set_variables({"scale": jnp.ones(3), "bias": jnp.zeros(3)})
    with pytest.raises(ValueError, match="params must have the structure"):
        module.set_variables({"scale": jnp.ones(C)})
    with pytest.raises(ValueError, match="unknown normalization"):
        norm_module("no_such_norm", x, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="channels"):
        module(jnp.ones((B, N, C + 1), jnp.float32))
