"""flr.testing.assert_matches, and the acceptance tests of issue 3 that are not per optimizer.

- a schedule gives the same trajectory as optax with the same schedule;
- ``Chain(from_optax(clip_by_global_norm(1.0)), Adam(1e-3))`` equals
  ``optax.chain(clip_by_global_norm(1.0), adam(1e-3))``;
- ``from_optax`` state is discovered like any other, and signs are handled.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import flr_nnx as flr

PARAMS = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(3, 2), "b": jnp.zeros(2)}


class DriftingSGD(flr.optim.Optimizer):
    """SGD whose update of ``b`` is off by ``drift`` (relative) from step ``start`` on."""

    def __init__(self, lr, start, drift):
        self.lr, self.start, self.drift = lr, start, drift
        self.count = jnp.zeros([], jnp.int32)

    def call_model(self, grads, **_):
        self.factor = jnp.where(self.count >= self.start, 1.0 + self.drift, 1.0)
        self.count = self.count + 1
        return grads

    def call_param(self, key, grad, **_):
        update = self.lr * grad
        return update * self.factor.astype(grad.dtype) if key == ("b",) else update


class LossScaledSGD(flr.optim.Optimizer):
    """Reads the loss: ``lr * loss * grad``."""

    def __init__(self, lr):
        self.lr = lr

    def call_model(self, grads, loss, **_):
        self.loss = jnp.asarray(loss, jnp.float32)
        return grads

    def call_param(self, grad, **_):
        return self.lr * (self.loss * grad)


def loss_scaled_sgd(lr):
    """The optax twin of LossScaledSGD, reading optax's ``value=``."""

    def update(updates, state, params=None, *, value, **_):
        del params
        return jax.tree.map(lambda g: -lr * (value * g), updates), state

    return optax.GradientTransformationExtraArgs(lambda _: optax.EmptyState(), update)


# -- assert_matches ---------------------------------------------------------------


@pytest.mark.parametrize("bridge", ["optax", "nnx"])
def test_bit_identical_report(bridge):
    report = flr.testing.assert_matches(
        flr.optim.Adam(1e-2), optax.adam(1e-2), PARAMS, steps=6, bridge=bridge
    )
    assert report.bit_identical and report.steps == 6 and report.bridge == bridge
    assert report.deviations == (0.0,) * 6 and report.max_deviation == 0.0
    assert set(report.keys) == {("w",), ("b",)}
    assert "bit-identical over 6 steps" in str(report)


@pytest.mark.parametrize("bridge", ["optax", "nnx"])
def test_first_step_and_key_where_they_part(bridge):
    with pytest.raises(flr.testing.MismatchError) as info:
        flr.testing.assert_matches(
            DriftingSGD(0.1, start=3, drift=1e-3), optax.sgd(0.1), PARAMS, steps=6, bridge=bridge
        )
    error = info.value
    assert isinstance(error, AssertionError) and isinstance(error, flr.FlrError)
    assert (error.step, error.key) == (3, ("b",))
    assert error.deviation == pytest.approx(1e-3, rel=1e-3)
    assert error.report.deviations[:3] == (0.0, 0.0, 0.0)
    assert "step 3, parameter ('b',)" in str(error) and "bit-identical" in str(error)


def test_tolerance_passes_small_deviations_and_reports_them():
    opt = DriftingSGD(0.1, start=2, drift=1e-3)
    report = flr.testing.assert_matches(opt, optax.sgd(0.1), PARAMS, steps=5, rtol=1e-2)
    assert not report.bit_identical
    assert report.deviations[:2] == (0.0, 0.0)
    assert report.max_deviation == pytest.approx(1e-3, rel=1e-3)
    assert "max relative deviation 0.001" in str(report)
    with pytest.raises(flr.testing.MismatchError, match=r"step 2, parameter \('b',\)"):
        flr.testing.assert_matches(opt, optax.sgd(0.1), PARAMS, steps=5, rtol=1e-4)


@pytest.mark.parametrize("bridge", ["optax", "nnx"])
def test_value_fn_passes_the_loss_to_both_sides(bridge):
    def value_fn(step, params):
        return 1.0 + jnp.sum(params["w"] ** 2) + step.astype(jnp.float32)

    report = flr.testing.assert_matches(
        LossScaledSGD(0.01), loss_scaled_sgd(0.01), PARAMS, value_fn=value_fn, bridge=bridge
    )
    assert report.bit_identical
    # Without the loss, the hook optimizer says how to pass it.
    with pytest.raises(flr.MissingArgumentError, match="value="):
        flr.testing.assert_matches(LossScaledSGD(0.01), optax.sgd(0.01), PARAMS)


def test_grads_fn_and_extra_args_reach_both_sides():
    seen = []

    def grads_fn(step, params):
        seen.append(step)
        return jax.tree.map(lambda p: p * 2.0 + step.astype(p.dtype), params)

    report = flr.testing.assert_matches(
        flr.optim.Adam(0.1),
        optax.adam(0.1),
        PARAMS,
        grads_fn=grads_fn,
        steps=3,
        extra_args={"unknown_to_both": 1},
    )
    assert report.bit_identical and len(seen) == 1  # traced once, under jit


