"""One hyperparameter API on every holder; no recompile on any change; a schedule's value."""

import contextlib
import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import flr_nnx as flr


class MLP(nnx.Module):
    def __init__(self, rngs):
        self.layers = nnx.List([nnx.Linear(3, 6, rngs=rngs), nnx.Linear(6, 1, rngs=rngs)])

    def __call__(self, x):
        return self.layers[1](jnp.tanh(self.layers[0](x)))


X = jax.random.normal(jax.random.key(0), (8, 3))
Y = jnp.sin(X.sum(axis=1, keepdims=True))


def loss_fn(model):
    return ((model(X) - Y) ** 2).mean()


def bit_equal(a, b):
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def injected_adam(learning_rate):
    return optax.inject_hyperparams(optax.adam, static_args=("b1", "b2", "eps", "eps_root"))(
        learning_rate=learning_rate
    )


class _Compiles(logging.Handler):
    def __init__(self, name):
        super().__init__()
        self.name, self.count = name, 0

    def emit(self, record):
        if f"Compiling jit({self.name})" in record.getMessage():
            self.count += 1


@contextlib.contextmanager
def compiles(name):
    """Counts XLA compiles of the jitted function ``name`` (not only traces: a new
    placement or weak type of an argument compiles again from the cached trace)."""
    handler = _Compiles(name)
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            yield handler
    finally:
        logger.removeHandler(handler)


def nnx_step():
    @nnx.jit
    def nnx_train_step(model, optimizer):
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads, loss=loss)
        return loss

    return nnx_train_step


# The values of every change: Python floats, a NumPy scalar, a committed device
# array, a strongly typed jax scalar; each must leave the compiled step alone.
VALUES = [1e-2, 3e-3, np.float32(1e-3), 2e-3, "device", "strong", 5e-3]


def _value(v):
    if v == "device":  # committed to a device, as the output of a jitted function is
        return jax.device_put(jnp.float32(4e-3), jax.devices()[0])
    if v == "strong":
        return jnp.asarray(6e-3, jnp.float32)
    return v


def _float(v):
    return float(np.float32(_value(v)))


@pytest.mark.parametrize("how", ["view", "set_hyper"])
def test_nnx_optimizer_changes_never_recompile(how):
    model, ref_model = MLP(nnx.Rngs(0)), MLP(nnx.Rngs(0))
    optimizer = flr.NNXOptimizer(model, flr.optim.Adam(flr.hyper(1e-2)), wrt=nnx.Param)
    ref = nnx.Optimizer(ref_model, injected_adam(1e-2), wrt=nnx.Param)
    step = nnx_step()
    with compiles("nnx_train_step") as counter:
        for v in VALUES:
            if how == "view":
                optimizer.opt.learning_rate = _value(v)
            else:
                assert flr.set_hyper(optimizer, "learning_rate", _value(v)) is optimizer
            ref.opt_state.hyperparams["learning_rate"][...] = _float(v)
            assert float(step(model, optimizer)) == float(step(ref_model, ref))
            assert bit_equal(nnx.state(model, nnx.Param), nnx.state(ref_model, nnx.Param))
            assert float(flr.get_hyper(optimizer, "learning_rate")) == _float(v)
    # One compile per optimizer kind; none for any change, the first one included.
    assert counter.count == 2


def test_optax_state_changes_never_recompile_under_jax_jit():
    params = {"a": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)}
    tx = optax.chain(optax.clip_by_global_norm(1.0), flr.as_optax(flr.optim.Adam(flr.hyper(0.1))))
    ref = optax.chain(optax.clip_by_global_norm(1.0), injected_adam(0.1))
    state, ref_state = tx.init(params), ref.init(params)

    @jax.jit
    def optax_update(grads, state, params):
        return tx.update(grads, state, params)

    with compiles("optax_update") as counter:
        for i, v in enumerate(VALUES):
            new = flr.set_hyper(state, "learning_rate", _value(v))
            assert float(flr.get_hyper(state, "learning_rate")) != _float(v) or i == 0
            state = new  # the optax state is immutable: set_hyper returned a new one
            ref_state[1].hyperparams["learning_rate"] = jnp.asarray(_float(v))
            grads = {"a": jnp.cos(params["a"] * (i + 1))}
            u, state = optax_update(grads, state, params)
            r, ref_state = jax.jit(ref.update)(grads, ref_state, params)
            assert bit_equal(u, r), i
            params = optax.apply_updates(params, r)
    assert counter.count == 1


@pytest.mark.parametrize("holder", ["optimizer", "opt_state"])
def test_nnx_optimizer_with_as_optax_in_place_without_recompile(holder):
    tx = optax.chain(optax.clip_by_global_norm(1.0), flr.as_optax(flr.optim.Adam(flr.hyper(0.1))))
    model, ref_model = MLP(nnx.Rngs(1)), MLP(nnx.Rngs(1))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    ref = nnx.Optimizer(
        ref_model, optax.chain(optax.clip_by_global_norm(1.0), injected_adam(0.1)), wrt=nnx.Param
    )
    step = nnx_step()
    target = optimizer if holder == "optimizer" else optimizer.opt_state
    with compiles("nnx_train_step") as counter:
        for v in VALUES:
            assert flr.set_hyper(target, "learning_rate", _value(v)) is target  # in place
            ref.opt_state[1].hyperparams["learning_rate"][...] = _float(v)
            assert float(step(model, optimizer)) == float(step(ref_model, ref))
            assert bit_equal(nnx.state(model, nnx.Param), nnx.state(ref_model, nnx.Param))
            assert float(flr.get_hyper(target, "learning_rate")) == _float(v)
    assert counter.count == 2


