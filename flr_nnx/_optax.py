"""The optax bridge: a hook optimizer as an ``optax.GradientTransformationExtraArgs``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from flr_nnx import _engine
from flr_nnx._bridges import check_hook_optimizer, wrap_like_optax
from flr_nnx._errors import Missing
from flr_nnx._optimizer import Optimizer
from flr_nnx._tree import flatten, is_float

_NO_LOSS = (
    "pass the loss as optax's `value=` extra argument, e.g. "
    "`tx.update(grads, state, params, value=loss)`."
)
_NO_PARAMS = "pass the parameters: `tx.update(grads, state, params)`."


def as_optax(opt: Optimizer) -> optax.GradientTransformationExtraArgs:
    """Wraps a hook optimizer as an optax gradient transformation.

    The optimizer is copied when wrapped; later changes to ``opt`` do not
    affect the transformation, and steps never change ``opt``.

    - ``init(params)`` returns the complete state (a
      :class:`~flr_nnx.HookState`), with lazily created state discovered.
    - ``update(updates, state, params=None, **extra)`` returns optax-sign
      updates (to be added to the parameters). The loss is read from optax's
      ``value=`` extra argument; other extra arguments are ignored. Only float
      leaves are optimized; the updates of other leaves are zeros.

    Args:
        opt: a :class:`flr_nnx.optim.Optimizer`.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` that works in
        ``optax.chain``, ``optax.MultiSteps``, ``optax.masked`` and
        ``nnx.Optimizer``.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> import flr_nnx as flr
        >>> tx = optax.chain(optax.clip_by_global_norm(1.0), flr.as_optax(flr.optim.Adam(0.1)))
        >>> params = {"w": jnp.ones(2)}
        >>> state = tx.init(params)
        >>> updates, state = tx.update({"w": jnp.ones(2)}, state, params)
        >>> updates["w"]
        Array([-0.09999935, -0.09999935], dtype=float32)
    """
    check_hook_optimizer(opt, "flr.as_optax")
    _engine.check_transient(opt)
    template = _engine.rebuild(opt, {})

    def init_fn(params: Any) -> _engine.HookState:
        keys, leaves, _ = flatten(params)
        state = _engine.init(
            template, {k: jnp.asarray(v) for k, v in zip(keys, leaves) if is_float(v)}
        )
        # Under nnx.Optimizer the parameters arrive as Variables: keep their metadata.
        return wrap_like_optax(state, params)

    def update_fn(
        updates: Any, state: _engine.HookState, params: Any = None, **extra: Any
    ) -> tuple[Any, _engine.HookState]:
        keys, grads, treedef = flatten(updates)
        floats = {k: g for k, g in zip(keys, grads) if is_float(g)}
        if params is None:
            flat_params: Any = Missing("params", _NO_PARAMS)
        else:
            param_keys, param_leaves, _ = flatten(params)
            flat_params = {k: p for k, p in zip(param_keys, param_leaves) if k in floats}
        loss = extra.get("value", Missing("loss", _NO_LOSS))
        steps, state = _engine.step(template, state, floats, flat_params, loss)
        out = [-steps[k] if k in steps else _untouched(g) for k, g in zip(keys, grads)]
        return treedef.unflatten(out), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _untouched(leaf: Any) -> Any:
    dtype = getattr(leaf, "dtype", None)
    if dtype is None or dtype == jax.dtypes.float0:
        return leaf
    return jnp.zeros_like(leaf)
