"""Reduce on plateau, written with the public hooks: a step scale driven by the loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from flr_nnx._errors import HyperparameterError
from flr_nnx._optimizer import Optimizer


class ReduceOnPlateau(Optimizer):
    r"""Scales the updates down when the loss stops improving: ``optax.contrib.reduce_on_plateau``.

    The loss is averaged over ``accumulation_size`` steps; then, with :math:`\bar f` that
    average and :math:`f^\star` the best one so far,

    .. math::

        \text{improved} &= \bar f < (1 - r)\, f^\star - a, \qquad
        p \leftarrow 0 \text{ if improved, else } p + 1 \\
        s &\leftarrow \max(\phi\, s,\; s_{\min}) \text{ when } p = \text{patience}
            \text{ (then } p \leftarrow 0 \text{ and a cooldown starts)} \\
        \Delta\theta_t &= s \, u_t

    where :math:`u_t` is the update it is given (chain it after an optimizer) and no
    plateau is counted during a cooldown. Reads the loss: pass it as ``loss=`` to
    ``NNXOptimizer.update`` or as ``value=`` to the optax ``update``. Its state has
    optax's dtypes (the scale in the parameters' lowest dtype, the loss averages in
    their highest). Bit-identical to ``optax.contrib.reduce_on_plateau`` under ``jit``.

    Args:
        factor: :math:`\phi \in (0, 1)`, the factor the scale is multiplied by.
        patience: steps (of accumulated loss) without improvement before reducing.
        rtol: :math:`r \in [0, 1]`, the relative improvement that counts.
        atol: :math:`a \ge 0`, the absolute improvement that counts.
        cooldown: steps to wait after a reduction before counting again.
        accumulation_size: losses averaged before each plateau check.
        min_scale: :math:`s_{\min}`, the smallest scale.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> opt = flr.compose.Chain(flr.optim.SGD(0.1), flr.optim.ReduceOnPlateau(patience=1))
        >>> tx = flr.as_optax(opt)
        >>> params = {"w": jnp.array([1.0])}
        >>> state = tx.init(params)
        >>> for _ in range(2):  # no improvement at step 2: the scale drops to 0.1
        ...     updates, state = tx.update(params, state, params, value=1.0)
        >>> updates["w"]
        Array([-0.01], dtype=float32)
    """

    def __init__(
        self,
        factor: float = 0.1,
        patience: int = 10,
        rtol: float = 1e-4,
        atol: float = 0.0,
        cooldown: int = 0,
        accumulation_size: int = 1,
        min_scale: float = 0.0,
    ):
        # optax's checks and messages
        name = type(self).__name__
        if factor <= 0.0 or factor >= 1.0:
            raise HyperparameterError(
                f"{name}: Factor must be in the range (0, 1), got factor = {factor}."
            )
        if rtol < 0.0 or atol < 0.0:
            raise HyperparameterError(
                f"{name}: Both rtol and atol must be non-negative, got rtol = {rtol} and "
                f"atol = {atol}."
            )
        if rtol == 0.0 and atol == 0.0:
            raise HyperparameterError(
                f"{name}: At least one of rtol or atol must be positive, got rtol = {rtol} "
                f"and atol = {atol}."
            )
        if rtol > 1.0:
            raise HyperparameterError(
                f"{name}: rtol must be less than or equal to 1.0, got rtol = {rtol}."
            )
        self.factor, self.patience, self.rtol, self.atol = factor, patience, rtol, atol
        self.cooldown, self.accumulation_size, self.min_scale = (
            cooldown,
            accumulation_size,
            min_scale,
        )
        self.plateau_count = jnp.asarray(0, jnp.int32)
        self.cooldown_count = jnp.asarray(0, jnp.int32)
        self.count = jnp.asarray(0, jnp.int32)

    def call_model(self, grads, params, loss, **_):
        if not hasattr(self, "scale"):  # at init: dtypes from the parameters, as optax
            highest = optax.tree.dtype(dict(params), "highest")
            self.scale = jnp.asarray(1.0, dtype=optax.tree.dtype(dict(params), "lowest"))
            self.best_value = jnp.asarray(float("inf"), dtype=highest)
            self.avg_value = jnp.asarray(0.0, highest)
        new_count = optax.safe_increment(self.count)
        avg = (self.count * self.avg_value + jnp.astype(loss, self.avg_value.dtype)) / new_count
        self.avg_value, self.count = avg.astype(self.avg_value.dtype), new_count
        state = (self.scale, self.best_value, self.plateau_count, self.cooldown_count)
        state = jax.lax.cond(
            new_count == self.accumulation_size, self._update_scale, lambda s: s, state
        )
        self.scale, self.best_value, self.plateau_count, self.cooldown_count = state
        # the loss average restarts after a check (optax's _update_scale resets it)
        checked = new_count == self.accumulation_size
        self.count = jnp.where(checked, 0, self.count)
        self.avg_value = jnp.where(checked, jnp.zeros_like(self.avg_value), self.avg_value)
        return grads

    def _update_scale(self, state):
        scale, best_value, plateau_count, cooldown_count = state
        avg_value = self.avg_value
        has_improved = jnp.where(avg_value < (1 - self.rtol) * best_value - self.atol, 1, 0)
        new_best = jnp.where(has_improved, avg_value.astype(best_value.dtype), best_value)
        plateau = jnp.where(has_improved, 0, optax.safe_increment(plateau_count))

        def in_cooldown():
            return jnp.asarray(0, jnp.int32), scale, cooldown_count - 1

        def not_in_cooldown():
            reached = plateau == self.patience
            new_scale = jnp.maximum(jnp.where(reached, scale * self.factor, scale), self.min_scale)
            return (
                jnp.where(reached, 0, plateau),
                new_scale,
                jnp.where(reached, self.cooldown, 0).astype(jnp.int32),
            )

        new_plateau, new_scale, new_cooldown = jax.lax.cond(
            cooldown_count > 0, in_cooldown, not_in_cooldown
        )
        return new_scale, new_best.astype(best_value.dtype), new_plateau, new_cooldown

    def call_param(self, grad, **_):
        return self.scale * grad
