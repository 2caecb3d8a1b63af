"""MultiSteps, SkipNonFinite, MixedPrecision, and many steps per compiled call."""

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


PARAMS = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": [jnp.ones(4), jnp.zeros(())]}


def grads_at(i, params, bad=()):
    grads = jax.tree.map(lambda p: jnp.sin(3.0 * p + i) * (1 + i % 3), params)
    if i in bad:  # a NaN or an inf in one leaf
        grads["w"] = grads["w"].at[1, 2].set(jnp.nan if i % 2 else jnp.inf)
    return grads


def run_both(hook, ref, steps, bad=()):
    params = PARAMS
    state, ref_state = hook.init(params), ref.init(params)

    @jax.jit
    def both(i, params, state, ref_state):
        grads = grads_at(i, params)
        grads = jax.lax.cond(
            jnp.isin(i, jnp.asarray(bad or (-1,))),
            lambda g: jax.tree.map(lambda x: x * jnp.nan, g),
            lambda g: g,
            grads,
        )
        u, state = hook.update(grads, state, params)
        r, ref_state = ref.update(grads, ref_state, params)
        return u, r, optax.apply_updates(params, r), state, ref_state

    for i in range(steps):
        u, r, params, state, ref_state = both(i, params, state, ref_state)
        assert bit_equal(u, r), i
    return state, ref_state


@pytest.mark.parametrize("use_grad_mean", [True, False])
def test_multisteps_bit_identical_to_optax_multisteps(use_grad_mean):
    hook = flr.as_optax(
        flr.compose.MultiSteps(flr.optim.Adam(1e-2), every_k=3, use_grad_mean=use_grad_mean)
    )
    ref = optax.MultiSteps(optax.adam(1e-2), every_k_schedule=3, use_grad_mean=use_grad_mean)
    state, ref_state = run_both(hook, ref, 10)
    # 10 calls: 3 real updates; the inner Adam counted only those.
    assert int(state.tree["gradient_step"]) == int(ref_state.gradient_step) == 3
    assert int(state.tree["mini_step"]) == int(ref_state.mini_step) == 1
    assert int(state.tree["inner"]["count"]) == int(ref_state.inner_opt_state[0].count) == 3
    assert bit_equal(state.tree["inner"]["mu"], ref_state.inner_opt_state[0].mu)


def test_skip_non_finite_bit_identical_to_optax_apply_if_finite():
    hook = flr.as_optax(flr.compose.SkipNonFinite(flr.optim.Adam(1e-2), max_consecutive_errors=2))
    ref = optax.apply_if_finite(optax.adam(1e-2), max_consecutive_errors=2)
    # Steps 2, 5, 6 are non-finite and skipped (two in a row are allowed); the
    # give-up path (one too many in a row) is the next test.
    state, ref_state = run_both(hook, ref, 7, bad=(2, 5, 6))
    assert int(state.tree["total_notfinite"]) == int(ref_state.total_notfinite) == 3
    assert int(state.tree["notfinite_count"]) == int(ref_state.notfinite_count) == 2
    # 7 calls, 3 skipped: the inner Adam stepped 4 times.
    assert int(state.tree["inner"]["count"]) == int(ref_state.inner_state[0].count) == 4
    assert bit_equal(state.tree["inner"]["nu"], ref_state.inner_state[0].nu)


def test_skip_non_finite_gives_up_after_max_consecutive_errors():
    tx = flr.as_optax(flr.compose.SkipNonFinite(flr.optim.Adam(0.1), max_consecutive_errors=1))
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    bad = {"w": jnp.array([jnp.inf, 1.0])}
    u1, state = tx.update(bad, state, params)
    u2, state = tx.update(bad, state, params)
    assert not np.any(u1["w"]) and np.isnan(u2["w"][0])
    assert int(state.tree["inner"]["count"]) == 1


class MLP(nnx.Module):
    def __init__(self, rngs, dtype=jnp.float32):
        self.l1 = nnx.Linear(4, 8, rngs=rngs, param_dtype=dtype, dtype=dtype)
        self.l2 = nnx.Linear(8, 1, rngs=rngs, param_dtype=dtype, dtype=dtype)

    def __call__(self, x):
        return self.l2(jax.nn.tanh(self.l1(x)))


X = jax.random.normal(jax.random.key(0), (64, 4))
Y = jnp.sin(X.sum(axis=1, keepdims=True))


def loss_at(model, x, y):
    return ((model(x) - y) ** 2).mean()


def test_nnx_step_counts_every_call_with_wrappers():
    model = MLP(nnx.Rngs(0))
    optimizer = flr.NNXOptimizer(
        model,
        flr.compose.SkipNonFinite(flr.compose.MultiSteps(flr.optim.Adam(1e-2), 2), 5),
        wrt=nnx.Param,
    )

    @nnx.jit
    def train_step(model, optimizer, x, y):
        optimizer.update(model, nnx.grad(loss_at)(model, x, y))

    for i in range(5):
        train_step(model, optimizer, X * (jnp.nan if i == 1 else 1.0), Y)
    assert int(optimizer.step[...]) == 5  # every call
    assert int(optimizer.opt.total_notfinite) == 1  # call 1 was skipped
    assert int(optimizer.opt.inner.gradient_step) == 2  # 4 accepted mini-steps / 2
    assert int(optimizer.opt.inner.inner.count) == 2  # Adam's own count


