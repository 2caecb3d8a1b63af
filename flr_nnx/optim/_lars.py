"""LARS, written with the public hooks."""

from __future__ import annotations

import jax.numpy as jnp
import optax

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import (
    Mask,
    MaskLike,
    ScalarOrSchedule,
    cast,
    decayed,
    needs_count,
    scale,
    set_hypers,
    trust_ratio,
    value_at,
)


class LARS(Optimizer):
    r"""LARS (You et al., 2017), the twin of ``optax.lars``.

    .. math::

        u_t &= g_t + \lambda_t \theta_t \\
        r_t &= c \, \|\theta_t\| / (\|u_t\| + \epsilon) \quad (1 \text{ if either norm is } 0) \\
        v_t &= \eta_t \, r_t \, u_t + \mu \, v_{t-1} \\
        \Delta\theta_t &= v_t \quad\text{or, with Nesterov,}\quad \eta_t r_t u_t + \mu \, v_t

    Norms are per parameter. The weight decay applies to the parameters
    ``weight_decay_mask`` selects, the trust ratio :math:`r_t` to those
    ``trust_ratio_mask`` selects (:math:`r_t = 1` elsewhere). The parameter
    becomes :math:`\theta_t - \Delta\theta_t`. Bit-identical to ``optax.lars``
    under ``jit``.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).
        weight_decay: :math:`\lambda`, a float or a schedule.
        weight_decay_mask: which parameters decay: ``True`` (all), a pytree of bools
            or a callable returning one (as optax accepts), or
            :func:`flr_nnx.helpers.key_mask`.
        trust_coefficient: :math:`c`, the trust ratio's multiplier.
        eps: :math:`\epsilon`, added to the trust ratio's denominator.
        trust_ratio_mask: which parameters take the trust ratio, as ``weight_decay_mask``.
        momentum: :math:`\mu`, the decay of the velocity.
        nesterov: use Nesterov momentum.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.LARS(learning_rate=0.1, trust_coefficient=0.1))
        >>> params = {"w": jnp.array([3.0, -4.0])}
        >>> updates, _ = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]  # 0.1 * 0.1 * ||w|| = 0.05 long
        Array([-0.03535534,  0.03535534], dtype=float32)
    """

    transient = ("lr_t", "wd_t", "decays", "trusted")

    def __init__(
        self,
        learning_rate: ScalarOrSchedule,
        weight_decay: ScalarOrSchedule = 0.0,
        weight_decay_mask: MaskLike = True,
        trust_coefficient: float = 0.001,
        eps: float = 0.0,
        trust_ratio_mask: MaskLike = True,
        momentum: float = 0.9,
        nesterov: bool = False,
    ):
        set_hypers(
            self,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            eps=eps,
            momentum=momentum,
        )
        self.weight_decay_mask = Mask(weight_decay_mask)
        self.trust_ratio_mask = Mask(trust_ratio_mask)
        self.nesterov = nesterov
        if needs_count(learning_rate, weight_decay):
            self.count = jnp.zeros([], jnp.int32)
        self.trace: dict = {}

    def call_model(self, grads, **_):
        # optax counts separately for each schedule; one count has the same values.
        if "count" in vars(self):
            self.lr_t = value_at(self.learning_rate, self.count)
            self.wd_t = value_at(self.weight_decay, self.count)
            self.count = optax.safe_increment(self.count)
        else:
            self.lr_t, self.wd_t = self.learning_rate, self.weight_decay
        self.decays = decayed(self.weight_decay, self.weight_decay_mask, grads)
        self.trusted = self.trust_ratio_mask.select(grads)
        return grads

    def call_param(self, key, grad, param):
        update = grad + self.wd_t * param if key in self.decays else grad
        if key in self.trusted:
            update = update * trust_ratio(param, update, self.trust_coefficient, self.eps)
        # optax's trace follows its -lr scaling; the bridge negates once at the end instead.
        update = scale(self.lr_t, update)
        if key not in self.trace:
            self.trace[key] = jnp.zeros_like(update)
        trace = update + self.momentum * self.trace[key]
        self.trace[key] = trace
        return cast(update + self.momentum * trace if self.nesterov else trace, grad.dtype)
