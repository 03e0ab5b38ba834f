"""Tests for the Equinox wrapper (geonorm_jax.equinox) against the pure functions.

Every catalogue entry's generated class is checked against its pure ``Norm``: initialization,
training (running state written to the ``eqx.nn.State``), evaluation (``inference_mode``, the
running state read and kept) and gradients. Inputs are small float32 cases built by the
audit's :func:`make_case` (random input of the entry's kind, its context, trained-like
perturbed parameters and state). A tiny model (MLP + BatchNorm) trains with optax. Skipped
when Equinox (the ``equinox`` extra) is not installed.
"""

from __future__ import annotations

import subprocess
import sys

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

eqx = pytest.importorskip("equinox")

from _catalog_cases import (  # noqa: E402
    CONSTANT_STATE,
    NAMES,
    B,
    C,
    N,
    as_array,
    assert_trees_equal,
    catalog_case,
)

from geonorm_jax import equinox as gjx  # noqa: E402
from geonorm_jax import linen  # noqa: E402
from geonorm_jax.norms import catalog, vision  # noqa: E402


def _build(name, case, key=7):
    """The entry's generated class with the case's params and state loaded."""
    cls = gjx.CLASSES[name]
    module, state = eqx.nn.make_with_state(cls)(case.x, key=jax.random.key(key),
                                                init_context=case.context)
    module = eqx.tree_at(lambda m: m.params, module, case.params)
    if module.state_index is not None:
        state = state.set(module.state_index, case.state)
    return module, state


@pytest.mark.parametrize("name", NAMES)
def test_init_is_the_pure_init_of_the_catalogue_entry(name):
    info, _, case, _ = catalog_case(name)
    cls = gjx.CLASSES[name]
    module, state = eqx.nn.make_with_state(cls)(case.x, key=jax.random.key(7),
                                                init_context=case.context)
    params, norm_state = info.make().init(jax.random.key(7), case.x, **case.context)
    assert_trees_equal(module.params, params)
    assert module.norm.name == info.make().name and module.norm.kind == info.kind
    assert module.is_stateful() == bool(jax.tree_util.tree_leaves(norm_state))
    if module.is_stateful():
        assert_trees_equal(state.get(module.state_index), norm_state)
    # the params are the module's array leaves: what an optimizer trains
    assert_trees_equal(eqx.filter(module, eqx.is_array).params, params)
    assert cls.__name__ and info.paper in cls.__doc__ and info.formula in cls.__doc__


@pytest.mark.parametrize("name", NAMES)
def test_equals_pure_in_training_and_evaluation(name):
    info, norm, case, mask = catalog_case(name)
    x, ctx, params, state0 = case.x, case.context, case.params, case.state
    module, state = _build(name, case)
    assert module.inference is False  # training by default, as eqx.nn.BatchNorm

    out = module(x, state if module.is_stateful() else None, mask=mask, **ctx)
    y, state_after = out if module.is_stateful() else (out, None)
    y_pure, new_pure = norm.apply(params, state0, x, mask=mask, training=True, **ctx)
    np.testing.assert_array_equal(as_array(y), as_array(y_pure))
    if module.is_stateful():
        new_state = state_after.get(module.state_index)
        assert_trees_equal(new_state, new_pure)
        moving = (set(info.running_state) - CONSTANT_STATE) & set(state0)
        if moving:  # a batch-statistics layer: the training call moved the running averages
            assert any(not np.allclose(new_state[k], state0[k]) for k in moving)

    # evaluation: the running state (the one just written) is read, nothing is written
    frozen = eqx.nn.inference_mode(module)
    assert frozen.inference is True
    if module.is_stateful():
        y_eval, kept = frozen(x, state_after, mask=mask, **ctx)
        assert_trees_equal(kept.get(frozen.state_index), new_pure)
    else:
        y_eval = frozen(x, mask=mask, **ctx)
    y_eval_pure, _ = norm.apply(params, new_pure, x, mask=mask, training=False, **ctx)
    np.testing.assert_array_equal(as_array(y_eval), as_array(y_eval_pure))
    # the Linen wrapper's keyword does the same
    if not module.is_stateful():
        np.testing.assert_array_equal(as_array(module(x, mask=mask, training=False, **ctx)),
                                      as_array(y_eval_pure))


