"""Evaluation parameters: an optimizer says where to evaluate, through both bridges.

:meth:`flr.optim.Optimizer.eval_params` (the identity by default) is run by the engine
on the state: :func:`flr.eval_params` for the optax bridge, :meth:`flr.NNXOptimizer.eval_params`
for the NNX one. The schedule-free optimizers' evaluation point must be bit-identical to
``optax.contrib.schedule_free_eval_params`` at every step, eagerly and under jit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from optax.contrib._complex_valued import SplitRealAndImaginaryArrays  # optax exports no name

import flr_nnx as flr

STEPS = 4

TWINS = {
    "ScheduleFree(SGD)": (
        lambda: flr.compose.ScheduleFree(flr.optim.SGD(0.1), 0.1, b1=0.8),
        lambda: optax.contrib.schedule_free(optax.sgd(0.1), 0.1, b1=0.8),
    ),
    "ScheduleFreeSGD": (
        lambda: flr.optim.ScheduleFreeSGD(0.1, warmup_steps=2, weight_decay=0.01),
        lambda: optax.contrib.schedule_free_sgd(0.1, warmup_steps=2, weight_decay=0.01),
    ),
    "ScheduleFreeAdamW": (
        lambda: flr.optim.ScheduleFreeAdamW(0.05, warmup_steps=2, weight_decay=0.01),
        lambda: optax.contrib.schedule_free_adamw(0.05, warmup_steps=2, weight_decay=0.01),
    ),
}


def grads_at(step, params):
    return jax.tree.map(lambda p: jnp.sin(p * (step + 1) + 0.3).astype(p.dtype), params)


def assert_identical(ours, theirs, what):
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        assert a.dtype == b.dtype, what
        as_ = np.complex64 if jnp.iscomplexobj(a) else np.float32  # bfloat16 -> float32
        np.testing.assert_array_equal(np.asarray(a, as_), np.asarray(b, as_), what)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("name", list(TWINS))
def test_optax_bridge_matches_schedule_free_eval_params(name, dtype):
    make, twin = TWINS[name]
    tx, otx = flr.as_optax(make()), twin()
    params = {"a": jnp.linspace(-1.0, 1.0, 5, dtype=dtype), "b": [jnp.ones((2, 3), dtype)]}
    state, ostate, oparams = tx.init(params), otx.init(params), params
    jitted = jax.jit(lambda s, p: flr.eval_params(tx, s, p))
    update, oupdate = jax.jit(tx.update), jax.jit(otx.update)  # bit-identical under jit
    for step in range(STEPS):
        updates, state = update(grads_at(step, params), state, params)
        oupdates, ostate = oupdate(grads_at(step, oparams), ostate, oparams)
        params = optax.apply_updates(params, updates)
        oparams = optax.apply_updates(oparams, oupdates)
        eager = optax.contrib.schedule_free_eval_params(ostate, oparams)
        assert_identical(flr.eval_params(tx, state, params), eager, f"eager, step {step}")
        expected = jax.jit(optax.contrib.schedule_free_eval_params)(ostate, oparams)
        assert_identical(jitted(state, params), expected, f"jit, step {step}")
    # The hook optimizer itself names the hyperparameters as well as its transformation.
    assert_identical(flr.eval_params(make(), state, params), eager, "given the optimizer")


def _train_step(model, optimizer):
    grads = jax.tree.map(lambda p: jnp.cos(p), nnx.state(model, nnx.Param))
    optimizer.update(model, grads)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "nnx.jit"])
@pytest.mark.parametrize("name", list(TWINS))
def test_nnx_bridge_matches_schedule_free_eval_params(name, jit):
    make, twin = TWINS[name]
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    omodel = nnx.clone(model)
    optimizer = flr.NNXOptimizer(model, make(), wrt=nnx.Param)
    ooptimizer = nnx.Optimizer(omodel, twin(), wrt=nnx.Param)
    step = nnx.jit(_train_step)  # bit-identical under jit; evaluated eagerly or under jit
    evaluate = nnx.jit(lambda m, o: o.eval_params(m)) if jit else (lambda m, o: o.eval_params(m))
    twin_eval = optax.contrib.schedule_free_eval_params
    twin_eval = jax.jit(twin_eval) if jit else twin_eval
    for n in range(STEPS):
        step(model, optimizer)
        step(omodel, ooptimizer)
        ours = evaluate(model, optimizer)
        opt_state = nnx.as_pure(ooptimizer.opt_state)
        expected = twin_eval(opt_state, nnx.as_pure(nnx.state(omodel, nnx.Param)))
        assert isinstance(ours, nnx.State)
        assert_identical(ours, expected, f"step {n}")
    # The model keeps its iterate y; a copy evaluates at x.
    assert not np.array_equal(model.kernel[...], ours["kernel"])
    eval_model = nnx.clone(model)
    nnx.update(eval_model, ours)
    np.testing.assert_array_equal(eval_model.kernel[...], ours["kernel"])


def test_default_is_the_parameters_and_wrappers_pass_it_on():
    params = {"w": jnp.array([1.0, -2.0])}
    grads = {"w": jnp.array([0.5, 0.25])}
    for opt in [
        flr.optim.Adam(0.1),
        flr.compose.Chain(flr.optim.Adam(0.1)),
        flr.compose.MultiSteps(flr.optim.SGD(0.1), 2),
    ]:
        tx = flr.as_optax(opt)
        _, state = tx.update(grads, tx.init(params), params)
        assert flr.eval_params(tx, state, params)["w"] is params["w"]
    # Wrapped schedule-free: its evaluation point, as alone.
    make = lambda: flr.compose.ScheduleFree(flr.optim.SGD(0.1), 0.1)  # noqa: E731
    alone = flr.as_optax(make())
    _, astate = alone.update(grads, alone.init(params), params)
    for wrapper in [
        lambda o: flr.compose.Chain(flr.optim.Clip(10.0), o),
        lambda o: flr.compose.SkipNonFinite(o, 3),
        lambda o: flr.compose.MultiSteps(o, 1),
    ]:
        tx = flr.as_optax(wrapper(make()))
        _, state = tx.update(grads, tx.init(params), params)
        assert_identical(
            flr.eval_params(tx, state, params), flr.eval_params(alone, astate, params), "wrapped"
        )


def test_mixed_precision_and_multisteps_match_optax():
    params = {"w": jnp.array([1.0, -2.0, 0.5], jnp.bfloat16)}
    tx = flr.as_optax(flr.compose.MultiSteps(flr.compose.ScheduleFree(flr.optim.SGD(0.1), 0.1), 2))
    otx = optax.MultiSteps(optax.contrib.schedule_free(optax.sgd(0.1), 0.1), 2)
    state, ostate, oparams = tx.init(params), otx.init(params), params
    update, oupdate = jax.jit(tx.update), jax.jit(otx.update)
    for step in range(4):
        updates, state = update(grads_at(step, params), state, params)
        oupdates, ostate = oupdate(grads_at(step, oparams), ostate, oparams)
        params, oparams = (
            optax.apply_updates(params, updates),
            optax.apply_updates(oparams, oupdates),
        )
        expected = optax.contrib.schedule_free_eval_params(ostate.inner_opt_state, oparams)
        assert_identical(flr.eval_params(tx, state, params), expected, f"step {step}")
    mixed = flr.as_optax(
        flr.compose.MixedPrecision(flr.compose.ScheduleFree(flr.optim.SGD(0.1), 0.1))
    )
    state = mixed.init(params)
    _, state = mixed.update(grads_at(0, params), state, params)
    assert flr.eval_params(mixed, state, params)["w"].dtype == jnp.bfloat16


class _Assigns(flr.optim.Optimizer):
    def __init__(self):
        self.t = jnp.zeros([])

    def call_param(self, key, grad, **_):
        self.t = self.t + 1
        return grad

    def eval_params(self, params):
        self.t = self.t + 1
        return params


class _Casts(flr.optim.Optimizer):
    def eval_params(self, params):
        return {k: p.astype(jnp.float16) for k, p in params.items()}


def test_errors():
    params = {"w": jnp.ones(2)}
    tx = flr.as_optax(_Assigns())
    with pytest.raises(flr.HookError, match="may only read"):
        flr.eval_params(tx, tx.init(params), params)
    tx = flr.as_optax(_Casts())
    with pytest.raises(flr.HookError, match="dtype float32"):
        flr.eval_params(tx, tx.init(params), params)
    with pytest.raises(flr.BridgeError, match="as_optax"):
        flr.eval_params(optax.sgd(0.1), optax.sgd(0.1).init(params), params)
    tx = flr.as_optax(flr.optim.SGD(0.1))
    with pytest.raises(flr.StructureError, match="HookState"):
        flr.eval_params(tx, (tx.init(params),), params)
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    optimizer = flr.NNXOptimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    with pytest.raises(flr.BridgeError, match="schedule_free_eval_params"):
        optimizer.eval_params(model)


def test_a_template_that_did_not_make_the_state_is_an_error():
    """Another optimizer would misread the state: Adam would return the iterate."""
    params = {"w": jnp.array([0.3, -0.2, 0.5])}
    tx = flr.as_optax(flr.optim.ScheduleFreeAdamW(0.1))
    state = tx.init(params)
    updates, state = tx.update(grads_at(0, params), state, params)
    params = optax.apply_updates(params, updates)
    wrong = [
        flr.optim.Adam(0.1),
        flr.as_optax(flr.optim.SGD(0.1)),
        flr.as_optax(flr.compose.Chain(flr.optim.ScheduleFreeAdamW(0.1))),
    ]
    for template in wrong:
        with pytest.raises(flr.StructureError, match=r"not (Adam|SGD|Chain)'s.*Fix: pass the"):
            flr.eval_params(template, state, params)
    with pytest.raises(flr.StructureError, match=r"SGD keeps no state, the state holds \[opt"):
        flr.eval_params(wrong[1], state, params)
    # The same optimizer, rebuilt or with other hyperparameters, reads the state, under jit too.
    expected = flr.eval_params(tx, state, params)
    for template in (flr.optim.ScheduleFreeAdamW(0.1), flr.optim.ScheduleFreeAdamW(0.2)):
        jitted = jax.jit(lambda s, p, t=template: flr.eval_params(t, s, p))
        assert flr.eval_params(template, state, params)["w"].shape == (3,)
        assert jitted(state, params)["w"].shape == (3,)
    np.testing.assert_array_equal(
        flr.eval_params(flr.optim.ScheduleFreeAdamW(0.1), state, params)["w"], expected["w"]
    )


class _Drops(flr.optim.Optimizer):
    """A user-written wrapper that does not define eval_params."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, loss, grads, params, **extra):
        return flr.optim.call(self.inner, loss=loss, grads=grads, params=params, **extra)


