"""COCOB-Backprop, written with the public hooks."""

from __future__ import annotations

import jax.numpy as jnp

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import (
    Mask,
    MaskLike,
    ScalarOrSchedule,
    advance,
    cast,
    decayed,
    needs_count,
    scale,
    set_hypers,
)


class COCOB(Optimizer):
    r"""COCOB-Backprop (Orabona & Tommasi, 2017), the twin of ``optax.contrib.cocob``.

    With :math:`c_t = \eta_t (g_t + \lambda \theta_t)` (the decay only where ``mask``
    selects), per element:

    .. math::

        L_t &= \max(L_{t-1}, |c_t|), \quad G_t = G_{t-1} + |c_t|, \quad
        C_t = C_{t-1} - c_t \\
        R_t &= \max\left(R_{t-1} - c_t (\theta_t - \theta_0), 0\right) \\
        \theta_{t+1} &= \theta_0 + \frac{C_t}{L_t \max(G_t + L_t, \alpha L_t)} (L_t + R_t)

    from :math:`L_0 = \epsilon`, :math:`G_0 = R_0 = C_0 = 0` and the initial
    parameters :math:`\theta_0`. No learning rate to tune (``learning_rate`` scales
    the gradient). Bit-identical to ``optax.contrib.cocob`` under ``jit``.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule, scales the gradient.
        alpha: :math:`\alpha`, bounds the bet at the first steps.
        eps: :math:`\epsilon`, the initial scale :math:`L_0`.
        weight_decay: :math:`\lambda`.
        mask: which parameters are decayed (as :class:`AdamW`'s ``mask``).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.COCOB())
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]
        Array([-0.00999999,  0.00999999], dtype=float32)
    """

    transient = ("lr_t", "decayed")

    # call_param treats every element alike; call_model computes per-step scalars only.
    elementwise = True

    def __init__(
        self,
        learning_rate: ScalarOrSchedule = 1.0,
        alpha: float = 100.0,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        mask: MaskLike = None,
    ):
        set_hypers(
            self, learning_rate=learning_rate, alpha=alpha, eps=eps, weight_decay=weight_decay
        )
        self.mask = Mask(mask)
        if needs_count(learning_rate):
            self.count = jnp.zeros([], jnp.int32)
        self.init_particles: dict = {}
        self.cumulative_gradients: dict = {}
        self.scale: dict = {}
        self.subgradients: dict = {}
        self.reward: dict = {}

    def call_model(self, grads, **_):
        self.decayed = decayed(self.weight_decay, self.mask, grads)
        self.lr_t = advance(self, self.learning_rate)
        return grads

    def call_param(self, key, grad, param):
        if key not in self.init_particles:  # the bets start from the initial parameters
            self.init_particles[key] = param
            self.cumulative_gradients[key] = jnp.zeros_like(param)
            self.scale[key] = self.eps * jnp.ones_like(param)
            self.subgradients[key] = jnp.zeros_like(param)
            self.reward[key] = jnp.zeros_like(param)
        c = grad + self.weight_decay * param if key in self.decayed else grad
        c = scale(self.lr_t, c)
        p0 = self.init_particles[key]
        L = self.scale[key] = jnp.maximum(self.scale[key], jnp.abs(c))
        G = self.subgradients[key] = self.subgradients[key] + jnp.abs(c)
        R = self.reward[key] = jnp.maximum(self.reward[key] - c * (param - p0), 0)
        C = self.cumulative_gradients[key] = self.cumulative_gradients[key] - c
        # optax's update is -param + (its next iterate); a hook returns its negative.
        return cast(
            param - (p0 + C / (L * jnp.maximum(G + L, self.alpha * L)) * (L + R)), grad.dtype
        )
