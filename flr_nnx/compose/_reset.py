"""Re-creating an inner optimizer's initial state inside a step, for wrappers that reset it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

from flr_nnx._engine import init, put, walk
from flr_nnx._optimizer import Key, Optimizer


class InitialState:
    r"""An inner optimizer as constructed, kept aside to re-create its initial state in a step.

    A hook optimizer creates its state lazily in its hooks, so once a step has run the
    inner optimizer a wrapper holds (``self.fast``) no longer knows its initial state.
    A wrapper that resets it (``optax.lookahead(reset_state=True)``, ``optax.contrib.sam``)
    keeps the optimizer as it was given, ``self.initial = InitialState(inner)``, and calls
    :meth:`reset` in its ``__call__``. The kept optimizer is configuration, not state: it
    is neither copied nor checkpointed, and the engine (which never mutates an optimizer
    it is given) only reads it.

    Args:
        optimizer: the inner optimizer, as the wrapper was given it (before any step).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> class Restart(flr.optim.Optimizer):
        ...     '''Runs Adam, restarting its moments and count at every step.'''
        ...     def __init__(self, inner):
        ...         self.inner = inner
        ...         self.initial = flr.compose.InitialState(inner)
        ...
        ...     def __call__(self, loss, grads, params, **_):
        ...         updates = flr.optim.call(self.inner, loss=loss, grads=grads, params=params)
        ...         self.initial.reset(self.inner, params)
        ...         return updates
        >>> tx = flr.as_optax(Restart(flr.optim.Adam(0.1)))
        >>> params = {"w": jnp.array([1.0])}
        >>> updates, state = tx.update({"w": jnp.array([3.0])}, tx.init(params), params)
        >>> state.tree["inner"]["count"], state.tree["inner"]["mu"]["w"]
        (Array(0, dtype=int32), Array([0.], dtype=float32))
    """

    # No __dict__: the engine sees a static leaf, and its scans do not enter the optimizer.
    __slots__ = ("optimizer",)

    def __init__(self, optimizer: Optimizer):
        self.optimizer = optimizer

    def values(self, params: Mapping[Key, jax.Array], **extra: Any) -> dict[Any, jax.Array]:
        """The initial state of the optimizer for ``params``, by path in the optimizer.

        Computed as the bridges' ``init`` computes it (state that depends on the parameters
        starts from ``params``). Live hyperparameters (``flr_nnx.hyper``) are left out: a
        reset keeps the values they were set to.
        """
        state = init(self.optimizer, params, extra=extra or None)
        live = {path for path, _ in state.layout.hypers}
        return {
            path: value
            for path, value in zip(state.layout.paths, state.leaves(), strict=True)
            if path not in live
        }

    def reset(
        self,
        live: Optimizer,
        params: Mapping[Key, jax.Array],
        where: Any = None,
        **extra: Any,
    ) -> None:
        r"""Puts the initial state for ``params`` into ``live``, in place.

        ``live`` is the inner optimizer the wrapper runs (the same object it gave to
        :class:`InitialState`, as the engine rebuilds it at each step). With ``where`` (a
        boolean scalar array) each state array becomes
        :math:`(1 - w)\,s + w\,s_0`, optax's jittable reset (``optax.lookahead``,
        ``optax.contrib.sam``); without it, :math:`s_0`.

        Args:
            live: the inner optimizer whose state to reset.
            params: the parameters its initial state is computed for.
            where: reset only when this is true (a traced boolean); None: always.
            **extra: extra arguments known at init (``nnx_variables=``), if the inner
                optimizer's hooks read them.
        """
        found = walk(live).arrays
        initial = self.values(params, **{k: v for k, v in extra.items() if v is not None})
        if where is None:
            put(live, initial)
        else:
            put(live, {p: (1 - where) * found[p] + where * s0 for p, s0 in initial.items()})

    def __repr__(self) -> str:
        return f"InitialState({self.optimizer!r})"
