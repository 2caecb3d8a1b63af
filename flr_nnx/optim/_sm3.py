"""SM3, written with the public hooks."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import cast, ema, reject_complex, scale, set_hypers


class SM3(Optimizer):
    r"""SM3 (Anil et al., 2019), the twin of ``optax.sm3``.

    Per parameter of rank :math:`k \ge 2`, one accumulator :math:`\mu^{(r)}` per
    axis :math:`r`, as long as that axis:

    .. math::

        \nu_t &= g_t^2 + \min_r \mu^{(r)}_{t-1} \quad (\mu^{(r)} \text{ broadcast along axis } r) \\
        \mu^{(r)}_t &= \max_{\text{axes} \ne r} \nu_t \\
        m_t &= (1 - \beta) \, g_t / \sqrt{\nu_t + 10^{-8}} + \beta \, m_{t-1}
            \quad (0 \text{ where } \nu_t = 0) \\
        \Delta\theta_t &= \eta \, m_t

    A parameter of rank 0 or 1 keeps one accumulator of its own shape:
    :math:`\nu_t = g_t^2 + \mu_{t-1}`, :math:`\mu_t = \nu_t` (Adagrad). The
    parameter becomes :math:`\theta_t - \Delta\theta_t`. Bit-identical to
    ``optax.sm3`` under ``jit``, which fails on a scalar parameter; here a
    scalar is a vector of one element.

    Args:
        learning_rate: :math:`\eta`, a float (optax's ``sm3`` takes no schedule).
        momentum: :math:`\beta`, the decay of the momentum :math:`m_t`.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.SM3(learning_rate=1.0))
        >>> params = {"w": jnp.zeros((2, 2))}
        >>> grads = {"w": jnp.array([[1.0, 2.0], [0.0, -1.0]])}
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> updates["w"]  # 0.1 sign(g) where g != 0 at the first step
        Array([[-0.1,  -0.1],
               [-0. ,  0.1]], dtype=float32)
    """

    def __init__(self, learning_rate: float, momentum: float = 0.9):
        set_hypers(self, learning_rate=learning_rate, momentum=momentum)
        self.mu: dict = {}
        self.nu: dict = {}

    def call_param(self, key, grad, **_):
        reject_complex(
            type(self).__name__,
            key,
            grad,
            "SM3's accumulators take maxima of squares (optax.sm3 raises a ValueError too)",
            "keep this parameter real, or optimize it with another optimizer (Adam).",
        )
        if key not in self.mu:
            self.mu[key] = [jnp.zeros(n, grad.dtype) for n in grad.shape] or [jnp.zeros_like(grad)]
            self.nu[key] = jnp.zeros_like(grad)
        if grad.ndim < 2:
            accum = 1.0 * grad**2 + 1.0 * self.mu[key][0]
            self.mu[key] = [accum]
        else:
            covers = [
                jnp.reshape(v, _along(grad.ndim, i, v.size)) for i, v in enumerate(self.mu[key])
            ]
            accum = 1.0 * grad**2 + 1.0 * functools.reduce(jnp.minimum, covers)
            self.mu[key] = [
                jnp.max(accum, axis=[a for a in range(grad.ndim) if a != i])
                for i in range(grad.ndim)
            ]
        update = grad * jnp.where(accum > 0, jax.lax.rsqrt(accum + 1e-8), 0.0)
        self.nu[key] = ema(self.nu[key], update, self.momentum)
        return cast(scale(self.learning_rate, self.nu[key]), grad.dtype)


def _along(ndim: int, axis: int, size: int) -> list[int]:
    """The shape ``[1, ..., size, ..., 1]`` that broadcasts a vector along ``axis``."""
    return [1] * axis + [size] + [1] * (ndim - axis - 1)
