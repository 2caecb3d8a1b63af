"""Evaluating the part of a traced discovery step that gives the initial state.

``init`` traces one whole step to discover the state, but only the first
values assigned to the state are needed: zeros, copies of parameters, small
constants. Compiling the whole step with XLA to get them costs more than the
trace itself and grows with the number of parameters (and its memory with it).
:func:`evaluate_outputs` keeps only the equations the outputs depend on and
runs them one by one, as optax's ``init`` computes its state eagerly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax._src.lax.lax import _convert_element_type
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal

_CALLS = ("pjit", "jit", "closed_call", "core_call")


def _live_equations(jaxpr: Jaxpr) -> list[Any]:
    """The equations the outputs depend on, in order."""
    needed = {v for v in jaxpr.outvars if not isinstance(v, Literal)}
    live = []
    for eqn in reversed(jaxpr.eqns):
        if any(v in needed for v in eqn.outvars):
            live.append(eqn)
            needed.update(v for v in eqn.invars if not isinstance(v, Literal))
    return live[::-1]


def _evaluate(jaxpr: Jaxpr, consts: Sequence[Any], args: Sequence[Any]) -> list[Any]:
    env: dict[Any, Any] = {}

    def read(var: Any) -> Any:
        return var.val if isinstance(var, Literal) else env[var]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in _live_equations(jaxpr):
        inputs = [read(v) for v in eqn.invars]
        inner = eqn.params.get("jaxpr") if eqn.primitive.name in _CALLS else None
        if isinstance(inner, ClosedJaxpr):  # a nested jit (jnp functions): inline it
            outputs = _evaluate(inner.jaxpr, inner.consts, inputs)
        elif isinstance(inner, Jaxpr):
            outputs = _evaluate(inner, (), inputs)
        else:
            # As jax.core.eval_jaxpr binds: custom_jvp/custom_vjp calls need their
            # bind parameters (sub-functions), and the equation's context.
            with eqn.ctx.manager:
                outputs = eqn.primitive.bind(*inputs, **eqn.primitive.get_bind_params(eqn.params))
            if not eqn.primitive.multiple_results:
                outputs = [outputs]
        env.update(zip(eqn.outvars, outputs))
    return [read(v) for v in jaxpr.outvars]


def evaluate_outputs(closed: ClosedJaxpr, args: Sequence[Any]) -> list[Any]:
    """The outputs of ``closed`` on ``args``, computing only what they depend on.

    Every output is a fresh buffer: one that is an input, a captured constant
    or another output is copied, because the state it becomes is donated at
    every step.
    """
    outputs = _evaluate(closed.jaxpr, closed.consts, args)
    # Eager operations may return an input's buffer under a new Array (`device_put`).
    taken = {b for x in (*args, *closed.consts) for b in _buffers(x)}
    fresh = []
    for out, aval in zip(outputs, closed.out_avals, strict=True):
        buffers = _buffers(out)
        if not isinstance(out, jax.Array) or buffers & taken:  # a literal, an input, a constant
            # As jit would return it: a new buffer of the output's type, weak type included.
            out = _convert_element_type(jnp.array(out), aval.dtype, weak_type=aval.weak_type)
            buffers = _buffers(out)
        taken |= buffers
        fresh.append(out)
    return fresh


def _buffers(x: Any) -> set[int]:
    """The device buffers of a concrete array (none for tracers and other values)."""
    if not isinstance(x, jax.Array) or isinstance(x, jax.core.Tracer):
        return set()
    try:
        return {shard.data.unsafe_buffer_pointer() for shard in x.addressable_shards}
    except Exception:  # a backend without buffer pointers: compare objects instead
        return {id(x)}