def test_mixed_precision_state_dtype_default_and_float32_option():
    model = MLP(nnx.Rngs(0), dtype=jnp.bfloat16)
    plain = flr.NNXOptimizer(model, flr.optim.Adam(1e-2), wrt=nnx.Param)
    assert plain.opt_state["mu"]["l1"]["kernel"][...].dtype == jnp.bfloat16  # follows param
    mixed = flr.NNXOptimizer(model, flr.compose.MixedPrecision(flr.optim.Adam(1e-2)), wrt=nnx.Param)
    assert mixed.opt_state["inner"]["mu"]["l1"]["kernel"][...].dtype == jnp.float32
    assert mixed.opt_state["inner"]["nu"]["l2"]["bias"][...].dtype == jnp.float32

    # Reference: optax.adam on float32 copies of the bf16 gradients, updates cast back.
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    ref = optax.adam(1e-2)
    ref_state = ref.init(jax.tree.map(lambda p: p.astype(jnp.float32), params))

    @nnx.jit
    def hook_step(model, optimizer, grads):
        return optimizer.update(model, grads)

    @jax.jit
    def ref_step(grads, ref_state):
        u, ref_state = ref.update(jax.tree.map(lambda g: g.astype(jnp.float32), grads), ref_state)
        return jax.tree.map(lambda u, g: u.astype(g.dtype), u, grads), ref_state

    grad_fn = nnx.jit(nnx.grad(loss_at))
    for i in range(4):
        grads = grad_fn(model, X * (1 + i), Y)
        u = hook_step(model, mixed, grads)
        r, ref_state = ref_step(nnx.as_pure(grads), ref_state)
        assert bit_equal(u, r), i
        assert u["l1"]["kernel"].dtype == jnp.bfloat16
    assert bit_equal(
        nnx.as_pure(nnx.state(mixed, flr.OptimizerSlot))["opt_state"]["inner"]["mu"],
        ref_state[0].mu,
    )
    assert model.l1.kernel[...].dtype == jnp.bfloat16


def test_training_loop_inside_nnx_fori_loop_and_scan():
    def train_step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(loss_at)(model, x, y)
        optimizer.update(model, grads, loss=loss)
        return loss

    batches_x, batches_y = X.reshape(8, 8, 4), Y.reshape(8, 8, 1)

    # Reference: one jitted call per step.
    ref_model = MLP(nnx.Rngs(0))
    ref_opt = flr.NNXOptimizer(ref_model, flr.optim.Adam(1e-2), wrt=nnx.Param)
    jit_step = nnx.jit(train_step)
    ref_losses = [jit_step(ref_model, ref_opt, x, y) for x, y in zip(batches_x, batches_y)]

    # nnx.scan over the batches: 8 steps in one compiled call.
    model = MLP(nnx.Rngs(0))
    optimizer = flr.NNXOptimizer(model, flr.optim.Adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def train_epoch(model, optimizer, xs, ys):
        @nnx.scan(in_axes=(nnx.Carry, 0, 0), out_axes=(nnx.Carry, 0))
        def body(carry, x, y):
            model, optimizer = carry
            return (model, optimizer), train_step(model, optimizer, x, y)

        _, losses = body((model, optimizer), xs, ys)
        return losses

    losses = train_epoch(model, optimizer, batches_x, batches_y)
    np.testing.assert_allclose(losses, jnp.stack(ref_losses), rtol=1e-5)
    for a, b in zip(
        jax.tree.leaves(nnx.state(model, nnx.Param)), jax.tree.leaves(nnx.state(ref_model))
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert int(optimizer.step[...]) == 8 and int(optimizer.opt.count) == 8

    # nnx.fori_loop: 8 more steps on the first batch in one compiled call.
    @nnx.jit
    def train_n(model, optimizer, x, y):
        def body(i, carry):
            model, optimizer = carry
            train_step(model, optimizer, x, y)
            return model, optimizer

        nnx.fori_loop(0, 8, body, (model, optimizer))

    train_n(model, optimizer, batches_x[0], batches_y[0])
    for _ in range(8):
        jit_step(ref_model, ref_opt, batches_x[0], batches_y[0])
    for a, b in zip(
        jax.tree.leaves(nnx.state(model, nnx.Param)), jax.tree.leaves(nnx.state(ref_model))
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert int(optimizer.step[...]) == 16 and int(optimizer.opt.count) == 16


def test_wrapper_arguments_are_checked():
    with pytest.raises(flr.HyperparameterError, match="every_k"):
        flr.compose.MultiSteps(flr.optim.Adam(0.1), 0)
    with pytest.raises(flr.HyperparameterError, match="max_consecutive_errors"):
        flr.compose.SkipNonFinite(flr.optim.Adam(0.1), -1)
