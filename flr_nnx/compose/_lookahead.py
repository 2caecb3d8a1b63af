"""Lookahead: slow weights that follow the fast ones every few steps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from flr_nnx._errors import HyperparameterError
from flr_nnx._optimizer import Key, Optimizer, call
from flr_nnx.compose._reset import InitialState


class Lookahead(Optimizer):
    r"""Lookahead (Zhang et al., 2019), the twin of ``optax.lookahead``.

    The model's parameters are the *fast* ones (take the gradient there); the
    *slow* ones are optimizer state, ``slow`` (evaluate there), starting equal to
    the parameters of the first step (``optax.LookaheadParams.init_synced``).
    With :math:`d_t` the fast optimizer's update (positive = descent),
    :math:`\sigma_t = 1` on every ``sync_period``-th step (else 0) and
    :math:`\alpha` the slow step size:

    .. math::

        D_t &= \theta_t - d_t - \phi_t \\
        \phi_{t+1} &= \phi_t + \alpha \sigma_t D_t \\
        \theta_{t+1} &= \theta_t - \big(d_t + \sigma_t (1 - \alpha) D_t\big)

    so on a synchronising step both become :math:`\phi_t + \alpha D_t`. optax keeps
    the slow parameters in its ``params`` (``LookaheadParams(fast, slow)``); here
    they are state, so the model holds only the fast ones. The numbers are
    bit-identical to ``optax.lookahead`` under ``jit`` (fast and slow).

    Args:
        fast_optimizer: the inner optimizer.
        sync_period: :math:`k`, fast steps per synchronisation (>= 1).
        slow_step_size: :math:`\alpha`.
        reset_state: reset the fast optimizer's state to its initial value (for the
            current fast parameters) after every synchronising step, as optax does
            (:class:`~flr_nnx.compose.InitialState`).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.compose.Lookahead(flr.optim.SGD(0.5), 2, 0.5))
        >>> params = {"w": jnp.array([1.0])}
        >>> state = tx.init(params)
        >>> for _ in range(2):
        ...     updates, state = tx.update({"w": jnp.array([1.0])}, state, params)
        ...     params = {"w": params["w"] + updates["w"]}
        >>> params["w"], state.tree["slow"]["w"]
        (Array([0.5], dtype=float32), Array([0.5], dtype=float32))
    """

    def __init__(
        self,
        fast_optimizer: Optimizer,
        sync_period: int,
        slow_step_size: float,
        reset_state: bool = False,
    ):
        if sync_period < 1:
            raise HyperparameterError(
                f"Lookahead(sync_period={sync_period!r}): expected an int >= 1. "
                "Fix: pass the number of fast steps per synchronisation, e.g. 5."
            )
        self.fast = fast_optimizer
        self.initial = InitialState(fast_optimizer) if reset_state else None
        self.sync_period = sync_period
        self.slow_step_size = slow_step_size
        self.steps_since_sync = jnp.zeros([], jnp.int32)
        self.slow: dict = {}

    def __call__(
        self,
        loss: Any,
        grads: dict[Key, jax.Array],
        params: Mapping[Key, jax.Array],
        nnx_variables: Any = None,
        **extra: Any,
    ) -> dict[Key, jax.Array]:
        extra = {**extra, "nnx_variables": nnx_variables}  # passed on by name
        steps = call(self.fast, loss=loss, grads=grads, params=params, **extra)
        sync_next = self.steps_since_sync == (self.sync_period - 1)
        updates = {}
        for k, g in grads.items():
            p = params[k]
            d = steps.get(k, jnp.zeros_like(g))
            slow = self.slow.setdefault(k, p)
            diff = p - d - slow
            self.slow[k] = (slow + self.slow_step_size * sync_next * diff).astype(slow.dtype)
            updates[k] = d + sync_next * (1 - self.slow_step_size) * diff
        if self.initial is not None:  # after the fast step, from the fast parameters, as optax
            self.initial.reset(self.fast, params, where=sync_next, nnx_variables=nnx_variables)
        self.steps_since_sync = (self.steps_since_sync + 1) % self.sync_period
        return updates
