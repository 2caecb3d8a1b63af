"""Lion, written with the public hooks."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import (
    Mask,
    MaskLike,
    ScalarOrSchedule,
    cast,
    check_complex_state,
    decayed,
    ema,
    scale,
    set_hypers,
    tick,
)


class Lion(Optimizer):
    r"""Lion, the evolved sign momentum (Chen et al., 2023), the twin of ``optax.lion``.

    .. math::

        c_t &= \operatorname{sign}\big((1 - \beta_1) g_t + \beta_1 m_{t-1}\big) \\
        m_t &= (1 - \beta_2) g_t + \beta_2 m_{t-1} \\
        \Delta\theta_t &= \eta_t \, (c_t + \lambda_t \theta_{t-1})

    The decay :math:`\lambda_t \theta_{t-1}` is on the parameter, only for
    the parameters ``mask`` selects. The parameter becomes
    :math:`\theta_t - \Delta\theta_t`. Bit-identical to
    ``optax.lion`` under ``jit``, except on parameters narrower than float32
    with a ``weight_decay`` schedule or a float32 ``mu_dtype``: optax's update
    is then float32, and a hook returns it rounded to the parameter's dtype.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).
        b1: :math:`\beta_1`, interpolation of the update direction.
        b2: :math:`\beta_2`, decay of the momentum.
        mu_dtype: dtype of the momentum (default: that of the parameter).
        weight_decay: :math:`\lambda`, a float or a schedule.
        mask: which parameters are decayed: ``None`` (all), a pytree of bools
            like the parameters (or a prefix), a callable of the parameters
            returning one (optax's convention), or
            :func:`flr_nnx.helpers.key_mask` of a predicate on the parameter key.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.Lion(0.1, weight_decay=0.0))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]
        Array([-0.1,  0.1], dtype=float32)
    """

    transient = ("lr_t", "wd_t", "decayed")

    def __init__(
        self,
        learning_rate: ScalarOrSchedule,
        b1: float = 0.9,
        b2: float = 0.99,
        mu_dtype: Any | None = None,
        weight_decay: ScalarOrSchedule = 1e-3,
        mask: MaskLike = None,
    ):
        set_hypers(self, learning_rate=learning_rate, b1=b1, b2=b2, weight_decay=weight_decay)
        self.mu_dtype = None if mu_dtype is None else jax.dtypes.canonicalize_dtype(mu_dtype)
        self.mask = Mask(mask)
        self.count = jnp.zeros([], jnp.int32)
        self.mu: dict = {}

    def call_model(self, grads, **_):
        self.lr_t, self.wd_t = tick(self, self.learning_rate, self.weight_decay)
        self.decayed = decayed(self.weight_decay, self.mask, grads)
        return grads

    def call_param(self, key, grad, param):
        check_complex_state(type(self).__name__, key, grad, self.mu_dtype, "mu_dtype", self.mu)
        if key not in self.mu:
            self.mu[key] = jnp.zeros_like(grad, dtype=self.mu_dtype)
        update = jnp.sign((1.0 - self.b1) * grad + self.b1 * self.mu[key])
        mu = ema(self.mu[key], grad, self.b2)
        if key in self.decayed:
            update = update + self.wd_t * param
        self.mu[key] = cast(mu, self.mu[key].dtype)
        return cast(scale(self.lr_t, update), grad.dtype)
