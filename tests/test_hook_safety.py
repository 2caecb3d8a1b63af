"""Hooks cannot go silently wrong: what a hook changes becomes state or is refused.

Each case here gave wrong numbers, or changed the user's object, without an error
(issue "Hooks that cannot go silently wrong"). Numbers are checked eagerly and under
jit, through both bridges.
"""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import flr_nnx as flr

PARAMS = {"w": jnp.array([1.0, -2.0])}
GRADS = {"w": jnp.array([0.5, 0.25])}


class ScalarFirst(flr.optim.Optimizer):
    """An EMA whose entries start at the Python number 1.0."""

    def __init__(self):
        self.v = {}
        self.t = 0  # a Python number in __init__, an array after the first step

    def call_model(self, grads, **_):
        self.t = self.t + jnp.ones((), jnp.int32)
        return grads

    def call_param(self, key, grad, **_):
        if key not in self.v:
            self.v[key] = 1.0
        self.v[key] = 0.5 * self.v[key] + 0.5 * grad
        return self.v[key] * self.t.astype(grad.dtype)


@pytest.mark.parametrize("jit", [True, False], ids=["jit", "eager"])
def test_python_number_as_first_value_is_the_initial_state(jit):
    tx = flr.as_optax(ScalarFirst())
    state = tx.init(PARAMS)
    np.testing.assert_array_equal(state.tree["v"]["w"], jnp.ones(2))
    assert int(state.tree["t"]) == 0
    update = jax.jit(tx.update) if jit else tx.update
    updates, state = update(GRADS, state, PARAMS)
    np.testing.assert_allclose(updates["w"], -(0.5 + 0.5 * GRADS["w"]))  # t = 1
    updates, _ = update(GRADS, state, PARAMS)
    v2 = 0.5 * (0.5 + 0.5 * GRADS["w"]) + 0.5 * GRADS["w"]
    np.testing.assert_allclose(updates["w"], -2 * v2)  # t = 2


def test_python_number_as_first_value_in_nnx_optimizer():
    class Model(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(PARAMS["w"])

    optimizer = flr.NNXOptimizer(Model(), ScalarFirst(), wrt=nnx.Param)
    np.testing.assert_array_equal(optimizer.opt_state["v"]["w"][...], jnp.ones(2))


class Config(flr.optim.Optimizer):
    def __init__(self):
        self.cfg = types.SimpleNamespace(lr=1.0, history=[])

    def call_param(self, key, grad, **_):
        self.cfg.lr *= 0.5
        return self.cfg.lr * grad


class Counting(flr.optim.Optimizer):
    calls = 0

    def call_param(self, key, grad, **_):
        type(self).calls += 1
        return grad


class Seen(flr.optim.Optimizer):
    def __init__(self):
        self.seen = set()

    def call_param(self, key, grad, **_):
        self.seen.add(key)
        return grad


class Appends(flr.optim.Optimizer):
    def __init__(self):
        self.cfg = types.SimpleNamespace(history=[])

    def call_param(self, key, grad, **_):
        self.cfg.history.append(key)
        return grad


@pytest.mark.parametrize(
    "make, where",
    [
        (Config, "opt.cfg"),
        (Counting, "Counting.calls"),
        (Seen, "opt.seen"),
        (Appends, "opt.cfg"),
    ],
    ids=["namespace", "class-attribute", "set", "nested-list"],
)
@pytest.mark.parametrize("bridge", ["as_optax", "nnx"])
def test_hooks_changing_shared_python_objects_are_refused_and_undone(make, where, bridge):
    opt = make()
    before_vars = {k: (set(v) if isinstance(v, set) else v) for k, v in vars(opt).items()}
    before_cfg = dict(vars(opt.cfg)) if hasattr(opt, "cfg") else None
    before_history = list(opt.cfg.history) if hasattr(opt, "cfg") else None
    with pytest.raises(flr.StateError, match=rf"changed `{where}` during init.*put back"):
        if bridge == "as_optax":
            flr.as_optax(opt).init(PARAMS)
        else:
            flr.NNXOptimizer(nnx.Linear(2, 1, rngs=nnx.Rngs(0)), opt, wrt=nnx.Param)
    # The user's object is as it was.
    assert Counting.calls == 0
    if isinstance(opt, Seen):
        assert opt.seen == set() and before_vars["seen"] == set()
    if before_cfg is not None:
        assert vars(opt.cfg) == before_cfg
        assert opt.cfg.history == before_history == []


def test_reading_shared_python_objects_is_fine():
    class Reads(flr.optim.Optimizer):
        scale = 2.0

        def __init__(self):
            self.cfg = types.SimpleNamespace(lr=0.5)
            self.allowed = {("w",)}

        def call_param(self, key, grad, **_):
            keep = 1.0 if key in self.allowed else 0.0
            return self.cfg.lr * type(self).scale * keep * grad

    tx = flr.as_optax(Reads())
    updates, _ = jax.jit(tx.update)(GRADS, tx.init(PARAMS), PARAMS)
    np.testing.assert_allclose(updates["w"], -GRADS["w"])


def _train(optimizer, model, steps=2):
    x = jnp.ones((3, 2))

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: (m(x) ** 2).mean())(model)
        optimizer.update(model, grads, loss=loss)

    for _ in range(steps):
        step(model, optimizer)


