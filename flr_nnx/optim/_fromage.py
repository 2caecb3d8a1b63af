"""Fromage, written with the public hooks."""

from __future__ import annotations

import jax.numpy as jnp

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import (
    ScalarOrSchedule,
    cast,
    needs_count,
    scale,
    set_hypers,
    tick,
    trust_ratio,
)


class Fromage(Optimizer):
    r"""Fromage (Bernstein et al., 2020), the twin of ``optax.fromage``.

    .. math::

        r_t &= \|\theta_t\| / \|g_t\| \quad (1 \text{ if either norm is } 0) \\
        \Delta\theta_t &= \frac{\eta_t}{\sqrt{1 + \eta_t^2}} \, r_t \, g_t
            + \Big(1 - \frac{1}{\sqrt{1 + \eta_t^2}}\Big) \theta_t

    Norms are per parameter, each at least ``min_norm``. The parameter becomes
    :math:`\theta_t - \Delta\theta_t`: a step of relative length :math:`\eta_t`,
    shrunk back towards the parameter's norm. Bit-identical to ``optax.fromage``
    under ``jit``.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).
        min_norm: the smallest norm a parameter or gradient is taken to have.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.Fromage(learning_rate=0.1))
        >>> params = {"w": jnp.array([3.0, -4.0])}
        >>> updates, _ = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]
        Array([-0.3666872,  0.37165  ], dtype=float32)
    """

    transient = ("lr_t", "wd_t")

    def __init__(self, learning_rate: ScalarOrSchedule, min_norm: float = 1e-6):
        set_hypers(self, learning_rate=learning_rate, min_norm=min_norm)
        if needs_count(learning_rate):
            self.count = jnp.zeros([], jnp.int32)

    def call_model(self, grads, **_):
        if needs_count(self.learning_rate):
            lr = tick(self, self.learning_rate)
            mult = 1 / (1 + lr**2) ** 0.5
            self.lr_t, self.wd_t = mult * lr, mult - 1
        else:  # optax computes these in Python: constants of the compiled step
            mult = 1 / (1 + self.learning_rate**2) ** 0.5
            self.lr_t, self.wd_t = self.learning_rate * mult, mult - 1
        return grads

    def call_param(self, grad, param, **_):
        update = grad * trust_ratio(param, grad, min_norm=self.min_norm)
        # optax adds (mult - 1) * param to its step -lr * mult * u. Written so, then
        # negated for the bridge (which negates back), so XLA fuses the same
        # multiply-add as optax's: `lr * u - (1 - mult) * param` rounds differently.
        return cast(-(scale(-self.lr_t, update) + self.wd_t * param), grad.dtype)
