"""SGD and SignSGD, written with the public hooks."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import (
    ScalarOrSchedule,
    advance,
    cast,
    check_complex_state,
    needs_count,
    scale,
    set_hypers,
)


class SGD(Optimizer):
    r"""Stochastic gradient descent with optional (Nesterov) momentum, the twin of ``optax.sgd``.

    .. math::

        v_t &= g_t + \mu \, v_{t-1} \\
        \Delta\theta_t &= \eta_t \, v_t
        \quad\text{or, with Nesterov,}\quad \eta_t \, (g_t + \mu \, v_t)

    Without ``momentum`` there is no velocity and :math:`\Delta\theta_t = \eta_t g_t`.
    The parameter becomes :math:`\theta_t - \Delta\theta_t`. Bit-identical to
    ``optax.sgd`` under ``jit``, except with an ``accumulator_dtype`` wider than
    the parameter: optax's update is then in the accumulator's dtype, and a hook
    returns it rounded to the parameter's dtype.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).
        momentum: :math:`\mu`, the decay of the velocity; ``None`` for plain SGD.
        nesterov: use Nesterov momentum.
        accumulator_dtype: dtype of the velocity (default: that of the parameter).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.SGD(0.1, momentum=0.9, nesterov=True))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]
        Array([-0.095,  0.095], dtype=float32)
    """

    transient = ("lr_t",)

    elementwise = True

    def __init__(
        self,
        learning_rate: ScalarOrSchedule,
        momentum: float | None = None,
        nesterov: bool = False,
        accumulator_dtype: Any | None = None,
    ):
        set_hypers(self, learning_rate=learning_rate, momentum=momentum)
        self.nesterov = nesterov
        self.accumulator_dtype = (
            None if accumulator_dtype is None else jax.dtypes.canonicalize_dtype(accumulator_dtype)
        )
        if needs_count(learning_rate):
            self.count = jnp.zeros([], jnp.int32)
        self.trace: dict = {}

    def call_model(self, grads, **_):
        self.lr_t = advance(self, self.learning_rate)
        return grads

    def call_param(self, key, grad, **_):
        if self.momentum is None:
            return cast(scale(self.lr_t, grad), grad.dtype)
        check_complex_state(
            type(self).__name__, key, grad, self.accumulator_dtype, "accumulator_dtype", self.trace
        )
        if key not in self.trace:
            self.trace[key] = jnp.zeros_like(grad, dtype=self.accumulator_dtype)
        trace = grad + self.momentum * self.trace[key]
        update = grad + self.momentum * trace if self.nesterov else trace
        self.trace[key] = cast(trace, self.trace[key].dtype)
        return cast(scale(self.lr_t, update), grad.dtype)


class SignSGD(Optimizer):
    r"""Sign gradient descent, the twin of ``optax.sign_sgd``.

    .. math::

        \Delta\theta_t = \eta_t \, \operatorname{sign}(g_t)

    The parameter becomes :math:`\theta_t - \Delta\theta_t`. Bit-identical to
    ``optax.sign_sgd`` under ``jit``.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.SignSGD(0.1))
        >>> params = {"w": jnp.array([1.0, -2.0, 3.0])}
        >>> grads = {"w": jnp.array([0.5, -3.0, 0.0])}
        >>> updates, state = tx.update(grads, tx.init(params), params)
        >>> updates["w"]
        Array([-0.1,  0.1, -0. ], dtype=float32)
    """

    transient = ("lr_t",)

    elementwise = True

    def __init__(self, learning_rate: ScalarOrSchedule):
        set_hypers(self, learning_rate=learning_rate)
        if needs_count(learning_rate):
            self.count = jnp.zeros([], jnp.int32)

    def call_model(self, grads, **_):
        self.lr_t = advance(self, self.learning_rate)
        return grads

    def call_param(self, key, grad, **_):
        return cast(scale(self.lr_t, jnp.sign(grad)), grad.dtype)
