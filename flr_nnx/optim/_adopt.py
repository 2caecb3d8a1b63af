"""ADOPT, written with the public hooks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import (
    ScalarOrSchedule,
    abs_sq,
    cast,
    check_complex_state,
    ema,
    reject_complex,
    scale,
    set_hypers,
    tick,
)


class ADOPT(Optimizer):
    r"""ADOPT (Taniguchi et al., 2024), the twin of ``optax.contrib.adopt``.

    The step is normalized by the second moment of the *previous* steps, so
    the current gradient does not scale itself:

    .. math::

        u_t &= \operatorname{clip}\big(g_t / \max(\sqrt{v_{t-1}}, \epsilon), \pm c(t-1)\big) \\
        m_t &= (1 - \beta_1) u_t + \beta_1 m_{t-1}, \qquad
        v_t = (1 - \beta_2) g_t^2 + \beta_2 v_{t-1} \\
        \Delta\theta_t &= \eta_t \, m_t
        \quad\text{or, with Nesterov,}\quad \eta_t \big((1 - \beta_1) u_t + \beta_1 m_t\big)

    At the first step :math:`\beta_1 = 1` and :math:`\beta_2 = 0`: it only
    records :math:`v_1 = g_1^2` (and takes no step). The clipping bound is
    :math:`c(t) = t^{1/4}` by default (none with ``use_clipping=False``). The
    parameter becomes :math:`\theta_t - \Delta\theta_t`. Bit-identical to
    ``optax.contrib.adopt`` under ``jit``.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).
        b1: :math:`\beta_1`, decay of the first moment.
        b2: :math:`\beta_2`, decay of the second moment.
        eps: :math:`\epsilon`, the smallest denominator.
        mu_dtype: dtype of the first moment (default: that of the parameter).
        nesterov: use Nesterov momentum.
        use_clipping: clip the normalized gradient to :math:`\pm c(t-1)`.
        clip_value_fn: :math:`c`, a function of the step count (0 at the first step).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.ADOPT(learning_rate=0.1))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> state = tx.init(params)
        >>> for _ in range(2):
        ...     updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, state, params)
        >>> updates["w"]  # the second step: 0.1 * (1 - 0.9) * sign(g)
        Array([-0.01,  0.01], dtype=float32)
    """

    transient = ("lr_t", "b1_t", "b2_t", "clip_value")

    elementwise = True

    def __init__(
        self,
        learning_rate: ScalarOrSchedule,
        b1: float = 0.9,
        b2: float = 0.9999,
        eps: float = 1e-6,
        mu_dtype: Any | None = None,
        *,
        nesterov: bool = False,
        use_clipping: bool = True,
        clip_value_fn: Callable[[jax.Array], jax.Array] = lambda x: x**0.25,
    ):
        set_hypers(self, learning_rate=learning_rate, b1=b1, b2=b2, eps=eps)
        self.mu_dtype = None if mu_dtype is None else jnp.dtype(mu_dtype)
        self.nesterov = nesterov
        self.use_clipping = use_clipping
        self.clip_value_fn = clip_value_fn
        self.count = jnp.zeros([], jnp.int32)
        self.mu: dict = {}
        self.nu: dict = {}

    def call_model(self, grads, **_):
        # optax's order: the decays and the clip value read the count before this step.
        self.b2_t = jnp.where(self.count > 0, self.b2, 0)
        self.b1_t = jnp.where(self.count > 0, self.b1, 1)
        self.clip_value = self.clip_value_fn(self.count) if self.use_clipping else None
        self.lr_t = tick(self, self.learning_rate)
        return grads

    def call_param(self, key, grad, **_):
        if self.use_clipping:
            reject_complex(
                type(self).__name__,
                key,
                grad,
                "complex numbers have no order to clip by (optax's adopt raises a ValueError too)",
                "pass use_clipping=False, or keep this parameter real.",
            )
        check_complex_state(type(self).__name__, key, grad, self.mu_dtype, "mu_dtype", self.mu)
        if key not in self.mu:
            self.mu[key] = jnp.zeros_like(grad, dtype=self.mu_dtype)
            self.nu[key] = jnp.zeros_like(grad)
        normalized = grad / jnp.maximum(jnp.sqrt(self.nu[key]), self.eps)
        if self.use_clipping:
            normalized = jnp.clip(normalized, -self.clip_value, self.clip_value)
        self.nu[key] = ema(self.nu[key], abs_sq(grad), self.b2_t)
        mu = ema(self.mu[key], normalized, self.b1_t)
        update = ema(mu, normalized, self.b1_t) if self.nesterov else mu
        self.mu[key] = cast(mu, self.mu[key].dtype)
        return cast(scale(self.lr_t, update), grad.dtype)
