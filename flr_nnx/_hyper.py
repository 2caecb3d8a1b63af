"""Hyperparameters that change at run time: :func:`hyper` and its state helpers.

A hook optimizer's state is every JAX array in its object tree; Python floats
are compile-time constants. :func:`hyper` turns a hyperparameter into a
(strongly typed) array so that it lives in the optimizer state: it can be read
and assigned between steps without a recompile, with :func:`get_hyper` and
:func:`set_hyper` on any holder (an ``NNXOptimizer``, an ``nnx.Optimizer`` running
``as_optax``, an optax state) or through ``NNXOptimizer.opt``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax._src.lax.lax import _convert_element_type

from flr_nnx._contract import CHECKS as _CHECKS
from flr_nnx._engine import mark_live
from flr_nnx._errors import HyperparameterError, describe
from flr_nnx._tree import is_concrete

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
    if isinstance(value, jax.core.Tracer):
        raise HyperparameterError(
            "flr.hyper got a traced value: the hyperparameter is already an input of the "
            "step (e.g. optax.inject_hyperparams passes it as an array, and rebuilds the "
            "optimizer at every update), and a live hyperparameter's value would come from "
            "the state instead, ignoring it. Fix: pass the value without flr.hyper."
        )
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
    """``value`` as an array exactly like ``old``, for assigning live state.

    Same shape and dtype, and also the same weak type and placement (committed
    to ``old``'s sharding, or uncommitted like ``old``): ``jit`` compiles again
    for an argument that differs in any of them. A committed array in place of
    an uncommitted one, say, would cost two compiles of the training step: one
    for the new argument, one more for the step's outputs, which all become
    committed.
    """
    if value is None or isinstance(value, (str, bytes)):
        raise HyperparameterError(
            f"{where} is live state of dtype {old.dtype}; got {describe(value)}. Fix: assign "
            "a number or an array."
        )
    if callable(value):
        raise HyperparameterError(
            f"{where} holds a live hyperparameter (an array); it cannot become a schedule. "
            "Fix: assign a number, or construct the optimizer with the schedule instead."
        )
    if (
        jnp.issubdtype(old.dtype, jnp.integer)
        and concrete_number(value)
        and not float(np.asarray(value)).is_integer()
    ):
        raise HyperparameterError(
            f"{where} is integer state ({old.dtype}); got {describe(value)}, which it would "
            f"truncate to {int(np.asarray(value))}. Fix: assign an integer."
        )
    new = jnp.asarray(value, dtype=old.dtype)
    if new.shape != old.shape:
        raise HyperparameterError(
            f"{where} is state of shape {tuple(old.shape)} and dtype {old.dtype}; got "
            f"{describe(value)}. Fix: assign a value of shape {tuple(old.shape)}."
        )
    if is_concrete(old) and old.committed:
        new = jax.device_put(new, old.sharding)
    elif is_concrete(old) and is_concrete(new) and new.committed:
        new = jnp.asarray(np.asarray(new))  # computed on a device: uncommitted, like `old`
    if getattr(old, "weak_type", False) and not getattr(new, "weak_type", False):
        # A weakly typed hyperparameter (`Adam(jnp.asarray(0.1))`) stays weakly typed.
        # No public API makes a weak array of a given dtype; this one keeps the placement.
        new = _convert_element_type(new, old.dtype, weak_type=True)
    return new


def check_assignment(layout: Any, path: Any, value: Any, where: str) -> None:
    """A value set into state at ``path`` passes the checks its constructor applies."""
    owner = dict(layout.hypers).get(path)
    check = _CHECKS.get((owner, path[-1][1])) if owner else None
    if check is not None and concrete_number(value):
        try:
            check(float(np.asarray(value)))
        except HyperparameterError as error:
            raise HyperparameterError(f"{where}: {error}") from None


def concrete_number(value: Any) -> bool:
    if isinstance(value, jax.core.Tracer):
        return False
    return np.ndim(value) == 0 and np.issubdtype(np.asarray(value).dtype, np.number)


def require_hyper(layout: Any, path: Any, text: str) -> None:
    """set_hyper sets hyperparameters only, not state the hooks update."""
    if path not in dict(layout.hypers):
        raise HyperparameterError(
            f"{text!r} is optimizer state that the hooks update at every step (a step count, "
            "a moment, ...), not a live hyperparameter, so set_hyper does not set it. Fix: "
            "construct the optimizer with flr.hyper(value) for a hyperparameter you want to "
            "change; to overwrite state itself, use optax.tree.set on an optax state or "
            "assign `optimizer.opt.<name>` on a flr.NNXOptimizer."
        )
