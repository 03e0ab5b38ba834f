r"""Evaluation: MSE on a split, and rotation/translation errors (RTE, GeoNorm paper Table 1).

RTE protocol (the paper leaves the distributions open; these are our choices):

* For each test sample ``s`` and each draw ``d = 1..D`` (``train.rte_draws``, default 3) we
  draw a Haar-random rotation ``R_{sd}`` (``e3nn.rand_matrix`` via
  :func:`geonorm_jax.geometry.random_rotation`) and, independently, a translation
  ``t_{sd} ~ N(0, tau^2 I_3)`` with ``tau = train.rte_translation_scale * std(x)``, where
  ``std(x)`` is the standard deviation of all input position components of the split
  (default scale 1: a translation as large as the systems' spread). The transforms come from
  ``PRNGKey(0)``, so every model is evaluated on the same transformed inputs.
* Rotation: positions and velocities are rotated, ``x -> x R^T``, ``v -> v R^T``, and so is the
  target. Translation: positions and target are shifted by ``t``; velocities are unchanged.
* ``R_err = MSE(f(x R^T, v R^T), y R^T)`` and ``T_err = MSE(f(x + t, v), y + t)`` per (sample,
  draw); we report their mean, median and max over all ``S x D`` pairs, and
  ``Delta R_err = mean R_err - MSE``, ``Delta T_err = mean T_err - MSE`` where ``MSE`` is the
  untransformed test MSE of the same parameters. An exactly SE(3)-equivariant model has
  ``Delta R_err = Delta T_err = 0`` up to floating-point rounding.

A caveat, and two extra columns. The charged N-body inputs are isotropic (Gaussian positions
and velocities), so a rotated test set has the same distribution as the original one: for
*any* model, equivariant or not, ``E[Delta R_err] = 0``, and a non-equivariant model's
``Delta R_err`` is a random quantity of either sign (its error simply changes per orientation).
Translations do move the systems away from the origin the data is centred on, so
``Delta T_err > 0`` reliably flags a translation-dependent model. To measure equivariance
itself we also report ``R_equiv_err = mean MSE(f(x R^T, v R^T), f(x, v) R^T)`` and
``T_equiv_err = mean MSE(f(x + t, v), f(x, v) + t)``, which are 0 exactly when the model is
equivariant, whatever the data.

The transforms and the residual ``f(g.x) - g.f(x)`` are those of the library's equivariance
kit (:func:`geonorm_jax.testing.transform_split`,
:func:`geonorm_jax.testing.equivariance_residual`); this module adds the RTE draws and
statistics.

All functions take the model as ``apply(params, batch_stats, batch, training)`` and run in
evaluation mode (running statistics, no update).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from geonorm_jax import geometry
from geonorm_jax.testing import equivariance_residual, transform_split
from geonorm_jax.train.step import per_sample_mse

__all__ = [
    "split_predictions",
    "transform_split",
    "random_transforms",
    "rte_errors",
    "RTE_COLUMNS",
    "EQUIVARIANCE_COLUMNS",
    "summarize_rte",
]

RTE_COLUMNS = (
    "mean_R_err",
    "median_R_err",
    "max_R_err",
    "delta_R_err",
    "mean_T_err",
    "median_T_err",
    "max_T_err",
    "delta_T_err",
)
EQUIVARIANCE_COLUMNS = ("R_equiv_err", "T_equiv_err")


def split_predictions(
    apply: Callable,
    params,
    batch_stats,
    data: dict,
    *,
    chunk: int,
    constrain: Callable = lambda b: b,
    metrics: Callable | None = None,
):
    """Per-sample errors and predictions of a split in eval mode.

    ``data`` is a dict of ``[S, ...]`` arrays (N-body: ``loc, vel, charges, target``, optional
    ``mask``). The split is processed in chunks of ``chunk`` samples with ``lax.map``; the last
    chunk is padded by repeating samples and the padding is cut off, so results do not depend
    on ``chunk``.

    Returns:
      without ``metrics``: ``(MSE [S], predictions [S, N, 3])`` (the N-body MSE per sample);
      with ``metrics(pred, batch) -> {name: [B]}`` (a task's ``sample_metrics``):
      ``({name: [S]}, predictions [S, ...])``.
    """
    num = jax.tree.leaves(data)[0].shape[0]
    chunk = max(1, min(chunk, num))
    num_chunks = -(-num // chunk)
    index = (jnp.arange(num_chunks * chunk) % num).reshape(num_chunks, chunk)
    score = metrics if metrics is not None else (
        lambda pred, batch: per_sample_mse(pred, batch["target"], batch.get("mask")))

    def one(idx):
        batch = constrain({k: jnp.take(v, idx, axis=0) for k, v in data.items()})
        pred, _ = apply(params, batch_stats, batch, False)
        return score(pred, batch), pred

    errors, preds = jax.lax.map(one, index)
    flat = lambda a: a.reshape(-1, *a.shape[2:])[:num]
    return jax.tree.map(flat, errors), jax.tree.map(flat, preds)


def random_transforms(data: dict, key: jax.Array, translation_scale: float):
    """One RTE draw: ``(rotated_split, translated_split, rotation [S,3,3], translation [S,3])``.

    Rotations are Haar-random (``e3nn.rand_matrix``); translations are ``N(0, tau^2 I_3)`` with
    ``tau = translation_scale * std(data["loc"])``. Jittable.
    """
    num, dtype = data["loc"].shape[0], data["loc"].dtype
    k_rot, k_trans = jax.random.split(key)
    tau = translation_scale * jnp.std(data["loc"])
    rotation = geometry.random_rotation(k_rot, (num,), dtype=dtype)
    translation = geometry.random_translation(k_trans, (num,), scale=1.0, dtype=dtype) * tau
    return (
        transform_split(data, rotation=rotation),
        transform_split(data, translation=translation),
        rotation,
        translation,
    )


def rte_errors(
    predict_fn: Callable,
    data: dict,
    key: jax.Array,
    *,
    draws: int,
    translation_scale: float,
    transforms: Callable = random_transforms,
) -> dict:
    """Per-(draw, sample) errors for RTE, as float64 NumPy arrays.

    Args:
      predict_fn: ``predict_fn(split) -> (per-sample MSE [..., S], predictions [..., S, N, 3])``
        (e.g. the seed-vmapped evaluation of trained parameters; leading axes are kept).
      data: the split (dict of ``[S, ...]`` arrays).
      key: draw ``d`` uses ``jax.random.split(key, draws)[d]``; the same key gives the same
        transforms for every seed (a paired comparison).
      draws: ``D``, transforms per sample.
      translation_scale: translation std in units of ``std(data["loc"])``.
      transforms: ``(data, key, translation_scale) -> (rotated, translated, R, t)`` (pass a
        jitted :func:`random_transforms` to avoid op-by-op dispatch).

    Returns:
      ``plain [..., S]``; ``rotated``, ``translated``, ``rotated_equiv``, ``translated_equiv``
      ``[..., D, S]`` (the last two against the transformed prediction, see module docstring).
    """
    plain, pred = (np.asarray(a, np.float64) for a in predict_fn(data))
    out = {"rotated": [], "translated": [], "rotated_equiv": [], "translated_equiv": []}
    for k in jax.random.split(key, draws):
        rot_data, trans_data, rotation, translation = transforms(data, k, translation_scale)
        rotation, translation = np.asarray(rotation, np.float64), np.asarray(translation,
                                                                             np.float64)
        err_r, pred_r = (np.asarray(a, np.float64) for a in predict_fn(rot_data))
        err_t, pred_t = (np.asarray(a, np.float64) for a in predict_fn(trans_data))
        res_r = equivariance_residual(pred_r, pred, rotation=rotation)
        res_t = equivariance_residual(pred_t, pred, translation=translation)
        out["rotated"].append(err_r)
        out["translated"].append(err_t)
        out["rotated_equiv"].append(np.mean(res_r**2, axis=(-2, -1)))
        out["translated_equiv"].append(np.mean(res_t**2, axis=(-2, -1)))
    result = {k: np.stack(v, axis=-2) for k, v in out.items()}
    result["plain"] = plain
    return result


def summarize_rte(errors: dict) -> dict:
    """The 8 columns of the GeoNorm paper's Table 1, plus ``mse`` and the two equivariance
    errors, for one model (``plain [S]``, the others ``[D, S]``)."""
    plain = float(np.mean(errors["plain"]))
    rot = np.asarray(errors["rotated"], np.float64).reshape(-1)
    trans = np.asarray(errors["translated"], np.float64).reshape(-1)
    return {
        "mse": plain,
        "mean_R_err": float(np.mean(rot)),
        "median_R_err": float(np.median(rot)),
        "max_R_err": float(np.max(rot)),
        "delta_R_err": float(np.mean(rot)) - plain,
        "mean_T_err": float(np.mean(trans)),
        "median_T_err": float(np.median(trans)),
        "max_T_err": float(np.max(trans)),
        "delta_T_err": float(np.mean(trans)) - plain,
        "R_equiv_err": float(np.mean(errors["rotated_equiv"])),
        "T_equiv_err": float(np.mean(errors["translated_equiv"])),
    }
