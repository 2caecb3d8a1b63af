"""Every misuse fails early with a clear flr_nnx error (cases in tests/error_cases.py)."""

from __future__ import annotations

import importlib.util
import inspect
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from error_cases import BEHAVIOURS, CASES
from flax import nnx

import flr_nnx as flr
from flr_nnx import _errors
from flr_nnx._errors import Missing


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_error_case(case):
    with pytest.raises(case.error, match=case.match) as info:
        case.run()
    assert isinstance(info.value, flr.FlrError)
    for base in case.also:
        assert isinstance(info.value, base)
    assert "Fix:" in str(info.value)


@pytest.mark.parametrize("behaviour", BEHAVIOURS, ids=lambda b: b.name)
def test_behaviour(behaviour):
    behaviour.run()


def test_every_error_class_has_a_case():
    classes = {
        obj
        for obj in vars(_errors).values()
        if isinstance(obj, type) and issubclass(obj, flr.FlrError) and obj is not flr.FlrError
    }
    assert classes == {case.error for case in CASES}
    for cls in classes:  # and each is exported
        assert getattr(flr, cls.__name__) is cls


def test_docs_page_is_current():
    path = pathlib.Path(__file__).resolve().parents[1] / "docs" / "what_happens_when.py"
    spec = importlib.util.spec_from_file_location("what_happens_when", path)
    what_happens_when = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(what_happens_when)
    current = what_happens_when.PAGE.read_text(encoding="utf-8")
    assert what_happens_when.render() == current, (
        "docs/what_happens_when.rst is out of date. Fix: run python docs/what_happens_when.py"
    )


# -- the same errors through NNXOptimizer, under nnx.jit ----------------------------------


class WrongDtype(flr.optim.Optimizer):
    def call_param(self, grad, **_):
        return grad.astype(jnp.bfloat16)


class NeedsLoss(flr.optim.Optimizer):
    def call_model(self, grads, loss, **_):
        self.loss = jnp.asarray(loss, jnp.float32)
        return grads


def test_errors_surface_through_nnx_jit():
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    with pytest.raises(flr.HookError, match=r"parameter \('bias',\).*dtype bfloat16"):
        flr.NNXOptimizer(model, WrongDtype(), wrt=nnx.Param)

    optimizer = flr.NNXOptimizer(model, NeedsLoss(), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer):
        grads = nnx.grad(lambda m: (m(jnp.ones((3, 2))) ** 2).mean())(model)
        optimizer.update(model, grads)

    with pytest.raises(flr.MissingArgumentError, match=r"loss=loss"):
        train_step(model, optimizer)


# -- tracer leaks: caught at any step, no false alarms ---------------------------------

LOG: list = []
LEAKING = [False]
SCALE = jnp.asarray(0.5)  # a global constant that hooks may read
CONFIG = {"factor": 2.0}


class LeaksLater(flr.optim.Optimizer):
    def call_param(self, grad, **_):
        if LEAKING[0]:
            LOG.append(grad)
        return SCALE * CONFIG["factor"] * grad


def test_tracer_leak_at_a_later_step_is_caught():
    LOG.clear()
    LEAKING[0] = False
    tx = flr.as_optax(LeaksLater())
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    LEAKING[0] = True
    try:
        updates, state = tx.update(params, state, params)  # eager: a concrete array, no leak
        np.testing.assert_array_equal(updates["w"], -jnp.ones(3))  # reads globals fine
        assert not isinstance(LOG[-1], jax.core.Tracer)
        with pytest.raises(flr.TracerLeakError, match=r"`LOG\[1\]` \(a global used by "):
            jax.jit(tx.update)(params, state, params)
    finally:
        LEAKING[0] = False
        LOG.clear()


def test_tracer_leak_through_nnx_optimizer():
    class Spy(flr.optim.Optimizer):
        def __init__(self):
            self.seen = []  # a list on self is state: fine
            self.sink = type("Sink", (), {})()  # a plain object is not copied

        def call_param(self, key, grad, **_):
            self.sink.grad = grad
            return grad

    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    with pytest.raises(flr.TracerLeakError, match=r"`opt\.sink\.grad` \(an object the engine"):
        flr.NNXOptimizer(model, Spy(), wrt=nnx.Param)


# -- construction ---------------------------------------------------------------------


