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


def test_reset_state_and_bad_period_are_refused():
    with pytest.raises(flr.HyperparameterError, match="reset_state"):
        flr.compose.Lookahead(flr.optim.SGD(0.1), 2, 0.5, reset_state=True)
    with pytest.raises(flr.HyperparameterError, match="sync_period"):
        flr.compose.Lookahead(flr.optim.SGD(0.1), 0, 0.5)