class _PassesOn(_Drops):
    def eval_params(self, params):
        return self.inner.eval_params(params)


def _evaluated(opt, params, steps=2):
    tx = flr.as_optax(opt)
    state = tx.init(params)
    for step in range(steps):
        updates, state = tx.update(grads_at(step, params), state, params)
        params = optax.apply_updates(params, updates)
    return flr.eval_params(tx, state, params), params


def test_a_wrapper_that_drops_the_evaluation_point_is_an_error():
    params = {"w": jnp.array([1.0, -2.0])}
    make = lambda: flr.optim.ScheduleFreeSGD(0.1)  # noqa: E731
    message = r"_Drops \(at opt\) wraps ScheduleFreeSGD \(at opt.inner\).*Fix: define `eval_params"
    with pytest.raises(flr.HookError, match=message):
        _evaluated(_Drops(make()), params)
    # Nested in a wrapper that passes it on: the innermost dropping wrapper, by its path.
    with pytest.raises(flr.HookError, match=r"_Drops \(at opt.links\[1\]\) wraps ScheduleFreeSGD"):
        _evaluated(flr.compose.Chain(flr.optim.Clip(1.0), _Drops(make())), params)
    # flr's wrappers without a defined composition refuse it the same way.
    for wrapper in [
        lambda o: flr.compose.Mechanize(o),
        lambda o: flr.compose.Lookahead(o, 2, 0.5),
        lambda o: _Drops(flr.compose.MultiSteps(o, 2)),
    ]:
        with pytest.raises(flr.HookError, match="does not define eval_params"):
            _evaluated(wrapper(make()), params)
    # Through the NNX bridge too.
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    optimizer = flr.NNXOptimizer(model, flr.compose.Mechanize(make()), wrt=nnx.Param)
    with pytest.raises(flr.HookError, match=r"Mechanize \(at opt\) wraps ScheduleFreeSGD"):
        optimizer.eval_params(model)
    # Passed on: the inner point, as alone.
    ours, last = _evaluated(_PassesOn(make()), params)
    alone, _ = _evaluated(make(), params)
    assert_identical(ours, alone, "passed on")
    assert not np.array_equal(ours["w"], last["w"])
    # No evaluation point inside (pass-on wrappers only): the identity, no error.
    for opt in [
        _Drops(flr.optim.Adam(0.1)),
        flr.compose.Mechanize(flr.compose.Chain(flr.optim.SGD(1.0))),
        flr.compose.Lookahead(flr.compose.MultiSteps(flr.optim.SGD(0.1), 2), 2, 0.5),
        _Drops(flr.from_optax(optax.sgd(0.1))),
    ]:
        ours, last = _evaluated(opt, params)
        assert ours["w"] is last["w"]


