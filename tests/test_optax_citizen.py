"""flr_nnx as an optax citizen: optax's wrappers, tree utilities and extra arguments.

Each test compares numbers against optax itself, and fails on the behaviour it guards
against (issue "A faithful optax and Flax citizen").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flr_nnx as flr

PARAMS = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array(0.25)}
GRADS = {"w": jnp.array([0.3, -0.1, 0.2]), "b": jnp.array(-0.4)}


def _run(tx, steps=3, jit=True, **extra):
    state = tx.init(PARAMS)
    update = jax.jit(tx.update) if jit else tx.update
    out = []
    params = PARAMS
    for _ in range(steps):
        updates, state = update(GRADS, state, params, **extra)
        params = optax.apply_updates(params, updates)
        out.append(updates)
    return out, state


# -- optax.inject_hyperparams: an injected value takes effect at the next update.

INJECTED = [
    (lambda learning_rate: flr.as_optax(flr.optim.SGD(learning_rate)), optax.sgd),
    # A lambda, not optax.adam itself: inject_hyperparams would also inject adam's defaults.
    (
        lambda learning_rate: flr.as_optax(flr.optim.Adam(learning_rate)),
        lambda learning_rate: optax.adam(learning_rate),
    ),
    (
        lambda learning_rate: flr.as_optax(
            flr.optim.MultiSteps(flr.optim.Adam(learning_rate), every_k=1)
        ),
        lambda learning_rate: optax.MultiSteps(
            optax.adam(learning_rate), every_k_schedule=1
        ).gradient_transformation(),
    ),
]


@pytest.mark.parametrize("jit", [True, False], ids=["jit", "eager"])
@pytest.mark.parametrize("make, twin", INJECTED, ids=["SGD", "Adam", "MultiSteps(Adam)"])
def test_inject_hyperparams_schedule_takes_effect(make, twin, jit):
    schedule = optax.linear_schedule(1.0, 0.0, 2)
    ours, _ = _run(optax.inject_hyperparams(make)(learning_rate=schedule), jit=jit)
    theirs, _ = _run(optax.inject_hyperparams(twin)(learning_rate=schedule), jit=jit)
    # Bit-identical under jit; eagerly optax runs op by op, so XLA's fusion may round apart.
    rtol = 0 if jit else 1e-6
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a["w"], b["w"], rtol=rtol, atol=0)
        np.testing.assert_allclose(a["b"], b["b"], rtol=rtol, atol=0)
    assert float(ours[-1]["w"][0]) == 0.0  # the schedule reached 0: no update


def test_inject_hyperparams_value_set_between_steps():
    tx = optax.inject_hyperparams(lambda learning_rate: flr.as_optax(flr.optim.SGD(learning_rate)))(
        learning_rate=0.5
    )
    state = tx.init(PARAMS)
    update = jax.jit(tx.update)
    u1, state = update(GRADS, state, PARAMS)
    state.hyperparams["learning_rate"] = jnp.asarray(0.25)
    u2, state = update(GRADS, state, PARAMS)
    np.testing.assert_allclose(u1["w"], -0.5 * GRADS["w"])
    np.testing.assert_allclose(u2["w"], -0.25 * GRADS["w"])


def test_read_only_array_is_a_constant_and_hyper_is_state():
    constant = flr.as_optax(flr.optim.Adam(jnp.asarray(0.1)))
    assert sorted(constant.init(PARAMS).tree) == ["count", "mu", "nu"]
    live = flr.as_optax(flr.optim.Adam(flr.hyper(0.1)))
    state = live.init(PARAMS)
    assert sorted(state.tree) == ["count", "learning_rate", "mu", "nu"]
    state = flr.set_hyper(state, "learning_rate", 0.0)
    updates, _ = jax.jit(live.update)(GRADS, state, PARAMS)
    np.testing.assert_array_equal(updates["w"], jnp.zeros(3))


def test_array_assigned_only_after_init_is_an_error():
    class Late(flr.optim.Optimizer):
        def __init__(self):
            self.scale = jnp.asarray(1.0)
            self.calls = jnp.zeros((), jnp.int32)

        def call_model(self, grads, **_):
            self.calls = self.calls + 1
            return grads

        def call_param(self, key, grad, **_):
            return grad * self.scale

    opt = Late()
    tx = flr.as_optax(opt)
    state = tx.init(PARAMS)

    # A hook that starts writing a read-only array after init: the subclass is
    # swapped in under the same layout, as a user editing a class between runs would.
    class Later(Late):
        def call_model(self, grads, **_):
            self.scale = self.scale * 2
            return super().call_model(grads)

    bad = flr.as_optax(Later())
    with pytest.raises(flr.StateError, match=r"opt\.scale was only read by the hooks at init"):
        bad.update(GRADS, state, PARAMS)
