"""Mechanic: a learned scale of another optimizer's updates."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from flr_nnx._optimizer import Key, Optimizer, call
from flr_nnx.helpers import reject_complex


class Mechanize(Optimizer):
    r"""Mechanic (Cutkosky et al., 2023), the twin of ``optax.contrib.mechanize``.

    Learns the scale :math:`\sum_j s_j` of the inner optimizer's updates
    :math:`d_t` (positive = descent) with ``num_betas`` online learners, from the
    initial parameters :math:`x_0` (those of the first step):

    .. math::

        \tilde g_t &= g_t + \lambda \Big(\textstyle\sum_j s_j\Big) \|g_t\|
            \, \theta_t / (\|\theta_t\| + \epsilon) \\
        \Delta_{t-1} &= (x_0 - \theta_t) / (\textstyle\sum_j s_j + \epsilon),
            \quad h_t = \langle \tilde g_t, \Delta_{t-1} \rangle \\
        m_j &\leftarrow \max(\beta_j m_j, |h_t| + \epsilon), \quad
            v_j \leftarrow \beta_j^2 v_j + h_t^2, \quad
            r_j \leftarrow \beta_j r_j + \mathrm{clip}(h_t, -m_j^{old}, m_j^{old}) s_j \\
        s_j &\leftarrow \big(\tfrac{s_{init}}{n} m_j + \max(0, r_j)\big) / (\sqrt{v_j} + \epsilon),
            \quad \beta_j = 1 - 10^{-j} \\
        \theta_{t+1} &= x_0 - \Big(\textstyle\sum_j s_j\Big) (\Delta_{t-1} + d_t)

    The update is :math:`\theta_t - \theta_{t+1}`. Bit-identical to
    ``optax.contrib.mechanize`` under ``jit``; ``r, m, v, s`` take the lowest
    dtype of the parameters, as optax's do. Complex parameters are refused (a
    :class:`~flr_nnx.ComplexParameterError`): wrap Mechanic in
    :class:`SplitRealAndImaginary` instead.

    Args:
        base_optimizer: the inner optimizer (its learning rate is best 1.0 or a
            schedule peaking at 1.0: Mechanic learns the scale).
        weight_decay: :math:`\lambda`, Mechanic's own weight decay (not the inner one's).
        eps: :math:`\epsilon`.
        s_init: the initial scale of each learner.
        num_betas: :math:`n`, the number of learners (betas :math:`1 - 10^{-j}`).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.compose.Mechanize(flr.optim.SGD(1.0)))
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> state = tx.init(params)
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, state, params)
        >>> updates["w"]
        Array([-4.7683716e-07,  4.7683716e-07], dtype=float32)
    """

    def __init__(
        self,
        base_optimizer: Optimizer,
        weight_decay: float = 1e-2,
        eps: float = 1e-8,
        s_init: float = 1e-6,
        num_betas: int = 6,
    ):
        self.inner = base_optimizer
        self.weight_decay = weight_decay
        self.eps = eps
        self.s_init = s_init
        self.num_betas = num_betas
        self.count = jnp.zeros([], jnp.int32)
        # The learners' dtype is the parameters' lowest: known at the first step.
        self.r = self.m = self.v = self.s = None
        self.x0: dict = {}

    def __call__(
        self,
        loss: Any,
        grads: dict[Key, jax.Array],
        params: Mapping[Key, jax.Array],
        nnx_variables: Any = None,
        **extra: Any,
    ) -> dict[Key, jax.Array]:
        extra = {**extra, "nnx_variables": nnx_variables}  # passed on by name
        for k, g in grads.items():
            reject_complex(
                "Mechanize",
                k,
                g,
                "Mechanic's learners clip and compare the complex inner product <g, delta> "
                "(complex numbers have no order; optax's mechanize returns meaningless steps)",
                "split the parameters outside Mechanic: "
                "flr.compose.SplitRealAndImaginary(flr.compose.Mechanize(opt)).",
            )
        steps = call(self.inner, loss=loss, grads=grads, params=params, **extra)
        params = {k: params[k] for k in grads}
        if self.s is None:
            dtype = optax.tree.dtype(list(params.values()), "lowest")
            self.r, self.m, self.v = (jnp.zeros([self.num_betas], dtype) for _ in range(3))
            self.s = jnp.ones([self.num_betas], dtype) * self.s_init
        # Start from the parameters of the first step (not those at init), as optax does;
        # one cond for the whole tree (at init, before x0 exists, both branches are params).
        old = {k: self.x0.get(k, p) for k, p in params.items()}
        self.x0.update(jax.lax.cond(self.count == 0, lambda: params, lambda: old))
        s_sum = jnp.sum(self.s)
        grad_norm = optax.tree.norm(list(grads.values()))
        param_norm = optax.tree.norm(list(params.values()))
        decay = self.weight_decay * s_sum * grad_norm / (param_norm + self.eps)
        decayed = [g + decay * params[k] for k, g in grads.items()]
        delta_prev = {k: (self.x0[k] - p) / (s_sum + self.eps) for k, p in params.items()}
        h = optax.tree.vdot(decayed, list(delta_prev.values()))

        clipped_h = jax.lax.clamp(-self.m, jnp.ones_like(self.m) * h, self.m)
        betas = jnp.array([1.0 - 0.1**j for j in range(1, self.num_betas + 1)], self.s.dtype)
        m = jnp.maximum(betas * self.m, jnp.abs(h) + self.eps)
        self.v = (betas**2) * self.v + h**2
        self.r = betas * self.r + clipped_h * self.s
        wealth = (self.s_init / jnp.size(betas)) * m + jnp.maximum(0.0, self.r)
        self.m, self.s = m, wealth / (jnp.sqrt(self.v) + self.eps)
        self.count = optax.safe_increment(self.count)

        scale = jnp.sum(self.s)
        updates = {}
        for k, p in params.items():
            delta = delta_prev[k] + steps[k] if k in steps else delta_prev[k]
            updates[k] = p - (self.x0[k] - scale * delta)
        return updates
