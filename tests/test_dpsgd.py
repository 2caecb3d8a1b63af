"""DPSGD and per-example gradients, against ``optax.contrib.dpsgd`` through both bridges.

The zoo's generic harness feeds one gradient per parameter; DPSGD takes one per
example (a leading batch axis, ``per_example_grads = True``), so it is
cross-checked here, step by step and bit for bit under ``jit``.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import flr_nnx as flr

BATCH = 5


def _optax_dpsgd(**kwargs):
    with warnings.catch_warnings():  # optax's dpsgd passes the deprecated `seed=` on
        warnings.simplefilter("ignore", DeprecationWarning)
        return optax.contrib.dpsgd(**kwargs)


def _per_example(params, t, dtype):
    return jax.tree.map(
        lambda p: (
            jax.random.normal(jax.random.key(t), (BATCH, *p.shape), jnp.float32).astype(dtype)
            * (1 + t)
        ),
        params,
    )


def _assert_same(ours, theirs, what):
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32), what)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize(("momentum", "nesterov"), [(None, False), (0.9, True)])
def test_as_optax_is_bit_identical_to_optax_dpsgd(dtype, momentum, nesterov):
    params = {"a": jnp.ones((3, 2), dtype), "b": (jnp.zeros(4, dtype), jnp.ones((), dtype))}
    kwargs = dict(
        learning_rate=0.1, l2_norm_clip=1.0, noise_multiplier=0.5, seed=3, momentum=momentum
    )
    kwargs["nesterov"] = nesterov
    theirs, ours = _optax_dpsgd(**kwargs), flr.as_optax(flr.optim.DPSGD(**kwargs))
    s_theirs, s_ours = theirs.init(params), ours.init(params)
    for t in range(3):
        g = _per_example(params, t, dtype)
        u_theirs, s_theirs = jax.jit(theirs.update)(g, s_theirs, params)
        u_ours, s_ours = jax.jit(ours.update)(g, s_ours, params)
        _assert_same(u_ours, u_theirs, f"step {t}")
        # Same shapes as the parameters: the batch axis is aggregated.
        assert jax.tree.map(jnp.shape, u_ours) == jax.tree.map(jnp.shape, params)
    # The PRNG key advances as optax's does (the noise of later steps matches too).
    key_theirs = s_theirs[0].rng_key
    np.testing.assert_array_equal(
        jax.random.key_data(s_ours.tree["rng_key"]), jax.random.key_data(key_theirs)
    )


def test_aggregate_in_a_chain_matches_optax_chain():
    params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)}
    theirs = optax.chain(
        optax.contrib.differentially_private_aggregate(2.0, 0.3, key=7), optax.adam(0.1)
    )
    ours = flr.as_optax(
        flr.compose.Chain(
            flr.optim.DifferentiallyPrivateAggregate(2.0, 0.3, key=7), flr.optim.Adam(0.1)
        )
    )
    s_theirs, s_ours = theirs.init(params), ours.init(params)
    for t in range(3):
        g = _per_example(params, t, jnp.float32)
        u_theirs, s_theirs = jax.jit(theirs.update)(g, s_theirs, params)
        u_ours, s_ours = jax.jit(ours.update)(g, s_ours, params)
        _assert_same(u_ours, u_theirs, f"step {t}")


class _Model(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(3, 2, rngs=rngs)

    def __call__(self, x):
        return self.linear(x)


def _loss(model, x, y):
    return jnp.sum((model(x) - y) ** 2)


def test_nnx_optimizer_with_nnx_vmap_grads_matches_nnx_optimizer_with_optax():
    kwargs = dict(learning_rate=0.1, l2_norm_clip=0.5, noise_multiplier=0.2, seed=1)
    ours_model, theirs_model = _Model(nnx.Rngs(0)), _Model(nnx.Rngs(0))
    ours = flr.NNXOptimizer(ours_model, flr.optim.DPSGD(**kwargs, momentum=0.9), wrt=nnx.Param)
    theirs = nnx.Optimizer(theirs_model, _optax_dpsgd(**kwargs, momentum=0.9), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        # One gradient per example: the per-example capability, with nnx's own transforms.
        grads = nnx.vmap(nnx.grad(_loss), in_axes=(None, 0, 0))(model, x, y)
        optimizer.update(model, grads)

    for t in range(3):
        x = jax.random.normal(jax.random.key(t), (BATCH, 3))
        y = jnp.ones((BATCH, 2))
        step(ours_model, ours, x, y)
        step(theirs_model, theirs, x, y)
        _assert_same(nnx.state(ours_model), nnx.state(theirs_model), f"step {t}")


def test_ordinary_grads_to_dpsgd_and_per_example_grads_to_adam_are_refused():
    params = {"w": jnp.ones(3)}
    tx = flr.as_optax(flr.optim.DPSGD(0.1, 1.0, 0.0, 0))
    with pytest.raises(
        flr.StructureError,
        match=r"DPSGD takes per-example.*\('w',\).*"
        r"\(batch, 3\); it has shape \(3,\).*Fix: .*jax\.vmap",
    ):
        tx.update(params, tx.init(params), params)
    tx = flr.as_optax(flr.optim.Adam(0.1))
    with pytest.raises(
        flr.StructureError,
        match=r"\('w',\) has shape \(4, 3\): one more "
        r"leading axis.*Adam.*Fix: average them",
    ):
        tx.update({"w": jnp.ones((4, 3))}, tx.init(params), params)


def test_wrappers_pass_per_example_grads_only_where_they_take_them():
    params = {"w": jnp.ones(3)}
    # Chain takes them when its first link does; a DPSGD later in the chain gets ordinary
    # gradients, and MultiSteps (which averages over steps) does not take them: refused
    # at init, naming the fix.
    assert flr.compose.Chain(
        flr.optim.DPSGD(0.1, 1.0, 0.0, 0), flr.optim.SGD(1.0)
    ).per_example_grads
    for wrapped in (
        flr.compose.Chain(flr.optim.SGD(1.0), flr.optim.DPSGD(0.1, 1.0, 0.0, 0)),
        flr.compose.MultiSteps(flr.optim.DPSGD(0.1, 1.0, 0.0, 0), 2),
    ):
        with pytest.raises(flr.StructureError, match=r"DPSGD takes per-example.*a wrapper"):
            flr.as_optax(wrapped).init(params)


@pytest.mark.parametrize(("l2_norm_clip", "noise_multiplier"), [(3.0, 2.0), (100.0, 4.0)])
def test_noise_standard_deviation_is_clip_times_multiplier(l2_norm_clip, noise_multiplier):
    # optax's test_noise_multiplier (dropped from tests/peers/test_optax_privacy.py, which
    # initialises on another tree than it updates), the state initialised on the tree used.
    grads = [jnp.ones((1, 100, 100))]  # a batch of one example
    hook = flr.optim.DifferentiallyPrivateAggregate(l2_norm_clip, noise_multiplier, key=1337)
    tx = flr.as_optax(hook, sign="gradient")
    state = tx.init([jnp.zeros((100, 100))])
    expected_std = l2_norm_clip * noise_multiplier
    for _ in range(3):
        updates, state = jax.jit(tx.update)(grads, state)
        np.testing.assert_allclose(jnp.std(updates[0]), expected_std, atol=0.1 * expected_std)
