"""Optimistic gradient descent and optimistic Adam, written with the public hooks."""

from __future__ import annotations

from typing import Any, ClassVar

import jax.numpy as jnp

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import (
    NONNEGATIVE,
    ScalarOrSchedule,
    advance,
    cast,
    needs_count,
    scale,
    set_hypers,
)
from flr_nnx.optim._adam import Adam


class OptimisticGradientDescent(Optimizer):
    r"""Optimistic gradient descent (Mokhtari et al., 2019), the twin of
    ``optax.optimistic_gradient_descent``.

    .. math::

        \Delta\theta_t = \eta_t \left( (\alpha + \beta) g_t - \beta g_{t-1} \right)

    with :math:`g_0 = g_1` (the first step has no previous gradient). For
    min-max games; :math:`\alpha = \beta = 1` is the optimistic step. The
    parameter becomes :math:`\theta_t - \Delta\theta_t`. Bit-identical to
    ``optax.optimistic_gradient_descent`` under ``jit``.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).
        alpha: :math:`\alpha`, the weight of the current gradient.
        beta: :math:`\beta`, the weight of the correction by the previous gradient.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.OptimisticGradientDescent(0.1))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> state = tx.init(params)
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, state, params)
        >>> updates, state = tx.update({"w": jnp.array([1.0, 0.0])}, state, params)
        >>> updates["w"]  # 0.1 * (2 g_2 - g_1)
        Array([-0.15, -0.05], dtype=float32)
    """

    transient = ("lr_t", "first")

    # beta weighs a gradient here, it is not a decay rate.
    hyper_bounds: ClassVar = {"beta": NONNEGATIVE}

    elementwise = True

    def __init__(self, learning_rate: ScalarOrSchedule, alpha: float = 1.0, beta: float = 1.0):
        set_hypers(self, learning_rate=learning_rate)
        _init_optimistic(self, alpha, beta)
        if needs_count(learning_rate):
            self.count = jnp.zeros([], jnp.int32)

    def call_model(self, grads, **_):
        _count_optimistic(self)
        self.lr_t = advance(self, self.learning_rate)
        return grads

    def call_param(self, key, grad, **_):
        return cast(scale(self.lr_t, _optimistic(self, key, grad)), grad.dtype)


class OptimisticAdamV2(Adam):
    r"""Optimistic Adam (Daskalakis et al., 2018), the twin of ``optax.optimistic_adam_v2``.

    The optimistic step of :class:`OptimisticGradientDescent` applied to
    Adam's step :math:`a_t` (with Nesterov momentum by default):

    .. math::

        a_t &= \hat m_t / (\sqrt{\hat v_t + \bar\epsilon} + \epsilon) \\
        \Delta\theta_t &= \eta_t \left( (\alpha + \beta) a_t - \beta a_{t-1} \right)

    with :math:`a_0 = a_1` and :math:`\hat m_t, \hat v_t` as in :class:`Adam`.
    The parameter becomes :math:`\theta_t - \Delta\theta_t`. Bit-identical to
    ``optax.optimistic_adam_v2`` under ``jit``.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).
        alpha: :math:`\alpha`, the weight of the current step.
        beta: :math:`\beta`, the weight of the correction by the previous step.
        b1: :math:`\beta_1`, decay of the first moment.
        b2: :math:`\beta_2`, decay of the second moment.
        eps: :math:`\epsilon`, added to the denominator outside the square root.
        eps_root: :math:`\bar\epsilon`, added inside the square root.
        mu_dtype: dtype of the first moment (default: that of the parameter).
        nesterov: use Nesterov momentum.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.OptimisticAdamV2(0.1))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]
        Array([-0.14736743,  0.14736743], dtype=float32)
    """

    # Adam's per-step values, and whether this is the first step.
    transient = (*Adam.transient, "first")

    # beta weighs a step here, it is not a decay rate.
    hyper_bounds: ClassVar = {"beta": NONNEGATIVE}

    def __init__(
        self,
        learning_rate: ScalarOrSchedule,
        *,
        alpha: float = 1.0,
        beta: float = 1.0,
        b1: float = 0.9,
        b2: float = 0.999,
        eps: float = 1e-8,
        eps_root: float = 0.0,
        mu_dtype: Any | None = None,
        nesterov: bool = True,
    ):
        super().__init__(learning_rate, b1, b2, eps, eps_root, mu_dtype=mu_dtype, nesterov=nesterov)
        _init_optimistic(self, alpha, beta)

    def call_model(self, grads, **_):
        grads = super().call_model(grads=grads)
        _count_optimistic(self)
        return grads

    def call_param(self, key, grad, **_):
        update = _optimistic(self, key, self.direction(key, grad))
        return cast(scale(self.lr_t, update), grad.dtype)


# optax.scale_by_optimistic_gradient, shared by both: its hyperparameters and state,
# its per-step flag, and its step on one parameter.


def _init_optimistic(opt: Any, alpha: float, beta: float) -> None:
    set_hypers(opt, alpha=alpha, beta=beta)
    opt.is_initial_step = jnp.array(True)
    opt.previous_gradient: dict = {}


def _count_optimistic(opt: Any) -> None:
    opt.first = opt.is_initial_step
    opt.is_initial_step = jnp.array(False)


def _optimistic(opt: Any, key: Any, update: Any) -> Any:
    if key not in opt.previous_gradient:
        opt.previous_gradient[key] = jnp.zeros_like(update)
    previous = jnp.where(opt.first, update, opt.previous_gradient[key])
    opt.previous_gradient[key] = cast(update, opt.previous_gradient[key].dtype)
    return (opt.alpha + opt.beta) * update - opt.beta * previous
