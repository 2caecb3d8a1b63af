"""What the two bridges share: telling hook optimizers from optax transformations, and
giving ``as_optax`` state the Variable metadata optax's own state has."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from flr_nnx import _engine
from flr_nnx._errors import BridgeError, describe
from flr_nnx._optimizer import Optimizer
from flr_nnx._tree import key_of


def is_optax(tx: Any) -> bool:
    """Whether ``tx`` follows optax's protocol (callable ``init`` and ``update``).

    A hook optimizer is never one (its ``init``/``update`` only raise
    :class:`~flr_nnx.BridgeError`). ``optax.MultiSteps`` is an object with
    both methods rather than a ``GradientTransformation``; ``nnx.Optimizer``
    accepts it, so this does too.
    """
    if isinstance(tx, optax.GradientTransformation):
        return True
    return (
        not isinstance(tx, (Optimizer, type))
        and callable(getattr(tx, "init", None))
        and callable(getattr(tx, "update", None))
    )


def optax_name(tx: Any) -> str:
    """How an error message names an optax transformation."""
    if isinstance(tx, optax.GradientTransformation):
        return f"an optax {type(tx).__name__}"
    return f"{type(tx).__name__} (an optax transformation)"


_NNX = "flr.NNXOptimizer"


def check_hook_optimizer(opt: Any, where: str) -> None:
    """Raises :class:`~flr_nnx.BridgeError` if ``opt`` is not a hook optimizer.

    Args:
        opt: what the caller passed as the hook optimizer.
        where: the function that takes it, for the message (``"flr.as_optax"``).
    """
    if isinstance(opt, Optimizer):
        return
    if isinstance(opt, type) and issubclass(opt, Optimizer):
        raise BridgeError(
            f"{where} got the class {opt.__name__} itself; expected a hook optimizer, an "
            f"instance of it. Fix: construct one with its hyperparameters, e.g. "
            f"`{opt.__name__}(...)`, and pass that."
        )
    if is_optax(opt):
        raise BridgeError(
            f"{where} got {optax_name(opt)}, which is already an optax transformation; it "
            "takes a hook optimizer (a flr.optim.Optimizer). Fix: use it directly (in "
            "optax.chain, nnx.Optimizer or flr.NNXOptimizer), or flr.from_optax(tx) to put "
            "it in a hook Chain."
        )
    raise BridgeError(
        f"{where} got {describe(opt)}; expected a hook optimizer (a flr.optim.Optimizer, "
        "e.g. flr.optim.Adam(1e-3))"
        + (" or an optax transformation (e.g. optax.adam(1e-3))" if where == _NNX else "")
        + (
            ". Fix: pass what the function returns, not the function."
            if callable(opt)
            else ". Fix: pass an instance of a flr.optim.Optimizer subclass."
        )
    )


def wrap_like_optax(state: _engine.HookState, params: Any) -> _engine.HookState:
    """Wraps state keyed by an ``nnx.Variable`` parameter in that Variable, as optax does.

    ``nnx.Optimizer`` calls ``tx.init(nnx.state(model, wrt))``. optax's
    ``tree_map`` over that state keeps each parameter's Variable node (its type
    and metadata, e.g. sharding annotations) around the moments it creates, and
    ``nnx.Optimizer`` turns those into ``OptVariable``s carrying the metadata.
    State keyed by a parameter and of its shape is wrapped the same way here;
    other state (step counts, live hyperparameters) stays a plain array, like
    optax's ``count``. Without Variables among ``params``, ``state`` is returned
    as it is.
    """
    with_path, _ = jax.tree_util.tree_flatten_with_path(
        params, is_leaf=lambda x: isinstance(x, nnx.Variable)
    )
    variables = {key_of(path): v for path, v in with_path if isinstance(v, nnx.Variable)}
    if not variables:
        return state
    layout = state.layout
    leaves = []
    for value, owner in zip(state.leaves(), layout.param_of, strict=True):
        var = variables.get(layout.param_keys[owner]) if owner >= 0 else None
        if var is not None and jnp.shape(var.get_value()) == jnp.shape(value):
            # Rebuilt through the pytree, as optax's tree_map rebuilds it.
            value = jax.tree.map(lambda _, value=value: value, var)
        leaves.append(value)
    return _engine.HookState(_engine.nest(layout.mirror, leaves), layout)
