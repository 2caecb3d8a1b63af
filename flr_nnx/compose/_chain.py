"""Composition of hook optimizers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

from flr_nnx._errors import BridgeError, describe
from flr_nnx._optimizer import Key, Optimizer, call


class Chain(Optimizer):
    """Runs optimizers in sequence: each link's updates are the next link's grads.

    The counterpart of ``optax.chain``. Each link keeps its own state (held in
    ``self.links``).

    .. math::

        u = f_n(\\dots f_2(f_1(g)))

    Args:
        *optimizers: the links, applied first to last.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> import flr_nnx as flr
        >>> clip = flr.from_optax(optax.clip_by_global_norm(1.0))
        >>> tx = flr.as_optax(flr.compose.Chain(clip, flr.optim.Adam(0.1)))
        >>> params = {"w": jnp.ones(2)}
        >>> updates, _ = tx.update({"w": jnp.full(2, 5.0)}, tx.init(params), params)
        >>> updates["w"]
        Array([-0.09999933, -0.09999933], dtype=float32)
    """

    def __init__(self, *optimizers: Optimizer):
        for i, link in enumerate(optimizers):
            if not isinstance(link, Optimizer):
                optax_like = callable(getattr(link, "init", None)) and callable(
                    getattr(link, "update", None)
                )
                raise BridgeError(
                    f"Chain link {i} is {describe(link)}; expected a hook optimizer. "
                    + (
                        "Fix: wrap an optax transformation with flr.from_optax(tx)."
                        if optax_like
                        else "Fix: pass flr.optim.Optimizer instances (e.g. flr.optim.Adam(1e-3))."
                    )
                )
        self.links = list(optimizers)

    @property
    def per_example_grads(self) -> bool:  # type: ignore[override]
        """Per-example gradients when the first link takes them (it aggregates them)."""
        return bool(self.links) and self.links[0].per_example_grads

    def __call__(
        self,
        loss: Any,
        grads: dict[Key, jax.Array],
        params: Mapping[Key, jax.Array],
        nnx_variables: Any = None,
        **extra: Any,
    ) -> dict[Key, jax.Array]:
        extra = {**extra, "nnx_variables": nnx_variables}  # passed on by name
        for link in self.links:
            grads = call(link, loss=loss, grads=grads, params=params, **extra)
        return grads

    passes_eval_params_on = True  # no evaluation point of its own: its links'

    def eval_params(self, params: Mapping[Key, jax.Array]) -> Mapping[Key, jax.Array]:
        """Each link's evaluation point, in order (the identity for most links)."""
        for link in self.links:
            params = link.eval_params(params)
        return params
