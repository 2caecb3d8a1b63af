"""What `elementwise = True` on an optimizer class buys, and the checks that keep it honest.

The flag lets init discover state on one parameter per shape and dtype, and
lets `Packed` run the hooks once on packed buffers. Both must give exactly what
the per-parameter path gives: the grouped discovery the same layout, values and
fresh buffers (falling back where it cannot apply), Packed bit-identical
updates. A broken contract is a clear error at the first step.
"""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from zoo import ZOO

import flr_nnx as flr
from flr_nnx import _engine

ELEMENTWISE = [e for e in ZOO if _engine.is_elementwise(e.make())]


def many_params() -> dict:
    params = {}
    for i in range(6):
        params[(f"layer{i}", "kernel")] = jnp.full((3, 4), 0.1 * i, jnp.float32)
        params[(f"layer{i}", "bias")] = jnp.full((4,), -0.2 * i, jnp.float32)
        params[(f"layer{i}", "scale")] = jnp.full((4,), 0.5 * i, jnp.bfloat16)
    params[("head",)] = jnp.ones((4, 2), jnp.float32)
    return params


def f32_params() -> dict:
    return {k: v.astype(jnp.float32) for k, v in many_params().items()}


def at(tree, key):
    """The entry of a nested state dict for a parameter key (its parts spliced in)."""
    for part in key:
        tree = tree[part]
    return tree


def full_discovery(opt):
    """A copy of ``opt`` whose class has the flag off: init traces every parameter."""
    cls = type(f"Full{type(opt).__name__}", (type(opt),), {"elementwise": False})
    clone = object.__new__(cls)
    clone.__dict__.update(vars(opt))
    return clone


def init_both(opt, params):
    return _engine.init(opt, params), _engine.init(full_discovery(opt), params)


class TorchStyleAdam(flr.optim.Optimizer):
    """Per-parameter state in a nested defaultdict, as torch.optim keeps it."""

    elementwise = True

    def __init__(self, lr):
        self.lr = lr
        self.step_count = jnp.zeros((), jnp.int32)
        self.state = collections.defaultdict(dict)

    def call_model(self, grads, **_):
        self.step_count = self.step_count + 1
        return grads

    def call_param(self, key, grad, **_):
        slot = self.state[key]
        if "m" not in slot:
            slot["m"] = jnp.zeros_like(grad)
            slot["v"] = jnp.ones_like(grad)
        slot["m"] = 0.9 * slot["m"] + 0.1 * grad
        slot["v"] = 0.9 * slot["v"] + 0.1 * grad * grad
        return self.lr * slot["m"] / (jnp.sqrt(slot["v"]) + 1e-8)


def tutorial_adam():
    from tutorial_adam import Adam as TutorialAdam

    class ElementwiseTutorialAdam(TutorialAdam):
        elementwise = True

    return ElementwiseTutorialAdam(0.01)


