"""Hyperparameters that change at run time: :func:`hyper` and its state helpers.

A hook optimizer's state is every JAX array in its object tree; Python floats
are compile-time constants. :func:`hyper` turns a hyperparameter into a
(strongly typed) array so that it lives in the optimizer state: it can be read
and assigned between steps without a recompile, through ``NNXOptimizer.opt``
or, for ``as_optax`` state, with :func:`get_hyper` and :func:`set_hyper`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flr_nnx._engine import HookState, mark_live
from flr_nnx._errors import HyperparameterError, describe

HyperName = str | Sequence[str | int]


def hyper(value: Any, dtype: Any = None) -> jax.Array:
    """Marks a hyperparameter as live state: it may change between steps.

    Returns ``value`` as a strongly typed JAX array (float32 for a Python float,
    unless ``dtype`` says otherwise). An array attribute of an optimizer is
    state, so the compiled step reads it as an input instead of baking it in as
    a constant: assigning a new value (``optimizer.opt.learning_rate = 1e-4``
    for :class:`~flr_nnx.NNXOptimizer`, :func:`set_hyper` for ``as_optax``
    state) takes effect at the next step without recompiling. It is what
    ``optax.inject_hyperparams`` does, without rewriting the optimizer.

    Args:
        value: a Python number or an array. Schedules (callables) cannot be
            live; they are already evaluated at every step.
        dtype: the dtype of the state (default: float32 for floats, int32 for
            ints, the array's own dtype for arrays).

    Returns:
        A JAX array holding ``value``.

    Raises:
        HyperparameterError: if ``value`` is callable or not numeric.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.Adam(flr.hyper(0.1)))
        >>> state = tx.init({"w": jnp.ones(2)})
        >>> flr.get_hyper(state, "learning_rate")
        Array(0.1, dtype=float32)
        >>> state = flr.set_hyper(state, "learning_rate", 0.01)
        >>> float(flr.get_hyper(state, "learning_rate"))
        0.009999999776482582
    """
    if callable(value):
        raise HyperparameterError(
            f"flr.hyper({value!r}): a schedule cannot be a live hyperparameter. Fix: pass the "
            "schedule itself as the hyperparameter (it is evaluated at every step), or a number."
        )
    if dtype is None:
        if isinstance(value, bool):
            dtype = jnp.bool_
        elif isinstance(value, int):
            dtype = jnp.int32
        elif isinstance(value, (float, complex)):
            dtype = jnp.result_type(float)
    try:
        array = jnp.array(value, dtype=dtype)
    except TypeError as error:
        raise HyperparameterError(
            f"flr.hyper({describe(value)}): expected a number or an array. Fix: pass a "
            "Python scalar or a JAX/NumPy array."
        ) from error
    # A weakly typed array would take the dtype of whatever it meets; a live
    # hyperparameter keeps one dtype so assignments never change the compiled step.
    if array.weak_type:
        array = jax.lax.convert_element_type(array, array.dtype)
    # Hooks only read a hyperparameter, which would make it a constant of the step.
    return mark_live(array)


def cast_like(value: Any, old: Any, where: str) -> jax.Array:
    """``value`` as an array of ``old``'s shape and dtype, for assigning live state."""
    if callable(value):
        raise HyperparameterError(
            f"{where} holds a live hyperparameter (an array); it cannot become a schedule. "
            "Fix: assign a number, or construct the optimizer with the schedule instead."
        )
    new = jnp.asarray(value, dtype=old.dtype)
    if new.shape != old.shape:
        raise HyperparameterError(
            f"{where} is state of shape {tuple(old.shape)} and dtype {old.dtype}; got "
            f"{describe(value)}. Fix: assign a value of shape {tuple(old.shape)}."
        )
    sharding = getattr(old, "sharding", None)
    if sharding is not None and not isinstance(old, jax.core.Tracer):
        new = jax.device_put(new, sharding)
    return new


def _parts(name: HyperName) -> tuple[str | int, ...]:
    if isinstance(name, str):
        return tuple(int(p) if p.isdigit() else p for p in name.split("."))
    return tuple(name)


def _hook_states(state: Any) -> list[HookState]:
    return [
        leaf
        for leaf in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, HookState))
        if isinstance(leaf, HookState)
    ]


