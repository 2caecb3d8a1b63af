"""Adagrad, written with the public hooks."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import (
    ScalarOrSchedule,
    abs_sq,
    advance,
    needs_count,
    scale,
    set_hypers,
)


class Adagrad(Optimizer):
    r"""Adagrad (Duchi et al., 2011), the twin of ``optax.adagrad``.

    .. math::

        G_t &= G_{t-1} + g_t^2, \qquad G_0 = G_{\mathrm{init}} \\
        \Delta\theta_t &= \eta_t \, g_t / \sqrt{G_t + \epsilon}
            \quad (0 \text{ where } G_t = 0)

    The parameter becomes :math:`\theta_t - \Delta\theta_t`. Bit-identical to
    ``optax.adagrad`` under ``jit``.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).
        initial_accumulator_value: :math:`G_{\mathrm{init}}`, the starting sum of squares.
        eps: :math:`\epsilon`, added inside the square root.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.Adagrad(learning_rate=0.1))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]
        Array([-0.08451542,  0.08451542], dtype=float32)
    """

    transient = ("lr_t",)

    elementwise = True

    def __init__(
        self,
        learning_rate: ScalarOrSchedule,
        initial_accumulator_value: float = 0.1,
        eps: float = 1e-7,
    ):
        set_hypers(
            self,
            learning_rate=learning_rate,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
        )
        if needs_count(learning_rate):
            self.count = jnp.zeros([], jnp.int32)
        self.sum_of_squares: dict = {}

    def call_model(self, grads, **_):
        self.lr_t = advance(self, self.learning_rate)
        return grads

    def call_param(self, key, grad, **_):
        if key not in self.sum_of_squares:
            self.sum_of_squares[key] = jnp.full_like(grad, self.initial_accumulator_value)
        total = abs_sq(grad) + self.sum_of_squares[key]
        self.sum_of_squares[key] = total
        inv_sqrt = jnp.where(total > 0, jax.lax.rsqrt(total + self.eps), 0.0)
        return scale(self.lr_t, inv_sqrt * grad).astype(grad.dtype)
