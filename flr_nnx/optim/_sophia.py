"""Sophia, written with the public hooks: a Hessian estimate from the objective it is given."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from flr_nnx._errors import HyperparameterError
from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import (
    Mask,
    MaskLike,
    ScalarOrSchedule,
    cast,
    debias,
    decayed,
    ema,
    reject_complex,
    scale,
    set_hypers,
    value_at,
)


class Sophia(Optimizer):
    r"""Sophia-H (Liu et al., 2023), the twin of ``optax.contrib.sophia``.

    .. math::

        m_t &= (1 - \beta_1) g_t + \beta_1 m_{t-1}, \qquad
        u_t = \operatorname{clip}\!\left(\frac{m_t / (1 - \beta_1^t)}
            {\max(\gamma h_{t-1}, \epsilon)}, -\rho, \rho\right) \\
        h_t &= (1 - \beta_2)\, z \odot (\nabla^2 f(\theta_t)\, z) + \beta_2 h_{t-1}
            \quad\text{every } k \text{ steps (from the first), else } h_{t-1} \\
        \Delta\theta_t &= \eta_t \, (u_t + \lambda \theta_t)

    with :math:`z` a Rademacher vector (Hutchinson's estimator of the Hessian's diagonal),
    drawn from a PRNG key kept as state. The Hessian-vector product needs the objective
    :math:`f`: pass it to every ``update`` as ``obj_fn=`` (a function of the parameters,
    as optax's extra argument; at init the hooks run without it and the estimate is not
    computed). Bit-identical to ``optax.contrib.sophia`` under ``jit``.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).
        b1: :math:`\beta_1`, decay of the first moment.
        b2: :math:`\beta_2`, decay of the Hessian estimate.
        eps: :math:`\epsilon`, the smallest denominator.
        weight_decay: :math:`\lambda`.
        weight_decay_mask: which parameters are decayed (``None``: all), as optax.
        gamma: :math:`\gamma`, scales the Hessian estimate.
        clip_threshold: :math:`\rho`, or ``None`` for no clipping.
        update_interval: :math:`k`, the steps between Hessian estimates.
        hessian_diagonal_fn: only ``None`` (Hutchinson's estimator, optax's default).
        mu_dtype: dtype of the first moment (default: that of the parameter).
        verbose: accepted for optax's signature; the win rate is not printed.
        print_win_rate_every_n_steps: as ``verbose``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> f = lambda p: jnp.sum(p["w"] ** 2)  # Hessian diagonal: 2
        >>> tx = flr.as_optax(flr.optim.Sophia(0.1, weight_decay=0.0, gamma=1.0))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update(jax.grad(f)(params), tx.init(params), params, obj_fn=f)
        >>> updates["w"]  # no Hessian estimate before this step: clipped at 1
        Array([-0.1,  0.1], dtype=float32)
    """

    transient = ("lr_t", "bc1", "decayed", "nu_before")

    def __init__(
        self,
        learning_rate: ScalarOrSchedule,
        b1: float = 0.965,
        b2: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 1e-4,
        weight_decay_mask: MaskLike = None,
        gamma: float = 0.01,
        clip_threshold: float | None = 1.0,
        update_interval: int = 10,
        hessian_diagonal_fn: Any = None,
        mu_dtype: Any | None = None,
        verbose: bool = False,
        print_win_rate_every_n_steps: int = 0,
    ):
        if hessian_diagonal_fn is not None:
            raise HyperparameterError(
                f"{type(self).__name__}(hessian_diagonal_fn=...): only Hutchinson's estimator "
                "(optax's default) is available. Fix: pass hessian_diagonal_fn=None."
            )
        set_hypers(self, learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, gamma=gamma)
        set_hypers(self, weight_decay=weight_decay)
        self.clip_threshold, self.update_interval = clip_threshold, update_interval
        self.weight_decay_mask = Mask(weight_decay_mask)
        self.mu_dtype = None if mu_dtype is None else jax.dtypes.canonicalize_dtype(mu_dtype)
        self.verbose, self.print_win_rate_every_n_steps = verbose, print_win_rate_every_n_steps
        self.count = jnp.zeros([], jnp.int32)
        self.hessian_key = jax.random.PRNGKey(0)  # optax's default seed, a raw key
        self.mu: dict = {}
        self.nu: dict = {}

    def call_model(self, grads, params, obj_fn, **_):
        for key, grad in grads.items():
            if self.clip_threshold is not None:  # optax's jnp.clip raises on complex
                reject_complex(
                    type(self).__name__,
                    key,
                    grad,
                    "its step is clipped to [-clip_threshold, clip_threshold], and complex "
                    "numbers have no order",
                    "pass clip_threshold=None, or keep this parameter real.",
                )
            if key not in self.mu:
                self.mu[key] = jnp.zeros_like(grad, dtype=self.mu_dtype)
                self.nu[key] = jnp.zeros_like(grad)
        # The new estimate enters the next steps: call_param reads this step's h_{t-1}.
        nu_before = dict(self.nu)
        keys = list(grads)
        if obj_fn is None:  # at init (optax's extras are unknown): only the state's form
            estimate = lambda k, n: (jnp.copy(k), n)  # noqa: E731  (a new value: state)
        else:
            estimate = lambda k, n: self._hessian_step(k, n, keys, params, obj_fn)  # noqa: E731
        # Assigned at every step, init included, so that the key is state.
        self.hessian_key, nu = jax.lax.cond(
            self.count % self.update_interval == 0,
            estimate,
            lambda k, n: (k, n),
            self.hessian_key,
            nu_before,
        )
        for key in keys:  # in place: the dict's first values are the initial state
            self.nu[key] = nu[key]
        self.nu_before = nu_before
        self.lr_t = value_at(self.learning_rate, self.count)  # read before the count advances
        self.count = optax.safe_increment(self.count)
        self.bc1 = 1 - self.b1**self.count
        self.decayed = decayed(self.weight_decay, self.weight_decay_mask, grads)
        return grads

    def _hessian_step(self, key, nu, keys, params, obj_fn):
        """Hutchinson's estimate :math:`z \\odot \\nabla^2 f\\, z`, averaged into ``nu``."""
        key, subkey = jax.random.split(key)
        lowest = optax.tree.dtype([params[k] for k in keys], "lowest")
        signs = [
            jax.random.rademacher(k, params[p].shape, jnp.float32).astype(lowest)
            for k, p in zip(jax.random.split(subkey, len(keys)), keys, strict=True)
        ]

        def objective(leaves):
            return obj_fn(dict(zip(keys, leaves, strict=True)))

        hvp = jax.jvp(jax.grad(objective), ([params[k] for k in keys],), (signs,))[1]
        return key, {k: ema(nu[k], h * r, self.b2) for k, h, r in zip(keys, hvp, signs)}

    def call_param(self, key, grad, param):
        mu = ema(self.mu[key], grad, self.b1)
        update = debias(mu, self.bc1) / jnp.maximum(self.gamma * self.nu_before[key], self.eps)
        if self.clip_threshold is not None:
            update = jnp.clip(update, -self.clip_threshold, self.clip_threshold)
        self.mu[key] = cast(mu, self.mu[key].dtype)
        if key in self.decayed:
            update = update + self.weight_decay * param
        return cast(scale(self.lr_t, update), grad.dtype)
