"""Adan, written with the public hooks."""

from __future__ import annotations

from typing import ClassVar

import jax.numpy as jnp

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import (
    UNIT,
    Mask,
    MaskLike,
    ScalarOrSchedule,
    bias_correction,
    cast,
    debias,
    decayed,
    ema,
    scale,
    set_hypers,
    tick,
)


class Adan(Optimizer):
    r"""Adan, adaptive Nesterov momentum (Xie et al., 2022), the twin of ``optax.adan``.

    .. math::

        d_t &= g_t - g_{t-1} \quad (d_1 = 0) \\
        m_t &= (1 - \beta_1) g_t + \beta_1 m_{t-1} \\
        v_t &= (1 - \beta_2) d_t + \beta_2 v_{t-1} \\
        n_t &= (1 - \beta_3) \, (g_t + (1 - \beta_2) d_t)^2 + \beta_3 n_{t-1} \\
        u_t &= \frac{\hat m_t + (1 - \beta_2) \hat v_t}
            {\sqrt{\hat n_t + \bar\epsilon} + \epsilon} \\
        \Delta\theta_t &= \eta_t \, (u_t + \lambda_t \theta_{t-1})

    with each moment bias-corrected, :math:`\hat m_t = m_t / (1 - \beta_1^t)`
    and so on, and the decay only on the parameters ``mask`` selects. The
    parameter becomes :math:`\theta_t - \Delta\theta_t`. Bit-identical to
    ``optax.adan`` under ``jit``.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).
        b1: :math:`\beta_1`, decay of the gradient's average.
        b2: :math:`\beta_2`, decay of the gradient differences' average.
        b3: :math:`\beta_3`, decay of the second moment.
        eps: :math:`\epsilon`, added to the denominator outside the square root.
        eps_root: :math:`\bar\epsilon`, added inside the square root.
        weight_decay: :math:`\lambda`, a float or a schedule.
        mask: which parameters are decayed (see :class:`AdamW`).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.Adan(0.1))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]
        Array([-0.10000005,  0.10000005], dtype=float32)
    """

    transient = ("lr_t", "wd_t", "decays", "first", "bc1", "bc2", "bc3")

    hyper_bounds: ClassVar = {"b3": UNIT}

    def __init__(
        self,
        learning_rate: ScalarOrSchedule,
        b1: float = 0.98,
        b2: float = 0.92,
        b3: float = 0.99,
        eps: float = 1e-8,
        eps_root: float = 1e-8,
        weight_decay: ScalarOrSchedule = 0.0,
        mask: MaskLike = None,
    ):
        set_hypers(
            self,
            learning_rate=learning_rate,
            b1=b1,
            b2=b2,
            b3=b3,
            eps=eps,
            eps_root=eps_root,
            weight_decay=weight_decay,
        )
        self.mask = Mask(mask)
        self.count = jnp.zeros([], jnp.int32)
        self.m: dict = {}
        self.v: dict = {}
        self.n: dict = {}
        self.g: dict = {}

    def call_model(self, grads, **_):
        self.first = self.count == 0  # no previous gradient: the first difference is zero
        self.lr_t, self.wd_t = tick(self, self.learning_rate, self.weight_decay)
        self.decays = decayed(self.weight_decay, self.mask, grads)
        self.bc1 = bias_correction(self.b1, self.count)
        self.bc2 = bias_correction(self.b2, self.count)
        self.bc3 = bias_correction(self.b3, self.count)
        return grads

    def call_param(self, key, grad, param):
        if key not in self.m:
            for state in (self.m, self.v, self.n, self.g):
                state[key] = jnp.zeros_like(param)
        diff = jnp.where(self.first, jnp.zeros_like(grad), grad - self.g[key])
        # optax.tree.add_scale's scalar is an array: the same constant as optax's
        b2c = jnp.asarray(1 - self.b2)
        m = ema(self.m[key], grad, self.b1)
        v = ema(self.v[key], diff, self.b2)
        n = ema(self.n[key], _sq(grad + b2c * diff), self.b3)
        self.m[key], self.v[key], self.n[key], self.g[key] = m, v, n, grad
        update = debias(m, self.bc1) + b2c * debias(v, self.bc2)
        update = update / (jnp.sqrt(debias(n, self.bc3) + self.eps_root) + self.eps)
        if key in self.decays:
            update = update + self.wd_t * param
        return cast(scale(self.lr_t, update), param.dtype)


def _sq(x):
    """optax's per-element square: ``x**2`` of a real array, ``|x|^2`` of a complex one."""
    return x**2 if jnp.isrealobj(x) else (x.conj() * x).real ** 1
