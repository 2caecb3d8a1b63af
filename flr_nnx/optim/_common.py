"""Small helpers shared by the built-in optimizers (all public-hook code)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from flr_nnx._errors import HyperparameterError

ScalarOrSchedule = float | jax.Array | Callable[[jax.Array], Any]


def value_at(value: ScalarOrSchedule, count: jax.Array) -> Any:
    """A hyperparameter's value at step ``count``: schedules are called with it."""
    return value(count) if callable(value) else value


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
    """Validates a scalar hyperparameter at construction (schedules and arrays are skipped)."""
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
