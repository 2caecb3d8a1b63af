"""DPSGD, written with the public hooks: per-example gradients and randomness as state."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from flr_nnx._optimizer import Key, Optimizer
from flr_nnx.helpers import ScalarOrSchedule, prng_key
from flr_nnx.optim._sgd import SGD


def aggregate(opt: Any, grads: dict[Key, jax.Array]) -> dict[Key, jax.Array]:
    """Clips each example's gradient to ``opt.l2_norm_clip``, sums, adds noise, averages.

    ``optax.contrib.differentially_private_aggregate``'s update, op for op; advances
    ``opt.rng_key`` (split into the next key and one key per parameter, in key order).
    """
    per_example = list(grads.values())
    batch = per_example[0].shape[0]
    # The global norm of each example's gradient (over all parameters).
    norms = jax.vmap(optax.tree.norm)(per_example)
    multipliers = jnp.nan_to_num(jnp.minimum(opt.l2_norm_clip / norms, 1.0), nan=1.0)
    opt.rng_key, *keys = jax.random.split(opt.rng_key, len(per_example) + 1)
    std = opt.l2_norm_clip * opt.noise_multiplier
    out = {}
    for (key, g), k in zip(grads.items(), keys, strict=True):
        clipped = jnp.tensordot(multipliers, g, axes=1)
        out[key] = (clipped + std * jax.random.normal(k, clipped.shape, clipped.dtype)) / batch
    return out


class DifferentiallyPrivateAggregate(Optimizer):
    r"""The per-example aggregation of DPSGD: ``optax.contrib.differentially_private_aggregate``.

    Takes per-example gradients :math:`g_{t,i}` (a leading batch axis of size
    :math:`B`; it declares ``per_example_grads = True``) and returns

    .. math::

        c_i &= \min\big(1, C / \|g_{t,i}\|\big) \quad (1 \text{ where } g_{t,i} = 0) \\
        \Delta_t &= \frac{1}{B} \Big(\sum_i c_i \, g_{t,i} + C \sigma \, \xi_t\Big),
        \qquad \xi_t \sim \mathcal N(0, 1)

    (:math:`\|\cdot\|` the norm over all parameters of one example) as ordinary
    gradients, for the optimizers after it in a :class:`~flr_nnx.compose.Chain`
    (it must be the first link). The noise comes from a PRNG key kept as state
    (``rng_key``), split as optax does: bit-identical under ``jit`` for the same key.

    Args:
        l2_norm_clip: :math:`C`, the largest norm of one example's gradient.
        noise_multiplier: :math:`\sigma`, the noise's standard deviation over :math:`C`.
        key: a PRNG key or an integer seed (optax warns and uses 0 when it is missing).
        seed: deprecated spelling of ``key`` (as in optax).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.DifferentiallyPrivateAggregate(1.0, 0.0, key=0))
        >>> params = {"w": jnp.zeros(2)}
        >>> per_example = {"w": jnp.array([[3.0, 4.0], [0.1, 0.0]])}  # a batch of 2
        >>> tx.update(per_example, tx.init(params), params)[0]["w"]
        Array([0.35000002, 0.4       ], dtype=float32)
    """

    optax_sign = "gradient"  # optax's aggregate returns gradients, for a later link
    per_example_grads = True

    def __init__(
        self,
        l2_norm_clip: float,
        noise_multiplier: float,
        key: jax.Array | int | None = None,
        *,
        seed: int | None = None,
    ):
        self.l2_norm_clip, self.noise_multiplier = l2_norm_clip, noise_multiplier
        self.rng_key = prng_key(key, seed)  # state: the key advances at every step

    def call_model(self, grads, **_):
        return aggregate(self, grads)


class DPSGD(SGD):
    r"""Differentially private SGD (Abadi et al., 2016), the twin of ``optax.contrib.dpsgd``.

    Takes per-example gradients :math:`g_{t,i}` (a leading batch axis of size
    :math:`B`: it declares ``per_example_grads = True``), clips each example's
    gradient to the norm :math:`C`, averages them with Gaussian noise, and steps
    as :class:`SGD` (with optional momentum :math:`\mu`):

    .. math::

        c_i &= \min\big(1, C / \|g_{t,i}\|\big) \quad (1 \text{ where } g_{t,i} = 0) \\
        \bar g_t &= \frac{1}{B} \Big(\sum_i c_i \, g_{t,i} + C \sigma \, \xi_t\Big),
        \qquad \xi_t \sim \mathcal N(0, 1) \\
        v_t &= \bar g_t + \mu \, v_{t-1}, \qquad \Delta\theta_t = \eta_t \, v_t

    (:math:`\|\cdot\|` is the norm over all parameters of one example; without
    momentum :math:`\Delta\theta_t = \eta_t \bar g_t`.) The parameter becomes
    :math:`\theta_t - \Delta\theta_t`, of the parameter's shape. The noise comes
    from a PRNG key kept as state (``rng_key``), split as optax splits it:
    bit-identical to ``optax.contrib.dpsgd`` under ``jit`` for the same seed
    (optax's ``dpsgd`` warns that ``seed`` is deprecated; this twin does not).

    Args:
        learning_rate: :math:`\eta`, a float or a schedule (a callable of the step count).
        l2_norm_clip: :math:`C`, the largest norm of one example's gradient.
        noise_multiplier: :math:`\sigma`, the noise's standard deviation over :math:`C`.
        seed: the seed of the noise's PRNG key.
        momentum: :math:`\mu`; ``None`` for no momentum.
        nesterov: use Nesterov momentum.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.DPSGD(0.1, l2_norm_clip=1.0, noise_multiplier=0.0,
        ...                                   seed=0))
        >>> params = {"w": jnp.zeros(2)}
        >>> loss = lambda p, x: jnp.sum(p["w"] * x)
        >>> batch = jnp.array([[3.0, 4.0], [0.1, 0.0]])
        >>> per_example = jax.vmap(jax.grad(loss), in_axes=(None, 0))(params, batch)
        >>> per_example["w"].shape
        (2, 2)
        >>> tx.update(per_example, tx.init(params), params)[0]["w"]
        Array([-0.035, -0.04 ], dtype=float32)
    """

    per_example_grads = True
    elementwise = False  # the clipping norm is over all parameters: not SGD's contract

    def __init__(
        self,
        learning_rate: ScalarOrSchedule,
        l2_norm_clip: float,
        noise_multiplier: float,
        seed: int,
        momentum: float | None = None,
        nesterov: bool = False,
    ):
        super().__init__(learning_rate, momentum=momentum, nesterov=nesterov)
        self.l2_norm_clip, self.noise_multiplier = l2_norm_clip, noise_multiplier
        self.rng_key = prng_key(seed)  # state: the key advances at every step

    def call_model(self, grads, **extra):
        return super().call_model(aggregate(self, grads), **extra)
