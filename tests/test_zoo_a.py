"""Optimizer zoo, part A: masks, and each optimizer against its optax twin."""

import jax
import jax.numpy as jnp
import pytest

import flr_nnx as flr
from flr_nnx._tree import flatten
from flr_nnx.optim._mask import OrderedNode, unflatten


def small_params():
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    return {
        "dense": {"kernel": jax.random.normal(k1, (4, 5)), "bias": jnp.zeros(5)},
        "out": [jax.random.normal(k2, (5,)), jax.random.normal(k3, ())],
    }


def flat_of(tree):
    keys, leaves, _ = flatten(tree)
    return dict(zip(keys, leaves, strict=True))


# -- masks --------------------------------------------------------------------

ALL = {("dense", "kernel"), ("dense", "bias"), ("out", 0), ("out", 1)}


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        (None, ALL),
        (flr.optim.key_mask(lambda key: key[-1] != "bias"), ALL - {("dense", "bias")}),
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
    assert flr.optim.Mask(mask).select(flat_of(small_params())) == expected


def test_key_mask_is_an_optax_mask_too():
    no_bias = flr.optim.key_mask(lambda key: key[-1] != "bias")
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
    mask = flr.optim.Mask(lambda p: jax.tree.map(lambda x: x > 1.5, p))
    assert mask.select(flat) == {("a", "b"), ("c", 0), ("c", 1), ("d",)}


def test_mask_errors_name_the_key():
    with pytest.raises(flr.StructureError, match=r"\('out', 0\)"):
        flr.optim.Mask({"dense": True}).select(flat_of(small_params()))
    with pytest.raises(flr.HyperparameterError, match=r"\('dense',\)"):
        flr.optim.Mask({"dense": jnp.ones(2) > 0, "out": True})
    with pytest.raises(flr.HyperparameterError, match="callable"):
        flr.optim.key_mask("bias")
    traced = flr.optim.Mask(lambda p: jax.tree.map(lambda x: x.sum() > 0, p))
    with pytest.raises(flr.HyperparameterError, match="traced"):
        jax.jit(lambda t: len(traced.select(t)))(flat_of(small_params()))