@pytest.mark.parametrize("bridge", ["optax", "nnx"])
def test_nnx_module_parameters_and_module_left_alone(bridge):
    model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.LayerNorm(4, rngs=nnx.Rngs(0)))
    before = [np.array(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]
    report = flr.testing.assert_matches(
        flr.optim.Adam(1e-2, nesterov=True), optax.adam(1e-2, nesterov=True), model, bridge=bridge
    )
    assert report.bit_identical
    assert ("layers", 0, "kernel") in report.keys
    after = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert all(np.array_equal(a, b) for a, b in zip(after, before, strict=True))


def test_dtype_difference_is_a_mismatch():
    class Upcast(flr.optim.Optimizer):
        def call_param(self, grad, **_):
            return grad

    params = {"w": jnp.ones(3, jnp.bfloat16)}
    upcast = optax.chain(
        optax.scale(-1.0),
        optax.stateless(lambda u, p: jax.tree.map(lambda x: x.astype(jnp.float32), u)),
    )
    with pytest.raises(flr.testing.MismatchError, match="dtype bfloat16 for parameter"):
        flr.testing.assert_matches(Upcast(), upcast, params, steps=2)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(flr.HyperparameterError, match="bridge='jax'"):
        flr.testing.assert_matches(flr.optim.Adam(0.1), optax.adam(0.1), PARAMS, bridge="jax")
    with pytest.raises(flr.HyperparameterError, match="steps=0"):
        flr.testing.assert_matches(flr.optim.Adam(0.1), optax.adam(0.1), PARAMS, steps=0)


def test_default_grads_are_deterministic_and_vary_by_step():
    g0 = flr.testing.default_grads(jnp.int32(0), PARAMS)
    g1 = flr.testing.default_grads(jnp.int32(1), PARAMS)
    assert jax.tree.structure(g0) == jax.tree.structure(PARAMS)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(
            jax.tree.leaves(g0), jax.tree.leaves(flr.testing.default_grads(jnp.int32(0), PARAMS))
        )
    )
    assert not np.array_equal(g0["w"], g1["w"])
    assert float(jnp.min(g1["w"])) < 0 < float(jnp.max(g1["w"]))


# -- acceptance: schedules, Chain with from_optax, from_optax state and signs -----


def test_schedule_gives_the_same_trajectory_as_optax():
    schedule = optax.warmup_cosine_decay_schedule(0.0, 1e-2, warmup_steps=5, decay_steps=40)
    for bridge in ("optax", "nnx"):
        report = flr.testing.assert_matches(
            flr.optim.Adam(schedule), optax.adam(schedule), PARAMS, steps=40, bridge=bridge
        )
        assert report.bit_identical
    # Each side also follows its own trajectory, from the same start.
    hook, twin = flr.as_optax(flr.optim.Adam(schedule)), optax.adam(schedule)

    @jax.jit
    def train(params):
        def body(carry, i):
            (h_params, h_state), (t_params, t_state) = carry
            h, h_state = hook.update(flr.testing.default_grads(i, h_params), h_state, h_params)
            t, t_state = twin.update(flr.testing.default_grads(i, t_params), t_state, t_params)
            carry = (
                (optax.apply_updates(h_params, h), h_state),
                (
                    optax.apply_updates(t_params, t),
                    t_state,
                ),
            )
            return carry, (h_params["w"], t_params["w"])

        start = ((params, hook.init(params)), (params, twin.init(params)))
        return jax.lax.scan(body, start, jnp.arange(40))[1]

    h_path, t_path = train(PARAMS)
    np.testing.assert_array_equal(h_path, t_path)
    assert not np.array_equal(h_path[10], h_path[0])  # the warmup did move the parameters


@pytest.mark.parametrize("bridge", ["optax", "nnx"])
def test_chain_of_from_optax_clip_and_adam_equals_optax_chain(bridge):
    def big_grads(step, params):  # global norm well above 1: clipping is active
        return jax.tree.map(lambda g: 10.0 * g, flr.testing.default_grads(step, params))

    report = flr.testing.assert_matches(
        flr.compose.Chain(flr.from_optax(optax.clip_by_global_norm(1.0)), flr.optim.Adam(1e-3)),
        optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3)),
        PARAMS,
        grads_fn=big_grads,
        steps=12,
        bridge=bridge,
    )
    assert report.bit_identical