@pytest.mark.parametrize("name", NAMES)
def test_gradients_under_filter_jit_equal_the_pure_gradients(name):
    info, norm, case, mask = catalog_case(name, seed=1)
    x, ctx, params, state0 = case.x, case.context, case.params, case.state
    module, state = _build(name, case)
    weights = jnp.asarray(np.random.default_rng(0).normal(size=as_array(x).shape), jnp.float32)

    def out_array(y):
        return y.array if isinstance(y, e3nn.IrrepsArray) else y

    @eqx.filter_jit
    @eqx.filter_value_and_grad(has_aux=True)
    def loss_fn(m, st):
        out = m(x, st if m.is_stateful() else None, mask=mask, **ctx)
        y, st = out if m.is_stateful() else (out, st)
        return jnp.sum(out_array(y) * weights), st

    (loss, new_state), grads = loss_fn(module, state)

    def pure_loss(p):
        y, _ = norm.apply(p, state0, x, mask=mask, training=True, **ctx)
        return jnp.sum(out_array(y) * weights)

    np.testing.assert_allclose(loss, pure_loss(params), rtol=1e-5, atol=1e-5)
    expected = jax.grad(pure_loss)(params)
    for a, b in zip(jax.tree.leaves(grads.params), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    if module.is_stateful():
        _, new_pure = norm.apply(params, state0, x, mask=mask, training=True, **ctx)
        for a, b in zip(jax.tree.leaves(new_state.get(module.state_index)),
                        jax.tree.leaves(new_pure), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- a tiny model


class _Model(eqx.Module):
    """Linear -> BatchNorm (masked) -> tanh -> Linear, per node."""

    inp: eqx.nn.Linear
    norm: gjx.NormModule
    out: eqx.nn.Linear

    def __init__(self, x, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.inp = eqx.nn.Linear(x.shape[-1], 16, key=k1)
        self.norm = gjx.BatchNorm((B, N, 16), key=k2, momentum=0.9)
        self.out = eqx.nn.Linear(16, 1, key=k3)

    def __call__(self, x, state, mask):
        h = jax.vmap(jax.vmap(self.inp))(x)
        h, state = self.norm(h, state, mask=mask)
        return jax.vmap(jax.vmap(self.out))(jnp.tanh(h))[..., 0], state


def test_a_tiny_equinox_model_trains_with_optax_and_the_loss_goes_down():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(B, N, 3)) * 3.0 + 2.0, jnp.float32)
    target = jnp.sin(x[..., 0]) + x[..., 1] * x[..., 2] / 9.0
    mask = jnp.ones((B, N), bool).at[1, -2:].set(False)
    model, state = eqx.nn.make_with_state(_Model)(x, jax.random.key(0))
    stats0 = state.get(model.norm.state_index)
    optimizer = optax.adam(1e-2)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_value_and_grad(has_aux=True)
    def loss_fn(m, st):
        pred, st = m(x, st, mask)
        return jnp.sum(jnp.where(mask, (pred - target) ** 2, 0.0)) / jnp.sum(mask), st

    @eqx.filter_jit
    def step(m, st, opt):
        (loss, st), grads = loss_fn(m, st)
        updates, opt = optimizer.update(grads, opt, eqx.filter(m, eqx.is_array))
        return eqx.apply_updates(m, updates), st, opt, loss

    losses = []
    for _ in range(30):
        model, state, opt_state, loss = step(model, state, opt_state)
        losses.append(float(loss))
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < 0.5 * losses[0], losses
    # the norm's params were trained and its running statistics moved
    assert not np.allclose(model.norm.params["scale"], 1.0)
    stats = state.get(model.norm.state_index)
    assert not np.allclose(stats["mean"], stats0["mean"])
    # evaluation uses the running statistics: finite, and differs from the batch statistics
    pred_eval, _ = eqx.nn.inference_mode(model)(x, state, mask)
    assert np.all(np.isfinite(np.asarray(pred_eval)))


# ----------------------------------------------------------------------------- API and errors


def test_every_catalogue_entry_has_a_class_and_linen_names_agree():
    assert list(gjx.CLASSES) == list(catalog.names())
    for name, cls in gjx.CLASSES.items():
        assert getattr(gjx, cls.__name__) is cls and cls.__name__ in gjx.__all__
        assert issubclass(cls, gjx.NormModule) and cls.catalogue_name == name
    for linen_name in linen.__all__:
        cls = getattr(linen, linen_name)
        if isinstance(cls, type) and issubclass(cls, linen.NormLayer) and cls is not \
                linen.NormLayer:
            assert hasattr(gjx, linen_name), f"no Equinox class {linen_name}"
            info = catalog.get(getattr(gjx, linen_name).catalogue_name)
            assert cls().make_norm().name == info.make().name, linen_name


def test_named_class_takes_the_constructor_keywords_and_norm_module_any_entry():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(B, N, C)), jnp.float32)
    bn, state = eqx.nn.make_with_state(gjx.BatchNorm)(x, key=jax.random.key(0),
                                                      use_bias=False, momentum=0.8)
    assert set(bn.params) == {"scale"}
    stats0 = state.get(bn.state_index)
    y, _ = bn(x, state)
    y_pure, _ = vision.batch_norm(use_bias=False, momentum=0.8).apply(
        {"scale": jnp.ones(C, jnp.float32)}, stats0, x, training=True)
    np.testing.assert_array_equal(y, y_pure)
    geo = gjx.norm_module("geo_norm", (B, N, 3), key=jax.random.key(0), sigma="system")
    assert geo.norm.name == catalog.make("geo_norm", sigma="system").name
    assert not geo.is_stateful() and set(geo.params) == set(catalog.get("geo_norm").params)
    gn = gjx.GroupNorm(x, key=jax.random.key(0))  # the catalogue entry's num_groups=4
    assert gn(x).shape == x.shape


