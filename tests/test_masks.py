"""Masks: which parameters an option applies to (``flr.helpers.Mask``, ``key_mask``).

Every spelling optax accepts (a callable, a pytree of bools, a prefix of one) and
``key_mask``'s predicate on keys select the same parameters, through both bridges.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import flr_nnx as flr
from flr_nnx._tree import flatten
from flr_nnx.helpers._mask import OrderedNode, unflatten


def small_params():
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    return {
        "dense": {"kernel": jax.random.normal(k1, (4, 5)), "bias": jnp.zeros(5)},
        "out": [jax.random.normal(k2, (5,)), jax.random.normal(k3, ())],
    }


def flat_of(tree):
    keys, leaves, _ = flatten(tree)
    return dict(zip(keys, leaves, strict=True))


ALL = {("dense", "kernel"), ("dense", "bias"), ("out", 0), ("out", 1)}


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        (None, ALL),
        (flr.helpers.key_mask(lambda key: key[-1] != "bias"), ALL - {("dense", "bias")}),
        (lambda p: jax.tree.map(lambda x: x.ndim > 1, p), {("dense", "kernel")}),
        ({"dense": True, "out": False}, {("dense", "kernel"), ("dense", "bias")}),
        (
            {"dense": {"kernel": True, "bias": False}, "out": [False, True]},
            {("dense", "kernel"), ("out", 1)},
        ),
        (True, ALL),
    ],
    ids=["none", "key_mask", "optax_callable", "prefix", "full_tree", "root_bool"],
)
def test_mask_selects_keys(mask, expected):
    assert flr.helpers.Mask(mask).select(flat_of(small_params())) == expected


def test_pytree_mask_made_from_an_nnx_state():
    # The natural NNX spelling: a tree of bools mapped over the model's Param state
    # (Variables holding bools); keys drop the Variables' `.value` like the params'.
    model = Net(nnx.Rngs(0))
    mask = jax.tree.map(lambda p: p.ndim > 1, nnx.state(model, nnx.Param))
    keys = flat_of(nnx.state(model, nnx.Param))
    assert flr.helpers.Mask(mask).select(keys) == {("layers", 0, "kernel"), ("layers", 1, "kernel")}


def test_key_mask_is_an_optax_mask_too():
    no_bias = flr.helpers.key_mask(lambda key: key[-1] != "bias")
    assert no_bias(small_params()) == {
        "dense": {"kernel": True, "bias": False},
        "out": [True, True],
    }


def test_unflatten_restores_keys_even_for_mixed_levels():
    flat = {("a", 0): 1.0, ("a", "b"): 2.0, ("c", 0): 3.0, ("c", 1): 4.0, ("d",): 5.0}
    tree = unflatten(flat)
    assert isinstance(tree["a"], OrderedNode) and tree["c"] == [3.0, 4.0]
    assert flat_of(tree) == flat
    # An optax-style callable can tree-map over it although JAX cannot sort {0, "b"}.
    mask = flr.helpers.Mask(lambda p: jax.tree.map(lambda x: x > 1.5, p))
    assert mask.select(flat) == {("a", "b"), ("c", 0), ("c", 1), ("d",)}


def test_mask_errors_name_the_key():
    with pytest.raises(flr.StructureError, match=r"\('out', 0\)"):
        flr.helpers.Mask({"dense": True}).select(flat_of(small_params()))
    with pytest.raises(flr.HyperparameterError, match=r"\('dense',\)"):
        flr.helpers.Mask({"dense": jnp.ones(2) > 0, "out": True})
    with pytest.raises(flr.HyperparameterError, match="callable"):
        flr.helpers.key_mask("bias")
    traced = flr.helpers.Mask(lambda p: jax.tree.map(lambda x: x.sum() > 0, p))
    with pytest.raises(flr.HyperparameterError, match="traced"):
        jax.jit(lambda t: len(traced.select(t)))(flat_of(small_params()))


class Net(nnx.Module):
    def __init__(self, rngs):
        self.layers = nnx.List([nnx.Linear(3, 4, rngs=rngs), nnx.Linear(4, 2, rngs=rngs)])
        self.norm = nnx.LayerNorm(2, rngs=rngs)

    def __call__(self, x):
        return self.norm(self.layers[1](jax.nn.tanh(self.layers[0](x))))


def test_key_mask_through_nnx_optimizer_matches_optax_adamw_with_the_same_mask():
    # One line: no weight decay on biases and norms, for the hook and for optax.
    no_decay = flr.helpers.key_mask(lambda key: key[-1] != "bias" and "norm" not in key)
    model, ref_model = Net(nnx.Rngs(0)), Net(nnx.Rngs(0))
    opt = flr.NNXOptimizer(
        model, flr.optim.AdamW(0.05, weight_decay=0.5, mask=no_decay), wrt=nnx.Param
    )
    ref = nnx.Optimizer(
        ref_model, optax.adamw(0.05, weight_decay=0.5, mask=no_decay), wrt=nnx.Param
    )
    x = jnp.linspace(-1.0, 1.0, 15).reshape(5, 3)

    @nnx.jit
    def train_step(model, optimizer):
        optimizer.update(model, nnx.grad(lambda m: (m(x) ** 2).mean())(model))

    for _ in range(5):
        train_step(model, opt)
        train_step(ref_model, ref)
    ours, theirs = nnx.state(model, nnx.Param), nnx.state(ref_model, nnx.Param)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True)
    )