def test_from_optax_state_is_discovered_like_any_other():
    opt = flr.compose.Chain(flr.from_optax(optax.adam(1e-2)))
    state = flr.as_optax(opt).init(PARAMS)
    tx_state = state.tree["links"][0]["tx_state"]
    # optax's state, leaf for leaf (the parameters in key order: b, w).
    reference = optax.adam(1e-2).init([PARAMS["b"], PARAMS["w"]])
    assert len(jax.tree.leaves(tx_state)) == len(jax.tree.leaves(reference)) == 5
    for ours, theirs in zip(jax.tree.leaves(tx_state), jax.tree.leaves(reference), strict=True):
        assert ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours, theirs)
    # Under NNXOptimizer, the same state lives in Variables.
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    optimizer = flr.NNXOptimizer(model, flr.from_optax(optax.adam(1e-2)), wrt=nnx.Param)
    slots = jax.tree.leaves(optimizer.opt_state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    assert slots and all(isinstance(slot, flr.OptimizerSlot) for slot in slots)
    assert {slot.get_value().shape for slot in slots} >= {(3, 2), (2,), ()}


class Scale(flr.optim.Optimizer):
    def __init__(self, step_size):
        self.step_size = step_size

    def call_param(self, grad, **_):
        return self.step_size * grad


@pytest.mark.parametrize(
    ("hook", "twin", "signs"),
    [
        (lambda: flr.from_optax(optax.adam(1e-2)), lambda: optax.adam(1e-2), ["update"]),
        (
            lambda: flr.compose.Chain(flr.from_optax(optax.scale_by_adam()), Scale(1e-2)),
            lambda: optax.chain(optax.scale_by_adam(), optax.scale(-1e-2)),
            ["gradient"],
        ),
        (
            lambda: flr.compose.Chain(
                flr.from_optax(optax.clip(0.5)), flr.from_optax(optax.sgd(0.1, momentum=0.9))
            ),
            lambda: optax.chain(optax.clip(0.5), optax.sgd(0.1, momentum=0.9)),
            ["gradient", "update"],
        ),
    ],
    ids=["full-optimizer", "gradient-like", "both-in-a-chain"],
)
def test_from_optax_signs(hook, twin, signs):
    opt = hook()
    links = [opt] if isinstance(opt, flr.compose.FromOptax) else opt.links
    assert [link.sign for link in links if isinstance(link, flr.compose.FromOptax)] == signs
    assert flr.testing.assert_matches(opt, twin(), PARAMS, steps=5).bit_identical


@pytest.mark.parametrize(
    "params",
    [
        [jnp.ones(3), {"w": jnp.ones(2)}],
        {"train": jnp.ones(2), "_x": jnp.ones(()), "1": jnp.ones(1)},
    ],
    ids=["list", "awkward-keys"],
)
def test_any_pytree_through_the_nnx_bridge(params):
    report = flr.testing.assert_matches(
        flr.optim.Adam(1e-2), optax.adam(1e-2), params, steps=3, bridge="nnx"
    )
    assert report.bit_identical and len(report.keys) == len(jax.tree.leaves(params))


def test_optax_multisteps_object_as_twin_gets_the_loss():
    def value_fn(step, params):
        return 2.0 + jnp.sum(params["b"]) + step.astype(jnp.float32)

    report = flr.testing.assert_matches(
        flr.compose.MultiSteps(LossScaledSGD(0.01), every_k=2),
        optax.MultiSteps(loss_scaled_sgd(0.01), every_k_schedule=2),
        PARAMS,
        value_fn=value_fn,
        steps=4,
    )
    assert report.max_deviation <= 1e-6


# -- many cases in shared programs ---------------------------------------------------


def test_run_cases_shares_programs_and_returns_updates_and_states():
    cases = [
        flr.testing.Case(flr.optim.Adam(0.1), optax.adam(0.1), PARAMS, bridge=bridge)
        for bridge in ("optax", "nnx")
    ]
    cases.append(flr.testing.Case(flr.optim.Adam(0.1), optax.adam(0.2), PARAMS))
    run = flr.testing.run_cases(cases, 4, chunks=2)
    assert run.traces == 1 and run.signatures[0] == run.signatures[1] == run.signatures[2]
    for (hook, ref), case in zip(run.updates[:2], cases, strict=False):
        report = flr.testing.compare_updates(hook, ref, name="Adam", bridge=case.bridge)
        assert report.bit_identical and report.steps == 4
    with pytest.raises(flr.testing.MismatchError, match="step 0"):
        flr.testing.compare_updates(*run.updates[2], name="Adam")
    state, ref_state = run.states[0]
    assert int(state.tree["count"]) == int(ref_state[0].count) == 4


@pytest.mark.parametrize("jit_each_step", [False, True])
def test_jit_each_step_compares_the_same_way(jit_each_step):
    report = flr.testing.assert_matches(
        flr.optim.Adam(0.1), optax.adam(0.1), PARAMS, steps=3, jit_each_step=jit_each_step
    )
    assert report.bit_identical and report.steps == 3
    with pytest.raises(flr.testing.MismatchError, match=r"step 2, parameter \('b',\)"):
        flr.testing.assert_matches(
            DriftingSGD(0.1, start=2, drift=1e-3),
            optax.sgd(0.1),
            PARAMS,
            steps=5,
            jit_each_step=jit_each_step,
        )
