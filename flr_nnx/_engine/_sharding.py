"""The shardings of a new state: each parameter's state is created where the parameter lives."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend.core import jaxpr_as_fun

from flr_nnx._engine._state import param_of
from flr_nnx._engine._walk import Path
from flr_nnx._optimizer import Key


def state_shardings(
    shaped: Sequence[tuple[Path, Sequence[int]]],
    params: Mapping[Key, Any],
    shardings: Mapping[Key, Any],
) -> list[Any]:
    """The sharding of each state array, given its path and shape.

    State keyed by a parameter and of its shape gets that parameter's sharding;
    other state (step counts, factored moments) is left to XLA (None).
    """
    keys = tuple(params)
    index = {k: i for i, k in enumerate(keys)}
    out = []
    for path, shape in shaped:
        owner = param_of(path, index)
        same_shape = owner >= 0 and tuple(shape) == tuple(jnp.shape(params[keys[owner]]))
        out.append(shardings.get(keys[owner]) if same_shape else None)
    return out


def spread(
    closed: Any,
    flat: list[Any],
    paths: Sequence[tuple[Path, int, bool]],
    params: Mapping[Key, Any],
    shardings: Mapping[Key, Any],
) -> list[Any]:
    """Every parameter's initial state, created directly with its parameter's sharding.

    One program computes the representatives' (input-independent) values and
    returns one output per parameter: XLA writes each shard in place, never a
    whole array on one device, and gives repeated outputs distinct buffers.
    """
    shaped = [(path, closed.out_avals[i].shape) for path, i, _ in paths]
    out_shardings = state_shardings(shaped, params, shardings)
    order = [i for _, i, _ in paths]
    values = jaxpr_as_fun(closed)

    def spread(*leaves: Any) -> list[Any]:
        outs = values(*leaves)
        return [outs[i] for i in order]

    return jax.jit(spread, out_shardings=out_shardings)(*flat)


def spread_shardings(params: Mapping[Key, Any]) -> dict[Key, Any]:
    """The shardings of the concrete parameters that live on several devices."""
    out = {}
    for key, value in params.items():
        if isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer):
            sharding = value.sharding
            if len(sharding.device_set) > 1:
                out[key] = sharding
    return out