def test_argument_errors_keep_signature_and_other_type_errors():
    assert list(inspect.signature(flr.optim.Adam).parameters)[:2] == ["learning_rate", "b1"]
    assert "Kingma" in flr.optim.Adam.__doc__

    class Broken(flr.optim.Optimizer):
        def __init__(self, lr=0.1):
            self.lr = lr + "oops"  # a bug inside __init__, not a bad call

    with pytest.raises(TypeError, match=r"can only concatenate|unsupported operand") as info:
        Broken(0.1)
    assert not isinstance(info.value, flr.FlrError)

    class Subclass(flr.optim.Adam):
        def __init__(self, learning_rate, **kwargs):
            super().__init__(learning_rate, **kwargs)

    with pytest.raises(flr.ArgumentError, match=r"Subclass -> Adam\(.*Did you mean `eps`\?"):
        Subclass(0.1, epsilon=1e-6)
    with pytest.raises(flr.ArgumentError, match=r"too many positional arguments"):
        flr.optim.Adam(0.1, 0.9, 0.999, 1e-8, 0.0, "extra")
    assert Subclass(0.1, eps=1e-6).eps == 1e-6


def test_did_you_mean():
    assert _errors.did_you_mean("learnig_rate", ["learning_rate", "b1"]) == (
        " Did you mean `learning_rate`?"
    )
    assert _errors.did_you_mean("zzz", ["learning_rate"]) == ""


# -- Missing: every way a hook might touch a missing value raises ------------------------


@pytest.mark.parametrize(
    "use",
    [
        lambda m: jnp.asarray(m),
        lambda m: m + 1,
        lambda m: 1.0 * m,
        lambda m: m > 0,
        lambda m: float(m),
        lambda m: bool(m),
        lambda m: m.items(),
        lambda m: ("w",) in m,
        lambda m: len(m),
        lambda m: jnp.sqrt(m[("w",)]),
        lambda m: m[("w",)] * jnp.ones(2),
        lambda m: m.shape,
    ],
)
def test_missing_raises_on_use(use):
    class Uses(flr.optim.Optimizer):
        def call_model(self, grads, params, loss):
            value = params if self.which == "params" else loss
            if isinstance(value, Missing):  # init always passes both
                use(value)
            return grads

    params = {"w": jnp.ones(2)}
    for which, passed in [("loss", {"params": params}), ("params", {"value": 1.0})]:
        opt = Uses()
        opt.which = which
        tx = flr.as_optax(opt)
        state = tx.init(params)
        with pytest.raises(flr.MissingArgumentError, match=rf"reads `{which}`.*Fix: pass"):
            jax.jit(lambda: tx.update(params, state, **passed))()  # noqa: B023


# -- behaviours through NNX --------------------------------------------------------------


class SkipBias(flr.optim.Optimizer):
    def __init__(self):
        self.m = {}

    def call_model(self, grads, **_):
        return {key: grad for key, grad in grads.items() if key[-1] != "bias"}

    def call_param(self, key, grad, **_):
        if key not in self.m:
            self.m[key] = jnp.zeros_like(grad)
        self.m[key] = self.m[key] + grad
        return 0.1 * self.m[key]


def test_dropped_key_gets_no_update_nnx():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    bias, kernel = model.bias[...], model.kernel[...]
    optimizer = flr.NNXOptimizer(model, SkipBias(), wrt=nnx.Param)
    assert set(optimizer.opt_state["m"]) == {"kernel"}
    grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
    for _ in range(2):
        optimizer.update(model, grads)
    np.testing.assert_array_equal(model.bias[...], bias)
    np.testing.assert_allclose(model.kernel[...], kernel - 0.3, rtol=1e-6)


def test_non_float_leaves_under_jit_keep_dtype_and_value():
    tx = flr.as_optax(flr.optim.Adam(0.1))
    params = {"w": jnp.ones(2), "n": jnp.array([1, 2], jnp.int8), "u": jnp.array(7, jnp.uint32)}
    state = tx.init(params)
    grads = {"w": jnp.ones(2), "n": jnp.array([5, 5], jnp.int8), "u": jnp.array(9, jnp.uint32)}
    updates, _ = jax.jit(tx.update)(grads, state, params)
    assert updates["n"].dtype == jnp.int8 and updates["u"].dtype == jnp.uint32
    new = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(new["n"], [1, 2])
    assert int(new["u"]) == 7
