"""Yogi, written with the public hooks."""

from __future__ import annotations

import jax.numpy as jnp

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import (
    ScalarOrSchedule,
    abs_sq,
    bias_corrections,
    cast,
    debias,
    ema,
    scale,
    set_hypers,
    tick,
)


class Yogi(Optimizer):
    r"""Yogi (Zaheer et al., 2018), the twin of ``optax.yogi``.

    Adam whose second moment moves towards :math:`g_t^2` by an additive step:

    .. math::

        m_t &= (1 - \beta_1) g_t + \beta_1 m_{t-1} \\
        v_t &= v_{t-1} - (1 - \beta_2) \operatorname{sign}(v_{t-1} - g_t^2) \, g_t^2 \\
        \Delta\theta_t &= \eta_t \, \frac{m_t / (1 - \beta_1^t)}{\sqrt{v_t / (1 - \beta_2^t)}
            + \epsilon}

    Both moments start at :math:`10^{-6}` (optax's ``initial_accumulator_value``).
    The parameter becomes :math:`\theta_t - \Delta\theta_t`. Bit-identical to
    ``optax.yogi`` under ``jit``.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).
        b1: :math:`\beta_1`, decay of the first moment.
        b2: :math:`\beta_2`, rate of the second moment's additive step.
        eps: :math:`\epsilon`, added to the denominator.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.Yogi(0.1))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]
        Array([-0.09960293,  0.09959934], dtype=float32)
    """

    transient = ("lr_t", "bc1", "bc2")

    elementwise = True

    def __init__(
        self,
        learning_rate: ScalarOrSchedule,
        b1: float = 0.9,
        b2: float = 0.999,
        eps: float = 1e-3,
    ):
        set_hypers(self, learning_rate=learning_rate, b1=b1, b2=b2, eps=eps)
        self.count = jnp.zeros([], jnp.int32)
        self.mu: dict = {}
        self.nu: dict = {}

    def call_model(self, grads, **_):
        self.lr_t = tick(self, self.learning_rate)
        self.bc1, self.bc2, _ = bias_corrections(self.count, self.b1, self.b2)
        return grads

    def call_param(self, key, grad, **_):
        if key not in self.mu:
            # optax.scale_by_yogi's initial_accumulator_value
            self.mu[key] = jnp.full_like(grad, 1e-6)
            self.nu[key] = jnp.full_like(grad, 1e-6)
        mu = ema(self.mu[key], grad, self.b1)
        nu = self.nu[key]
        nu = nu - (1 - self.b2) * jnp.sign(nu - abs_sq(grad)) * abs_sq(grad)
        self.mu[key], self.nu[key] = mu, nu
        # optax's eps_root, 0.0, is still added: the same operations as optax
        update = debias(mu, self.bc1) / (jnp.sqrt(debias(nu, self.bc2) + 0.0) + self.eps)
        return cast(scale(self.lr_t, update), grad.dtype)
