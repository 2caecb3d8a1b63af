"""AdamaxW, written with the public hooks."""

from __future__ import annotations

import jax.numpy as jnp

from flr_nnx.helpers import (
    Mask,
    MaskLike,
    ScalarOrSchedule,
    cast,
    debias,
    decayed,
    ema,
    scale,
    set_hypers,
    value_at,
)
from flr_nnx.optim._adamax import Adamax


class AdamaxW(Adamax):
    r"""Adamax with decoupled weight decay, the twin of ``optax.adamaxw``.

    .. math::

        m_t &= (1 - \beta_1) g_t + \beta_1 m_{t-1} \\
        u_t &= \max(|g_t| + \epsilon, \; \beta_2 u_{t-1}) \\
        \Delta\theta_t &= \eta_t \left( \frac{m_t / (1 - \beta_1^t)}{u_t}
            + \lambda_t \theta_{t-1} \right)

    The decay is on the parameter, only for the parameters ``mask`` selects.
    The parameter becomes :math:`\theta_t - \Delta\theta_t`. Bit-identical to
    ``optax.adamaxw`` under ``jit``.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).
        b1: :math:`\beta_1`, decay of the first moment.
        b2: :math:`\beta_2`, decay of the infinity moment.
        eps: :math:`\epsilon`, added to :math:`|g_t|` (keeps :math:`u_t > 0`).
        weight_decay: :math:`\lambda`, a float or a schedule.
        mask: which parameters are decayed (see :class:`AdamW`).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.AdamaxW(0.1, weight_decay=0.5))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]
        Array([-0.14999998,  0.19999997], dtype=float32)
    """

    # Adamax's per-step values, and the decay of this step with the keys it applies to.
    transient = (*Adamax.transient, "wd_t", "decays")

    # Whether a parameter decays depends on its key.
    elementwise = False

    def __init__(
        self,
        learning_rate: ScalarOrSchedule,
        b1: float = 0.9,
        b2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: ScalarOrSchedule = 1e-4,
        mask: MaskLike = None,
    ):
        super().__init__(learning_rate, b1, b2, eps)
        set_hypers(self, weight_decay=weight_decay)
        self.mask = Mask(mask)

    def call_model(self, grads, **_):
        # The decay of this step reads the count before Adamax advances it, as optax does.
        self.wd_t = value_at(self.weight_decay, self.count)
        grads = super().call_model(grads=grads)
        self.decays = decayed(self.weight_decay, self.mask, grads)
        return grads

    def call_param(self, key, grad, param):
        if key not in self.mu:
            self.mu[key] = jnp.zeros_like(grad)
            self.nu[key] = jnp.zeros_like(grad)
        mu = ema(self.mu[key], grad, self.b1)
        nu = jnp.maximum(jnp.abs(grad) + self.eps, self.b2 * self.nu[key])
        self.mu[key], self.nu[key] = mu, nu
        update = debias(mu, self.bc1) / nu
        if key in self.decays:
            update = update + self.wd_t * param
        return cast(scale(self.lr_t, update), grad.dtype)
