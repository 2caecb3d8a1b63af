"""Schedule-free learning: an optimizer whose evaluation point is not its iterate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from flr_nnx._optimizer import Key, Optimizer, call
from flr_nnx.helpers import (
    ScalarOrSchedule,
    schedule_free_eval,
    schedule_free_step,
    schedule_free_weight,
    set_hypers,
)


class ScheduleFree(Optimizer):
    r"""Schedule-free learning (Defazio et al., 2024), the twin of ``optax.contrib.schedule_free``.

    Replaces the momentum of ``base_optimizer`` (give it none) by interpolation and
    averaging. With :math:`d_t` the base optimizer's step at :math:`y_t` (positive =
    descent) and :math:`c_t` the averaging weight
    (:func:`~flr_nnx.helpers.schedule_free_weight`):

    .. math::

        z_{t+1} &= z_t - d_t \\
        x_{t+1} &= (1 - c_t) x_t + c_t z_{t+1}, \quad
            c_t = \frac{\eta_{max,t}^p}{\sum_{s \le t} \eta_{max,s}^p} \\
        y_{t+1} &= \beta_1 x_{t+1} + (1 - \beta_1) z_{t+1}

    The model's parameters are :math:`y` (take the gradient there); evaluate at
    :math:`x = (y - (1 - \beta_1) z) / \beta_1`, which :meth:`eval_params` returns
    (:func:`flr_nnx.eval_params`, :meth:`flr_nnx.NNXOptimizer.eval_params`). :math:`z`
    is state (``z``, starting at the parameters). Bit-identical to optax under ``jit``
    (the updates and the evaluation parameters).

    Args:
        base_optimizer: the inner optimizer, without momentum.
        learning_rate: :math:`\eta`, the schedule (warmup, no decay) of the weights
            :math:`c_t`, read at the step count from 1 (usually the base optimizer's).
        b1: :math:`\beta_1` (> 0), the interpolation between :math:`x` and :math:`z`.
        weight_lr_power: :math:`p`, how strongly the average weighs larger learning rates.
        state_dtype: the dtype of :math:`z` (default: the parameter's). Where it is wider
            than a parameter's, optax returns that parameter's updates and evaluation
            parameters in it; here they are cast to the parameter's dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.compose.ScheduleFree(flr.optim.SGD(0.1), 0.1))
        >>> params = {"w": jnp.array([1.0])}
        >>> state = tx.init(params)
        >>> for _ in range(2):
        ...     updates, state = tx.update({"w": jnp.array([1.0])}, state, params)
        ...     params = {"w": params["w"] + updates["w"]}
        >>> params["w"], state.tree["z"]["w"]
        (Array([0.8449999], dtype=float32), Array([0.79999995], dtype=float32))
    """

    def __init__(
        self,
        base_optimizer: Optimizer,
        learning_rate: ScalarOrSchedule,
        b1: float = 0.9,
        weight_lr_power: float = 2.0,
        state_dtype: Any | None = None,
    ):
        self.inner = base_optimizer
        set_hypers(self, learning_rate=learning_rate, b1=b1, weight_lr_power=weight_lr_power)
        self.state_dtype = None if state_dtype is None else jnp.dtype(state_dtype)
        self.step_count = jnp.ones([], jnp.int32)
        # The weights' dtype is the parameters' lowest (optax's): known at the first step.
        self.weight_sum = self.max_lr = None
        self.z: dict = {}

    def __call__(
        self,
        loss: Any,
        grads: dict[Key, jax.Array],
        params: Mapping[Key, jax.Array],
        nnx_variables: Any = None,
        **extra: Any,
    ) -> dict[Key, jax.Array]:
        extra = {**extra, "nnx_variables": nnx_variables}  # passed on by name
        ck = schedule_free_weight(self, self.learning_rate, self.weight_lr_power, params)
        steps = call(self.inner, loss=loss, grads=grads, params=params, **extra)
        return {
            k: schedule_free_step(self, k, params[k], steps.get(k, jnp.zeros_like(g)), ck)
            for k, g in grads.items()
        }

    def eval_params(self, params: Mapping[Key, jax.Array]) -> dict[Key, jax.Array]:
        """The average :math:`x` of the parameters :math:`y`: where to evaluate."""
        return schedule_free_eval(self, params)