OPTIMIZERS = {
    "Adam": lambda: flr.optim.Adam(0.01),
    "Adam-nesterov-bf16-mu": lambda: flr.optim.Adam(0.01, nesterov=True, mu_dtype=jnp.bfloat16),
    "tutorial": tutorial_adam,
    "torch-style": lambda: TorchStyleAdam(0.01),
}
# The tutorial's Adam returns float32 updates, so it only trains float32 parameters.
FLOAT32_ONLY = {"tutorial"}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_grouped_init_equals_full_init(name):
    params = many_params() if name not in FLOAT32_ONLY else f32_params()
    grouped, full = init_both(OPTIMIZERS[name](), params)
    assert grouped.layout == full.layout
    assert jax.tree.structure(grouped) == jax.tree.structure(full)
    for a, b in zip(jax.tree.leaves(grouped), jax.tree.leaves(full), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_grouped_init_then_training_equals_full_init(name):
    params = many_params() if name not in FLOAT32_ONLY else f32_params()
    opt = OPTIMIZERS[name]()
    tx_grouped = flr.as_optax(opt)
    tx_full = flr.as_optax(full_discovery(opt))
    grads = jax.tree.map(lambda p: jnp.cos(p) * 0.3, params)

    def run(tx):
        state, p = tx.init(params), params
        step = jax.jit(tx.update)
        for _ in range(3):
            updates, state = step(grads, state, p)
            p = jax.tree.map(lambda a, u: a + u, p, updates)
        return p

    for a, b in zip(jax.tree.leaves(run(tx_grouped)), jax.tree.leaves(run(tx_full)), strict=True):
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def test_grouped_init_traces_one_parameter_per_shape_and_dtype():
    calls = []

    class Counting(TorchStyleAdam):
        elementwise = True  # a subclass makes the promise itself

        def call_param(self, key, grad, **kw):
            calls.append(key)
            return super().call_param(key, grad, **kw)

    state = _engine.init(Counting(0.1), many_params())
    assert len(calls) == 4  # kernel f32 (3, 4), bias f32 (4,), scale bf16 (4,), head f32 (4, 2)
    assert len(state.layout.param_keys) == 19


def test_grouped_init_gives_every_state_array_its_own_buffer():
    state = flr.as_optax(flr.optim.Adam(0.01)).init(many_params())
    pointers = [leaf.unsafe_buffer_pointer() for leaf in jax.tree.leaves(state) if leaf.size]
    assert len(pointers) == len(set(pointers))


def test_state_that_starts_from_the_parameter_falls_back_to_full_discovery():
    class ParamEMA(flr.optim.Optimizer):
        elementwise = True

        def __init__(self):
            self.ema = {}

        def call_param(self, key, grad, param):
            if key not in self.ema:
                self.ema[key] = param  # depends on each parameter's value
            self.ema[key] = 0.9 * self.ema[key] + 0.1 * param
            return 0.1 * grad

    params = many_params()
    state = _engine.init(ParamEMA(), params)
    for key, value in params.items():
        np.testing.assert_array_equal(at(state.tree["ema"], key), value)


def test_existing_per_parameter_state_falls_back_to_full_discovery():
    params = many_params()
    opt = TorchStyleAdam(0.1)
    first = next(iter(params))
    opt.state[first]["m"] = jnp.full((3, 4), 7.0)
    opt.state[first]["v"] = jnp.full((3, 4), 2.0)
    state = _engine.init(opt, params)
    np.testing.assert_array_equal(at(state.tree["state"], first)["m"], 7.0)
    np.testing.assert_array_equal(at(state.tree["state"], ("layer1", "kernel"))["m"], 0.0)


def test_grouped_init_under_jit():
    params = many_params()
    tx = flr.as_optax(flr.optim.Adam(0.01))
    inside = jax.jit(tx.init)(params)
    outside = tx.init(params)
    assert jax.tree.structure(inside) == jax.tree.structure(outside)
    for a, b in zip(jax.tree.leaves(inside), jax.tree.leaves(outside), strict=True):
        np.testing.assert_array_equal(a, b)


def test_key_dependent_state_under_elementwise_is_a_clear_error_at_the_first_step():
    class NotReallyElementwise(flr.optim.Optimizer):
        elementwise = True

        def __init__(self):
            self.m = {}
            self.extra = {}

        def call_param(self, key, grad, **_):
            if key not in self.m:
                self.m[key] = jnp.zeros_like(grad)
            if "layer3" in str(key):  # state for some keys only: not elementwise
                self.extra[key] = grad
            return grad

    params = many_params()
    tx = flr.as_optax(NotReallyElementwise())
    state = tx.init(params)
    with pytest.raises(flr.StateError, match="remove `elementwise = True`"):
        tx.update(params, state, params)


def test_the_zoo_declares_elementwise_where_it_should():
    assert {e.name for e in ELEMENTWISE} >= {
        "Adam",
        "SGD",
        "Adamax",
        "AMSGrad",
        "AdaBelief",
        "RAdam",
        "RMSProp",
        "Adagrad",
    }


@pytest.mark.parametrize("entry", ELEMENTWISE, ids=lambda e: e.name)
def test_zoo_grouped_init_equals_full_init(entry):
    params = many_params()
    grouped, full = init_both(entry.make(), params)
    assert grouped.layout == full.layout
    for a, b in zip(jax.tree.leaves(grouped), jax.tree.leaves(full), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


@pytest.mark.parametrize("entry", ELEMENTWISE, ids=lambda e: e.name)
def test_zoo_packed_is_bit_identical_to_per_leaf(entry):
    params = many_params()

    def run(opt):
        tx = flr.as_optax(opt)
        state, p, out = tx.init(params), params, []
        step = jax.jit(tx.update)
        for i in range(4):
            grads = jax.tree.map(lambda a, i=i: jnp.sin(a * (i + 1)).astype(a.dtype), p)
            updates, state = step(grads, state, p)
            out.append(updates)
            p = jax.tree.map(lambda a, u: a + u, p, updates)
        return out

    packed, per_leaf = run(flr.compose.Packed(entry.make())), run(entry.make())
    for a, b in zip(jax.tree.leaves(packed), jax.tree.leaves(per_leaf), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def test_state_created_outside_a_parameter_entry_falls_back_to_full_discovery():
    class NormalizedSGD(flr.optim.Optimizer):
        """Elementwise: call_model only needs the total size, however it is split."""

        elementwise = True
        transient = ("rms",)

        def __init__(self, lr):
            self.lr = lr

        def call_model(self, grads, **_):
            if not hasattr(self, "numel"):  # created at init from all the parameters
                self.numel = jnp.asarray(sum(g.size for g in grads.values()), jnp.float32)
            total = sum(jnp.sum(g * g) for g in grads.values())
            self.rms = jnp.sqrt(total / self.numel)
            return grads

        def call_param(self, grad, **_):
            return self.lr * grad / self.rms

    params = {f"w{i}": jnp.ones(4) for i in range(8)}
    state = _engine.init(NormalizedSGD(0.1), params)
    assert float(state.tree["numel"]) == 32.0  # not 4, the representative's size


def test_state_keyed_by_a_string_form_of_the_key_falls_back_to_full_discovery():
    class StringKeyed(flr.optim.Optimizer):
        elementwise = True

        def __init__(self):
            self.trace = {}

        def call_param(self, key, grad, **_):
            name = "/".join(map(str, key))
            if name not in self.trace:
                self.trace[name] = jnp.zeros_like(grad)
            self.trace[name] = 0.9 * self.trace[name] + grad
            return 0.1 * self.trace[name]

    params = {f"w{i}": jnp.ones(3) for i in range(4)}
    tx = flr.as_optax(StringKeyed())
    state = tx.init(params)
    assert sorted(state.tree["trace"]) == ["w0", "w1", "w2", "w3"]
    tx.update(params, state, params)


def test_a_subclass_does_not_inherit_the_elementwise_promise():
    class KeyDependent(flr.optim.Adam):
        """Breaks the promise: the bias gets a different first value than the kernel."""

        def __init__(self, lr):
            super().__init__(lr)
            self.mult = {}

        def call_param(self, key, grad, **kw):
            if key not in self.mult:
                self.mult[key] = jnp.asarray(0.0 if key[-1] == "bias" else 1.0)
            return self.mult[key] * super().call_param(key=key, grad=grad, **kw)

    assert not _engine.is_elementwise(KeyDependent(0.1))
    assert _engine.is_elementwise(flr.optim.NAdam(0.1))  # declares it again
    params = {("l1", "kernel"): jnp.ones(3), ("l1", "bias"): jnp.ones(3)}
    state = _engine.init(KeyDependent(0.1), params)
    assert float(at(state.tree["mult"], ("l1", "kernel"))) == 1.0
    with pytest.raises(flr.HyperparameterError, match="not inherited"):
        flr.compose.Packed(KeyDependent(0.1))
