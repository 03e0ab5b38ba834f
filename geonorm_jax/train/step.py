"""Pure training functions: the optimizer, the loss, one step, one epoch.

All functions here are pure over a single seed's :class:`~geonorm_jax.train.state.TrainState`;
the loop ``jax.vmap``s them over the seed axis and ``jax.jit``s the epoch with the state's
buffers donated.

The model enters as ``apply(params, batch_stats, batch, training) -> (pred, new_batch_stats)``
and the task's loss as ``loss(pred, batch) -> scalar`` (:mod:`geonorm_jax.train.tasks`); the
default loss is the N-body task's :func:`mse`, with ``batch`` a dict of ``loc, vel, charges,
target`` (``[B, N, 3]``, ``[B, N, 3]``, ``[B, N, 1]``, ``[B, N, 3]``) and optionally
``mask [B, N]`` bool. Any batch is a dict of arrays with the sample axis first.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from geonorm_jax.data.batching import batch_indices
from geonorm_jax.train.config import OptimizerConfig
from geonorm_jax.train.state import TrainState

__all__ = ["make_optimizer", "mse", "per_sample_mse", "train_step", "train_epoch"]


def make_optimizer(
    config: OptimizerConfig, steps_per_epoch: int, epochs: int
) -> optax.GradientTransformation:
    """Adam with PyTorch-style (L2) weight decay, optional clipping and cosine schedule.

    ``torch.optim.Adam(lr, weight_decay=wd)`` computes ``g <- g + wd * theta`` and then the
    Adam update, i.e. ``optax.chain(add_decayed_weights(wd), adam(lr))`` (not AdamW, which
    decays after the moment normalisation). Gradient clipping (``clip_grad_norm_`` in PyTorch)
    acts on the raw gradient, so it comes first. Adam's ``eps = 1e-8`` is added outside the
    square root in both libraries.
    """
    total = max(1, steps_per_epoch * epochs)
    if config.schedule == "cosine":
        warmup = config.warmup_epochs * steps_per_epoch
        if warmup > 0:
            lr = optax.warmup_cosine_decay_schedule(
                0.0, config.lr, warmup_steps=warmup, decay_steps=total
            )
        else:
            lr = optax.cosine_decay_schedule(config.lr, decay_steps=total)
    else:
        lr = config.lr
    parts = []
    if config.clip_norm is not None:
        parts.append(optax.clip_by_global_norm(config.clip_norm))
    parts.append(optax.add_decayed_weights(config.weight_decay))
    parts.append(optax.adam(lr))
    return optax.chain(*parts)


def per_sample_mse(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None):
    """Per-sample MSE ``[B]``: the mean of ``(pred - target)^2`` over real nodes and the 3 axes.

    ``pred, target [B, N, 3]``; ``mask [B, N]`` bool or None.
    """
    sq = jnp.square(pred - target)
    if mask is None:
        return jnp.mean(sq, axis=(1, 2))
    m = mask.astype(sq.dtype)[..., None]
    return jnp.sum(sq * m, axis=(1, 2)) / jnp.maximum(3.0 * jnp.sum(m, axis=(1, 2)), 1.0)


def mse(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """``nn.MSELoss()``: the mean of ``(pred - target)^2`` over batch, nodes and the 3 axes
    (over real nodes only when ``mask`` is given)."""
    sq = jnp.square(pred - target)
    if mask is None:
        return jnp.mean(sq)
    m = mask.astype(sq.dtype)[..., None]
    return jnp.sum(sq * m) / jnp.maximum(3.0 * jnp.sum(m), 1.0)


def train_step(
    state: TrainState,
    batch: dict,
    *,
    apply: Callable,
    optimizer: optax.GradientTransformation,
    threshold: float,
    loss: Callable | None = None,
) -> tuple[TrainState, jax.Array, jax.Array]:
    """One optimizer step for one seed, with explosion detection.

    ``loss(pred, batch) -> scalar`` is the task's loss (default: the N-body :func:`mse` of
    ``batch["target"]``).

    The step is *healthy* when the loss is finite and ``<= threshold`` and the gradient's
    global norm is finite. A healthy step of a live seed updates params, running statistics
    and optimizer state; otherwise they are kept unchanged (``jnp.where``), and the first
    unhealthy step marks the seed ``exploded`` at ``state.step``. An exploded seed stays
    frozen for the rest of the run, so its parameters are the last finite ones.

    Returns:
      ``(new_state, loss, applied)`` where ``loss`` is the batch loss before the update and
      ``applied`` says whether the update was applied.
    """
    if loss is None:
        loss = lambda pred, b: mse(pred, b["target"], b.get("mask"))

    def loss_fn(params):
        pred, new_bs = apply(params, state.batch_stats, batch, True)
        return loss(pred, batch), new_bs

    (loss_value, new_bs), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, new_opt = optimizer.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)

    healthy = (jnp.isfinite(loss_value) & (loss_value <= threshold)
               & jnp.isfinite(optax.tree.norm(grads)))
    applied = healthy & ~state.exploded
    newly = ~healthy & ~state.exploded

    def pick(new, old):
        return jax.tree.map(lambda a, b: jnp.where(applied, a, b), new, old)

    new_state = state._replace(
        params=pick(new_params, state.params),
        batch_stats=pick(new_bs, state.batch_stats),
        opt_state=pick(new_opt, state.opt_state),
        step=state.step + 1,
        exploded=state.exploded | newly,
        exploded_at=jnp.where(newly, state.step, state.exploded_at),
    )
    return new_state, loss_value, applied


def train_epoch(
    state: TrainState,
    data: dict,
    *,
    apply: Callable,
    optimizer: optax.GradientTransformation,
    batch_size: int,
    threshold: float,
    constrain: Callable = lambda b: b,
    loss: Callable | None = None,
) -> tuple[TrainState, jax.Array, jax.Array]:
    """One epoch for one seed as a single ``lax.scan`` over batches.

    The seed's key is split into (next key, this epoch's order key); the order is
    :func:`geonorm_jax.data.batching.batch_indices` (a random permutation cut into full
    batches, the remainder dropped as in the EGNN code); the batch is gathered
    from ``data`` (the whole training split, ``[S, ...]`` per field) by index, then passed
    through ``constrain`` (the data-parallel sharding constraint, identity on one device).

    Returns:
      ``(new_state, losses [num_batches], applied [num_batches])``.
    """
    key, order_key = jax.random.split(state.key)
    order = batch_indices(order_key, jax.tree.leaves(data)[0].shape[0], batch_size)
    state = state._replace(key=key)

    def body(st, idx):
        batch = constrain({k: jnp.take(v, idx, axis=0) for k, v in data.items()})
        st, value, applied = train_step(
            st, batch, apply=apply, optimizer=optimizer, threshold=threshold, loss=loss
        )
        return st, (value, applied)

    state, (losses, applied) = jax.lax.scan(body, state, order)
    return state, losses, applied
