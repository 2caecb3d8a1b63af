"""AdEMAMix and its simplified form, written with the public hooks."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import optax

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import (
    Mask,
    MaskLike,
    ScalarOrSchedule,
    abs_sq,
    bias_correction,
    cast,
    check_complex_state,
    debias,
    decayed,
    ema,
    scale,
    set_hypers,
    tick,
    value_at,
)


class AdEMAMix(Optimizer):
    r"""AdEMAMix (Pagliardini et al., 2024), the twin of ``optax.contrib.ademamix``.

    Adam with a second, slow moving average of the gradients added to the fast one:

    .. math::

        m^{(1)}_t &= (1 - \beta_1) g_t + \beta_1 m^{(1)}_{t-1}, \qquad
        m^{(2)}_t = (1 - \beta_3) g_t + \beta_3 m^{(2)}_{t-1} \\
        v_t &= (1 - \beta_2) g_t^2 + \beta_2 v_{t-1} \\
        \Delta\theta_t &= \eta_t \Big(
            \frac{m^{(1)}_t / (1 - \beta_1^t) + \alpha_t m^{(2)}_t}
                 {\sqrt{v_t / (1 - \beta_2^t) + \bar\epsilon} + \epsilon}
            + \lambda \theta_t \Big)

    :math:`\beta_3` and :math:`\alpha` may be schedules; the weight decay term
    applies to the parameters ``mask`` selects. The parameter becomes
    :math:`\theta_t - \Delta\theta_t`. Bit-identical to ``optax.contrib.ademamix``
    under ``jit``, except where optax changes dtypes: a schedule for
    :math:`\beta_3` or :math:`\alpha` (a float32 array) turns optax's moments and
    update of a bfloat16 parameter into float32, and with a ``mu_dtype`` optax's
    moments widen to the gradient's dtype after the first step; here the moments
    keep their dtype and the update is in the parameter's.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).
        b1: :math:`\beta_1`, decay of the fast first moment.
        b2: :math:`\beta_2`, decay of the second moment.
        b3: :math:`\beta_3`, decay of the slow first moment (a float or a schedule).
        alpha: :math:`\alpha`, weight of the slow moment (a float or a schedule).
        eps: :math:`\epsilon`, added to the denominator outside the square root.
        eps_root: :math:`\bar\epsilon`, added inside the square root.
        mu_dtype: dtype of the three moments (default: that of the parameter).
        weight_decay: :math:`\lambda`.
        mask: which parameters decay: ``None`` (all), a pytree of bools or a callable
            returning one (as optax accepts), or :func:`flr_nnx.helpers.key_mask`.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.AdEMAMix(learning_rate=0.1))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, _ = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]  # 0.1 * (1 + 5 * 1e-4) * sign(g)
        Array([-0.10004934,  0.10004934], dtype=float32)
    """

    transient = ("lr_t", "b3_t", "alpha_t", "bc1", "bc2", "decays")

    def __init__(
        self,
        learning_rate: ScalarOrSchedule,
        b1: float = 0.9,
        b2: float = 0.999,
        b3: ScalarOrSchedule = 0.9999,
        alpha: ScalarOrSchedule = 5.0,
        eps: float = 1e-8,
        eps_root: float = 0.0,
        mu_dtype: Any | None = None,
        weight_decay: float = 0.0,
        mask: MaskLike = None,
    ):
        set_hypers(
            self,
            learning_rate=learning_rate,
            b1=b1,
            b2=b2,
            b3=b3,
            alpha=alpha,
            eps=eps,
            eps_root=eps_root,
            weight_decay=weight_decay,
        )
        self.mu_dtype = None if mu_dtype is None else jnp.dtype(mu_dtype)
        self.mask = Mask(mask)
        self.count = jnp.zeros([], jnp.int32)
        self.m1: dict = {}
        self.m2: dict = {}
        self.nu: dict = {}

    def call_model(self, grads, **_):
        self.lr_t, self.b3_t, self.alpha_t = tick(self, self.learning_rate, self.b3, self.alpha)
        self.bc1 = bias_correction(self.b1, self.count)
        self.bc2 = bias_correction(self.b2, self.count)
        self.decays = decayed(self.weight_decay, self.mask, grads)
        return grads

    def call_param(self, key, grad, param):
        check_complex_state(type(self).__name__, key, grad, self.mu_dtype, "mu_dtype", self.m1)
        if key not in self.m1:
            self.m1[key] = jnp.zeros_like(grad, dtype=self.mu_dtype)
            self.m2[key] = jnp.zeros_like(grad, dtype=self.mu_dtype)
            self.nu[key] = jnp.zeros_like(grad, dtype=self.mu_dtype)
        m1 = ema(self.m1[key], grad, self.b1)
        m2 = ema(self.m2[key], grad, self.b3_t)
        nu = ema(self.nu[key], abs_sq(grad), self.b2)
        update = (debias(m1, self.bc1) + self.alpha_t * m2) / (
            jnp.sqrt(debias(nu, self.bc2) + self.eps_root) + self.eps
        )
        for name, value in (("m1", m1), ("m2", m2), ("nu", nu)):
            getattr(self, name)[key] = cast(value, getattr(self, name)[key].dtype)
        if key in self.decays:
            update = update + self.weight_decay * param
        return cast(scale(self.lr_t, update), grad.dtype)


class SimplifiedAdEMAMix(Optimizer):
    r"""Simplified AdEMAMix (Morwani et al., 2025), twin of ``optax.contrib.simplified_ademamix``.

    .. math::

        m_t &= g_t + \beta_1 m_{t-1}, \qquad
        n_t = g_t^2 + \beta_2 (n_{t-1} - g_t^2) \\
        \Delta\theta_t &= \eta_t \Big(
            \frac{m_t + \alpha_t g_t}{\sqrt{n_t / (1 - \beta_2^t) + \bar\epsilon} + \epsilon}
            + \lambda \theta_t \Big)

    The momentum :math:`m_t` is an undamped sum (no :math:`1 - \beta_1`);
    :math:`\alpha` may be a schedule; the weight decay term applies to the
    parameters ``mask`` selects. The parameter becomes
    :math:`\theta_t - \Delta\theta_t`. Bit-identical to
    ``optax.contrib.simplified_ademamix`` under ``jit``, except with a schedule
    for :math:`\alpha` on a bfloat16 parameter: optax's update is then float32
    (the schedule's dtype), a hook's is in the parameter's dtype.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).
        b1: :math:`\beta_1`, decay of the momentum.
        b2: :math:`\beta_2`, decay of the second moment.
        alpha: :math:`\alpha`, weight of the current gradient (a float or a schedule).
        eps: :math:`\epsilon`, added to the denominator outside the square root.
        eps_root: :math:`\bar\epsilon`, added inside the square root.
        weight_decay: :math:`\lambda`.
        mask: which parameters decay, as for :class:`AdEMAMix`.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.SimplifiedAdEMAMix(learning_rate=0.1))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, _ = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]  # 0.1 * sign(g) at the first step
        Array([-0.1,  0.1], dtype=float32)
    """

    transient = ("lr_t", "alpha_t", "bc2", "decays")

    def __init__(
        self,
        learning_rate: ScalarOrSchedule,
        b1: float = 0.99,
        b2: float = 0.95,
        alpha: ScalarOrSchedule = 0.0,
        eps: float = 1e-8,
        eps_root: float = 0.0,
        weight_decay: float = 0.0,
        mask: MaskLike = None,
    ):
        set_hypers(
            self,
            learning_rate=learning_rate,
            b1=b1,
            b2=b2,
            alpha=alpha,
            eps=eps,
            eps_root=eps_root,
            weight_decay=weight_decay,
        )
        self.mask = Mask(mask)
        self.t = jnp.zeros([], jnp.int32)
        self.m: dict = {}
        self.n: dict = {}

    def call_model(self, grads, **_):
        # tick's order, on optax's name for this count (`t`)
        self.lr_t = value_at(self.learning_rate, self.t)
        self.alpha_t = value_at(self.alpha, self.t)
        self.t = optax.safe_increment(self.t)
        self.bc2 = bias_correction(self.b2, self.t)
        self.decays = decayed(self.weight_decay, self.mask, grads)
        return grads

    def call_param(self, key, grad, param):
        if key not in self.m:
            self.m[key] = jnp.zeros_like(grad)
            self.n[key] = jnp.zeros_like(grad)
        square = grad * grad  # optax's tree.mul(g, g): g^2 of a complex g, not |g|^2
        self.m[key] = m = grad + self.b1 * self.m[key]
        self.n[key] = n = square + self.b2 * (self.n[key] - square)
        update = (m + self.alpha_t * grad) / (
            jnp.sqrt(debias(n, self.bc2) + self.eps_root) + self.eps
        )
        if key in self.decays:
            update = update + self.weight_decay * param
        return cast(scale(self.lr_t, update), grad.dtype)