def test_partition_evaluates_each_group_like_optax_multi_transform():
    params = {"a": jnp.linspace(-1.0, 1.0, 4), "b": jnp.array([0.5, -0.5])}
    opt = flr.compose.Partition(
        [(r"^a$", flr.optim.ScheduleFreeSGD(0.1, warmup_steps=2))], default=flr.optim.SGD(0.1)
    )
    otx = optax.multi_transform(
        {"sf": optax.contrib.schedule_free_sgd(0.1, warmup_steps=2), "sgd": optax.sgd(0.1)},
        {"a": "sf", "b": "sgd"},
    )
    tx = flr.as_optax(opt)
    state, ostate, oparams = tx.init(params), otx.init(params), params
    update, oupdate = jax.jit(tx.update), jax.jit(otx.update)
    for step in range(STEPS):
        updates, state = update(grads_at(step, params), state, params)
        oupdates, ostate = oupdate(grads_at(step, oparams), ostate, oparams)
        params = optax.apply_updates(params, updates)
        oparams = optax.apply_updates(oparams, oupdates)
        sf = ostate.inner_states["sf"].inner_state  # z is masked: its "a" subtree
        expected = optax.contrib.schedule_free_eval_params(
            sf._replace(z={"a": sf.z["a"]}), {"a": oparams["a"]}
        )
        ours = flr.eval_params(tx, state, params)
        assert_identical(ours["a"], expected["a"], f"step {step}")
        assert ours["b"] is params["b"]  # SGD's group: the iterate
    assert not np.array_equal(ours["a"], params["a"])  # after the warmup: x is not y


