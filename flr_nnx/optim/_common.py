"""Small helpers shared by the built-in optimizers (all public-hook code)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from flr_nnx._errors import HyperparameterError
from flr_nnx._hyper import register_check

ScalarOrSchedule = float | jax.Array | Callable[[jax.Array], Any]


def value_at(value: ScalarOrSchedule, count: jax.Array) -> Any:
    """A hyperparameter's value at step ``count``: schedules are called with it."""
    return value(count) if callable(value) else value


def needs_count(*values: Any) -> bool:
    """Whether any of these hyperparameters is a schedule, which reads a step count.

    optax keeps a step count only where a schedule needs one, so the built-ins
    that have no bias correction do the same: their state and compiled step
    then match their twins'.
    """
    return any(callable(value) for value in values)


def advance(opt: Any, value: ScalarOrSchedule) -> Any:
    """``value`` at this step: a schedule reads ``opt.count`` and advances it."""
    if not callable(value):
        return value
    if "count" not in vars(opt):  # a schedule set after construction
        opt.count = jnp.zeros([], jnp.int32)
    current = value(opt.count)
    opt.count = optax.safe_increment(opt.count)
    return current


def scale(step_size: Any, update: jax.Array) -> jax.Array:
    """``step_size * update`` in the update's dtype (Python floats stay constants)."""
    if isinstance(step_size, (int, float)):
        return step_size * update
    return jnp.asarray(step_size, dtype=update.dtype) * update


def check_hyper(
    name: str,
    value: Any,
    *,
    low: float = 0.0,
    high: float | None = None,
    high_inclusive: bool = False,
    optimizer: str,
) -> None:
    """Validates a scalar hyperparameter at construction (schedules and arrays are skipped).

    The check is remembered for ``optimizer``'s ``name``: a live hyperparameter
    (:func:`flr_nnx.hyper`) set later through ``flr.set_hyper`` or
    ``optimizer.opt`` passes it too.
    """
    register_check(
        optimizer,
        name,
        lambda v: check_hyper(
            name, v, low=low, high=high, high_inclusive=high_inclusive, optimizer=optimizer
        ),
    )
    if callable(value) or not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if value < low or too_high or not math.isfinite(value):
        bound = (
            f"[{low}, {high}{']' if high_inclusive else ')'}" if high is not None else f">= {low}"
        )
        raise HyperparameterError(
            f"{optimizer}({name}={value!r}): expected {name} in {bound}, got {value!r}. "
            f"Fix: pass a valid {name}."
        )
