"""ACProp, written with the public hooks."""

from __future__ import annotations

import jax.numpy as jnp
import optax

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import (
    Mask,
    MaskLike,
    ScalarOrSchedule,
    abs_sq,
    bias_correction,
    cast,
    debias,
    decayed,
    ema,
    scale,
    set_hypers,
    tick,
    value_at,
)


class AcProp(Optimizer):
    r"""ACProp (Zhuang et al., 2021), the twin of ``optax.contrib.acprop``.

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        s_t &= \beta_2 s_{t-1} + (1 - \beta_2) (g_t - m_{t-1})^2 + \bar\epsilon \\
        \hat s_{t-1} &= s_{t-1} / (1 - \beta_2^{t-1}) \quad (1 \text{ at the first step}) \\
        \Delta\theta_t &= \eta_t \left( g_t / (\sqrt{\hat s_{t-1}} + \epsilon)
            + \lambda \theta_{t-1} \right)

    The denominator is the *previous* step's (asynchronous update); the decay
    :math:`\lambda \theta` applies to the parameters ``mask`` selects. The parameter
    becomes :math:`\theta_t - \Delta\theta_t`. Bit-identical to ``optax.contrib.acprop``
    under ``jit``.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule.
        b1: :math:`\beta_1`, decay of the first moment.
        b2: :math:`\beta_2`, decay of the second central moment.
        eps: :math:`\epsilon`, added to the denominator.
        eps_root: :math:`\bar\epsilon`, added to the second moment.
        weight_decay: :math:`\lambda`.
        mask: which parameters are decayed (as :class:`AdamW`'s ``mask``).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.AcProp(learning_rate=0.1))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]
        Array([-0.05,  0.05], dtype=float32)
    """

    transient = ("lr_t", "wd_t", "initial", "bc2", "decayed")

    # call_param treats every element alike; call_model computes per-step scalars only.
    elementwise = True

    def __init__(
        self,
        learning_rate: ScalarOrSchedule,
        b1: float = 0.9,
        b2: float = 0.999,
        eps: float = 1e-16,
        eps_root: float = 1e-16,
        weight_decay: ScalarOrSchedule = 0.0,
        mask: MaskLike = None,
    ):
        set_hypers(
            self,
            learning_rate=learning_rate,
            b1=b1,
            b2=b2,
            eps=eps,
            eps_root=eps_root,
            weight_decay=weight_decay,
        )
        self.mask = Mask(mask)
        self.count = jnp.zeros([], jnp.int32)
        self.mu: dict = {}
        self.nu: dict = {}

    def call_model(self, grads, **_):
        # optax's order: the denominator's correction reads the count before this step
        # (the count after it at the first step, where the denominator is forced to 1).
        self.initial = self.count == 0
        t = jnp.where(self.initial, optax.safe_increment(self.count), self.count)
        self.bc2 = bias_correction(self.b2, t)
        self.wd_t = value_at(self.weight_decay, self.count)
        self.lr_t = tick(self, self.learning_rate)
        self.decayed = decayed(self.weight_decay, self.mask, grads)
        return grads

    def call_param(self, key, grad, param):
        if key not in self.mu:
            self.mu[key] = jnp.zeros_like(grad)
            self.nu[key] = jnp.zeros_like(grad)
        mu, nu = self.mu[key], self.nu[key]
        self.mu[key] = ema(mu, grad, self.b1)
        self.nu[key] = ema(nu, abs_sq(grad - mu), self.b2) + self.eps_root
        nu_hat = jnp.where(self.initial, 1, debias(nu, self.bc2))
        update = grad / (jnp.sqrt(nu_hat) + self.eps)
        if key in self.decayed:
            update = update + self.wd_t * param
        return cast(scale(self.lr_t, update), grad.dtype)