def test_partition_by_variable_type():
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    # No evaluation point in any group: the identity, though groups need the Variables.
    plain = flr.compose.Partition([(nnx.Param, flr.optim.Adam(0.1))], default=None)
    optimizer = flr.NNXOptimizer(model, plain, wrt=nnx.Param)
    _train_step(model, optimizer)
    ours = optimizer.eval_params(model)
    np.testing.assert_array_equal(ours["kernel"], model.kernel[...])
    sf = flr.compose.Partition([(nnx.Param, flr.optim.ScheduleFreeSGD(0.1))], default=None)
    optimizer = flr.NNXOptimizer(model, sf, wrt=nnx.Param)
    _train_step(model, optimizer)
    with pytest.raises(flr.HookError, match="Partition cannot select its groups for eval_params"):
        optimizer.eval_params(model)


def _split(x):
    return SplitRealAndImaginaryArrays(x.real, x.imag) if jnp.iscomplexobj(x) else x


def test_split_real_and_imaginary_matches_optax():
    params = {"z": jnp.array([1.0 + 2.0j, -0.5 + 0.25j]), "r": jnp.array([0.5, -1.0])}
    tx = flr.as_optax(flr.compose.SplitRealAndImaginary(flr.optim.ScheduleFreeSGD(0.1, b1=0.8)))
    otx = optax.contrib.split_real_and_imaginary(optax.contrib.schedule_free_sgd(0.1, b1=0.8))
    state, ostate, oparams = tx.init(params), otx.init(params), params
    update, oupdate = jax.jit(tx.update), jax.jit(otx.update)
    is_pair = lambda x: isinstance(x, SplitRealAndImaginaryArrays)  # noqa: E731
    for step in range(STEPS):
        updates, state = update(grads_at(step, params), state, params)
        oupdates, ostate = oupdate(grads_at(step, oparams), ostate, oparams)
        params = optax.apply_updates(params, updates)
        oparams = optax.apply_updates(oparams, oupdates)
        point = optax.contrib.schedule_free_eval_params(
            ostate.inner_state, jax.tree.map(_split, oparams)
        )
        expected = jax.tree.map(
            lambda x: x.real + x.imaginary * 1j if is_pair(x) else x, point, is_leaf=is_pair
        )
        ours = flr.eval_params(tx, state, params)
        assert ours["z"].dtype == jnp.complex64
        assert_identical(ours, expected, f"step {step}")


