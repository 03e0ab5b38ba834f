"""Building blocks shared by the models: PyTorch-initialised dense layers, mixed-precision
products and the train/eval switch.

``TorchDense`` reproduces ``torch.nn.Linear``'s default initialisation (Kaiming-uniform with
``a = sqrt(5)``), which is ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for the kernel and the
bias, so that a freshly initialised model has the same statistics as the reference
``EGNN_vel``. Flax's ``nn.Dense`` defaults (LeCun-normal kernel, zero bias) differ.

Mixed precision, one rule for every model (``matmul_dtype``): the two operands of a matrix
product with learned weights are cast to ``matmul_dtype`` (e.g. bfloat16) and the product
accumulates and returns in the computation dtype (``preferred_element_type``), so everything
after it (activations, sums over neighbours, normalization statistics, energies, forces and
the loss) stays in the computation dtype. :func:`mixed_dot_general` is that product for
``nn.Dense(dot_general=...)``, :func:`mixed_einsum` for weight contractions written as
einsums.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["torch_linear_init", "xavier_uniform", "TorchDense", "merge_training",
           "matmul_dtype_of", "mixed_dot_general", "mixed_einsum"]


def torch_linear_init(fan_in: int):
    """``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``: ``torch.nn.Linear``'s default for weight and bias."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def xavier_uniform(gain: float = 1.0):
    """``torch.nn.init.xavier_uniform_``: ``U(-a, a)``, ``a = gain sqrt(6/(fan_in + fan_out))``."""
    return nn.initializers.variance_scaling(gain**2, "fan_avg", "uniform")


class TorchDense(nn.Module):
    """``y = x W + b`` over the last axis, initialised like ``torch.nn.Linear``.

    Computes in the dtype of ``x`` (parameters are cast), so a float64 input gives a float64
    output. Shapes: ``x [..., fan_in] -> y [..., features]``.
    """

    features: int
    use_bias: bool = True
    kernel_init: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1]
        init = self.kernel_init or torch_linear_init(fan_in)
        kernel = self.param("kernel", init, (fan_in, self.features), self.param_dtype)
        y = jnp.dot(x, kernel.astype(x.dtype))
        if self.use_bias:
            bias = self.param("bias", torch_linear_init(fan_in), (self.features,), self.param_dtype)
            y = y + bias.astype(x.dtype)
        return y


def merge_training(attribute: bool | None, argument: bool | None) -> bool:
    """The train/eval switch of a model, given as a module attribute, a call argument, or both.

    Flax's convention (``nn.merge_param``, as ``BatchNorm.use_running_average`` and
    ``Dropout.deterministic``): every model of :mod:`geonorm_jax.models` takes ``training``
    both ways, ``Model(training=True)`` or ``model.apply(variables, ..., training=True)``.
    Neither given means evaluation (``False``); both given must agree.

    Raises:
      ValueError: the attribute and the argument disagree.
    """
    if attribute is None:
        return bool(argument) if argument is not None else False
    if argument is None or bool(argument) == bool(attribute):
        return bool(attribute)
    raise ValueError(f"training: given as attribute ({attribute}) and as call argument "
                     f"({argument}); expected one of them, or equal values")


def matmul_dtype_of(value: Any, owner: str = "matmul_dtype") -> jnp.dtype | None:
    """``matmul_dtype`` as a NumPy dtype (None stays None); a name (``"bfloat16"``) is accepted.

    Raises:
      ValueError: not a floating dtype (the message names ``owner`` and the value received).
    """
    if value is None:
        return None
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{owner}: expected None or a floating dtype such as 'bfloat16'; "
                         f"received {value!r}")
    return dtype


def _dot_general_in(matmul_dtype, lhs, rhs, dimension_numbers, precision=None,
                    preferred_element_type=None, **kwargs):
    out = jnp.dtype(preferred_element_type or jnp.result_type(lhs, rhs))
    if out != matmul_dtype:
        lhs, rhs = lhs.astype(matmul_dtype), rhs.astype(matmul_dtype)
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=out, **kwargs)


def mixed_dot_general(matmul_dtype: Any = None) -> Callable:
    """``lax.dot_general`` with operands in ``matmul_dtype`` and the result in theirs.

    For ``nn.Dense(..., dot_general=mixed_dot_general(md))``: ``x [..., in] @ W [in, out]``
    with ``x`` and ``W`` cast to ``md``, accumulated and returned in the dtype the product
    would have had (``preferred_element_type``; float32 for float32 inputs). None, or ``md``
    equal to that dtype: ``lax.dot_general`` unchanged.
    """
    dtype = matmul_dtype_of(matmul_dtype)
    if dtype is None:
        return jax.lax.dot_general
    return functools.partial(_dot_general_in, dtype)


def mixed_einsum(subscripts: str, x: jax.Array, w: jax.Array,
                 matmul_dtype: Any = None) -> jax.Array:
    """``jnp.einsum(subscripts, x, w)`` with both operands in ``matmul_dtype``, returned in the
    dtype of ``x`` (the computation dtype; ``w`` is a parameter cast to it first)."""
    dtype = matmul_dtype_of(matmul_dtype)
    w = w.astype(x.dtype)
    if dtype is None or dtype == x.dtype:
        return jnp.einsum(subscripts, x, w)
    return jnp.einsum(subscripts, x.astype(dtype), w.astype(dtype),
                      preferred_element_type=x.dtype)
