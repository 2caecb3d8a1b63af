"""RMSProp, written with the public hooks."""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import (
    UNIT_CLOSED,
    Bound,
    ScalarOrSchedule,
    abs_sq,
    advance,
    bias_correction,
    debias,
    ema,
    needs_count,
    scale,
    set_hypers,
    tick,
)


class RMSProp(Optimizer):
    r"""RMSProp (Hinton, 2012; Graves, 2014), the twin of ``optax.rmsprop``.

    .. math::

        \nu_t &= (1 - \rho) g_t^2 + \rho \nu_{t-1}, \qquad
        \mu_t = (1 - \rho) g_t + \rho \mu_{t-1} \quad (\text{centered only}) \\
        s_t &= \nu_t / (1 - \rho^t) - \big(\mu_t / (1 - \rho^t)\big)^2
            \quad (\text{bias correction and centering optional}) \\
        u_t &= \eta_t \, g_t / \sqrt{s_t + \epsilon}
            \quad (\text{or } g_t / (\sqrt{s_t} + \epsilon) \text{ with eps\_in\_sqrt=False}) \\
        m_t &= u_t + \beta m_{t-1}, \qquad
        \Delta\theta_t = m_t \quad (\text{or } u_t + \beta m_t \text{ with Nesterov})

    Without ``momentum``, :math:`\Delta\theta_t = u_t`. The parameter becomes
    :math:`\theta_t - \Delta\theta_t`. As in optax, momentum is applied after the
    learning rate, and its state holds optax's sign (:math:`-m_t`) so that the
    arithmetic, fused multiply-adds included, is optax's. Bit-identical to
    ``optax.rmsprop`` under ``jit``.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).
        decay: :math:`\rho`, decay of the moving averages.
        eps: :math:`\epsilon`, added to the denominator.
        initial_scale: initial value of :math:`\nu` (PyTorch uses 0, TF1 uses 1).
        eps_in_sqrt: add :math:`\epsilon` inside the square root (optax's default).
        centered: divide by the variance instead of the second moment.
        momentum: :math:`\beta`, or ``None`` for no momentum.
        nesterov: use Nesterov momentum.
        bias_correction: divide the moving averages by :math:`1 - \rho^t`.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.RMSProp(learning_rate=0.1, momentum=0.9))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]
        Array([-0.3162277,  0.3162277], dtype=float32)
    """

    transient = ("lr_t", "bc")

    # Unlike SGD's, RMSProp's momentum may be 1 (as optax allows).
    hyper_bounds: ClassVar[dict[str, Bound]] = {"momentum": UNIT_CLOSED}

    elementwise = True

    def __init__(
        self,
        learning_rate: ScalarOrSchedule,
        decay: float = 0.9,
        eps: float = 1e-8,
        initial_scale: float = 0.0,
        eps_in_sqrt: bool = True,
        centered: bool = False,
        momentum: float | None = None,
        nesterov: bool = False,
        bias_correction: bool = False,
    ):
        set_hypers(
            self,
            learning_rate=learning_rate,
            decay=decay,
            eps=eps,
            initial_scale=initial_scale,
            momentum=momentum,
        )
        self.eps_in_sqrt, self.centered, self.nesterov = eps_in_sqrt, centered, nesterov
        self.bias_correction = bias_correction
        if bias_correction or needs_count(learning_rate):
            self.count = jnp.zeros([], jnp.int32)
        self.nu: dict = {}
        self.mu: dict = {}
        self.trace: dict = {}

    def call_model(self, grads, **_):
        if not self.bias_correction:
            self.lr_t = advance(self, self.learning_rate)
            return grads
        self.lr_t = tick(self, self.learning_rate)
        self.bc = bias_correction(self.decay, self.count)
        return grads

    def call_param(self, key, grad, **_):
        if key not in self.nu:
            self.nu[key] = jnp.full_like(grad, self.initial_scale)
            if self.centered:
                self.mu[key] = jnp.zeros_like(grad)
            if self.momentum is not None:
                self.trace[key] = jnp.zeros_like(grad)
        nu = ema(self.nu[key], abs_sq(grad), self.decay)
        self.nu[key] = nu
        nu_hat = debias(nu, self.bc) if self.bias_correction else nu
        if self.centered:
            mu = ema(self.mu[key], grad, self.decay)
            self.mu[key] = mu
            mu_hat = debias(mu, self.bc) if self.bias_correction else mu
            nu_hat = nu_hat - abs_sq(mu_hat)
        if self.eps_in_sqrt:
            update = jax.lax.rsqrt(nu_hat + self.eps) * grad
        else:
            update = 1 / (jnp.sqrt(nu_hat) + self.eps) * grad
        if self.momentum is None:
            return scale(self.lr_t, update).astype(grad.dtype)
        # As in optax, momentum runs on the already negated step -lr * u. Keeping
        # optax's sign here is what keeps it bit-identical: the compiler fuses
        # a * b + c into FMAs differently depending on where a negation sits.
        step = scale(-self.lr_t, update)
        trace = step + self.momentum * self.trace[key]
        self.trace[key] = trace
        step = step + self.momentum * trace if self.nesterov else trace
        return (-step).astype(grad.dtype)
