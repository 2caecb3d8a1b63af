"""Training-step time of one optimizer per family against its optax twin.

``benchmarks/run.py`` calls :func:`family_steps`; each row trains the same
small regression network (a deep tanh MLP on a fixed batch) with the twin and
with ``flr.as_optax`` of the flr optimizer, in one ``jax.jit`` step with
donated parameters and state: the gradient, the update (with the extra
arguments the family needs: the loss and ``value_fn`` for a line search, the
objective for a Hessian estimate) and ``optax.apply_updates``. The gradient is
the same on both sides, so the ratio is the cost of the optimizer's own work.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

import flr_nnx as flr


@dataclasses.dataclass(frozen=True)
class Family:
    """One row: a family, the flr optimizer and its optax twin, and their extras."""

    family: str
    name: str
    make: Callable[[], flr.optim.Optimizer]
    twin: Callable[[], optax.GradientTransformation]
    # (loss function, loss value, gradient) -> the extra keyword arguments of update
    extras: Callable[[Callable[[Any], jax.Array], jax.Array, Any], dict[str, Any]] = (
        lambda f, value, grad: {}
    )


def _line_search(f, value, grad):
    return {"value": value, "grad": grad, "value_fn": f}


FAMILIES = (
    Family("first-order", "Adan", lambda: flr.optim.Adan(1e-3), lambda: optax.adan(1e-3)),
    Family(
        "first-order",
        "AdEMAMix",
        lambda: flr.optim.AdEMAMix(1e-3),
        lambda: optax.contrib.ademamix(1e-3),
    ),
    Family(
        "second-order (Hessian estimate)",
        "Sophia",
        lambda: flr.optim.Sophia(1e-3, update_interval=1),
        lambda: optax.contrib.sophia(1e-3, update_interval=1),
        lambda f, value, grad: {"obj_fn": f},
    ),
    Family(
        "line search",
        "LBFGS",
        lambda: flr.optim.LBFGS(),
        lambda: optax.lbfgs(),
        _line_search,
    ),
    Family(
        "schedule-free",
        "ScheduleFreeAdamW",
        lambda: flr.optim.ScheduleFreeAdamW(1e-3),
        lambda: optax.contrib.schedule_free_adamw(1e-3),
    ),
    Family(
        "wrapper",
        "Lookahead(Adam)",
        lambda: flr.compose.Lookahead(flr.optim.Adam(1e-3), 6, 0.5),
        lambda: _lookahead_twin(optax.adam(1e-3)),
    ),
)


def _lookahead_twin(fast: optax.GradientTransformation) -> optax.GradientTransformation:
    """``optax.lookahead`` on plain parameters, its slow copy in the state (as the zoo)."""
    tx = optax.lookahead(fast, 6, 0.5)

    def init(params):
        return tx.init(optax.LookaheadParams.init_synced(params)), jax.tree.map(jnp.copy, params)

    def update(updates, state, params, **_):
        inner, slow = state
        both, inner = tx.update(updates, inner, optax.LookaheadParams(fast=params, slow=slow))
        return both.fast, (inner, optax.apply_updates(slow, both.slow))

    return optax.GradientTransformation(init, update)


def problem(width: int, depth: int, batch: int) -> tuple[dict[str, jax.Array], Callable]:
    """A tanh MLP's parameters and its mean squared error on a fixed batch."""
    keys = jax.random.split(jax.random.key(0), 2 * depth + 2)
    params = {}
    for i in range(depth):
        params[f"w{i}"] = jax.random.normal(keys[2 * i], (width, width)) / jnp.sqrt(width)
        params[f"b{i}"] = jnp.zeros(width)
    x = jax.random.normal(keys[-2], (batch, width))
    y = jnp.sin(jax.random.normal(keys[-1], (batch, width)))

    def loss(p):
        h = x
        for i in range(depth):
            h = jnp.tanh(h @ p[f"w{i}"] + p[f"b{i}"][None, :])
        return jnp.mean((h - y) ** 2)

    return params, loss


def train_step(tx: optax.GradientTransformation, loss: Callable, extras: Callable) -> Callable:
    """``params, state, loss <- step(params, state)``, jitted with donation."""

    def step(params, state):
        value, grad = jax.value_and_grad(loss)(params)
        updates, state = tx.update(grad, state, params, **extras(loss, value, grad))
        return optax.apply_updates(params, updates), state, value

    return jax.jit(step, donate_argnums=(0, 1))


def family_steps(
    interleaved: Callable[..., dict[str, Any]], cfg: Any, width: int, depth: int, batch: int
) -> list[dict[str, Any]]:
    """Times every family's train step, twin and flr taking turns (``interleaved``)."""
    params, loss = problem(width, depth, batch)
    rows = []
    for fam in FAMILIES:
        runners = {}
        for side, tx in (("optax", fam.twin()), ("flr", flr.as_optax(fam.make()))):
            step = train_step(tx, loss, fam.extras)
            p = jax.tree.map(jnp.copy, params)
            # optax.lbfgs's initial state holds one buffer twice: donation needs distinct ones.
            state = jax.tree.map(jnp.copy, tx.init(p))
            live = [*step(p, state)[:2]]

            def run(k: int, step=step, live=live) -> None:
                p, s = live
                for _ in range(k):
                    p, s, _ = step(p, s)
                jax.block_until_ready((p, s))
                live[:] = [p, s]

            runners[side] = run
        stats = interleaved(runners, cfg)
        rows.append({"family": fam.family, "name": fam.name, "stats": stats})
    return rows
