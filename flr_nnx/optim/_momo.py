"""MoMo and MoMo-Adam, model-based momentum step sizes that read the loss, on the hooks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import ScalarOrSchedule, cast, set_hypers, value_at


class Momo(Optimizer):
    r"""MoMo (Schaipp et al., 2023), the twin of ``optax.contrib.momo``.

    With :math:`\beta_t = 0` at the first step and :math:`\beta` after it, and
    inner products over all parameters:

    .. math::

        \bar f_t &= \beta_t \bar f_{t-1} + (1 - \beta_t) f(\theta_t), \quad
        d_t = \beta_t d_{t-1} + (1 - \beta_t) g_t, \quad
        \gamma_t = \beta_t \gamma_{t-1} + (1 - \beta_t) \langle g_t, \theta_t \rangle \\
        \tau_t &= \min\!\left(\alpha_t, \frac{\max\left((1 + \alpha_t\lambda)
            (\bar f_t - \ell_t - \gamma_t) + \langle d_t, \theta_t \rangle, 0\right)}
            {\|d_t\|^2}\right) \\
        \Delta\theta_t &= \frac{\alpha_t \lambda}{1 + \alpha_t \lambda} \theta_t + \tau_t d_t

    (:math:`\tau_t` uses 0 for the fraction where :math:`\|d_t\|^2 \le \epsilon_{mach}`).
    :math:`\ell_t` is ``lower_bound``, or with ``adapt_lower_bound`` an estimate that
    rises from it. The parameter becomes :math:`\theta_t - \Delta\theta_t`. Reads the
    loss :math:`f(\theta_t)`: pass it as ``loss=`` to ``NNXOptimizer.update`` or as
    ``value=`` to the optax ``update``. Bit-identical to ``optax.contrib.momo`` under
    ``jit``.

    Args:
        learning_rate: :math:`\alpha`, the largest step size; a float or a schedule.
        beta: :math:`\beta`, the momentum.
        lower_bound: :math:`\ell`, a lower bound on the loss.
        weight_decay: :math:`\lambda`.
        adapt_lower_bound: estimate the lower bound online.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.Momo())
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> loss = 0.5 * jnp.sum(params["w"] ** 2)  # gradient: params["w"]
        >>> updates, _ = tx.update(params, tx.init(params), params, value=loss)
        >>> updates["w"]  # the Polyak step 2.5 / 5 = 0.5 along the gradient
        Array([-0.5,  1. ], dtype=float32)
    """

    transient = ("tau", "decay")

    def __init__(
        self,
        learning_rate: ScalarOrSchedule = 1.0,
        beta: float = 0.9,
        lower_bound: float = 0.0,
        weight_decay: float = 0.0,
        adapt_lower_bound: bool = False,
    ):
        set_hypers(self, learning_rate=learning_rate, beta=beta, weight_decay=weight_decay)
        self.lower_bound, self.adapt_lower_bound = lower_bound, adapt_lower_bound
        self.count = jnp.zeros([], jnp.int32)
        self.exp_avg: dict = {}
        self.barf = None  # scalars in the parameters' lowest dtype, created at the first step
        self.gamma = None
        self.lb = None

    def start(self, grads, params):
        """Creates the state at the first step (its dtypes are the parameters')."""
        if self.barf is None:
            dtype = optax.tree.dtype(list(params.values()), "lowest")
            self.barf = jnp.zeros([], dtype=dtype)
            self.gamma = jnp.zeros([], dtype=dtype)
            self.lb = jnp.array(self.lower_bound, dtype=dtype)
        for key, grad in grads.items():
            if key not in self.exp_avg:
                self.exp_avg[key] = jnp.zeros_like(grad)

    def call_model(self, grads, params, loss, **_):
        # Everything is global (inner products over all parameters, in key order as
        # optax's leaves): the moments are updated here, call_param only combines.
        self.start(grads, params)
        count = self.count
        bt = jnp.where(count == 0, 0.0, self.beta)
        barf = bt * self.barf + (1 - bt) * jnp.asarray(loss, dtype=self.barf.dtype)
        self.exp_avg = {k: bt * self.exp_avg[k] + (1 - bt) * g for k, g in grads.items()}
        exp_avg, ps = list(self.exp_avg.values()), [params[k] for k in grads]
        gamma = bt * self.gamma + (1 - bt) * optax.tree.vdot(list(grads.values()), ps)
        exp_avg_norm = optax.tree.norm(exp_avg, squared=True)
        iprod = optax.tree.vdot(exp_avg, ps)
        alpha = value_at(self.learning_rate, count)
        wd, lower = self.weight_decay, self.lower_bound
        this_lb = self.lb
        if self.adapt_lower_bound:
            cap = (1 + alpha * wd) * (barf - gamma) + iprod
            # A branch, as optax's: it compiles to fewer kernels than a select.
            this_lb = jax.lax.cond(
                cap < (1 + alpha * wd) * self.lb,
                lambda: jnp.maximum(cap / (2 * (1 + alpha * wd)), lower),
                lambda: self.lb,
            )
        t1 = jnp.maximum((1 + alpha * wd) * (barf - this_lb - gamma) + iprod, 0.0) / exp_avg_norm
        t1 = jnp.where(exp_avg_norm <= jnp.finfo(float).eps, 0.0, t1)
        self.tau = jnp.minimum(alpha, t1)
        self.decay = (alpha * wd) / (1 + alpha * wd)
        if self.adapt_lower_bound:
            self.lb = jnp.maximum((barf + iprod - gamma) - (1 / 2) * self.tau * exp_avg_norm, lower)
        self.barf, self.gamma = barf, gamma
        self.count = optax.safe_increment(count)
        return grads

    def call_param(self, key, grad, param):
        # optax's update is -decay * param - tau * d; a hook returns its negative.
        return cast(self.decay * param + self.tau * self.exp_avg[key], grad.dtype)


class MomoAdam(Optimizer):
    r"""MoMo-Adam (Schaipp et al., 2023), the twin of ``optax.contrib.momo_adam``.

    MoMo's model-based step size on Adam's preconditioned direction, with
    :math:`P_t = \epsilon + \sqrt{v_t / (1 - \beta_2^t)}` and
    :math:`b_t = 1 - \beta_1^t`:

    .. math::

        \bar f_t &= \beta_1 \bar f_{t-1} + (1 - \beta_1) f(\theta_t), \quad
        d_t = \beta_1 d_{t-1} + (1 - \beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \gamma_t &= \beta_1 \gamma_{t-1} + (1 - \beta_1) \langle g_t, \theta_t \rangle \\
        \tau_t &= \min\!\left(\frac{\alpha_t}{b_t}, \frac{\max\left((1 + \alpha_t\lambda)
            (\bar f_t - b_t \ell_t - \gamma_t) + \langle d_t, \theta_t \rangle, 0\right)}
            {\langle d_t, d_t / P_t \rangle}\right) \\
        \Delta\theta_t &= \frac{\alpha_t \lambda}{1 + \alpha_t \lambda} \theta_t
            + \tau_t d_t / P_t

    Inner products are over all parameters. The parameter becomes
    :math:`\theta_t - \Delta\theta_t`. Reads the loss (see :class:`Momo`).
    Bit-identical to ``optax.contrib.momo_adam`` under ``jit``.

    Args:
        learning_rate: :math:`\alpha`, a float or a schedule.
        b1: :math:`\beta_1`, decay of the first moment (and of the loss average).
        b2: :math:`\beta_2`, decay of the second moment.
        eps: :math:`\epsilon`, added to the preconditioner.
        lower_bound: :math:`\ell`, a lower bound on the loss.
        weight_decay: :math:`\lambda`.
        adapt_lower_bound: estimate the lower bound online.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.MomoAdam(learning_rate=0.1))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> loss = 0.5 * jnp.sum(params["w"] ** 2)
        >>> updates, _ = tx.update(params, tx.init(params), params, value=loss)
        >>> updates["w"]
        Array([-0.09999934,  0.09999934], dtype=float32)
    """

    transient = ("tau", "decay", "precond")

    def __init__(
        self,
        learning_rate: ScalarOrSchedule = 1e-2,
        b1: float = 0.9,
        b2: float = 0.999,
        eps: float = 1e-8,
        lower_bound: float = 0.0,
        weight_decay: float = 0.0,
        adapt_lower_bound: bool = False,
    ):
        set_hypers(
            self, learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay
        )
        self.lower_bound, self.adapt_lower_bound = lower_bound, adapt_lower_bound
        self.count = jnp.zeros([], jnp.int32)
        self.exp_avg: dict = {}
        self.exp_avg_sq: dict = {}
        self.barf = None  # scalars in the parameters' lowest dtype, created at the first step
        self.gamma = None
        self.lb = None

    start = Momo.start

    def call_model(self, grads, params, loss, **_):
        self.start(grads, params)
        for key, grad in grads.items():
            if key not in self.exp_avg_sq:
                self.exp_avg_sq[key] = jnp.zeros_like(grad)
        b1, b2 = self.b1, self.b2
        count = self.count
        count_inc = optax.safe_increment(count)
        barf = b1 * self.barf + (1 - b1) * jnp.asarray(loss, dtype=self.barf.dtype)
        self.exp_avg = {k: b1 * self.exp_avg[k] + (1 - b1) * g for k, g in grads.items()}
        self.exp_avg_sq = {k: b2 * self.exp_avg_sq[k] + (1 - b2) * g * g for k, g in grads.items()}
        bc2 = jnp.asarray(1 - b2**count_inc, dtype=barf.dtype)
        self.precond = {k: self.eps + jnp.sqrt(v / bc2) for k, v in self.exp_avg_sq.items()}
        exp_avg, ps = list(self.exp_avg.values()), [params[k] for k in grads]
        weighted = [self.exp_avg[k] / self.precond[k] for k in grads]
        exp_avg_norm = optax.tree.vdot(exp_avg, weighted)
        gamma = b1 * self.gamma + (1 - b1) * optax.tree.vdot(list(grads.values()), ps)
        iprod = optax.tree.vdot(exp_avg, ps)
        alpha = value_at(self.learning_rate, count)
        bc1 = jnp.asarray(1 - b1**count_inc, dtype=barf.dtype)
        wd, lower = self.weight_decay, self.lower_bound
        this_lb = self.lb
        if self.adapt_lower_bound:
            cap = (1 + alpha * wd) * (barf - gamma) + iprod
            this_lb = jnp.where(
                cap < (1 + alpha * wd) * bc1 * self.lb,
                jnp.maximum(cap / (2 * bc1 * (1 + alpha * wd)), lower),
                self.lb,
            )
        t1 = (
            jnp.maximum((1 + alpha * wd) * (barf - bc1 * this_lb - gamma) + iprod, 0.0)
            / exp_avg_norm
        )
        t1 = jnp.where(exp_avg_norm <= jnp.finfo(float).eps, 0.0, t1)
        self.tau = jnp.minimum(alpha / bc1, t1)
        self.decay = (alpha * wd) / (1 + alpha * wd)
        if self.adapt_lower_bound:
            new_lb = ((barf + iprod - gamma) - (1 / 2) * self.tau * exp_avg_norm) / bc1
            self.lb = jnp.maximum(new_lb, lower)
        self.barf, self.gamma = barf, gamma
        self.count = count_inc
        return grads

    def call_param(self, key, grad, param):
        # optax's update is -decay * param - tau * d / P; a hook returns its negative.
        update = self.decay * param + self.tau * self.exp_avg[key] / self.precond[key]
        return cast(update, grad.dtype)
