"""Building blocks shared by the models: PyTorch-initialised dense layers and the train/eval switch.

``TorchDense`` reproduces ``torch.nn.Linear``'s default initialisation (Kaiming-uniform with
``a = sqrt(5)``), which is ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for the kernel and the
bias, so that a freshly initialised model has the same statistics as the reference
``EGNN_vel``. Flax's ``nn.Dense`` defaults (LeCun-normal kernel, zero bias) differ.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["torch_linear_init", "xavier_uniform", "TorchDense", "merge_training"]


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
