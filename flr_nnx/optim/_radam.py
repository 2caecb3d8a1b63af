"""RAdam, written with the public hooks."""

from __future__ import annotations

import jax.numpy as jnp

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import (
    ScalarOrSchedule,
    abs_sq,
    bias_corrections,
    debias,
    debias_momentum,
    ema,
    scale,
    set_hypers,
    tick,
)


class RAdam(Optimizer):
    r"""Rectified Adam (Liu et al., 2020), the twin of ``optax.radam``.

    .. math::

        m_t &= (1 - \beta_1) g_t + \beta_1 m_{t-1}, \quad
            v_t = (1 - \beta_2) g_t^2 + \beta_2 v_{t-1} \\
        \hat m_t &= m_t / (1 - \beta_1^t), \quad \hat v_t = v_t / (1 - \beta_2^t) \\
        \rho_\infty &= 2 / (1 - \beta_2) - 1, \quad
            \rho_t = \rho_\infty - 2 t \beta_2^t / (1 - \beta_2^t) \\
        r_t &= \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}
            {(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}} \\
        \Delta\theta_t &= \begin{cases}
            \eta_t \, r_t \hat m_t / (\sqrt{\hat v_t + \bar\epsilon} + \epsilon)
                & \text{if } \rho_t \ge \text{threshold} \\
            \eta_t \, \hat m_t & \text{otherwise (momentum SGD while the variance is unreliable)}
        \end{cases}

    With ``nesterov=True``, :math:`\hat m_t` is replaced by
    :math:`\beta_1 m_t / (1 - \beta_1^{t+1}) + (1 - \beta_1) g_t / (1 - \beta_1^t)`.
    The parameter becomes :math:`\theta_t - \Delta\theta_t`. Bit-identical to
    ``optax.radam`` under ``jit``.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).
        b1: :math:`\beta_1`, decay of the first moment.
        b2: :math:`\beta_2`, decay of the second moment.
        eps: :math:`\epsilon`, added to the denominator outside the square root.
        eps_root: :math:`\bar\epsilon`, added inside the square root.
        threshold: the :math:`\rho_t` from which the adaptive step is used.
        nesterov: use Nesterov momentum.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.RAdam(0.1))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]  # the first steps are momentum SGD
        Array([-0.04999999,  0.04999999], dtype=float32)
    """

    transient = ("lr_t", "ro", "rect", "bc1", "bc2", "bc1_next")

    elementwise = True

    def __init__(
        self,
        learning_rate: ScalarOrSchedule,
        b1: float = 0.9,
        b2: float = 0.999,
        eps: float = 1e-8,
        eps_root: float = 0.0,
        threshold: float = 5.0,
        *,
        nesterov: bool = False,
    ):
        set_hypers(self, learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, eps_root=eps_root)
        self.threshold = threshold
        self.nesterov = nesterov
        self.ro_inf = 2.0 / (1.0 - b2) - 1.0
        self.count = jnp.zeros([], jnp.int32)
        self.mu: dict = {}
        self.nu: dict = {}

    def call_model(self, grads, **_):
        # The rectification is per step, computed once with optax's exact expressions.
        self.lr_t = tick(self, self.learning_rate)
        b2t = self.b2**self.count
        ro_inf = self.ro_inf
        self.ro = ro_inf - 2 * self.count * b2t / (1 - b2t)
        self.rect = jnp.sqrt(
            (self.ro - 4.0) * (self.ro - 2.0) * ro_inf / ((ro_inf - 4.0) * (ro_inf - 2.0) * self.ro)
        )
        self.bc1, self.bc2, self.bc1_next = bias_corrections(
            self.count, self.b1, self.b2, nesterov=self.nesterov
        )
        return grads

    def call_param(self, key, grad, **_):
        if key not in self.mu:
            self.mu[key] = jnp.zeros_like(grad)
            self.nu[key] = jnp.zeros_like(grad)
        mu = ema(self.mu[key], grad, self.b1)
        nu = ema(self.nu[key], abs_sq(grad), self.b2)
        mu_hat = debias_momentum(mu, grad, self.b1, self.bc1, self.bc1_next)
        nu_hat = debias(nu, self.bc2)
        adaptive = (
            self.rect.astype(mu_hat.dtype) * mu_hat / (jnp.sqrt(nu_hat + self.eps_root) + self.eps)
        )
        update = jnp.where(self.ro >= self.threshold, adaptive, mu_hat)
        self.mu[key], self.nu[key] = mu, nu
        return scale(self.lr_t, update).astype(grad.dtype)
