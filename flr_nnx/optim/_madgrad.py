"""MADGRAD, written with the public hooks."""

from __future__ import annotations

import jax.numpy as jnp

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import Mask, ScalarOrSchedule, cast, decayed, reject_complex, set_hypers, tick


class MADGRAD(Optimizer):
    r"""MADGRAD (Defazio & Jelassi, 2021), the twin of ``optax.contrib.madgrad``.

    A dual-averaging method: it keeps the initial parameters :math:`\theta_0`
    and weighted sums of the gradients, with weights
    :math:`\lambda_t = (\eta_t + \epsilon) \sqrt{t}`:

    .. math::

        u_t &= g_t + w \, \theta_t, \qquad
        s_t = s_{t-1} + \lambda_t u_t, \qquad
        \nu_t = \nu_{t-1} + \lambda_t u_t^2 \\
        z_t &= \theta_0 - s_t / (\sqrt[3]{\nu_t} + \epsilon) \\
        \theta_{t+1} &= (1 - \mu) \, z_t + \mu \, \theta_t

    The update is :math:`\theta_{t+1} - \theta_t`; :math:`\eta` sets the scale of
    the weights, not a step length. Its state holds a copy of the parameters at
    ``init``. Bit-identical to ``optax.contrib.madgrad`` under ``jit`` (inside
    ``optax.MultiSteps``, 1 ulp of :math:`\theta_{t+1}` apart: see the zoo table).

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).
        momentum: :math:`\mu`, how much of the current parameter each step keeps.
        weight_decay: :math:`w`, added to the gradient as :math:`w \theta_t`.
        eps: :math:`\epsilon`, added to the learning rate and to the denominator.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.MADGRAD(learning_rate=0.1))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, _ = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]  # (1 - 0.9) * s / cbrt(nu) = 0.1 * 0.05 / cbrt(0.025)
        Array([-0.01709986,  0.01709986], dtype=float32)
    """

    transient = ("lamb", "decays")

    def __init__(
        self,
        learning_rate: ScalarOrSchedule,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eps: float = 1e-6,
    ):
        set_hypers(
            self, learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay, eps=eps
        )
        self.count = jnp.zeros([], jnp.int32)
        self.grad_sum_sq: dict = {}
        self.s: dict = {}
        self.x0: dict = {}

    def call_model(self, grads, **_):
        root = jnp.sqrt(self.count + 1)  # optax's order: the count before this step's
        self.lamb = (tick(self, self.learning_rate) + self.eps) * root
        self.decays = decayed(self.weight_decay, Mask(), grads)
        return grads

    def call_param(self, key, grad, param):
        reject_complex(
            type(self).__name__,
            key,
            grad,
            "its denominator is a cube root of a sum of squares (optax's madgrad raises a "
            "TypeError: cbrt takes no complex numbers)",
            "keep this parameter real, or optimize it with another optimizer (Adam).",
        )
        if key not in self.x0:
            self.x0[key] = param  # the initial parameters: init records this first value
            self.grad_sum_sq[key] = jnp.zeros_like(grad)
            self.s[key] = jnp.zeros_like(grad)
        if key in self.decays:
            grad = grad + self.weight_decay * param
        self.grad_sum_sq[key] = sum_sq = self.grad_sum_sq[key] + (self.lamb * grad**2).astype(
            grad.dtype
        )
        self.s[key] = s = self.s[key] + (self.lamb * grad).astype(grad.dtype)
        z = self.x0[key] - s / (jnp.cbrt(sum_sq) + self.eps)
        new = (1 - self.momentum) * z + self.momentum * param
        # optax's update is new - param; the bridge negates ours, so negate it here.
        return cast(param - new, grad.dtype)
