"""Normalize: the gradients divided by their global norm (SAM's adversarial direction)."""

from __future__ import annotations

from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import global_norm


class Normalize(Optimizer):
    r"""The gradients over their global norm, the twin of ``optax.contrib.normalize``.

    .. math::

        u_k = g_k / \|g\|, \qquad \|g\| = \sqrt{\textstyle\sum_k \sum_i |g_{k,i}|^2}

    A building block for :class:`~flr_nnx.compose.Chain`, e.g. SAM's adversarial
    optimizer ``Chain(Normalize(), SGD(rho))`` (:class:`~flr_nnx.compose.SAM`).
    The norm is over every parameter, in key order, as optax's over the leaves.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.Normalize())  # optax.contrib.normalize()
        >>> params = {"w": jnp.zeros(2)}
        >>> tx.update({"w": jnp.array([3.0, 4.0])}, tx.init(params), params)[0]["w"]
        Array([0.6, 0.8], dtype=float32)
    """

    optax_sign = "gradient"  # optax.contrib.normalize returns gradients

    def call_model(self, grads, **_):
        g_norm = global_norm(grads)  # optax.tree.norm's sequence: bit-identical
        return {k: (g / g_norm).astype(g.dtype) for k, g in grads.items()}
