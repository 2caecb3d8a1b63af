"""Live hyperparameters: flr.hyper, NNXOptimizer.opt, get_hyper/set_hyper for as_optax."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import flr_nnx as flr


def bit_equal(a, b):
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


class MLP(nnx.Module):
    def __init__(self, rngs):
        self.layers = nnx.List([nnx.Linear(4, 8, rngs=rngs), nnx.Linear(8, 1, rngs=rngs)])

    def __call__(self, x):
        return self.layers[1](jax.nn.tanh(self.layers[0](x)))


X = jax.random.normal(jax.random.key(0), (16, 4))
Y = jnp.sin(X.sum(axis=1, keepdims=True))


def loss_fn(model):
    return ((model(X) - Y) ** 2).mean()


def injected_adam(learning_rate):
    # Only the learning rate is live, as in flr.optim.Adam(flr.hyper(lr)): b1, b2, eps
    # stay Python floats on both sides (inject_hyperparams would otherwise make them
    # arrays too, which changes the rounding of `1 - b1`; see the all-live test).
    return optax.inject_hyperparams(optax.adam, static_args=("b1", "b2", "eps", "eps_root"))(
        learning_rate=learning_rate
    )


def test_hyper_is_strongly_typed_state_and_rejects_schedules():
    lr = flr.hyper(1e-3)
    assert lr.dtype == jnp.float32 and not lr.weak_type and float(lr) == np.float32(1e-3)
    assert flr.hyper(3).dtype == jnp.int32
    assert flr.hyper(0.5, dtype=jnp.bfloat16).dtype == jnp.bfloat16
    with pytest.raises(flr.HyperparameterError, match="schedule"):
        flr.hyper(optax.constant_schedule(0.1))
    state = flr.as_optax(flr.optim.Adam(lr)).init({"w": jnp.ones(2)})
    assert "learning_rate" in state.tree  # a Python float would not be


def test_nnx_live_learning_rate_takes_effect_without_recompile():
    model, ref_model = MLP(nnx.Rngs(0)), MLP(nnx.Rngs(0))
    optimizer = flr.NNXOptimizer(model, flr.optim.Adam(flr.hyper(1e-2)), wrt=nnx.Param)
    ref = nnx.Optimizer(ref_model, injected_adam(1e-2), wrt=nnx.Param)
    traces = [0]

    @nnx.jit
    def train_step(model, optimizer):
        traces[0] += 1
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads, loss=loss)

    schedule = [1e-2] * 3 + [1e-4] * 3 + [3e-3] * 4
    for lr in schedule:
        optimizer.opt.learning_rate = lr
        ref.opt_state.hyperparams["learning_rate"][...] = lr
        train_step(model, optimizer)
        train_step(ref_model, ref)
        assert float(optimizer.opt.learning_rate) == np.float32(lr)
        # inject_hyperparams feeds optax.adam the same array; the bridge's negation
        # of `lr * u` equals optax's `(-lr) * u` bitwise, so the runs stay identical.
        assert bit_equal(nnx.state(model, nnx.Param), nnx.state(ref_model, nnx.Param))
    assert traces[0] == 2  # one trace per optimizer kind, none for the new values
    assert int(optimizer.opt.count) == len(schedule)
    # The value is state: it survives nnx.split / merge and shows up in nnx.state.
    assert float(optimizer.opt_state["learning_rate"][...]) == np.float32(3e-3)


def test_live_view_reads_state_and_statics_and_refuses_constants():
    model = MLP(nnx.Rngs(0))
    optimizer = flr.NNXOptimizer(
        model,
        flr.compose.Chain(flr.optim.Adam(flr.hyper(0.1), b1=0.8)),
        wrt=nnx.Param,
    )
    view = optimizer.opt
    assert view.links[0].b1 == 0.8  # a Python constant reads back as itself
    assert int(view.links[0].count) == 0
    mu = view.links[0].mu
    assert set(mu) == {("layers", i, n) for i in (0, 1) for n in ("kernel", "bias")}
    view.links[0].learning_rate = 0.05
    lr = optimizer.opt_state["links"][0]["learning_rate"][...]
    assert lr.dtype == jnp.float32 and float(lr) == np.float32(0.05)
    with pytest.raises(flr.HyperparameterError, match=r"opt\.links\[0\]\.b1 .*flr\.hyper"):
        view.links[0].b1 = 0.5
    with pytest.raises(flr.HyperparameterError, match="shape"):
        view.links[0].learning_rate = jnp.ones(3)
    with pytest.raises(AttributeError, match="no attribute 'lr'"):
        view.links[0].lr = 1.0
    assert "learning_rate=0.05" in repr(view.links[0])


def test_hyper_in_a_users_init():
    class SGD(flr.optim.Optimizer):
        def __init__(self, lr):
            self.lr = flr.hyper(lr)

        def call_param(self, grad, **_):
            return self.lr * grad

    model = MLP(nnx.Rngs(0))
    optimizer = flr.NNXOptimizer(model, SGD(0.1), wrt=nnx.Param)
    before = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))
    grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
    optimizer.opt.lr = 0.0
    optimizer.update(model, grads)
    assert bit_equal(nnx.state(model, nnx.Param), before)
    optimizer.opt.lr = 0.5
    optimizer.update(model, grads)
    for a, b in zip(jax.tree.leaves(nnx.state(model, nnx.Param)), jax.tree.leaves(before)):
        np.testing.assert_allclose(a, b - 0.5, rtol=1e-6)


def test_as_optax_set_hyper_matches_inject_hyperparams_bitwise_without_recompile():
    params = {"a": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": [jnp.ones(3), jnp.zeros(())]}
    tx = optax.chain(optax.clip_by_global_norm(1.0), flr.as_optax(flr.optim.Adam(flr.hyper(0.1))))
    ref = optax.chain(optax.clip_by_global_norm(1.0), injected_adam(0.1))
    state, ref_state = tx.init(params), ref.init(params)
    traces = [0]

    @jax.jit
    def update(grads, state, params):
        traces[0] += 1
        return tx.update(grads, state, params)

    for i, lr in enumerate([0.1, 0.1, 0.01, 0.003, 0.003, 0.2]):
        state = flr.set_hyper(state, "learning_rate", lr)
        ref_state[1].hyperparams["learning_rate"] = jnp.asarray(lr)
        grads = jax.tree.map(lambda p, i=i: jnp.cos(p * (i + 1)), params)
        u, state = update(grads, state, params)
        r, ref_state = jax.jit(ref.update)(grads, ref_state, params)
        assert bit_equal(u, r), i
        params = optax.apply_updates(params, r)
    assert traces[0] == 1
    assert float(flr.get_hyper(state, "learning_rate")) == np.float32(0.2)


def test_all_hyperparameters_live_match_default_inject_hyperparams():
    # optax.inject_hyperparams(optax.adam) makes every numeric hyperparameter an array.
    # With flr.hyper on each of them the two agree to float32 rounding but NOT bitwise:
    # with b1/b2 as runtime values XLA compiles the bias corrections `1 - b**t` and the
    # divisions by them into differently fused loops in the two programs (1-ulp
    # differences on some elements). With only the learning rate live (the test above)
    # they are bit-identical.
    params = {"a": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)}
    hyper = {"learning_rate": 0.1, "b1": 0.9, "b2": 0.999, "eps": 1e-8, "eps_root": 0.0}
    tx = flr.as_optax(flr.optim.Adam(**{k: flr.hyper(v) for k, v in hyper.items()}))
    ref = optax.inject_hyperparams(optax.adam)(**hyper)
    state, ref_state = tx.init(params), ref.init(params)
    for i in range(5):
        grads = jax.tree.map(lambda p, i=i: jnp.cos(p * (i + 1)), params)
        u, state = jax.jit(tx.update)(grads, state, params)
        r, ref_state = jax.jit(ref.update)(grads, ref_state, params)
        np.testing.assert_allclose(u["a"], r["a"], rtol=1e-6, atol=0)
        state = flr.set_hyper(state, "b1", 0.8 - 0.1 * i)
        ref_state.hyperparams["b1"] = jnp.asarray(0.8 - 0.1 * i)
    assert float(flr.get_hyper(state, "b1")) == np.float32(0.8 - 0.1 * 4)


def test_get_set_hyper_errors_name_the_fix():
    params = {"w": jnp.ones(2)}
    state = flr.as_optax(flr.optim.Adam(0.1)).init(params)
    with pytest.raises(flr.HyperparameterError, match=r"No live hyperparameter 'learning_rate'"):
        flr.get_hyper(state, "learning_rate")
    with pytest.raises(flr.HyperparameterError, match="contains no flr_nnx state"):
        flr.get_hyper(optax.adam(0.1).init(params), "learning_rate")
    two = (flr.as_optax(flr.optim.Adam(flr.hyper(0.1))).init(params),) * 2
    with pytest.raises(flr.HyperparameterError, match="2 hook optimizers"):
        flr.set_hyper(two, "learning_rate", 0.2)
    nested = flr.as_optax(flr.compose.Chain(flr.optim.Adam(flr.hyper(0.1)))).init(params)
    nested = flr.set_hyper(nested, "links.0.learning_rate", 0.3)
    assert float(nested.tree["links"][0]["learning_rate"]) == np.float32(0.3)


def test_adam_accepts_an_array_learning_rate():
    params = {"w": jnp.arange(3.0)}
    grads = {"w": jnp.array([0.5, -1.0, 2.0])}
    for lr in (jnp.asarray(0.05), flr.hyper(0.05), np.float32(0.05)):
        tx = flr.as_optax(flr.optim.Adam(lr))
        u, _ = jax.jit(tx.update)(grads, tx.init(params), params)
        r, _ = jax.jit(optax.adam(lr).update)(grads, optax.adam(lr).init(params), params)
        assert bit_equal(u, r)
