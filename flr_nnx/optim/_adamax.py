"""Adamax, written with the public hooks."""

from __future__ import annotations

import jax.numpy as jnp

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import ScalarOrSchedule, bias_correction, debias, ema, scale, set_hypers, tick


class Adamax(Optimizer):
    r"""Adamax, Adam with the infinity norm (Kingma & Ba, 2014), the twin of ``optax.adamax``.

    .. math::

        m_t &= (1 - \beta_1) g_t + \beta_1 m_{t-1} \\
        u_t &= \max(|g_t| + \epsilon, \; \beta_2 u_{t-1}) \\
        \Delta\theta_t &= \eta_t \, \frac{m_t / (1 - \beta_1^t)}{u_t}

    The infinity moment :math:`u_t` needs no bias correction. The parameter
    becomes :math:`\theta_t - \Delta\theta_t`. Bit-identical to ``optax.adamax``
    under ``jit``.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).
        b1: :math:`\beta_1`, decay of the first moment.
        b2: :math:`\beta_2`, decay of the infinity moment.
        eps: :math:`\epsilon`, added to :math:`|g_t|` (keeps :math:`u_t > 0`).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.Adamax(0.1))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]
        Array([-0.09999999,  0.09999999], dtype=float32)
    """

    transient = ("lr_t", "bc1")

    elementwise = True

    def __init__(
        self,
        learning_rate: ScalarOrSchedule,
        b1: float = 0.9,
        b2: float = 0.999,
        eps: float = 1e-8,
    ):
        set_hypers(self, learning_rate=learning_rate, b1=b1, b2=b2, eps=eps)
        self.count = jnp.zeros([], jnp.int32)
        self.mu: dict = {}
        self.nu: dict = {}

    def call_model(self, grads, **_):
        self.lr_t = tick(self, self.learning_rate)
        self.bc1 = bias_correction(self.b1, self.count)
        return grads

    def call_param(self, key, grad, **_):
        if key not in self.mu:
            self.mu[key] = jnp.zeros_like(grad)
            self.nu[key] = jnp.zeros_like(grad)
        mu = ema(self.mu[key], grad, self.b1)
        nu = jnp.maximum(jnp.abs(grad) + self.eps, self.b2 * self.nu[key])
        update = debias(mu, self.bc1) / nu
        self.mu[key], self.nu[key] = mu, nu
        return scale(self.lr_t, update).astype(grad.dtype)