@pytest.mark.parametrize(
    "make, inner_state",
    [
        (lambda: optax.contrib.schedule_free_sgd(0.1, warmup_steps=2), lambda s: s),
        (
            lambda: optax.chain(optax.clip(1.0), optax.contrib.schedule_free_adamw(0.05)),
            lambda s: s[1],
        ),
        (
            lambda: optax.MultiSteps(optax.contrib.schedule_free_sgd(0.1), 2),
            lambda s: s.inner_opt_state,
        ),
    ],
    ids=["schedule_free_sgd", "chain", "MultiSteps"],
)
def test_from_optax_matches_schedule_free_eval_params(make, inner_state):
    params = {"a": jnp.linspace(-1.0, 1.0, 5), "b": [jnp.ones((2, 3))]}
    tx, otx = flr.as_optax(flr.from_optax(make(), sign="update")), make()
    state, ostate, oparams = tx.init(params), otx.init(params), params
    for step in range(STEPS):
        updates, state = tx.update(grads_at(step, params), state, params)
        oupdates, ostate = otx.update(grads_at(step, oparams), ostate, oparams)
        params = optax.apply_updates(params, updates)
        oparams = optax.apply_updates(oparams, oupdates)
        expected = optax.contrib.schedule_free_eval_params(inner_state(ostate), oparams)
        assert_identical(flr.eval_params(tx, state, params), expected, f"step {step}")
    # Inside a wrapper that drops it: refused, as for a hook optimizer.
    wrapped = flr.compose.Lookahead(flr.from_optax(make(), sign="update"), 2, 0.5)
    with pytest.raises(flr.HookError, match=r"Lookahead \(at opt\) wraps FromOptax"):
        _evaluated(wrapped, params)


def test_from_optax_without_one_evaluation_point_is_an_error():
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    twice = optax.chain(optax.contrib.schedule_free_sgd(0.1), optax.contrib.schedule_free_sgd(0.1))
    tx = flr.as_optax(flr.from_optax(twice, sign="update"))
    state = tx.init(params)
    _, state = tx.update(grads_at(0, params), state, params)
    with pytest.raises(flr.HookError, match=r"2 optax\.contrib\.ScheduleFreeState.*no evaluation"):
        flr.eval_params(tx, state, params)