def test_assigning_through_hook_optimizer_sets_live_state_or_refuses():
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    optimizer = flr.NNXOptimizer(model, flr.optim.SGD(0.1), wrt=nnx.Param)
    with pytest.raises(flr.HyperparameterError, match=r"flr\.hyper"):
        optimizer.hook_optimizer.learning_rate = 0.0
    live = flr.NNXOptimizer(model, flr.optim.SGD(flr.hyper(0.1)), wrt=nnx.Param)
    _train(live, model, 1)
    live.hook_optimizer.learning_rate = 0.0  # takes effect under nnx.jit
    before = model.kernel[...]
    _train(live, model, 2)
    np.testing.assert_array_equal(model.kernel[...], before)
    assert flr.NNXOptimizer(model, optax_sgd(), wrt=nnx.Param).hook_optimizer is None


def optax_sgd():
    import optax

    return optax.sgd(0.1)


# -- Live hyperparameters are set with the constructor's checks; state is not a hyperparameter.


def _holders():
    tx = flr.as_optax(flr.optim.Adam(flr.hyper(0.1)))
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    return tx.init(PARAMS), flr.NNXOptimizer(model, flr.optim.Adam(flr.hyper(0.1)), wrt=nnx.Param)


def test_setters_apply_the_constructors_checks():
    state, optimizer = _holders()
    with pytest.raises(flr.HyperparameterError, match=r"Adam\(learning_rate=-1\.0\): expected"):
        flr.set_hyper(state, "learning_rate", -1.0)
    with pytest.raises(flr.HyperparameterError, match=r"Adam\(learning_rate=-1\.0\): expected"):
        flr.set_hyper(optimizer, "learning_rate", -1.0)
    with pytest.raises(flr.HyperparameterError, match=r"Adam\(learning_rate=-1\.0\): expected"):
        optimizer.opt.learning_rate = -1.0
    assert float(flr.get_hyper(optimizer, "learning_rate")) == pytest.approx(0.1)
    assert float(flr.get_hyper(flr.set_hyper(state, "learning_rate", 0.5), "learning_rate")) == 0.5


def test_set_hyper_refuses_state_the_hooks_update():
    state, optimizer = _holders()
    for holder in (state, optimizer):
        with pytest.raises(flr.HyperparameterError, match=r"'count' is optimizer state"):
            flr.set_hyper(holder, "count", 3)


def test_integer_state_refuses_a_fraction():
    _, optimizer = _holders()
    with pytest.raises(flr.HyperparameterError, match=r"truncate to 5"):
        optimizer.opt.count = 5.7
    optimizer.opt.count = 5
    assert int(optimizer.opt.count) == 5


def test_call_model_changing_a_gradients_dtype_is_a_hook_error():
    class Casts(flr.optim.Optimizer):
        def call_model(self, grads, **_):
            return {k: g.astype(jnp.bfloat16) for k, g in grads.items()}

        def call_param(self, key, grad, **_):
            return grad.astype(jnp.float32)

    with pytest.raises(flr.HookError, match=r"expected shape \(2,\) and dtype float32"):
        flr.as_optax(Casts()).init(PARAMS)
