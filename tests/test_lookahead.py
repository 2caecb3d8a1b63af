"""Lookahead against optax's own lookahead, with optax's ``LookaheadParams``.

optax keeps the slow parameters in ``params`` (``LookaheadParams(fast, slow)``);
``flr.compose.Lookahead`` keeps them as state (``slow``). A user of optax gets
the fast and slow parameters of this loop; both must be bit-identical.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flr_nnx as flr


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_fast_and_slow_parameters_match_optax_lookahead(dtype):
    params = {"w": jnp.linspace(-1.0, 1.0, 6, dtype=dtype).reshape(2, 3), "b": jnp.ones(3, dtype)}
    ours = flr.as_optax(flr.compose.Lookahead(flr.optim.Adam(1e-1), 3, 0.5))
    theirs = optax.lookahead(optax.adam(1e-1), 3, 0.5)

    def grads_of(p):
        return jax.grad(lambda p: sum(jnp.sum(jnp.sin(x.astype(jnp.float32))) for x in p.values()))(
            p
        )

    @jax.jit
    def step_ours(p, s):
        u, s = ours.update(grads_of(p), s, p)
        return optax.apply_updates(p, u), s

    @jax.jit
    def step_theirs(lp, s):
        u, s = theirs.update(grads_of(lp.fast), s, lp)
        return optax.apply_updates(lp, u), s

    p, s = params, ours.init(params)
    lp = optax.LookaheadParams.init_synced(params)
    ls = theirs.init(lp)
    for n in range(7):
        p, s = step_ours(p, s)
        lp, ls = step_theirs(lp, ls)
        for k in params:
            np.testing.assert_array_equal(p[k], lp.fast[k], err_msg=f"fast {k}, step {n}")
            np.testing.assert_array_equal(s.tree["slow"][k], lp.slow[k], err_msg=f"slow {k}")
    # The slow parameters moved, and differ from the fast ones between synchronisations.
    assert not np.array_equal(lp.slow["w"], params["w"])
    assert not np.array_equal(lp.slow["w"], lp.fast["w"])


def _sine_loss(p):
    return sum(jnp.sum(jnp.sin(x.astype(jnp.float32))) for x in jax.tree.leaves(p))


def _optax_reset_run(params, steps):
    """The fast parameters and Adam's state of ``optax.lookahead(adam, reset_state=True)``."""
    tx = optax.lookahead(optax.adam(1e-1), 3, 0.5, reset_state=True)

    @jax.jit
    def step(lp, s):
        u, s = tx.update(jax.grad(_sine_loss)(lp.fast), s, lp)
        return optax.apply_updates(lp, u), s

    lp = optax.LookaheadParams.init_synced(params)
    s = tx.init(lp)
    out = []
    for _ in range(steps):
        lp, s = step(lp, s)
        out.append((lp.fast, s.fast_state[0]))
    return out


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_reset_state_matches_optax_through_as_optax(dtype):
    params = {"w": jnp.linspace(-1.0, 1.0, 6, dtype=dtype).reshape(2, 3), "b": jnp.ones(3, dtype)}
    ours = flr.as_optax(flr.compose.Lookahead(flr.optim.Adam(1e-1), 3, 0.5, reset_state=True))

    @jax.jit
    def step(p, s):
        u, s = ours.update(jax.grad(_sine_loss)(p), s, p)
        return optax.apply_updates(p, u), s

    p, s = params, ours.init(params)
    for n, (fast, adam) in enumerate(_optax_reset_run(params, 7)):
        p, s = step(p, s)
        np.testing.assert_array_equal(s.tree["fast"]["count"], adam.count, err_msg=f"step {n}")
        for k in params:
            np.testing.assert_array_equal(p[k], fast[k], err_msg=f"fast {k}, step {n}")
            np.testing.assert_array_equal(s.tree["fast"]["mu"][k], adam.mu[k], err_msg=f"mu {k}")
            np.testing.assert_array_equal(s.tree["fast"]["nu"][k], adam.nu[k], err_msg=f"nu {k}")
    # The reset happened: the count restarted at the synchronisations (after steps 3 and 6).
    assert int(s.tree["fast"]["count"]) == 1


def test_reset_state_matches_optax_through_nnx():
    from flax import nnx

    class Model(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.linspace(-1.0, 1.0, 6).reshape(2, 3))
            self.b = nnx.Param(jnp.ones(3))

    model = Model()
    params = {"w": model.w[...], "b": model.b[...]}
    tx = flr.compose.Lookahead(flr.optim.Adam(1e-1), 3, 0.5, reset_state=True)
    opt = flr.NNXOptimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model, opt):
        opt.update(model, nnx.grad(_sine_loss)(model))

    for n, (fast, _adam) in enumerate(_optax_reset_run(params, 7)):
        step(model, opt)
        np.testing.assert_array_equal(model.w[...], fast["w"], err_msg=f"step {n}")
        np.testing.assert_array_equal(model.b[...], fast["b"], err_msg=f"step {n}")


def test_a_reset_keeps_live_hyperparameters_and_bad_period_is_refused():
    lr = flr.hyper(0.1)
    tx = flr.as_optax(flr.compose.Lookahead(flr.optim.SGD(lr, momentum=0.9), 1, 0.5, True))
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    state = flr.set_hyper(state, "fast.learning_rate", 0.25)
    updates, state = tx.update({"w": jnp.ones(2)}, state, params)
    # Reset at every step (sync_period=1): the momentum restarts, the set rate stays.
    np.testing.assert_array_equal(state.tree["fast"]["trace"]["w"], jnp.zeros(2))
    assert float(flr.get_hyper(state, "fast.learning_rate")) == 0.25
    np.testing.assert_allclose(updates["w"], -0.5 * 0.25 * jnp.ones(2))
    with pytest.raises(flr.HyperparameterError, match="sync_period"):
        flr.compose.Lookahead(flr.optim.SGD(0.1), 0, 0.5)


def test_a_reset_recreates_state_that_starts_from_the_parameters():
    class Anchored(flr.optim.Optimizer):
        """SGD keeping a running sum that starts at the parameter (state made from params)."""

        def __init__(self):
            self.anchor = {}

        def call_param(self, key, grad, param):
            if key not in self.anchor:
                self.anchor[key] = param
            self.anchor[key] = self.anchor[key] + grad
            return 0.1 * grad

    tx = flr.as_optax(flr.compose.Lookahead(Anchored(), 2, 0.5, reset_state=True))
    p0, g = {"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([0.5, 0.25])}
    step = jax.jit(tx.update)
    u, state = step(g, tx.init(p0), p0)
    np.testing.assert_array_equal(state.tree["fast"]["anchor"]["w"], p0["w"] + g["w"])
    p1 = optax.apply_updates(p0, u)
    _, state = step(g, state, p1)
    # Synchronised after the second step: the anchor restarts from that step's parameters.
    np.testing.assert_array_equal(state.tree["fast"]["anchor"]["w"], p1["w"])