def test_set_hyper_inside_jit():
    # A traced value: set inside the compiled step, from an argument.
    model, ref_model = MLP(nnx.Rngs(2)), MLP(nnx.Rngs(2))
    optimizer = flr.NNXOptimizer(model, flr.optim.Adam(flr.hyper(1e-2)), wrt=nnx.Param)
    ref = nnx.Optimizer(ref_model, injected_adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step_with_lr(model, optimizer, lr):
        flr.set_hyper(optimizer, "learning_rate", lr)
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    ref_step = nnx_step()
    with compiles("step_with_lr") as counter:
        for lr in (1e-2, 2e-3, 7e-3):
            step_with_lr(model, optimizer, jnp.float32(lr))
            ref.opt_state.hyperparams["learning_rate"][...] = lr
            ref_step(ref_model, ref)
            assert bit_equal(nnx.state(model, nnx.Param), nnx.state(ref_model, nnx.Param))
            assert float(flr.get_hyper(optimizer, "learning_rate")) == np.float32(lr)
    assert counter.count == 1

    params = {"w": jnp.arange(3.0)}
    tx = flr.as_optax(flr.optim.SGD(flr.hyper(0.1)))

    @jax.jit
    def optax_step(state, lr):
        state = flr.set_hyper(state, "learning_rate", lr)
        return tx.update({"w": jnp.ones(3)}, state, params)

    u, state = optax_step(tx.init(params), 0.25)
    assert np.array_equal(u["w"], -0.25 * np.ones(3, np.float32))
    assert float(flr.get_hyper(state, "learning_rate")) == 0.25


def test_read_only_array_is_not_a_live_hyperparameter():
    # Adam(jnp.asarray(0.1)) holds an array the hooks only read: a constant of the step
    # (as optax.inject_hyperparams needs), not state; only flr.hyper makes it live.
    params = {"w": jnp.arange(3.0)}
    state = flr.as_optax(flr.optim.Adam(jnp.asarray(0.1))).init(params)
    with pytest.raises(flr.HyperparameterError, match=r"flr\.hyper"):
        flr.get_hyper(state, "learning_rate")
    with pytest.raises(flr.HyperparameterError, match=r"flr\.hyper"):
        flr.set_hyper(state, "learning_rate", 0.05)


def test_schedule_value_is_what_the_next_step_uses():
    schedule = optax.warmup_cosine_decay_schedule(0.0, 0.05, warmup_steps=3, decay_steps=10)
    model, ref_model = MLP(nnx.Rngs(3)), MLP(nnx.Rngs(3))
    optimizer = flr.NNXOptimizer(model, flr.compose.Chain(flr.optim.Adam(schedule)), wrt=nnx.Param)
    ref = nnx.Optimizer(ref_model, injected_adam(schedule), wrt=nnx.Param)
    step = nnx_step()
    assert optimizer.opt.links[0].learning_rate is schedule  # the view shows the schedule
    for i in range(8):
        upcoming = flr.get_hyper(optimizer, "links.0.learning_rate")
        assert float(upcoming) == float(jax.jit(schedule)(i))
        step(model, optimizer)
        step(ref_model, ref)
        # inject_hyperparams reports the value its last step used: ours, read before it.
        used = ref.opt_state.hyperparams["learning_rate"][...]
        assert np.array_equal(np.asarray(upcoming), np.asarray(used)), i
        assert bit_equal(nnx.state(model, nnx.Param), nnx.state(ref_model, nnx.Param))
    assert flr.get_hyper(optimizer, "links.0.b1") == 0.9  # a constant reads as itself


def test_hyper_errors_name_the_fix():
    model = MLP(nnx.Rngs(0))
    optimizer = flr.NNXOptimizer(model, flr.optim.Adam(flr.hyper(0.1), b1=0.8), wrt=nnx.Param)
    with pytest.raises(flr.HyperparameterError, match=r"'b1' is a Python value.*flr\.hyper"):
        flr.set_hyper(optimizer, "b1", 0.5)
    with pytest.raises(flr.HyperparameterError, match=r"no hyperparameter 'lr'.*learning_rate"):
        flr.get_hyper(optimizer, "lr")
    with pytest.raises(flr.HyperparameterError, match="shape"):
        flr.set_hyper(optimizer, "learning_rate", jnp.ones(2))
    with pytest.raises(flr.HyperparameterError, match="cannot become a schedule"):
        flr.set_hyper(optimizer, "learning_rate", optax.constant_schedule(0.1))
    assert float(flr.get_hyper(optimizer, "learning_rate")) == np.float32(0.1)  # unchanged
    schedule = optax.linear_schedule(0.1, 0.0, 10)
    state = flr.as_optax(flr.optim.Adam(schedule)).init({"w": jnp.ones(2)})
    with pytest.raises(flr.HyperparameterError, match=r"schedule\(flr\.get_hyper\(state"):
        flr.get_hyper(state, "learning_rate")
    assert float(schedule(flr.get_hyper(state, "count"))) == np.float32(0.1)
    plain = nnx.Optimizer(MLP(nnx.Rngs(0)), optax.adam(0.1), wrt=nnx.Param)
    with pytest.raises(flr.HyperparameterError, match="contains no flr_nnx state"):
        flr.get_hyper(plain, "learning_rate")
    with pytest.raises(flr.BridgeError, match=r"optimizer\.opt .*runs an optax transformation"):
        _ = flr.NNXOptimizer(MLP(nnx.Rngs(0)), optax.adam(0.1), wrt=nnx.Param).opt
