r"""GemNet's scale factors: constants fitted once on a batch so that scaled activations keep
the variance of their input (Gasteiger, Becker and Günnemann, NeurIPS 2021, appendix; the
authors' ``ScalingFactor`` and ``fit_scaling.py``).

A scale factor ``alpha`` multiplies an activation ``y`` that is a sum or a product (the sum of
neighbour messages onto an atom, the Hadamard product with a radial embedding, the bilinear
triplet sum); ``x_ref`` is the quantity it was computed from::

    Var(y)  = mean_f Var_rows(y[:, f])        per-feature variance over the real rows
                                              (unbiased, as torch.var), averaged over f
    alpha   = sqrt(Var(x_ref) / Var(y))       (Var(x_ref) := 1 when there is no reference)
    output  = alpha y                         so Var(alpha y) = Var(x_ref) on the fitting batch

The factors are fitted in forward order: factor ``k`` sees the activations already scaled by
the factors before it, as the authors' sequential fit does. Here one forward pass does it:
with ``fit=True`` each :class:`ScaleFactor` computes its ``alpha`` from the current batch,
stores it and applies it at once, so every later factor is fitted on already scaled inputs
(the same numbers as a sequential fit on that batch). Only real rows count (padded atoms,
edges and triplets are masked out of both variances). The fit is deterministic: the same
parameters and batch give bit-identical factors.

Storage: each factor is the scalar variable ``scale`` of the collection ``"scale_factors"``
(next to ``"params"``, saved with them, never touched by the optimizer); ``model.init``
creates it as 1 and :func:`fit_scale_factors` fits it. With the model's ``scale_factors=False``
every :class:`ScaleFactor` is the identity and the collection does not exist.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["ScaleFactor", "masked_variance", "fit_scale_factors", "SCALE_COLLECTION"]

SCALE_COLLECTION = "scale_factors"


def masked_variance(x: jax.Array, mask: jax.Array) -> jax.Array:
    r"""``mean_f Var_rows(x[..., f])`` over the rows where ``mask`` is True.

    ``x [..., F]``, ``mask [...]`` (the leading axes are the rows, flattened). The variance is
    unbiased (``sum_rows (x - mu)^2 / (n - 1)``, with ``n`` the number of real rows, at least
    2 counted). Returns a scalar in the dtype of ``x``.
    """
    x = jnp.asarray(x)
    if tuple(mask.shape) != tuple(x.shape[:-1]):
        raise ValueError(f"masked_variance: expected mask of shape {x.shape[:-1]} (the rows of "
                         f"x {x.shape}); received {mask.shape}")
    f = x.shape[-1]
    x = x.reshape(-1, f)
    m = mask.reshape(-1, 1).astype(x.dtype)
    n = jnp.sum(m)
    mu = jnp.sum(m * x, axis=0) / jnp.maximum(n, 1.0)
    var = jnp.sum(m * jnp.square(x - mu), axis=0) / jnp.maximum(n - 1.0, 1.0)
    return jnp.mean(var)


class ScaleFactor(nn.Module):
    """One fitted scale factor ``alpha`` (see the module docstring): ``y -> alpha y``.

    Attributes:
      enabled: False makes it the identity (no variable).

    Call: ``(y [..., F], y_mask [...], x_ref [..., F'] or None, ref_mask, fit=False)``.
    With ``fit=True`` (and the ``"scale_factors"`` collection mutable) ``alpha`` is computed
    from this batch, stored and applied. When the collection ``"scale_stats"`` is mutable it
    records ``variance_ratio = Var(alpha y) / Var(x_ref)`` (1 on the fitting batch; not at
    ``init``, so that ``model.init``'s variables do not hold it).
    """

    enabled: bool = True

    @nn.compact
    def __call__(self, y, y_mask, x_ref=None, ref_mask=None, *, fit: bool = False):
        if not self.enabled:
            return y
        if not (self.is_initializing() or self.has_variable(SCALE_COLLECTION, "scale")
                or self.is_mutable_collection(SCALE_COLLECTION)):
            raise ValueError(
                f"{self.path}: expected the variables to hold the {SCALE_COLLECTION!r} "
                "collection (from model.init or fit_scale_factors), as the model has "
                "scale_factors=True; received variables without it"
            )
        scale = self.variable(SCALE_COLLECTION, "scale", lambda: jnp.ones((), y.dtype))
        var_in = (jnp.ones((), y.dtype) if x_ref is None
                  else masked_variance(x_ref, ref_mask).astype(y.dtype))
        if fit:
            if not self.is_mutable_collection(SCALE_COLLECTION):
                raise ValueError(f"{self.path}: fitting needs mutable=[{SCALE_COLLECTION!r}]")
            value = jax.lax.stop_gradient(
                jnp.sqrt(var_in / masked_variance(y, y_mask).astype(y.dtype)))
            scale.value = value.astype(scale.value.dtype)
        value = scale.value.astype(y.dtype)
        out = y * value
        if self.is_mutable_collection("scale_stats") and not self.is_initializing():
            self.sow("scale_stats", "variance_ratio", masked_variance(out, y_mask) / var_in)
        return out


def fit_scale_factors(model, variables: dict, graph, **apply_kwargs) -> dict:
    """Fit every scale factor of ``model`` (e.g. a ``GemNetT``) on one batch ``graph``.

    Runs one jitted forward pass with ``fit_scale_factors=True`` (see the module docstring)
    and returns ``variables`` with the fitted ``"scale_factors"`` collection (the other
    collections unchanged; running statistics of batch norms in training mode are not
    updated by the fit). ``apply_kwargs`` go to ``model.apply``.

    Raises ``ValueError`` naming the factor when one comes out non-finite or zero: the
    batch has no real row to fit it on (no two atoms within the cutoff, e.g. a 0.1 Å cutoff,
    or no triplet), or its activations do not vary.
    """
    if not getattr(model, "scale_factors", False):
        raise ValueError(f"fit_scale_factors: expected a model with scale_factors=True; "
                         f"received {type(model).__name__} with scale_factors="
                         f"{getattr(model, 'scale_factors', None)!r}")
    mutable = (SCALE_COLLECTION,) + tuple(c for c in ("batch_stats",) if c in variables)
    fitted = _fit(model, variables, graph, mutable, tuple(sorted(apply_kwargs.items())))
    for path, value in jax.tree_util.tree_leaves_with_path(fitted):
        if isinstance(value, jax.core.Tracer):
            continue
        v = float(value)
        if not (math.isfinite(v) and v > 0):
            cutoff = getattr(model, "cutoff", None)
            edges = int(jnp.sum(graph.edge_mask)) if hasattr(graph, "edge_mask") else None
            raise ValueError(
                f"fit_scale_factors: scale factor {jax.tree_util.keystr(path)} came out {v} "
                f"on the fitting batch ({edges} candidate edges, cutoff {cutoff} Å); expected "
                f"a batch whose atoms have neighbours within the cutoff (and triplets: three "
                f"atoms within it), so that every scaled activation varies")
    return {**variables, SCALE_COLLECTION: fitted}


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _fit(model, variables, graph, mutable, apply_kwargs):
    """One jitted fitting pass (``model`` and the keyword arguments static: compiled once per
    model configuration)."""
    _, updates = model.apply(variables, graph, fit_scale_factors=True, mutable=list(mutable),
                             **dict(apply_kwargs))
    return updates[SCALE_COLLECTION]
