"""Parameter groups and freezing: flr.compose.Partition and flr.compose.freeze."""

import re

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


def params_and_grads(i):
    k = jax.random.split(jax.random.fold_in(jax.random.key(0), i), 4)
    params = {
        "embed": jax.random.normal(k[0], (5, 3)),
        "layers": [
            {"kernel": jax.random.normal(k[1], (3, 3)), "bias": jnp.zeros(3)},
            {"kernel": jax.random.normal(k[2], (3, 2)), "bias": jnp.ones(2)},
        ],
    }
    grads = jax.tree.map(lambda p: jnp.cos(p + i), params)
    return params, grads


def test_partition_matches_optax_partition_and_frozen_have_no_state():
    params, _ = params_and_grads(0)
    hook = flr.as_optax(
        flr.compose.Partition(
            [
                (r"bias$", flr.optim.Adam(1e-2, b1=0.5)),
                (re.compile(r"^embed"), None),  # frozen
                (lambda key, _: key[:2] == ("layers", 1), flr.optim.Adam(3e-3)),
            ],
            default=flr.optim.Adam(1e-3),
        )
    )
    labels = {
        "embed": "frozen",
        "layers": [
            {"kernel": "default", "bias": "bias"},
            {"kernel": "second", "bias": "bias"},
        ],
    }
    ref = optax.partition(
        {
            "bias": optax.adam(1e-2, b1=0.5),
            "frozen": optax.set_to_zero(),
            "second": optax.adam(3e-3),
            "default": optax.adam(1e-3),
        },
        labels,
    )
    state, ref_state = hook.init(params), ref.init(params)
    groups = state.tree["optimizers"]
    assert set(groups[0]["mu"]["layers"][0]) == {"bias"}
    assert set(groups[0]["mu"]["layers"][1]) == {"bias"}
    assert set(groups[2]["mu"]["layers"][1]) == {"kernel"}
    assert set(groups[3]["mu"]) == {"layers"} and set(groups[3]["mu"]["layers"][0]) == {"kernel"}
    assert not any("embed" in str(path) for path in jax.tree_util.tree_leaves_with_path(state))
    # Same arithmetic, but not bitwise under jit: XLA fuses optax.partition's masked
    # trees and the per-group dicts differently (1-ulp differences in a few elements;
    # eagerly neither side is fused and optax.adam itself differs from its jitted self).
    update, ref_update = jax.jit(hook.update), jax.jit(ref.update)
    for i in range(6):
        _, grads = params_and_grads(i)
        u, state = update(grads, state, params)
        r, ref_state = ref_update(grads, ref_state, params)
        for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(r), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
        assert not np.any(u["embed"])
        params = optax.apply_updates(params, r)
    # Each group counts its own steps.
    assert int(state.tree["optimizers"][0]["count"]) == 6


class Model(nnx.Module):
    def __init__(self, rngs):
        self.base = nnx.Linear(3, 4, rngs=rngs)
        self.lora_a = nnx.LoRAParam(jax.random.normal(rngs.params(), (3, 2)))
        self.lora_b = nnx.LoRAParam(jnp.zeros((2, 4)))
        self.head = nnx.Linear(4, 1, rngs=rngs)

    def __call__(self, x):
        return self.head(self.base(x) + x @ self.lora_a @ self.lora_b)


def test_variable_type_filters_and_freezing_under_nnx_optimizer():
    model = Model(nnx.Rngs(0))
    opt = flr.compose.Partition(
        [(nnx.LoRAParam, flr.optim.Adam(1e-2)), (r"^head/", flr.optim.Adam(1e-3))],
        default=None,  # the base weights are frozen
    )
    optimizer = flr.NNXOptimizer(model, opt, wrt=nnx.Param)
    frozen_before = jax.tree.map(jnp.copy, nnx.state(model.base))
    head_before = jax.tree.map(jnp.copy, nnx.state(model.head))
    lora_state = optimizer.opt_state["optimizers"][0]["mu"]
    assert set(lora_state) == {"lora_a", "lora_b"}
    assert set(optimizer.opt_state["optimizers"][1]["mu"]) == {"head"}
    slots = nnx.to_flat_state(nnx.state(optimizer, flr.OptimizerSlot))
    assert not any("base" in path for path, _ in slots)

    x = jnp.ones((8, 3))

    @nnx.jit
    def train_step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: (m(x) ** 2).mean())(model)
        optimizer.update(model, grads, loss=loss)

    for _ in range(3):
        train_step(model, optimizer)
    assert bit_equal(nnx.state(model.base), frozen_before)
    assert not bit_equal(nnx.state(model.head), head_before)
    assert not np.array_equal(model.lora_b[...], np.zeros((2, 4)))
    assert int(optimizer.opt.optimizers[0].count) == 3


def test_variable_type_filter_under_as_optax_is_a_clear_error():
    tx = flr.as_optax(flr.compose.Partition([(nnx.LoRAParam, None)], default=flr.optim.Adam(0.1)))
    with pytest.raises(flr.HookError, match=r"Variable type .*flr\.NNXOptimizer"):
        tx.init({"w": jnp.ones(2)})


def test_freeze_shorthand_and_bad_groups():
    params, grads = params_and_grads(1)
    tx = flr.as_optax(flr.compose.freeze(flr.optim.Adam(0.1), r"^layers/0/", "embed"))
    u, state = tx.update(grads, tx.init(params), params)
    assert not np.any(u["embed"]) and not np.any(u["layers"][0]["kernel"])
    assert np.all(u["layers"][1]["kernel"] != 0)
    assert set(state.tree["optimizers"][1]["mu"]["layers"]) == {1}
    with pytest.raises(flr.HyperparameterError, match=r"\(filter, optimizer\) pair"):
        flr.compose.Partition([nnx.Param], default=None)
    with pytest.raises(flr.HyperparameterError, match="from_optax"):
        flr.compose.Partition([(nnx.Param, optax.adam(0.1))], default=None)
