"""LBFGS beyond the zoo's entry: its line-search options, value_fn's data, its errors."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import flr_nnx as flr


def objective(params, x=1.0):
    a, c = params["a"], params["b"]["c"]
    return jnp.sum(100.0 * (a[1:] - a[:-1] ** 2) ** 2 + (x - a[:-1]) ** 2) + jnp.sum(c**4)


PARAMS = {"a": jnp.array([-1.0, 1.0, 0.5]), "b": {"c": jnp.array([0.1, 0.2, 2.0])}}

CONFIGS = {  # flr's arguments, optax's arguments
    "no_linesearch": ({"learning_rate": 1e-2, "linesearch": None}, None),
    "backtracking": (
        {"linesearch": optax.scale_by_backtracking_linesearch(15)},
        {"linesearch": optax.scale_by_backtracking_linesearch(15)},
    ),
    "zoom_options": (
        {
            "memory_size": 2,
            "linesearch": functools.partial(
                flr.helpers.zoom_linesearch,
                max_linesearch_steps=10,
                initial_guess_strategy="keep",
                max_learning_rate=0.5,
            ),
        },
        {
            "memory_size": 2,
            "linesearch": optax.scale_by_zoom_linesearch(
                10, initial_guess_strategy="keep", max_learning_rate=0.5
            ),
        },
    ),
}


def run(tx, steps=4, **data):
    @jax.jit
    def steps_of(params):
        state, out = tx.init(params), []
        for _ in range(steps):
            value, grad = jax.value_and_grad(objective)(params, **data)
            extra = {"value": value, "grad": grad, "value_fn": objective, **data}
            updates, state = tx.update(grad, state, params, **extra)
            params = optax.apply_updates(params, updates)
            out.append(updates)
        return out

    return steps_of(PARAMS)


def assert_bit_identical(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("config", list(CONFIGS))
def test_linesearch_options_match_optax(config):
    mine, theirs = CONFIGS[config]
    theirs = mine if theirs is None else theirs
    assert_bit_identical(run(flr.as_optax(flr.optim.LBFGS(**mine))), run(optax.lbfgs(**theirs)))


def test_value_fn_gets_the_data_it_names():
    """optax passes the extra arguments value_fn names (a batch) on to it; so does LBFGS."""
    x = jnp.float32(0.5)
    assert_bit_identical(run(flr.as_optax(flr.optim.LBFGS()), x=x), run(optax.lbfgs(), x=x))


def test_nnx_optimizer_carries_an_optax_linesearch_state():
    """Through NNXOptimizer, a held optax line search keeps its state between steps."""
    ls = optax.scale_by_backtracking_linesearch(15)

    class Model(nnx.Module):
        def __init__(self):
            self.a = nnx.Param(PARAMS["a"])
            self.b = nnx.Dict(c=nnx.Param(PARAMS["b"]["c"]))

    model = Model()
    optimizer = flr.NNXOptimizer(model, flr.optim.LBFGS(linesearch=ls), wrt=nnx.Param)
    params, tx = PARAMS, optax.lbfgs(linesearch=ls)
    state = tx.init(params)
    for _ in range(3):
        value, grad = jax.value_and_grad(objective)(params)
        updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=objective)
        params = optax.apply_updates(params, updates)
        mine = nnx.state(model, nnx.Param)
        value, grads = jax.value_and_grad(lambda p: objective(nnx.to_pure_dict(p)))(mine)
        optimizer.update(
            model,
            grads,
            value=value,
            grad=grads,
            value_fn=lambda p: objective(nnx.to_pure_dict(p)),
        )
        np.testing.assert_allclose(model.a[...], params["a"], rtol=1e-6)
        np.testing.assert_allclose(model.b["c"][...], params["b"]["c"], rtol=1e-6)


def test_unknown_linesearch_and_memory_are_refused():
    with pytest.raises(flr.HyperparameterError, match="linesearch="):
        flr.optim.LBFGS(linesearch="wolfe")
    with pytest.raises(flr.HyperparameterError, match="memory_size >= 1"):
        flr.optim.LBFGS(memory_size=0)


def test_an_extra_argument_value_fn_does_not_take_is_refused_as_optax_does():
    """A misspelt data argument must not leave the line search on another objective."""

    def value_fn(p, x=1.0):
        return jnp.sum((p["w"] - x) ** 2)

    p = {"w": jnp.array([3.0, -1.0])}
    value, grad = jax.value_and_grad(value_fn)(p)
    extras = dict(value=value, grad=grad, value_fn=value_fn)
    with pytest.raises(TypeError, match="not consumed"):
        optax.lbfgs().update(grad, optax.lbfgs().init(p), p, **extras, batch=jnp.zeros(2))
    tx = flr.as_optax(flr.optim.LBFGS())
    with pytest.raises(flr.ArgumentError, match=r"\['batch'\], which value_fn does not take"):
        tx.update(grad, tx.init(p), p, **extras, batch=jnp.zeros(2))
    # The right name reaches value_fn, as in optax.
    ours, _ = tx.update(grad, tx.init(p), p, **extras, x=jnp.zeros(2))
    theirs, _ = optax.lbfgs().update(grad, optax.lbfgs().init(p), p, **extras, x=jnp.zeros(2))
    assert jnp.array_equal(ours["w"], theirs["w"])


def test_a_forgotten_extra_compared_with_a_value_raises_not_false():
    class Gated(flr.optim.Optimizer):
        def call_model(self, grads, gate, **_):
            return grads if gate is None or gate == 1 else {k: 0 * g for k, g in grads.items()}

    p = {"w": jnp.ones(2)}
    tx = flr.as_optax(Gated())
    assert jnp.array_equal(tx.update(p, tx.init(p), p, gate=1)[0]["w"], -p["w"])
    with pytest.raises(flr.MissingArgumentError, match="`gate`"):
        tx.update(p, tx.init(p), p)
