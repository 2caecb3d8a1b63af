"""Noisy SGD, written with the public hooks: randomness as state."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import (
    ScalarOrSchedule,
    advance,
    cast,
    needs_count,
    prng_key,
    scale,
    set_hypers,
)


class NoisySGD(Optimizer):
    r"""SGD with annealed Gaussian gradient noise (Neelakantan et al., 2015): ``optax.noisy_sgd``.

    .. math::

        \sigma_t &= \sqrt{\eta / (t + 1)^\gamma}, \qquad
        \xi_t \sim \mathcal N(0, 1) \\
        \Delta\theta_t &= \alpha_t \, (g_t + \sigma_t \, \xi_t)

    The parameter becomes :math:`\theta_t - \Delta\theta_t`. The noise comes from a PRNG
    key kept as state (``rng_key``) that advances at every step: split into the next key
    and one sample key, which is split into one key per parameter in key order, exactly
    as optax does, so the noise and the steps are bit-identical to ``optax.noisy_sgd``
    under ``jit`` for the same ``key``.

    Args:
        learning_rate: :math:`\alpha`, a float or a schedule (a callable of the step count).
        eta: :math:`\eta`, the initial variance of the noise.
        gamma: :math:`\gamma`, the decay exponent of the variance.
        key: a PRNG key or an integer seed (optax warns and uses 0 when it is missing).
        seed: deprecated spelling of ``key`` (as in optax).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.NoisySGD(0.1, eta=0.0, key=0))  # no noise
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> updates["w"]
        Array([-0.05,  0.05], dtype=float32)
    """

    transient = ("lr_t", "noise")

    def __init__(
        self,
        learning_rate: ScalarOrSchedule,
        eta: float = 0.01,
        gamma: float = 0.55,
        key: jax.Array | int | None = None,
        *,
        seed: int | None = None,
    ):
        set_hypers(self, learning_rate=learning_rate)
        self.eta, self.gamma = eta, gamma
        self.noise_count = jnp.zeros([], jnp.int32)
        self.rng_key = prng_key(key, seed)  # state: the key advances at every step
        if needs_count(learning_rate):
            self.count = jnp.zeros([], jnp.int32)

    def call_model(self, grads, **_):
        # optax.add_noise: the standard deviation and the keys once per step, for all
        # parameters; then optax.scale_by_learning_rate.
        self.noise_count = optax.safe_increment(self.noise_count)
        std = jnp.sqrt(self.eta / self.noise_count**self.gamma)
        self.rng_key, sample_key = jax.random.split(self.rng_key)
        keys = jax.random.split(sample_key, len(grads))
        self.noise = {
            key: std * jax.random.normal(k, grad.shape, grad.dtype)
            for k, (key, grad) in zip(keys, grads.items(), strict=True)
        }
        self.lr_t = advance(self, self.learning_rate)
        return grads

    def call_param(self, key, grad, **_):
        return cast(scale(self.lr_t, grad + self.noise[key]), grad.dtype)
