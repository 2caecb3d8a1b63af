"""Building blocks for :class:`~flr_nnx.compose.Chain`, each the twin of an optax transformation.

Inside a chain the links pass on *descent directions* (positive means descent):
the gradient-like blocks (clipping, weight decay) return what their optax twin
returns, and :class:`ScaleByLearningRate` multiplies by ``+learning_rate``; the
bridge negates once at the end, which equals optax's ``-learning_rate`` bit for bit.
The gradient-like blocks declare ``optax_sign = "gradient"``: alone under
:func:`~flr_nnx.as_optax` they return what their twin returns, not negated, for a
later link of an ``optax.chain`` to scale.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import (
    Mask,
    MaskLike,
    ScalarOrSchedule,
    advance,
    decayed,
    global_norm,
    needs_count,
    reject_complex,
    scale,
    set_hypers,
)


class ClipByGlobalNorm(Optimizer):
    r"""Clips the gradients by their global norm, the twin of ``optax.clip_by_global_norm``.

    .. math::

        \|g\| = \sqrt{\textstyle\sum_k \sum_i g_{k,i}^2}, \qquad
        u_k = \begin{cases} g_k & \|g\| < c \\ (g_k / \|g\|)\, c & \text{otherwise} \end{cases}

    The norm is taken over every parameter, in key order, as optax does over the
    pytree's leaves.

    Args:
        max_norm: :math:`c`, the largest global norm let through.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.ClipByGlobalNorm(1.0))  # optax.clip_by_global_norm(1.0)
        >>> params = {"w": jnp.zeros(2)}
        >>> updates, _ = tx.update({"w": jnp.array([3.0, 4.0])}, tx.init(params), params)
        >>> updates["w"]  # the clipped gradient, of norm 1, for a later link to scale
        Array([0.6, 0.8], dtype=float32)
    """

    optax_sign = "gradient"  # optax.clip_by_global_norm returns gradients
    transient = ("g_norm", "trigger")

    def __init__(self, max_norm: float):
        set_hypers(self, max_norm=max_norm)

    def call_model(self, grads, **_):
        self.g_norm = global_norm(grads)  # optax.tree.norm's sequence: bit-identical
        self.trigger = jnp.squeeze(self.g_norm < self.max_norm)
        return grads

    def call_param(self, grad, **_):
        clipped = (grad / self.g_norm.astype(grad.dtype)) * self.max_norm
        return jax.lax.select(self.trigger, grad, clipped)


class Clip(Optimizer):
    r"""Clips every gradient element to :math:`[-\delta, \delta]`, the twin of ``optax.clip``.

    .. math::

        u = \min(\max(g, -\delta), \delta)

    Args:
        max_delta: :math:`\delta`, the largest absolute value let through.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.Clip(0.5))
        >>> params = {"w": jnp.zeros(3)}
        >>> updates, _ = tx.update({"w": jnp.array([-2.0, 0.25, 2.0])}, tx.init(params), params)
        >>> updates["w"]  # the clipped gradient, as optax.clip(0.5) returns it
        Array([-0.5 ,  0.25,  0.5 ], dtype=float32)
    """

    optax_sign = "gradient"  # optax.clip returns gradients

    def __init__(self, max_delta: float):
        set_hypers(self, max_delta=max_delta)

    def call_param(self, key, grad, **_):
        reject_complex(
            type(self).__name__,
            key,
            grad,
            "complex numbers have no order to clip by (optax.clip raises a ValueError too)",
            "clip a real parameter, or clip the complex one by norm (ClipByGlobalNorm).",
        )
        return jnp.clip(grad, -self.max_delta, self.max_delta)


class ScaleByLearningRate(Optimizer):
    r"""Scales by the learning rate, the twin of ``optax.scale_by_learning_rate``.

    .. math::

        u_t = \eta_t \, g_t \quad (\text{or } -\eta_t g_t \text{ with flip\_sign=False})

    Hooks return descent directions, which the bridge negates, so the default
    (``flip_sign=True``, optax's :math:`-\eta_t g_t`) multiplies by :math:`+\eta_t`.
    A schedule is called with the number of steps taken so far (0 on the first
    step), as optax's ``scale_by_schedule`` does.

    Args:
        learning_rate: :math:`\eta`, a float, a schedule (a callable of the step count),
            or ``None`` for no scaling (as in optax).
        flip_sign: as in optax: ``True`` for descent (the usual case).

    Example:
        >>> import jax.numpy as jnp, optax
        >>> import flr_nnx as flr
        >>> clip, lr = flr.optim.ClipByGlobalNorm(1.0), flr.optim.ScaleByLearningRate(0.1)
        >>> tx = flr.as_optax(flr.compose.Chain(clip, lr))
        >>> params = {"w": jnp.zeros(2)}
        >>> updates, _ = tx.update({"w": jnp.array([3.0, 4.0])}, tx.init(params), params)
        >>> updates["w"]
        Array([-0.06      , -0.08000001], dtype=float32)
    """

    transient = ("lr_t",)

    def __init__(self, learning_rate: ScalarOrSchedule | None = None, *, flip_sign: bool = True):
        set_hypers(self, learning_rate=learning_rate)
        self.flip_sign = flip_sign
        if needs_count(learning_rate):
            self.count = jnp.zeros([], jnp.int32)

    def call_model(self, grads, **_):
        self.lr_t = advance(self, self.learning_rate)
        return grads

    def call_param(self, grad, **_):
        if self.learning_rate is None:  # optax: no scaling at all, whatever flip_sign says
            return grad
        if self.flip_sign:
            return scale(self.lr_t, grad)
        # Negating optax's `lr * g` (rather than scaling by -lr) keeps the sign
        # where optax has it, so fused multiply-adds round the same way.
        return -scale(self.lr_t, grad)


class AddDecayedWeights(Optimizer):
    r"""Adds the decayed weights, the twin of ``optax.add_decayed_weights``.

    .. math::

        u_t = g_t + \lambda_t \, \theta_t \quad \text{for masked-in parameters, else } g_t

    Args:
        weight_decay: :math:`\lambda`, a float or a schedule (a callable of the step count).
        mask: which parameters decay: ``None`` (all), what ``optax.masked`` accepts
            (a pytree of bools, or a callable of the parameters returning one), or a
            predicate on the parameter key (:func:`flr_nnx.helpers.key_mask`).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.AddDecayedWeights(0.1))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, _ = tx.update({"w": jnp.zeros(2)}, tx.init(params), params)
        >>> updates["w"]  # g + 0.1 * w, as optax.add_decayed_weights(0.1) returns it
        Array([ 0.1, -0.2], dtype=float32)
    """

    optax_sign = "gradient"  # optax.add_decayed_weights returns gradients
    transient = ("wd_t", "decays")

    def __init__(self, weight_decay: ScalarOrSchedule = 0.0, mask: MaskLike = None):
        set_hypers(self, weight_decay=weight_decay)
        self.mask = Mask(mask)
        if needs_count(weight_decay):
            self.count = jnp.zeros([], jnp.int32)

    def call_model(self, grads, **_):
        self.wd_t = advance(self, self.weight_decay)
        self.decays = decayed(self.weight_decay, self.mask, grads)
        return grads

    def call_param(self, key, grad, param):
        if key not in self.decays:
            return grad
        return grad + self.wd_t * param