def _lookup(tree: Any, parts: tuple[Any, ...]) -> Any:
    node = tree
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _holder(state: Any, name: HyperName) -> tuple[HookState, tuple[Any, ...]]:
    parts = _parts(name)
    states = _hook_states(state)
    private = any(isinstance(part, str) and part.startswith("_") for part in parts)
    found = [] if private else [s for s in states if _is_array(_lookup(s.tree, parts))]
    text = ".".join(map(str, parts))
    if not states:
        raise HyperparameterError(
            f"get_hyper/set_hyper({text!r}): {describe(state)} contains no flr_nnx state. "
            "Fix: pass the state returned by a transformation made with flr.as_optax."
        )
    if not found:
        live = sorted({".".join(map(str, k)) for s in states for k in _scalar_names(s.tree)})
        raise HyperparameterError(
            f"No live hyperparameter {text!r} in this state; its scalar entries are {live}. "
            "A Python float is a compile-time constant and cannot be changed at run time. "
            f"Fix: construct the optimizer with flr.hyper(value) for {parts[-1]!r}, or use "
            "one of the names above (dotted for nested optimizers, e.g. 'links.1.learning_rate')."
        )
    if len(found) > 1:
        raise HyperparameterError(
            f"{len(found)} hook optimizers in this state have a hyperparameter {text!r}. "
            "Fix: pass the state of one of them (e.g. `state[1]` of an optax.chain) and "
            "put the result back into the outer state."
        )
    return found[0], parts


def _scalar_names(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = []
    for key, value in tree.items():
        if isinstance(key, str) and key.startswith("_"):  # private state, not a hyperparameter
            continue
        if isinstance(value, dict):
            if not isinstance(key, tuple):
                out += _scalar_names(value, (*prefix, key))
        elif _is_array(value) and np.ndim(value) == 0:
            out.append((*prefix, key))
    return out


def _is_array(value: Any) -> bool:
    return isinstance(value, (jax.Array, np.ndarray))


def get_hyper(state: Any, name: HyperName) -> jax.Array:
    """Reads a live hyperparameter (see :func:`hyper`) from ``as_optax`` state.

    Args:
        state: the state of a transformation made by :func:`~flr_nnx.as_optax`,
            or any optax state containing exactly one such state with ``name``
            (e.g. that of an ``optax.chain``).
        name: the attribute name, dotted for nested optimizers
            (``"links.1.learning_rate"`` in a :class:`~flr_nnx.optim.Chain`).

    Returns:
        The current value.

    Raises:
        HyperparameterError: if there is no such live hyperparameter.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> import flr_nnx as flr
        >>> tx = optax.chain(optax.clip(1.0), flr.as_optax(flr.optim.Adam(flr.hyper(3e-4))))
        >>> flr.get_hyper(tx.init({"w": jnp.ones(2)}), "learning_rate")
        Array(0.0003, dtype=float32)
    """
    holder, parts = _holder(state, name)
    return _lookup(holder.tree, parts)


def set_hyper(state: Any, name: HyperName, value: Any) -> Any:
    """Returns ``state`` with a live hyperparameter set to ``value``.

    The new state has the same structure, shapes and dtypes, so a jitted update
    does not recompile; the value takes effect at the next step.

    Args:
        state: as for :func:`get_hyper`.
        name: as for :func:`get_hyper`.
        value: the new value (cast to the hyperparameter's dtype).

    Returns:
        A new state; ``state`` itself is not modified.

    Raises:
        HyperparameterError: if there is no such live hyperparameter, or the
            value has another shape.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.Adam(flr.hyper(0.1)))
        >>> state = flr.set_hyper(tx.init({"w": jnp.ones(2)}), "learning_rate", 0.5)
        >>> state.tree["learning_rate"]
        Array(0.5, dtype=float32)
    """
    holder, parts = _holder(state, name)
    where = f"Hyperparameter {'.'.join(map(str, parts))!r}"
    new_value = cast_like(value, _lookup(holder.tree, parts), where)

    def replaced(node: dict[Any, Any], depth: int) -> dict[Any, Any]:
        new = dict(node)
        part = parts[depth]
        new[part] = new_value if depth == len(parts) - 1 else replaced(node[part], depth + 1)
        return new

    new_holder = HookState(replaced(holder.tree, 0), holder.layout)
    return jax.tree.map(
        lambda leaf: new_holder if leaf is holder else leaf,
        state,
        is_leaf=lambda x: isinstance(x, HookState),
    )
