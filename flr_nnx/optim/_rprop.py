"""Rprop, written with the public hooks."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import cast, reject_complex, set_hypers


class Rprop(Optimizer):
    r"""Rprop, resilient backpropagation (Riedmiller & Braun, 1993), the twin of ``optax.rprop``.

    Each element keeps its own step size :math:`s`, grown while its gradient
    keeps its sign and shrunk when it flips:

    .. math::

        p_t &= g_t \, u_{t-1} \\
        s_t &= \begin{cases}
            s_{t-1} & p_t = 0 \\
            \operatorname{clip}(\eta_+ s_{t-1}, s_{\min}, s_{\max}) & p_t > 0 \\
            \operatorname{clip}(\eta_- s_{t-1}, s_{\min}, s_{\max}) & p_t < 0
        \end{cases} \\
        u_t &= \begin{cases} 0 & p_t < 0 \\ s_t \operatorname{sign}(g_t) & \text{else}
            \end{cases} \\
        \Delta\theta_t &= \begin{cases} 0 & p_t < 0 \\ u_{t-1} & \text{else} \end{cases}

    where :math:`u_0 = 0` and the step sizes start at ``learning_rate``. The
    step taken is the one computed at the previous step (so the first is
    zero): ``optax.rprop``'s order, kept. The parameter becomes
    :math:`\theta_t - \Delta\theta_t`. Bit-identical to ``optax.rprop`` under
    ``jit``. Rprop is meant for full-batch gradients.

    Args:
        learning_rate: the initial step size of every element (a number: a
            schedule would have no meaning here, as in optax).
        eta_minus: :math:`\eta_-`, the factor that shrinks a step size.
        eta_plus: :math:`\eta_+`, the factor that grows a step size.
        min_step_size: :math:`s_{\min}`.
        max_step_size: :math:`s_{\max}`.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.Rprop(0.1))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> state = tx.init(params)
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, state, params)
        >>> updates, state = tx.update({"w": jnp.array([0.5, 0.5])}, state, params)
        >>> updates["w"]  # the first element's sign held, the second's flipped
        Array([-0.1, -0. ], dtype=float32)
    """

    def __init__(
        self,
        learning_rate: float | jax.Array,
        eta_minus: float = 0.5,
        eta_plus: float = 1.2,
        min_step_size: float = 1e-6,
        max_step_size: float = 50.0,
    ):
        set_hypers(
            self,
            learning_rate=learning_rate,
            eta_minus=eta_minus,
            eta_plus=eta_plus,
            min_step_size=min_step_size,
            max_step_size=max_step_size,
        )
        self.step_sizes: dict = {}
        self.prev_updates: dict = {}

    # No per-step scalars: every element is treated alike, by its own state.
    elementwise = True

    def call_param(self, key, grad, **_):
        reject_complex(
            type(self).__name__,
            key,
            grad,
            "Rprop compares the signs of successive gradients, which complex numbers do not "
            "have (optax.rprop raises a ValueError too)",
            "keep this parameter real, or optimize it with another optimizer (Adam).",
        )
        if key not in self.step_sizes:
            self.step_sizes[key] = jnp.full_like(grad, self.learning_rate)
            self.prev_updates[key] = jnp.zeros_like(grad)
        prev = self.prev_updates[key]
        sign = grad * prev
        factor = jnp.where(sign > 0, self.eta_plus, self.eta_minus)
        grown = jnp.clip(self.step_sizes[key] * factor, self.min_step_size, self.max_step_size)
        step_sizes = jnp.where(sign == 0, self.step_sizes[key], grown)
        updates = jnp.where(sign < 0, jnp.zeros_like(grad), step_sizes * jnp.sign(grad))
        self.step_sizes[key], self.prev_updates[key] = step_sizes, updates
        # optax returns the previous step (not this one), except where the sign flipped;
        # it then negates it (scale(-1.0)), as the bridge does.
        return cast(jnp.where(sign < 0, jnp.zeros_like(prev), prev), grad.dtype)