def test_flat_layout_keywords_pass_through():
    rng = np.random.default_rng(2)
    nodes = jnp.asarray(rng.normal(size=(7, C)), jnp.float32)
    ids = jnp.asarray([0, 0, 0, 1, 1, 1, 1], jnp.int32)
    layout = {"segment_ids": ids, "num_graphs": 2}
    ln = gjx.LayerNorm(nodes, key=jax.random.key(0), reduce="nodes_channels",
                       init_context=layout)
    y = ln(nodes, segment_ids=ids, num_graphs=2)
    y_pure, _ = vision.layer_norm(reduce="nodes_channels").apply(
        ln.params, {}, nodes, segment_ids=ids, num_graphs=2)
    np.testing.assert_array_equal(y, y_pure)


def test_stateful_layers_in_sequential():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(B, N, C)), jnp.float32)
    seq, state = eqx.nn.make_with_state(eqx.nn.Sequential)(
        [gjx.BatchNorm(x, key=jax.random.key(0)), gjx.LayerNorm(x, key=jax.random.key(1))])
    leaves, treedef = jax.tree_util.tree_flatten(state)
    y, state = seq(x, state)
    bn_y, _ = seq.layers[0](x, jax.tree_util.tree_unflatten(treedef, leaves))
    np.testing.assert_allclose(y, seq.layers[1](bn_y), rtol=1e-6)


@pytest.mark.parametrize("call, match", [
    (lambda: gjx.NormModule("batch_norm", (B, N, C), key=jax.random.key(0)),
     "expected a geonorm_jax.norms.Norm"),
    (lambda: gjx.BatchNorm("x", key=jax.random.key(0)), "expected an example input"),
    (lambda: gjx.BatchNorm((B, N, C), key=jax.random.key(0), momentm=0.9),
     r"expected keyword arguments among .*received \['momentm'\]"),
    (lambda: gjx.norm_module("no_such_norm", (B, N, C), key=jax.random.key(0)),
     "unknown normalization"),
    (lambda: gjx.BatchNorm((B, N, C), key=jax.random.key(0))(jnp.ones((B, N, C))),
     "expected the eqx.nn.State"),
    (lambda: gjx.LayerNorm((B, N, C), key=jax.random.key(0))(
        jnp.ones((B, N, C)), training=True, inference=True), "must disagree"),
])
def test_bad_arguments_raise_value_error_naming_what_was_expected(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_geonorm_jax_imports_without_equinox_and_the_error_names_the_extra():
    code = (
        "import sys; sys.modules['equinox'] = None\n"
        "import geonorm_jax as gj, geonorm_jax.linen, geonorm_jax.nnx\n"
        "assert 'equinox' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "try:\n"
        "    gj.equinox\n"
        "except ImportError as e:\n"
        "    print('ERR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ERR" in out.stdout and "geonorm-jax[equinox]" in out.stdout, out.stdout
