"""D-Adaptation AdamW and Prodigy, learning-rate-free Adam variants, on the hooks."""

from __future__ import annotations

import jax.numpy as jnp
import optax

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import ScalarOrSchedule, cast, set_hypers, value_at


class _DistanceEstimate(Optimizer):
    """What DAdaptAdamW and Prodigy share: their state, created at the first step."""

    transient = ("dlr",)

    def __init__(self, learning_rate, betas, eps, estim_lr0, weight_decay):
        b1, b2 = betas
        set_hypers(
            self,
            learning_rate=learning_rate,
            b1=b1,
            b2=b2,
            eps=eps,
            estim_lr0=estim_lr0,
            weight_decay=weight_decay,
        )
        self.count = jnp.zeros([], jnp.int32)
        self.exp_avg: dict = {}
        self.exp_avg_sq: dict = {}
        self.grad_sum: dict = {}
        self.estim_lr = None  # scalars in the parameters' lowest dtype, created at the first step
        self.numerator_weighted = None

    def start(self, grads, params):
        """Creates the state at the first step; returns this step's ``(schedule, bc)``."""
        if self.estim_lr is None:
            dtype = optax.tree.dtype(list(params.values()), "lowest")
            self.estim_lr = jnp.asarray(self.estim_lr0, dtype=dtype)
            self.numerator_weighted = jnp.zeros([], dtype=dtype)
        for key, grad in grads.items():
            if key not in self.exp_avg:
                self.exp_avg[key] = jnp.zeros_like(grad)
                self.exp_avg_sq[key] = jnp.zeros_like(grad)
                self.grad_sum[key] = jnp.zeros_like(grad)
        sched = value_at(self.learning_rate, self.count)
        self.count = optax.safe_increment(self.count)
        bc = ((1 - self.b2**self.count) ** 0.5) / (1 - self.b1**self.count)
        return sched, bc


class DAdaptAdamW(_DistanceEstimate):
    r"""D-Adaptation AdamW (Defazio & Mishchenko, 2023), the twin of ``optax.contrib.dadapt_adamw``.

    With :math:`\sqrt{\beta_2}` written :math:`s`, the step size
    :math:`\delta_t = d_{t-1} \eta_t \sqrt{1 - \beta_2^t} / (1 - \beta_1^t)`:

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) \delta_t g_t, \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        r_t &= s\, r_{t-1} + (1 - s) \delta_t
            \langle g_t, u_{t-1} / (\sqrt{v_{t-1}} + \epsilon) \rangle, \quad
        u_t = s\, u_{t-1} + (1 - s) \delta_t g_t \\
        d_t &= \max\left(d_{t-1}, \frac{r_t}{(1 - s) \|u_t\|_1}\right), \qquad
        \Delta\theta_t = \lambda \delta_t \theta_t + m_t / (\sqrt{v_t} + \epsilon)

    Sums and norms are over all parameters; :math:`d_0` is ``estim_lr0``. The parameter
    becomes :math:`\theta_t - \Delta\theta_t`. Bit-identical to
    ``optax.contrib.dadapt_adamw`` under ``jit``.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (1 keeps the estimate).
        betas: :math:`(\beta_1, \beta_2)`, decays of the moments.
        eps: :math:`\epsilon`, added to the denominator.
        estim_lr0: :math:`d_0`, the initial distance estimate.
        weight_decay: :math:`\lambda`.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.DAdaptAdamW())
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]
        Array([-9.999927e-07,  9.999927e-07], dtype=float32)
    """

    def __init__(
        self,
        learning_rate: ScalarOrSchedule = 1.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        estim_lr0: float = 1e-6,
        weight_decay: float = 0.0,
    ):
        super().__init__(learning_rate, betas, eps, estim_lr0, weight_decay)

    def call_model(self, grads, params, **_):
        # The estimate reads sums over all parameters (in key order, as optax's
        # leaves), so the sums' moment u is updated here; call_param does the rest.
        sched, bc = self.start(grads, params)
        sb2 = self.b2 ** (0.5)
        dlr = self.estim_lr * sched * bc
        self.dlr = dlr = dlr.astype(self.numerator_weighted.dtype)
        s_weighted = [self.grad_sum[k] / (jnp.sqrt(self.exp_avg_sq[k]) + self.eps) for k in grads]
        numerator_acum = optax.tree.vdot(list(grads.values()), s_weighted)
        self.grad_sum = {k: sb2 * self.grad_sum[k] + (1 - sb2) * dlr * g for k, g in grads.items()}
        grad_sum_l1 = optax.tree.sum([jnp.abs(s) for s in self.grad_sum.values()])
        self.numerator_weighted = sb2 * self.numerator_weighted + (1 - sb2) * dlr * numerator_acum
        d_estimate = self.numerator_weighted / ((1 - sb2) * grad_sum_l1)
        self.estim_lr = jnp.maximum(self.estim_lr, d_estimate)
        return grads

    def call_param(self, key, grad, param):
        b1, b2 = self.b1, self.b2
        ea = self.exp_avg[key] = b1 * self.exp_avg[key] + (1 - b1) * self.dlr * grad
        eas = self.exp_avg_sq[key] = b2 * self.exp_avg_sq[key] + (1 - b2) * grad * grad
        # optax's update is -wd * dlr * param - m / (sqrt(v) + eps); a hook returns its negative.
        return cast(
            self.weight_decay * self.dlr * param + ea / (jnp.sqrt(eas) + self.eps), grad.dtype
        )


