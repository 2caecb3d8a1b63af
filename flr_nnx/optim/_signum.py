"""Signum, written with the public hooks."""

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
    ema,
    needs_count,
    scale,
    set_hypers,
)


class Signum(Optimizer):
    r"""Signum, sign descent with momentum (Bernstein et al., 2018), the twin of ``optax.signum``.

    .. math::

        m_t &= (1 - \beta) g_t + \beta m_{t-1} \\
        \Delta\theta_t &= \eta_t \, \operatorname{sign}(m_t)

    The average needs no bias correction: its sign does not change with it.
    The parameter becomes :math:`\theta_t - \Delta\theta_t`. Bit-identical to
    ``optax.signum`` under ``jit``, except with an ``accumulator_dtype`` wider
    than the parameter: optax's update is then in the accumulator's dtype, and
    a hook returns it rounded to the parameter's dtype (a sign times
    :math:`\eta_t`, so only :math:`\eta_t` is rounded).

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).
        beta: :math:`\beta`, decay of the gradient's moving average.
        accumulator_dtype: dtype of the average (default: that of the parameter).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.Signum(0.1))
        >>> params = {"w": jnp.array([1.0, -2.0, 3.0])}
        >>> grads = {"w": jnp.array([0.5, -3.0, 0.0])}
        >>> updates, state = tx.update(grads, tx.init(params), params)
        >>> updates["w"]
        Array([-0.1,  0.1, -0. ], dtype=float32)
    """

    transient = ("lr_t",)

    elementwise = True

    def __init__(
        self,
        learning_rate: ScalarOrSchedule,
        beta: float = 0.9,
        accumulator_dtype: Any | None = None,
    ):
        set_hypers(self, learning_rate=learning_rate, beta=beta)
        self.accumulator_dtype = (
            None if accumulator_dtype is None else jax.dtypes.canonicalize_dtype(accumulator_dtype)
        )
        # optax.ema counts steps for its bias correction, which signum turns off:
        # a count only for a schedule.
        if needs_count(learning_rate):
            self.count = jnp.zeros([], jnp.int32)
        self.ema: dict = {}

    def call_model(self, grads, **_):
        self.lr_t = advance(self, self.learning_rate)
        return grads

    def call_param(self, key, grad, **_):
        check_complex_state(
            type(self).__name__, key, grad, self.accumulator_dtype, "accumulator_dtype", self.ema
        )
        if key not in self.ema:
            self.ema[key] = jnp.zeros_like(grad, dtype=self.accumulator_dtype)
        average = ema(self.ema[key], grad, self.beta)
        self.ema[key] = cast(average, self.ema[key].dtype)
        return cast(scale(self.lr_t, jnp.sign(average)), grad.dtype)
