"""Adam, written with the public hooks."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import (
    ScalarOrSchedule,
    abs_sq,
    bias_corrections,
    cast,
    check_complex_state,
    debias,
    debias_momentum,
    ema,
    scale,
    set_hypers,
    tick,
)


class Adam(Optimizer):
    r"""Adam (Kingma & Ba, 2014), the twin of ``optax.adam``.

    .. math::

        m_t &= (1 - \beta_1) g_t + \beta_1 m_{t-1} \\
        v_t &= (1 - \beta_2) g_t^2 + \beta_2 v_{t-1} \\
        \hat m_t &= m_t / (1 - \beta_1^t), \quad \hat v_t = v_t / (1 - \beta_2^t) \\
        \Delta\theta_t &= \eta_t \, \hat m_t / (\sqrt{\hat v_t + \bar\epsilon} + \epsilon)

    With ``nesterov=True``, :math:`\hat m_t` is replaced by
    :math:`\beta_1 m_t / (1 - \beta_1^{t+1}) + (1 - \beta_1) g_t / (1 - \beta_1^t)`.
    The parameter becomes :math:`\theta_t - \Delta\theta_t`. Bit-identical to
    ``optax.adam`` under ``jit``.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).
        b1: :math:`\beta_1`, decay of the first moment.
        b2: :math:`\beta_2`, decay of the second moment.
        eps: :math:`\epsilon`, added to the denominator outside the square root.
        eps_root: :math:`\bar\epsilon`, added inside the square root.
        mu_dtype: dtype of the first moment (default: that of the parameter).
        nesterov: use Nesterov momentum (NAdam).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.Adam(learning_rate=0.1))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]
        Array([-0.09999934,  0.09999934], dtype=float32)
    """

    # Recomputed by call_model at every step for call_param: not state.
    transient = ("lr_t", "bc1", "bc2", "bc1_next")

    # call_param treats every element alike and call_model only computes per-step
    # scalars: Packed may run it on packed buffers, and init discovers its
    # state on one parameter per shape and dtype.
    elementwise = True

    def __init__(
        self,
        learning_rate: ScalarOrSchedule,
        b1: float = 0.9,
        b2: float = 0.999,
        eps: float = 1e-8,
        eps_root: float = 0.0,
        *,
        mu_dtype: Any | None = None,
        nesterov: bool = False,
    ):
        set_hypers(self, learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, eps_root=eps_root)
        self.mu_dtype = None if mu_dtype is None else jnp.dtype(mu_dtype)
        self.nesterov = nesterov
        self.count = jnp.zeros([], jnp.int32)
        self.mu: dict = {}
        self.nu: dict = {}

    def call_model(self, grads, **_):
        # Per-step scalars are computed once here, not per parameter, exactly as
        # optax does per tree: XLA would otherwise fuse them into every leaf's loop.
        self.lr_t = tick(self, self.learning_rate)
        self.bc1, self.bc2, self.bc1_next = bias_corrections(
            self.count, self.b1, self.b2, nesterov=self.nesterov
        )
        return grads

    def call_param(self, key, grad, **_):
        return cast(scale(self.lr_t, self.direction(key, grad)), grad.dtype)

    def direction(self, key, grad):
        r"""The bias-corrected step before the learning rate; advances ``key``'s moments.

        :math:`\hat m_t / (\sqrt{\hat v_t + \bar\epsilon} + \epsilon)`, for
        subclasses that add to it before scaling (:class:`AdamW`).
        """
        check_complex_state(type(self).__name__, key, grad, self.mu_dtype, "mu_dtype", self.mu)
        if key not in self.mu:
            self.mu[key] = jnp.zeros_like(grad, dtype=self.mu_dtype)
            self.nu[key] = jnp.zeros_like(grad)
        mu = ema(self.mu[key], grad, self.b1)
        nu = ema(self.nu[key], abs_sq(grad), self.b2)
        mu_hat = debias_momentum(mu, grad, self.b1, self.bc1, self.bc1_next)
        nu_hat = debias(nu, self.bc2)
        self.mu[key] = cast(mu, self.mu[key].dtype)
        self.nu[key] = cast(nu, self.nu[key].dtype)
        return mu_hat / (jnp.sqrt(nu_hat + self.eps_root) + self.eps)