class Prodigy(_DistanceEstimate):
    r"""Prodigy (Mishchenko & Defazio, 2023), the twin of ``optax.contrib.prodigy``.

    With :math:`\delta_t = d_{t-1} \eta_t \sqrt{1 - \beta_2^t} / (1 - \beta_1^t)` and
    the initial parameters :math:`\theta_0`:

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) d_{t-1} g_t, \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) d_{t-1}^2 g_t^2 \\
        r_t &= \beta_3 r_{t-1} + \frac{d_{t-1}}{d_0} \delta_t
            \langle g_t, \theta_0 - \theta_t \rangle, \quad
        u_t = \beta_3 u_{t-1} + \frac{\delta_t}{d_0} d_{t-1} g_t \\
        d_t &= \max\left(d_{t-1}, c \, \frac{r_t}{\|u_t\|_1}\right), \qquad
        \Delta\theta_t = \lambda \delta_t \theta_t + \delta_t m_t / (\sqrt{v_t} + d_t \epsilon)

    Sums and norms are over all parameters; :math:`d_0` is ``estim_lr0``,
    :math:`c` is ``estim_lr_coef``, :math:`\beta_3` defaults to :math:`\sqrt{\beta_2}`.
    With ``safeguard_warmup``, :math:`u_t` takes :math:`d_{t-1}` for :math:`\delta_t`.
    The parameter becomes :math:`\theta_t - \Delta\theta_t`. Bit-identical to
    ``optax.contrib.prodigy`` under ``jit``.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (1 keeps the estimate).
        betas: :math:`(\beta_1, \beta_2)`, decays of the moments.
        beta3: :math:`\beta_3`, decay of the estimate's sums (``None``: :math:`\sqrt{\beta_2}`).
        eps: :math:`\epsilon`, added to the denominator (times :math:`d_t`).
        estim_lr0: :math:`d_0`, the initial distance estimate.
        estim_lr_coef: :math:`c`, scales the estimate.
        weight_decay: :math:`\lambda`.
        safeguard_warmup: leave the learning rate out of :math:`u_t`.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.Prodigy())
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]
        Array([-9.999926e-07,  9.999926e-07], dtype=float32)
    """

    def __init__(
        self,
        learning_rate: ScalarOrSchedule = 1.0,
        betas: tuple[float, float] = (0.9, 0.999),
        beta3: float | None = None,
        eps: float = 1e-8,
        estim_lr0: float = 1e-6,
        estim_lr_coef: float = 1.0,
        weight_decay: float = 0.0,
        safeguard_warmup: bool = False,
    ):
        super().__init__(learning_rate, betas, eps, estim_lr0, weight_decay)
        set_hypers(self, beta3=beta3, estim_lr_coef=estim_lr_coef)
        self.safeguard_warmup = safeguard_warmup
        self.params0: dict = {}

    def call_model(self, grads, params, **_):
        sched, bc = self.start(grads, params)
        for key in grads:
            if key not in self.params0:  # the distance is measured from the initial parameters
                self.params0[key] = params[key]
        beta3 = self.b2**0.5 if self.beta3 is None else self.beta3
        estim_lr, estim_lr0 = self.estim_lr, self.estim_lr0
        self.dlr = dlr = jnp.asarray(estim_lr * sched * bc, dtype=estim_lr.dtype)
        dg = {k: estim_lr * g for k, g in grads.items()}
        param_diff = [self.params0[k] - params[k] for k in grads]
        numerator_acum = optax.tree.vdot(list(grads.values()), param_diff)
        step = estim_lr if self.safeguard_warmup else dlr
        self.grad_sum = {k: beta3 * self.grad_sum[k] + step * d / estim_lr0 for k, d in dg.items()}
        numerator_weighted = beta3 * self.numerator_weighted
        numerator_weighted += (estim_lr / estim_lr0) * dlr * numerator_acum
        self.numerator_weighted = numerator_weighted
        denominator = optax.tree.sum([jnp.abs(s) for s in self.grad_sum.values()])
        lr_estimate = self.estim_lr_coef * numerator_weighted / denominator
        self.estim_lr = jnp.maximum(estim_lr, lr_estimate)
        # call_param's moments take the scaled gradients d_{t-1} g_t.
        return dg

    def call_param(self, key, grad, param):
        b1, b2 = self.b1, self.b2
        ea = self.exp_avg[key] = b1 * self.exp_avg[key] + (1 - b1) * grad
        eas = self.exp_avg_sq[key] = b2 * self.exp_avg_sq[key] + (1 - b2) * grad * grad
        # optax's update is -wd * dlr * param - dlr * m / (sqrt(v) + d_t eps); a hook
        # returns its negative.
        denominator = jnp.sqrt(eas) + self.estim_lr * self.eps
        return cast(self.weight_decay * self.dlr * param + self.dlr * ea / denominator, grad.dtype)
