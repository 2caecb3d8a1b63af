"""Schedule-free SGD and AdamW, written with the public hooks."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import optax

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import (
    abs_sq,
    advance,
    bias_correction,
    cast,
    debias,
    ema,
    is_zero,
    needs_count,
    scale,
    schedule_free_eval,
    schedule_free_step,
    schedule_free_weight,
    set_hypers,
)


class ScheduleFreeSGD(Optimizer):
    r"""Schedule-free SGD (Defazio et al., 2024), the twin of ``optax.contrib.schedule_free_sgd``.

    :class:`~flr_nnx.compose.ScheduleFree` around SGD with weight decay
    :math:`\lambda` (optional), :math:`d_t = \eta_t (g_t + \lambda y_t)`:

    .. math::

        z_{t+1} &= z_t - d_t, \quad
            x_{t+1} = (1 - c_t) x_t + c_t z_{t+1}, \quad
            c_t = \frac{\eta_{max,t}^p}{\sum_{s \le t} \eta_{max,s}^p} \\
        y_{t+1} &= \beta_1 x_{t+1} + (1 - \beta_1) z_{t+1}

    The parameters are :math:`y`; evaluate at :math:`x` (:meth:`eval_params`). With
    ``warmup_steps``, :math:`\eta` warms up linearly from 0. Bit-identical to optax
    under ``jit`` (updates and evaluation parameters).

    Args:
        learning_rate: :math:`\eta` (a float, as optax's; a schedule works without
            ``warmup_steps``).
        warmup_steps: the length of a linear warmup of :math:`\eta` from 0, or ``None``.
        b1: :math:`\beta_1` (> 0).
        weight_decay: :math:`\lambda` (multiplied by the learning rate), or ``None``.
        weight_lr_power: :math:`p`.
        state_dtype: the dtype of :math:`z` (default: the parameter's).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.ScheduleFreeSGD(0.1))
        >>> params = {"w": jnp.array([1.0])}
        >>> state = tx.init(params)
        >>> for _ in range(2):
        ...     updates, state = tx.update({"w": jnp.array([1.0])}, state, params)
        ...     params = {"w": params["w"] + updates["w"]}
        >>> params["w"], flr.eval_params(tx, state, params)["w"]  # y, and x to evaluate at
        (Array([0.8449999], dtype=float32), Array([0.84999985], dtype=float32))
    """

    transient = ("ck", "lr_t")

    def __init__(
        self,
        learning_rate: float = 1.0,
        warmup_steps: int | None = None,
        b1: float = 0.9,
        weight_decay: float | None = None,
        weight_lr_power: float = 2.0,
        state_dtype: Any | None = None,
    ):
        if warmup_steps is not None:
            learning_rate = optax.warmup_constant_schedule(
                init_value=0, peak_value=learning_rate, warmup_steps=warmup_steps
            )
        set_hypers(
            self,
            learning_rate=learning_rate,
            b1=b1,
            weight_decay=weight_decay,
            weight_lr_power=weight_lr_power,
        )
        self.state_dtype = None if state_dtype is None else jnp.dtype(state_dtype)
        if needs_count(learning_rate):
            self.count = jnp.zeros([], jnp.int32)  # the base optimizer's, from 0
        self.step_count = jnp.ones([], jnp.int32)  # the averaging's, from 1
        self.weight_sum = self.max_lr = None  # the parameters' lowest dtype, at the first step
        self.z: dict = {}

    def call_model(self, grads, params, **_):
        self.ck = schedule_free_weight(self, self.learning_rate, self.weight_lr_power, params)
        self.lr_t = advance(self, self.learning_rate)
        return grads

    def call_param(self, key, grad, param):
        update = self.direction(key, grad)
        if self.weight_decay is not None and not is_zero(self.weight_decay):
            update = update + self.weight_decay * param
        step = cast(scale(self.lr_t, update), grad.dtype)
        return schedule_free_step(self, key, param, step, self.ck)

    def direction(self, key, grad):
        """The base step before weight decay and the learning rate: the gradient."""
        return grad

    def eval_params(self, params):
        """The average :math:`x` of the parameters :math:`y`: where to evaluate."""
        return schedule_free_eval(self, params)


class ScheduleFreeAdamW(ScheduleFreeSGD):
    r"""Schedule-free AdamW (Defazio et al., 2024), the twin of
    ``optax.contrib.schedule_free_adamw``.

    :class:`ScheduleFreeSGD` with AdamW's step without momentum (optax's
    ``scale_by_rms`` with bias correction, ``eps`` outside the square root):

    .. math::

        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2, \quad
        d_t = \eta_t \left(\frac{g_t}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon}
            + \lambda y_t\right)

    and :math:`z, x, y` as in :class:`ScheduleFreeSGD`. Bit-identical to optax under
    ``jit`` (updates and evaluation parameters).

    Args:
        learning_rate: :math:`\eta` (a float, as optax's; a schedule works without
            ``warmup_steps``).
        warmup_steps: the length of a linear warmup of :math:`\eta` from 0, or ``None``.
        b1: :math:`\beta_1` (> 0), the interpolation (Adam's momentum is replaced).
        b2: :math:`\beta_2`, the decay of the second moment.
        eps: :math:`\epsilon`.
        weight_decay: :math:`\lambda` (multiplied by the learning rate).
        weight_lr_power: :math:`p`.
        state_dtype: the dtype of :math:`z` (default: the parameter's).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.ScheduleFreeAdamW(0.1))
        >>> params = {"w": jnp.array([1.0])}
        >>> updates, state = tx.update({"w": jnp.array([0.5])}, tx.init(params), params)
        >>> updates["w"]
        Array([-0.09999943], dtype=float32)
    """

    transient = ("ck", "lr_t", "bc2")

    def __init__(
        self,
        learning_rate: float = 0.0025,
        warmup_steps: int | None = None,
        b1: float = 0.9,
        b2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        weight_lr_power: float = 2.0,
        state_dtype: Any | None = None,
    ):
        super().__init__(
            learning_rate, warmup_steps, b1, weight_decay, weight_lr_power, state_dtype
        )
        set_hypers(self, b2=b2, eps=eps)
        self.rms_count = jnp.zeros([], jnp.int32)
        self.nu: dict = {}

    def call_model(self, grads, params, **_):
        grads = super().call_model(grads=grads, params=params)
        self.rms_count = optax.safe_increment(self.rms_count)
        self.bc2 = bias_correction(self.b2, self.rms_count)
        return grads

    def direction(self, key, grad):
        """The step of ``optax.scale_by_rms(b2, eps, eps_in_sqrt=False, bias_correction=True)``."""
        if key not in self.nu:
            self.nu[key] = jnp.zeros_like(grad)
        self.nu[key] = ema(self.nu[key], abs_sq(grad), self.b2)
        scaling = 1 / (jnp.sqrt(debias(self.nu[key], self.bc2)) + self.eps)
        return scaling * grad
