"""Adadelta, written with the public hooks."""

from __future__ import annotations

from typing import ClassVar

import jax.numpy as jnp

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import (
    UNIT_CLOSED,
    Mask,
    MaskLike,
    ScalarOrSchedule,
    abs_sq,
    advance_all,
    cast,
    decayed,
    ema,
    needs_count,
    reject_complex,
    scale,
    set_hypers,
)


class Adadelta(Optimizer):
    r"""Adadelta (Zeiler, 2012), the twin of ``optax.adadelta``.

    .. math::

        g_t &\leftarrow g_t + \lambda_t \theta_{t-1} \\
        E[g^2]_t &= (1 - \rho) g_t^2 + \rho E[g^2]_{t-1} \\
        u_t &= \frac{\sqrt{E[\Delta^2]_{t-1} + \epsilon}}{\sqrt{E[g^2]_t + \epsilon}} \, g_t \\
        E[\Delta^2]_t &= (1 - \rho) u_t^2 + \rho E[\Delta^2]_{t-1} \\
        \Delta\theta_t &= \eta_t \, u_t

    The decay :math:`\lambda_t \theta_{t-1}` is added to the gradient of the
    parameters ``weight_decay_mask`` selects. Without a ``learning_rate``,
    :math:`\Delta\theta_t = -u_t`: ``optax.adadelta`` then leaves its update
    unscaled and unnegated, and so does this twin. The parameter becomes
    :math:`\theta_t - \Delta\theta_t`. Bit-identical to ``optax.adadelta``
    under ``jit``. Complex parameters are refused with a
    :class:`~flr_nnx.ComplexParameterError`: optax squares the complex gradient itself.

    Args:
        learning_rate: :math:`\eta`, a float, a schedule, or ``None`` (no scaling).
        rho: :math:`\rho`, decay of both moving averages.
        eps: :math:`\epsilon`, added inside both square roots.
        weight_decay: :math:`\lambda`, a float or a schedule.
        weight_decay_mask: which parameters are decayed (see :class:`AdamW`'s ``mask``).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.Adadelta(0.1))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]
        Array([-0.00031622,  0.00031622], dtype=float32)
    """

    transient = ("lr_t", "wd_t", "decays")

    # rho is a decay rate, as b1 and b2 are.
    hyper_bounds: ClassVar = {"rho": UNIT_CLOSED}

    def __init__(
        self,
        learning_rate: ScalarOrSchedule | None = None,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: ScalarOrSchedule = 0.0,
        weight_decay_mask: MaskLike = None,
    ):
        set_hypers(self, learning_rate=learning_rate, rho=rho, eps=eps, weight_decay=weight_decay)
        self.weight_decay_mask = Mask(weight_decay_mask)
        if needs_count(learning_rate, weight_decay):
            self.count = jnp.zeros([], jnp.int32)
        self.e_g: dict = {}
        self.e_x: dict = {}

    def call_model(self, grads, **_):
        self.lr_t, self.wd_t = advance_all(self, self.learning_rate, self.weight_decay)
        self.decays = decayed(self.weight_decay, self.weight_decay_mask, grads)
        return grads

    def call_param(self, key, grad, param):
        reject_complex(
            type(self).__name__,
            key,
            grad,
            "optax.adadelta squares complex gradients (g**2, not |g|^2), so its twin has no "
            "right answer to match",
            "keep this parameter real, or optimize it with an optimizer that supports complex "
            "numbers (Adam).",
        )
        if key in self.decays:
            grad = grad + self.wd_t * param
        if key not in self.e_g:
            self.e_g[key] = jnp.zeros_like(param)
            self.e_x[key] = jnp.zeros_like(param)
        e_g = ema(self.e_g[key], abs_sq(grad), self.rho)
        update = (jnp.sqrt(self.e_x[key] + self.eps) / jnp.sqrt(e_g + self.eps)) * grad
        self.e_g[key], self.e_x[key] = e_g, ema(self.e_x[key], abs_sq(update), self.rho)
        if self.lr_t is None:  # optax.scale_by_learning_rate(None) is the identity
            return cast(-update, param.dtype)
        return cast(scale(self.lr_t, update), param.dtype)
