"""AdaBelief, written with the public hooks."""

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


class AdaBelief(Optimizer):
    r"""AdaBelief (Zhuang et al., 2020), the twin of ``optax.adabelief``.

    .. math::

        m_t &= (1 - \beta_1) g_t + \beta_1 m_{t-1} \\
        s_t &= (1 - \beta_2) (g_t - m_t)^2 + \beta_2 s_{t-1} + \bar\epsilon \\
        \hat m_t &= m_t / (1 - \beta_1^t), \quad \hat s_t = s_t / (1 - \beta_2^t) \\
        \Delta\theta_t &= \eta_t \, \hat m_t / (\sqrt{\hat s_t} + \epsilon)

    The second moment is of the "belief" :math:`g_t - m_t`, not of the
    gradient. With ``nesterov=True``, :math:`\hat m_t` is replaced by
    :math:`\beta_1 m_t / (1 - \beta_1^{t+1}) + (1 - \beta_1) g_t / (1 - \beta_1^t)`.
    The parameter becomes :math:`\theta_t - \Delta\theta_t`. Bit-identical to
    ``optax.adabelief`` under ``jit``.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).
        b1: :math:`\beta_1`, decay of the first moment.
        b2: :math:`\beta_2`, decay of the second central moment.
        eps: :math:`\epsilon`, added to the denominator outside the square root.
        eps_root: :math:`\bar\epsilon`, added to :math:`s_t` at every step.
        nesterov: use Nesterov momentum.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.AdaBelief(0.1))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]
        Array([-0.11111038,  0.11111038], dtype=float32)
    """

    transient = ("lr_t", "bc1", "bc2", "bc1_next")

    elementwise = True

    def __init__(
        self,
        learning_rate: ScalarOrSchedule,
        b1: float = 0.9,
        b2: float = 0.999,
        eps: float = 1e-16,
        eps_root: float = 1e-16,
        *,
        nesterov: bool = False,
    ):
        set_hypers(self, learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, eps_root=eps_root)
        self.nesterov = nesterov
        self.count = jnp.zeros([], jnp.int32)
        self.mu: dict = {}
        self.nu: dict = {}

    def call_model(self, grads, **_):
        self.lr_t = tick(self, self.learning_rate)
        self.bc1, self.bc2, self.bc1_next = bias_corrections(
            self.count, self.b1, self.b2, nesterov=self.nesterov
        )
        return grads

    def call_param(self, key, grad, **_):
        if key not in self.mu:
            self.mu[key] = jnp.zeros_like(grad)
            self.nu[key] = jnp.zeros_like(grad)
        mu = ema(self.mu[key], grad, self.b1)
        belief = grad - mu
        nu = ema(self.nu[key], abs_sq(belief), self.b2)
        nu = nu + self.eps_root
        mu_hat = debias_momentum(mu, grad, self.b1, self.bc1, self.bc1_next)
        nu_hat = debias(nu, self.bc2)
        update = mu_hat / (jnp.sqrt(nu_hat) + self.eps)
        self.mu[key], self.nu[key] = mu, nu
        return scale(self.lr_t, update).astype(grad.dtype)
