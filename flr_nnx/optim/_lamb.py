"""LAMB, written with the public hooks."""

from __future__ import annotations

import jax.numpy as jnp
import optax

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import (
    Mask,
    MaskLike,
    ScalarOrSchedule,
    abs_sq,
    bias_corrections,
    debias,
    decayed,
    ema,
    scale,
    set_hypers,
    tick,
)


class LAMB(Optimizer):
    r"""LAMB (You et al., 2020), the twin of ``optax.lamb``.

    .. math::

        m_t &= (1 - \beta_1) g_t + \beta_1 m_{t-1}, \qquad
        v_t = (1 - \beta_2) g_t^2 + \beta_2 v_{t-1} \\
        u_t &= \frac{m_t / (1 - \beta_1^t)}{\sqrt{v_t / (1 - \beta_2^t) + \bar\epsilon} + \epsilon}
            + \lambda_t \theta_t \\
        \Delta\theta_t &= \eta_t \, r_t \, u_t, \qquad
        r_t = \|\theta_t\| / \|u_t\| \quad (1 \text{ if either norm is } 0)

    Norms are per parameter; the weight decay term applies to the parameters the
    ``mask`` selects. The parameter becomes :math:`\theta_t - \Delta\theta_t`.
    Bit-identical to ``optax.lamb`` under ``jit``.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).
        b1: :math:`\beta_1`, decay of the first moment.
        b2: :math:`\beta_2`, decay of the second moment.
        eps: :math:`\epsilon`, added to the denominator outside the square root.
        eps_root: :math:`\bar\epsilon`, added inside the square root.
        weight_decay: :math:`\lambda`, a float or a schedule.
        mask: which parameters decay: ``None`` (all), a pytree of bools or a callable
            returning one (as optax accepts), or :func:`flr_nnx.helpers.key_mask`.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.LAMB(learning_rate=0.1, weight_decay=0.01))
        >>> params = {"w": jnp.array([3.0, -4.0])}
        >>> updates, _ = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]  # the trust ratio makes the step 0.1 * ||w|| = 0.5 long
        Array([-0.3518413 ,  0.35525724], dtype=float32)
    """

    transient = ("lr_t", "wd_t", "decays", "bc1", "bc2")

    def __init__(
        self,
        learning_rate: ScalarOrSchedule,
        b1: float = 0.9,
        b2: float = 0.999,
        eps: float = 1e-6,
        eps_root: float = 0.0,
        weight_decay: ScalarOrSchedule = 0.0,
        mask: MaskLike = None,
    ):
        set_hypers(
            self,
            learning_rate=learning_rate,
            b1=b1,
            b2=b2,
            eps=eps,
            eps_root=eps_root,
            weight_decay=weight_decay,
        )
        self.mask = Mask(mask)
        self.count = jnp.zeros([], jnp.int32)
        self.mu: dict = {}
        self.nu: dict = {}

    def call_model(self, grads, **_):
        self.lr_t, self.wd_t = tick(self, self.learning_rate, self.weight_decay)
        self.decays = decayed(self.weight_decay, self.mask, grads)
        self.bc1, self.bc2, _ = bias_corrections(self.count, self.b1, self.b2)
        return grads

    def call_param(self, key, grad, param):
        if key not in self.mu:
            self.mu[key] = jnp.zeros_like(grad)
            self.nu[key] = jnp.zeros_like(grad)
        mu = ema(self.mu[key], grad, self.b1)
        nu = ema(self.nu[key], abs_sq(grad), self.b2)
        self.mu[key], self.nu[key] = mu, nu
        update = debias(mu, self.bc1) / (jnp.sqrt(debias(nu, self.bc2) + self.eps_root) + self.eps)
        if key in self.decays:
            update = update + self.wd_t * param
        param_norm = optax.safe_norm(param, 0.0)
        update_norm = optax.safe_norm(update, 0.0)
        trust_ratio = 1.0 * param_norm / (update_norm + 0.0)
        zero_norm = jnp.logical_or(param_norm == 0.0, update_norm == 0.0)
        trust_ratio = jnp.where(zero_norm, jnp.array(1.0, dtype=param.dtype), trust_ratio)
        return scale(self.lr_t, update * trust_ratio).astype(grad.dtype)
