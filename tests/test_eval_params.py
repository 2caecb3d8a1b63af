"""Evaluation parameters: an optimizer says where to evaluate, through both bridges.

:meth:`flr.optim.Optimizer.eval_params` (the identity by default) is run by the engine
on the state: :func:`flr.eval_params` for the optax bridge, :meth:`flr.NNXOptimizer.eval_params`
for the NNX one. The schedule-free optimizers' evaluation point must be bit-identical to
``optax.contrib.schedule_free_eval_params`` at every step, eagerly and under jit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import flr_nnx as flr

STEPS = 4

TWINS = {
    "ScheduleFree(SGD)": (
        lambda: flr.compose.ScheduleFree(flr.optim.SGD(0.1), 0.1, b1=0.8),
        lambda: optax.contrib.schedule_free(optax.sgd(0.1), 0.1, b1=0.8),
    ),
    "ScheduleFreeSGD": (
        lambda: flr.optim.ScheduleFreeSGD(0.1, warmup_steps=2, weight_decay=0.01),
        lambda: optax.contrib.schedule_free_sgd(0.1, warmup_steps=2, weight_decay=0.01),
    ),
    "ScheduleFreeAdamW": (
        lambda: flr.optim.ScheduleFreeAdamW(0.05, warmup_steps=2, weight_decay=0.01),
        lambda: optax.contrib.schedule_free_adamw(0.05, warmup_steps=2, weight_decay=0.01),
    ),
}


def grads_at(step, params):
    return jax.tree.map(lambda p: jnp.sin(p * (step + 1) + 0.3).astype(p.dtype), params)


def assert_identical(ours, theirs, what):
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        assert a.dtype == b.dtype, what
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32), what)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("name", list(TWINS))
def test_optax_bridge_matches_schedule_free_eval_params(name, dtype):
    make, twin = TWINS[name]
    tx, otx = flr.as_optax(make()), twin()
    params = {"a": jnp.linspace(-1.0, 1.0, 5, dtype=dtype), "b": [jnp.ones((2, 3), dtype)]}
    state, ostate, oparams = tx.init(params), otx.init(params), params
    jitted = jax.jit(lambda s, p: flr.eval_params(tx, s, p))
    update, oupdate = jax.jit(tx.update), jax.jit(otx.update)  # bit-identical under jit
    for step in range(STEPS):
        updates, state = update(grads_at(step, params), state, params)
        oupdates, ostate = oupdate(grads_at(step, oparams), ostate, oparams)
        params = optax.apply_updates(params, updates)
        oparams = optax.apply_updates(oparams, oupdates)
        eager = optax.contrib.schedule_free_eval_params(ostate, oparams)
        assert_identical(flr.eval_params(tx, state, params), eager, f"eager, step {step}")
        expected = jax.jit(optax.contrib.schedule_free_eval_params)(ostate, oparams)
        assert_identical(jitted(state, params), expected, f"jit, step {step}")
    # The hook optimizer itself names the hyperparameters as well as its transformation.
    assert_identical(flr.eval_params(make(), state, params), eager, "given the optimizer")


def _train_step(model, optimizer):
    grads = jax.tree.map(lambda p: jnp.cos(p), nnx.state(model, nnx.Param))
    optimizer.update(model, grads)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "nnx.jit"])
@pytest.mark.parametrize("name", list(TWINS))
def test_nnx_bridge_matches_schedule_free_eval_params(name, jit):
    make, twin = TWINS[name]
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    omodel = nnx.clone(model)
    optimizer = flr.NNXOptimizer(model, make(), wrt=nnx.Param)
    ooptimizer = nnx.Optimizer(omodel, twin(), wrt=nnx.Param)
    step = nnx.jit(_train_step)  # bit-identical under jit; evaluated eagerly or under jit
    evaluate = nnx.jit(lambda m, o: o.eval_params(m)) if jit else (lambda m, o: o.eval_params(m))
    twin_eval = optax.contrib.schedule_free_eval_params
    twin_eval = jax.jit(twin_eval) if jit else twin_eval
    for n in range(STEPS):
        step(model, optimizer)
        step(omodel, ooptimizer)
        ours = evaluate(model, optimizer)
        opt_state = nnx.as_pure(ooptimizer.opt_state)
        expected = twin_eval(opt_state, nnx.as_pure(nnx.state(omodel, nnx.Param)))
        assert isinstance(ours, nnx.State)
        assert_identical(ours, expected, f"step {n}")
    # The model keeps its iterate y; a copy evaluates at x.
    assert not np.array_equal(model.kernel[...], ours["kernel"])
    eval_model = nnx.clone(model)
    nnx.update(eval_model, ours)
    np.testing.assert_array_equal(eval_model.kernel[...], ours["kernel"])


def test_default_is_the_parameters_and_wrappers_pass_it_on():
    params = {"w": jnp.array([1.0, -2.0])}
    grads = {"w": jnp.array([0.5, 0.25])}
    for opt in [
        flr.optim.Adam(0.1),
        flr.compose.Chain(flr.optim.Adam(0.1)),
        flr.compose.MultiSteps(flr.optim.SGD(0.1), 2),
    ]:
        tx = flr.as_optax(opt)
        _, state = tx.update(grads, tx.init(params), params)
        assert flr.eval_params(tx, state, params)["w"] is params["w"]
    # Wrapped schedule-free: its evaluation point, as alone.
    make = lambda: flr.compose.ScheduleFree(flr.optim.SGD(0.1), 0.1)  # noqa: E731
    alone = flr.as_optax(make())
    _, astate = alone.update(grads, alone.init(params), params)
    for wrapper in [
        lambda o: flr.compose.Chain(flr.optim.Clip(10.0), o),
        lambda o: flr.compose.SkipNonFinite(o, 3),
        lambda o: flr.compose.MultiSteps(o, 1),
    ]:
        tx = flr.as_optax(wrapper(make()))
        _, state = tx.update(grads, tx.init(params), params)
        assert_identical(
            flr.eval_params(tx, state, params), flr.eval_params(alone, astate, params), "wrapped"
        )


def test_mixed_precision_and_multisteps_match_optax():
    params = {"w": jnp.array([1.0, -2.0, 0.5], jnp.bfloat16)}
    tx = flr.as_optax(flr.compose.MultiSteps(flr.compose.ScheduleFree(flr.optim.SGD(0.1), 0.1), 2))
    otx = optax.MultiSteps(optax.contrib.schedule_free(optax.sgd(0.1), 0.1), 2)
    state, ostate, oparams = tx.init(params), otx.init(params), params
    update, oupdate = jax.jit(tx.update), jax.jit(otx.update)
    for step in range(4):
        updates, state = update(grads_at(step, params), state, params)
        oupdates, ostate = oupdate(grads_at(step, oparams), ostate, oparams)
        params, oparams = (
            optax.apply_updates(params, updates),
            optax.apply_updates(oparams, oupdates),
        )
        expected = optax.contrib.schedule_free_eval_params(ostate.inner_opt_state, oparams)
        assert_identical(flr.eval_params(tx, state, params), expected, f"step {step}")
    mixed = flr.as_optax(
        flr.compose.MixedPrecision(flr.compose.ScheduleFree(flr.optim.SGD(0.1), 0.1))
    )
    state = mixed.init(params)
    _, state = mixed.update(grads_at(0, params), state, params)
    assert flr.eval_params(mixed, state, params)["w"].dtype == jnp.bfloat16


class _Assigns(flr.optim.Optimizer):
    def __init__(self):
        self.t = jnp.zeros([])

    def call_param(self, key, grad, **_):
        self.t = self.t + 1
        return grad

    def eval_params(self, params):
        self.t = self.t + 1
        return params


class _Casts(flr.optim.Optimizer):
    def eval_params(self, params):
        return {k: p.astype(jnp.float16) for k, p in params.items()}


def test_errors():
    params = {"w": jnp.ones(2)}
    tx = flr.as_optax(_Assigns())
    with pytest.raises(flr.HookError, match="may only read"):
        flr.eval_params(tx, tx.init(params), params)
    tx = flr.as_optax(_Casts())
    with pytest.raises(flr.HookError, match="dtype float32"):
        flr.eval_params(tx, tx.init(params), params)
    with pytest.raises(flr.BridgeError, match="as_optax"):
        flr.eval_params(optax.sgd(0.1), optax.sgd(0.1).init(params), params)
    tx = flr.as_optax(flr.optim.SGD(0.1))
    with pytest.raises(flr.StructureError, match="HookState"):
        flr.eval_params(tx, (tx.init(params),), params)
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    optimizer = flr.NNXOptimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    with pytest.raises(flr.BridgeError, match="schedule_free_eval_params"):
        optimizer.eval_params(model)
