"""NovoGrad, written with the public hooks."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import ScalarOrSchedule, cast, ema, scale, set_hypers, tick


class NovoGrad(Optimizer):
    r"""NovoGrad (Ginsburg et al., 2019), the twin of ``optax.novograd``.

    .. math::

        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) \|g_t\|^2 \quad (v_1 = \|g_1\|^2) \\
        m_t &= \beta_1 m_{t-1} + \frac{g_t}{\sqrt{v_t + \bar\epsilon} + \epsilon}
            + \lambda \theta_t \quad (m_0 = 0) \\
        \Delta\theta_t &= \eta_t \, m_t

    :math:`v_t` is one number per parameter (layer-wise), from the norm of its
    whole gradient. The parameter becomes :math:`\theta_t - \Delta\theta_t`.
    Bit-identical to ``optax.novograd`` under ``jit``.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).
        b1: :math:`\beta_1`, decay of the first moment.
        b2: :math:`\beta_2`, decay of the layer-wise second moment.
        eps: :math:`\epsilon`, added to the denominator outside the square root.
        eps_root: :math:`\bar\epsilon`, added inside the square root.
        weight_decay: :math:`\lambda`, a float (optax's ``scale_by_novograd``
            takes no schedule).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.NovoGrad(learning_rate=0.1))
        >>> params = {"w": jnp.array([3.0, -4.0])}
        >>> updates, _ = tx.update({"w": jnp.array([0.3, -0.4])}, tx.init(params), params)
        >>> updates["w"]  # the gradient over its norm 0.5
        Array([-0.05999988,  0.07999984], dtype=float32)
    """

    transient = ("lr_t",)

    def __init__(
        self,
        learning_rate: ScalarOrSchedule,
        b1: float = 0.9,
        b2: float = 0.25,
        eps: float = 1e-6,
        eps_root: float = 0.0,
        weight_decay: float = 0.0,
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
        self.count = jnp.zeros([], jnp.int32)
        self.mu: dict = {}
        self.nu: dict = {}

    def call_model(self, grads, params, **_):
        self.lr_t = tick(self, self.learning_rate)
        for key, grad in grads.items():
            if key not in self.mu:
                self.mu[key] = jnp.zeros_like(grad)
                self.nu[key] = jnp.zeros([], grad.dtype)
        # The first step starts both moments afresh. optax branches with one
        # lax.cond per moment over all parameters; so do we, for the same program.
        first = self.count == 1
        nu = jax.lax.cond(first, _init_nu, self._update_nu, grads, dict(self.nu))
        mu = jax.lax.cond(
            first, self._init_mu, self._update_mu, grads, dict(params), dict(self.mu), nu
        )
        self.mu.update(mu)
        self.nu.update(nu)
        return grads

    def call_param(self, key, grad, **_):
        return cast(scale(self.lr_t, self.mu[key]), grad.dtype)

    def _update_nu(self, grads, nu):
        return {k: ema(nu[k], jnp.linalg.norm(g) ** 2, self.b2) for k, g in grads.items()}

    def _addition(self, grad, param, nu):
        return grad / (jnp.sqrt(nu + self.eps_root) + self.eps) + self.weight_decay * param

    def _init_mu(self, grads, params, mu, nu):
        return {k: self._addition(g, params[k], nu[k]) for k, g in grads.items()}

    def _update_mu(self, grads, params, mu, nu):
        return {k: self.b1 * mu[k] + self._addition(g, params[k], nu[k]) for k, g in grads.items()}


def _init_nu(grads, nu):
    return {k: (jnp.linalg.norm(g) ** 2).astype(nu[k].dtype) for k, g in grads.items()}
