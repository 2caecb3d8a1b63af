"""AMSGrad, written with the public hooks."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import (
    ScalarOrSchedule,
    abs_sq,
    bias_corrections,
    cast,
    check_complex_state,
    debias,
    ema,
    scale,
    set_hypers,
    tick,
)


class AMSGrad(Optimizer):
    r"""AMSGrad (Reddi et al., 2018), the twin of ``optax.amsgrad``.

    .. math::

        m_t &= (1 - \beta_1) g_t + \beta_1 m_{t-1} \\
        v_t &= (1 - \beta_2) g_t^2 + \beta_2 v_{t-1} \\
        \hat v^{\max}_t &= \max(\hat v^{\max}_{t-1}, \; v_t / (1 - \beta_2^t)) \\
        \Delta\theta_t &= \eta_t \, \frac{m_t / (1 - \beta_1^t)}
            {\sqrt{\hat v^{\max}_t + \bar\epsilon} + \epsilon}

    The running maximum is of the bias-corrected second moment (as in optax);
    either bias correction can be switched off. The parameter becomes
    :math:`\theta_t - \Delta\theta_t`. Bit-identical to ``optax.amsgrad`` under
    ``jit``, except with a ``mu_dtype`` wider than the parameter: optax's update is
    then in ``mu_dtype``, and a hook returns it rounded to the parameter's dtype.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).
        b1: :math:`\beta_1`, decay of the first moment.
        b2: :math:`\beta_2`, decay of the second moment.
        eps: :math:`\epsilon`, added to the denominator outside the square root.
        eps_root: :math:`\bar\epsilon`, added inside the square root.
        mu_dtype: dtype of the first moment (default: that of the parameter).
        bias_correction_mu: divide :math:`m_t` by :math:`1 - \beta_1^t`.
        bias_correction_nu: divide :math:`v_t` by :math:`1 - \beta_2^t`.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.AMSGrad(0.1))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]
        Array([-0.09999934,  0.09999934], dtype=float32)
    """

    transient = ("lr_t", "bc1", "bc2")

    elementwise = True

    def __init__(
        self,
        learning_rate: ScalarOrSchedule,
        b1: float = 0.9,
        b2: float = 0.999,
        eps: float = 1e-8,
        eps_root: float = 0.0,
        mu_dtype: Any | None = None,
        bias_correction_mu: bool = True,
        bias_correction_nu: bool = True,
    ):
        set_hypers(self, learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, eps_root=eps_root)
        self.mu_dtype = None if mu_dtype is None else jax.dtypes.canonicalize_dtype(mu_dtype)
        self.bias_correction_mu = bias_correction_mu
        self.bias_correction_nu = bias_correction_nu
        self.count = jnp.zeros([], jnp.int32)
        self.mu: dict = {}
        self.nu: dict = {}
        self.nu_max: dict = {}

    def call_model(self, grads, **_):
        self.lr_t = tick(self, self.learning_rate)
        self.bc1, self.bc2, _ = bias_corrections(self.count, self.b1, self.b2)
        return grads

    def call_param(self, key, grad, **_):
        check_complex_state(type(self).__name__, key, grad, self.mu_dtype, "mu_dtype", self.mu)
        if key not in self.mu:
            self.mu[key] = jnp.zeros_like(grad, dtype=self.mu_dtype)
            self.nu[key] = jnp.zeros_like(grad)
            self.nu_max[key] = jnp.zeros_like(grad)
        mu = ema(self.mu[key], grad, self.b1)
        nu = ema(self.nu[key], abs_sq(grad), self.b2)
        mu_hat = debias(mu, self.bc1) if self.bias_correction_mu else mu
        nu_eff = debias(nu, self.bc2) if self.bias_correction_nu else nu
        nu_max = jnp.maximum(self.nu_max[key], nu_eff)
        update = mu_hat / (jnp.sqrt(nu_max + self.eps_root) + self.eps)
        self.mu[key] = cast(mu, self.mu[key].dtype)
        self.nu[key] = cast(nu, self.nu[key].dtype)
        self.nu_max[key] = cast(nu_max, self.nu_max[key].dtype)
        return cast(scale(self.lr_t, update), grad.dtype)
