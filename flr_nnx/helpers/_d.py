"""Per-parameter scalings shared by the layer-wise optimizers (LARS, Fromage)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def trust_ratio(
    param: jax.Array,
    update: jax.Array,
    trust_coefficient: float = 1.0,
    eps: float = 0.0,
    min_norm: float = 0.0,
) -> jax.Array:
    r"""The layer-wise trust ratio :math:`c \, \|\theta\| / (\|u\| + \epsilon)`, 1 if a norm is 0.

    Norms are over the whole parameter, clipped below at ``min_norm``; the ratio
    is 1 where either norm is exactly 0 (a parameter that would never move). The
    operations of ``optax.scale_by_trust_ratio``, in its order, so the scaled
    update ``update * trust_ratio(param, update)`` is bit-identical to it.

    Args:
        param: :math:`\theta`, the parameter.
        update: :math:`u`, its update so far.
        trust_coefficient: :math:`c`.
        eps: :math:`\epsilon`, added to the update's norm.
        min_norm: the smallest norm either side is taken to have.

    Returns:
        A scalar in the parameter's dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> flr.helpers.trust_ratio(jnp.array([3.0, 4.0]), jnp.array([0.0, 0.5]))
        Array(10., dtype=float32)
        >>> flr.helpers.trust_ratio(jnp.zeros(2), jnp.array([0.0, 0.5]))
        Array(1., dtype=float32)
    """
    param_norm = optax.safe_norm(param, min_norm)
    update_norm = optax.safe_norm(update, min_norm)
    ratio = trust_coefficient * param_norm / (update_norm + eps)
    zero_norm = jnp.logical_or(param_norm == 0.0, update_norm == 0.0)
    return jnp.where(zero_norm, jnp.array(1.0, dtype=param.dtype), ratio)
