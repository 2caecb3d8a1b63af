"""SAM against ``optax.contrib.sam``, step by step, through both bridges and in both modes.

The zoo's generic harness checks ``SAM(SGD, SGD)`` (non-opaque); the opaque mode
needs optax's extra argument ``grad_fn(params, i)``, a function of the parameters
returning a gradient tree, which the harness does not pass: it is checked here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import flr_nnx as flr


def _loss(params):
    return sum(
        jnp.sum(jnp.sin(p.astype(jnp.float32)) * p.astype(jnp.float32) ** 2)
        for p in jax.tree.leaves(params)
    )


def _pair(sync_period, reset_state, opaque_mode):
    theirs = optax.contrib.sam(
        optax.sgd(0.1, momentum=0.9),
        optax.chain(optax.contrib.normalize(), optax.adam(0.05)),
        sync_period=sync_period,
        reset_state=reset_state,
        opaque_mode=opaque_mode,
    )
    ours = flr.compose.SAM(
        flr.optim.SGD(0.1, momentum=0.9),
        flr.compose.Chain(flr.optim.Normalize(), flr.optim.Adam(0.05)),
        sync_period=sync_period,
        reset_state=reset_state,
        opaque_mode=opaque_mode,
    )
    return theirs, ours


def _assert_same(ours, theirs, what):
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32), what)


@pytest.mark.parametrize(
    ("dtype", "sync_period", "reset_state", "opaque_mode"),
    [
        (jnp.float32, 2, True, False),
        (jnp.bfloat16, 3, False, False),
        (jnp.float32, 3, True, True),
        (jnp.bfloat16, 2, False, True),
    ],
)
def test_as_optax_is_bit_identical_to_optax_sam(dtype, sync_period, reset_state, opaque_mode):
    params = {"a": jnp.linspace(-1.0, 1.0, 6, dtype=dtype).reshape(2, 3), "b": jnp.ones(3, dtype)}
    theirs, hook = _pair(sync_period, reset_state, opaque_mode)
    ours = flr.as_optax(hook)
    # grad_fn(params, i): a function of the parameter tree returning a gradient tree.
    extra = {"grad_fn": lambda p, i: jax.grad(_loss)(p)} if opaque_mode else {}

    def stepper(tx):
        @jax.jit
        def step(p, s):
            u, s = tx.update(jax.grad(_loss)(p), s, p, **extra)
            return optax.apply_updates(p, u), s

        return step

    step_theirs, step_ours = stepper(theirs), stepper(ours)
    p_theirs, s_theirs = params, theirs.init(params)
    p_ours, s_ours = params, ours.init(params)
    for n in range(2 * sync_period + 1):
        p_theirs, s_theirs = step_theirs(p_theirs, s_theirs)
        p_ours, s_ours = step_ours(p_ours, s_ours)
        _assert_same(p_ours, p_theirs, f"step {n}")
    assert not np.array_equal(p_ours["a"], params["a"])


def _pure_loss(params, x):
    return jnp.sum(jnp.tanh(x @ params["kernel"] + params["bias"][None]) ** 2)


@pytest.mark.parametrize("opaque_mode", [False, True])
def test_nnx_optimizer_matches_nnx_optimizer_with_optax(opaque_mode):
    x = jax.random.normal(jax.random.key(1), (4, 3))
    theirs_tx, hook = _pair(2, True, opaque_mode)
    ours_model, theirs_model = (
        nnx.Linear(3, 2, rngs=nnx.Rngs(0)),
        nnx.Linear(3, 2, rngs=nnx.Rngs(0)),
    )
    ours = flr.NNXOptimizer(ours_model, hook, wrt=nnx.Param)
    theirs = nnx.Optimizer(theirs_model, theirs_tx, wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        grads = nnx.grad(lambda m: jnp.sum(jnp.tanh(m(x)) ** 2))(model)
        # grad_fn gets the pure parameter state (as nnx.Optimizer gives optax) and
        # returns a tree like it.
        extra = {"grad_fn": lambda p, i: jax.grad(_pure_loss)(p, x)} if opaque_mode else {}
        optimizer.update(model, grads, **extra)

    for n in range(5):
        step(ours_model, ours)
        step(theirs_model, theirs)
        _assert_same(nnx.state(ours_model), nnx.state(theirs_model), f"step {n}")


def test_grad_fn_returning_nnx_grads_state_names_grad_fn_and_the_fix():
    """nnx.grad's State of Variables is not a pure tree: the error names grad_fn, not SGD."""
    x = jax.random.normal(jax.random.key(1), (4, 3))
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    _, hook = _pair(2, True, True)
    optimizer = flr.NNXOptimizer(model, hook, wrt=nnx.Param)
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)

    def loss(m):
        return jnp.sum(jnp.tanh(m(x)) ** 2)

    def grad_fn(params, i):
        return nnx.grad(loss)(nnx.merge(graphdef, params, rest))  # a State of Params

    with pytest.raises(flr.HookError, match=r"SAM's grad_fn\(params, i\) returned State") as e:
        optimizer.update(model, nnx.grad(loss)(model), grad_fn=grad_fn)
    assert "Fix: return a pure tree" in str(e.value) and "nnx.as_pure" in str(e.value)
    # Through optax too: a tree not like the parameters is shown as it came.
    params = {"w": jnp.ones(3)}
    tx = flr.as_optax(hook)
    with pytest.raises(flr.HookError, match=r"returned dict \{'w': 'x'\}; expected the"):
        tx.update(params, tx.init(params), params, grad_fn=lambda p, i: {"w": "x"})


def test_opaque_mode_without_grad_fn_and_bad_period_are_refused():
    params = {"w": jnp.ones(3)}
    _, hook = _pair(2, True, True)
    tx = flr.as_optax(hook)
    state = tx.init(params)  # init needs no grad_fn (optax's neither)
    with pytest.raises(ValueError, match="grad_fn must be provided when opaque_mode=True"):
        tx.update(params, state, params)
    with pytest.raises(flr.HyperparameterError, match="must be >= 1"):
        flr.compose.SAM(flr.optim.SGD(0.1), flr.optim.SGD(0.1), sync_period=0)


def test_a_callable_extra_returning_a_parameter_tree_is_keyed_like_grads():
    # The general rule grad_fn relies on: what a callable extra returns, shaped like the
    # parameters, reaches the hooks keyed like `grads`; a scalar comes back as it is.
    seen = {}

    class Probe(flr.optim.Optimizer):
        def call_model(self, grads, params, grad_fn=None, value_fn=None, **_):
            if grad_fn is not None:
                seen["grad"] = grad_fn(params, 0)
                seen["value"] = value_fn(params)
            return grads

    tx = flr.as_optax(Probe())
    params = {"a": jnp.ones(2), "b": [jnp.zeros(()), jnp.arange(3.0)]}
    tx.update(
        params,
        tx.init(params),
        params,
        grad_fn=lambda p, i: jax.grad(_loss)(p),
        value_fn=_loss,
    )
    assert set(seen["grad"]) == {("a",), ("b", 0), ("b", 1)}
    np.testing.assert_array_equal(seen["grad"][("b", 1)], jax.grad(_loss)(params)["b"][1])
    assert jnp.shape(seen["value"]) == ()
