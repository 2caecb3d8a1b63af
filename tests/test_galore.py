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


def test_dimension_numbers_that_do_not_fit_a_parameter_name_it_and_a_fix():
    params = {"l1": {"kernel": jnp.ones((4, 3)), "bias": jnp.ones(3)}, "k": jnp.ones((3, 2, 5))}
    dims = optax.contrib.GaLoreDimensionNumbers

    def init_and_update(spec):
        tx = flr.as_optax(flr.optim.GaLore(0.05, rank=2, weight_dimension_numbers=spec))
        tx.update(params, tx.init(params), params)

    # One for every parameter of rank >= 2: the 3-D one's axes do not fit the matrix.
    with pytest.raises(flr.HyperparameterError) as e:
        init_and_update(dims(0, (1, 2)))
    message = str(e.value)
    assert "gives parameter l1/kernel (shape (4, 3)) GaLoreDimensionNumbers(" in message
    assert "these are (0,) and (1, 0)" in message
    assert "Fix: for it, GaLoreDimensionNumbers(reduction_axis=0, output_axis=1); one" in message
    # The suggested fix is one that works, given per parameter.
    init_and_update({"l1": {"kernel": dims(0, 1), "bias": None}, "k": dims(0, (1, 2))})
    with pytest.raises(flr.HyperparameterError, match=r"output_axis=\(0, 2\)\)"):
        init_and_update({"l1": {"kernel": dims(0, 1), "bias": None}, "k": dims(1, (0, 1))})
    # A vector cannot be projected.
    with pytest.raises(
        flr.HyperparameterError, match=r"l1/bias \(shape \(3,\)\).*Fix: give it None"
    ):
        init_and_update({"l1": {"kernel": dims(0, 1), "bias": dims(0, 1)}, "k": None})
