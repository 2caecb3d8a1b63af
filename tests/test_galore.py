"""GaLore's base optimizer and its errors, beyond optax's own tests (tests/peers)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flr_nnx as flr


def _run(tx, params, steps=5):
    @jax.jit
    def step(params, state, i):
        grads = jax.tree.map(lambda p: jnp.cos(p * (1.0 + 0.1 * i)) + 0.3 * p, params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for i in range(steps):
        params, state = step(params, state, i)
    return params


@pytest.mark.parametrize(
    "make, sign, negate",
    [
        (optax.scale_by_adam, "auto", False),
        (lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_rms()), "auto", False),
        # A full optimizer ends with -learning_rate: from_optax negates it to a descent
        # direction, where optax's GaLore would step uphill; sign='gradient' is optax's.
        (lambda: optax.adam(1.0), "auto", True),
        (lambda: optax.sgd(1.0, momentum=0.9), "auto", True),
        (lambda: optax.adam(1.0), "gradient", False),
        (lambda: optax.sgd(1.0, momentum=0.9), "gradient", False),
    ],
    ids=["scale_by_adam", "chain", "adam", "sgd_momentum", "adam_gradient", "sgd_gradient"],
)
def test_an_optax_base_optimizer_matches_optax_galore(make, sign, negate):
    """``base_optimizer=flr.from_optax(tx)``, as GaLore's docstring says: optax's GaLore."""
    params = {
        "w": jnp.linspace(-1.0, 1.0, 12).reshape(4, 3),
        "v": jnp.linspace(0.5, -0.5, 6).reshape(2, 3),
        "b": jnp.linspace(0.1, 0.4, 3),
    }
    kwargs = dict(learning_rate=0.05, rank=1, update_proj_gap=2, weight_decay=1e-2)
    base = flr.from_optax(make(), sign=sign)
    ours = flr.as_optax(flr.optim.GaLore(**kwargs, base_optimizer=base))
    optax_base = optax.chain(make(), optax.scale(-1.0)) if negate else make()
    theirs = optax.contrib.galore(**kwargs, base_optimizer=optax_base)
    got, expected = _run(ours, params), _run(theirs, params)
    for key in params:
        np.testing.assert_array_equal(got[key], expected[key])
    assert not np.array_equal(got["w"], params["w"])
