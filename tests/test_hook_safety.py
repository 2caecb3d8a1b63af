"""Hooks cannot go silently wrong: what a hook changes becomes state or is refused.

Each case here gave wrong numbers, or changed the user's object, without an error
(issue "Hooks that cannot go silently wrong"). Numbers are checked eagerly and under
jit, through both bridges.
"""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import flr_nnx as flr

PARAMS = {"w": jnp.array([1.0, -2.0])}
GRADS = {"w": jnp.array([0.5, 0.25])}


class ScalarFirst(flr.optim.Optimizer):
    """An EMA whose entries start at the Python number 1.0."""

    def __init__(self):
        self.v = {}
        self.t = 0  # a Python number in __init__, an array after the first step

    def call_model(self, grads, **_):
        self.t = self.t + jnp.ones((), jnp.int32)
        return grads

    def call_param(self, key, grad, **_):
        if key not in self.v:
            self.v[key] = 1.0
        self.v[key] = 0.5 * self.v[key] + 0.5 * grad
        return self.v[key] * self.t.astype(grad.dtype)


@pytest.mark.parametrize("jit", [True, False], ids=["jit", "eager"])
def test_python_number_as_first_value_is_the_initial_state(jit):
    tx = flr.as_optax(ScalarFirst())
    state = tx.init(PARAMS)
    np.testing.assert_array_equal(state.tree["v"]["w"], jnp.ones(2))
    assert int(state.tree["t"]) == 0
    update = jax.jit(tx.update) if jit else tx.update
    updates, state = update(GRADS, state, PARAMS)
    np.testing.assert_allclose(updates["w"], -(0.5 + 0.5 * GRADS["w"]))  # t = 1
    updates, _ = update(GRADS, state, PARAMS)
    v2 = 0.5 * (0.5 + 0.5 * GRADS["w"]) + 0.5 * GRADS["w"]
    np.testing.assert_allclose(updates["w"], -2 * v2)  # t = 2


def test_python_number_as_first_value_in_nnx_optimizer():
    class Model(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(PARAMS["w"])

    optimizer = flr.NNXOptimizer(Model(), ScalarFirst(), wrt=nnx.Param)
    np.testing.assert_array_equal(optimizer.opt_state["v"]["w"][...], jnp.ones(2))


class Config(flr.optim.Optimizer):
    def __init__(self):
        self.cfg = types.SimpleNamespace(lr=1.0, history=[])

    def call_param(self, key, grad, **_):
        self.cfg.lr *= 0.5
        return self.cfg.lr * grad


class Counting(flr.optim.Optimizer):
    calls = 0

    def call_param(self, key, grad, **_):
        type(self).calls += 1
        return grad


class Seen(flr.optim.Optimizer):
    def __init__(self):
        self.seen = set()

    def call_param(self, key, grad, **_):
        self.seen.add(key)
        return grad


class Appends(flr.optim.Optimizer):
    def __init__(self):
        self.cfg = types.SimpleNamespace(history=[])

    def call_param(self, key, grad, **_):
        self.cfg.history.append(key)
        return grad


@pytest.mark.parametrize(
    "make, where",
    [
        (Config, "opt.cfg"),
        (Counting, "Counting.calls"),
        (Seen, "opt.seen"),
        (Appends, "opt.cfg"),
    ],
    ids=["namespace", "class-attribute", "set", "nested-list"],
)
@pytest.mark.parametrize("bridge", ["as_optax", "nnx"])
def test_hooks_changing_shared_python_objects_are_refused_and_undone(make, where, bridge):
    opt = make()
    before_vars = {k: (set(v) if isinstance(v, set) else v) for k, v in vars(opt).items()}
    before_cfg = dict(vars(opt.cfg)) if hasattr(opt, "cfg") else None
    before_history = list(opt.cfg.history) if hasattr(opt, "cfg") else None
    with pytest.raises(flr.StateError, match=rf"changed `{where}` during init.*put back"):
        if bridge == "as_optax":
            flr.as_optax(opt).init(PARAMS)
        else:
            flr.NNXOptimizer(nnx.Linear(2, 1, rngs=nnx.Rngs(0)), opt, wrt=nnx.Param)
    # The user's object is as it was.
    assert Counting.calls == 0
    if isinstance(opt, Seen):
        assert opt.seen == set() and before_vars["seen"] == set()
    if before_cfg is not None:
        assert vars(opt.cfg) == before_cfg
        assert opt.cfg.history == before_history == []


def test_reading_shared_python_objects_is_fine():
    class Reads(flr.optim.Optimizer):
        scale = 2.0

        def __init__(self):
            self.cfg = types.SimpleNamespace(lr=0.5)
            self.allowed = {("w",)}

        def call_param(self, key, grad, **_):
            keep = 1.0 if key in self.allowed else 0.0
            return self.cfg.lr * type(self).scale * keep * grad

    tx = flr.as_optax(Reads())
    updates, _ = jax.jit(tx.update)(GRADS, tx.init(PARAMS), PARAMS)
    np.testing.assert_allclose(updates["w"], -GRADS["w"])


def _train(optimizer, model, steps=2):
    x = jnp.ones((3, 2))

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: (m(x) ** 2).mean())(model)
        optimizer.update(model, grads, loss=loss)

    for _ in range(steps):
        step(model, optimizer)


def test_assigning_through_hook_optimizer_sets_live_state_or_refuses():
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    optimizer = flr.NNXOptimizer(model, flr.optim.SGD(0.1), wrt=nnx.Param)
    with pytest.raises(flr.HyperparameterError, match=r"flr\.hyper"):
        optimizer.hook_optimizer.learning_rate = 0.0
    live = flr.NNXOptimizer(model, flr.optim.SGD(flr.hyper(0.1)), wrt=nnx.Param)
    _train(live, model, 1)
    live.hook_optimizer.learning_rate = 0.0  # takes effect under nnx.jit
    before = model.kernel[...]
    _train(live, model, 2)
    np.testing.assert_array_equal(model.kernel[...], before)
    assert flr.NNXOptimizer(model, optax_sgd(), wrt=nnx.Param).hook_optimizer is None


def optax_sgd():
    import optax

    return optax.sgd(0.1)


# -- Live hyperparameters are set with the constructor's checks; state is not a hyperparameter.


def _holders():
    tx = flr.as_optax(flr.optim.Adam(flr.hyper(0.1)))
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    return tx.init(PARAMS), flr.NNXOptimizer(model, flr.optim.Adam(flr.hyper(0.1)), wrt=nnx.Param)


def test_setters_apply_the_constructors_checks():
    state, optimizer = _holders()
    with pytest.raises(flr.HyperparameterError, match=r"Adam\(learning_rate=-1\.0\): expected"):
        flr.set_hyper(state, "learning_rate", -1.0)
    with pytest.raises(flr.HyperparameterError, match=r"Adam\(learning_rate=-1\.0\): expected"):
        flr.set_hyper(optimizer, "learning_rate", -1.0)
    with pytest.raises(flr.HyperparameterError, match=r"Adam\(learning_rate=-1\.0\): expected"):
        optimizer.opt.learning_rate = -1.0
    assert float(flr.get_hyper(optimizer, "learning_rate")) == pytest.approx(0.1)
    assert float(flr.get_hyper(flr.set_hyper(state, "learning_rate", 0.5), "learning_rate")) == 0.5


def test_set_hyper_refuses_state_the_hooks_update():
    state, optimizer = _holders()
    for holder in (state, optimizer):
        with pytest.raises(flr.HyperparameterError, match=r"'count' is optimizer state"):
            flr.set_hyper(holder, "count", 3)


def test_integer_state_refuses_a_fraction():
    _, optimizer = _holders()
    with pytest.raises(flr.HyperparameterError, match=r"truncate to 5"):
        optimizer.opt.count = 5.7
    optimizer.opt.count = 5
    assert int(optimizer.opt.count) == 5


def test_call_model_changing_a_gradients_dtype_is_a_hook_error():
    class Casts(flr.optim.Optimizer):
        def call_model(self, grads, **_):
            return {k: g.astype(jnp.bfloat16) for k, g in grads.items()}

        def call_param(self, key, grad, **_):
            return grad.astype(jnp.float32)

    with pytest.raises(flr.HookError, match=r"expected shape \(2,\) and dtype float32"):
        flr.as_optax(Casts()).init(PARAMS)


# -- Found by review and fuzzing: each a silent wrong number or a refused legitimate hook.


class LazyInner(flr.optim.Optimizer):
    """``None`` in __init__, a sub-optimizer created by the first step."""

    def __init__(self):
        self.inner = None

    def call_model(self, grads, params, **extra):
        if self.inner is None:
            self.inner = flr.optim.SGD(0.1, momentum=0.9)
        return flr.optim.call(self.inner, grads=grads, params=params, **extra)


class LazyDict(flr.optim.Optimizer):
    def __init__(self):
        self.s = None

    def call_param(self, key, grad, **_):
        if self.s is None:
            self.s = {}
        if key not in self.s:
            self.s[key] = jnp.zeros_like(grad)
        self.s[key] = 0.9 * self.s[key] + grad
        return 0.1 * self.s[key]


@pytest.mark.parametrize("make", [LazyInner, LazyDict], ids=["sub-optimizer", "dict"])
def test_state_created_where_init_had_none_carries_over(make):
    import optax

    tx, twin = flr.as_optax(make()), optax.sgd(0.1, momentum=0.9)
    state, twin_state = tx.init(PARAMS), twin.init(PARAMS)
    for _ in range(3):
        updates, state = jax.jit(tx.update)(GRADS, state, PARAMS)
        expected, twin_state = jax.jit(twin.update)(GRADS, twin_state, PARAMS)
        np.testing.assert_allclose(updates["w"], expected["w"], rtol=1e-6)


def test_more_shared_objects_are_refused():
    import collections
    import functools

    class Deque(flr.optim.Optimizer):
        def __init__(self):
            self.q = collections.deque([1.0])

        def call_param(self, key, grad, **_):
            self.q.append(self.q[-1] * 0.5)
            return self.q[-1] * grad

    class Keywords(flr.optim.Optimizer):
        def __init__(self):
            self.f = functools.partial(lambda x, lr: lr * x, lr=0.1)

        def call_param(self, key, grad, **_):
            self.f.keywords["lr"] *= 0.5
            return self.f(grad)

    class Deep(flr.optim.Optimizer):
        def __init__(self):
            ns = types.SimpleNamespace
            self.a = ns(b=ns(c=ns(d={"lr": 0.1})))

        def call_param(self, key, grad, **_):
            self.a.b.c.d["lr"] *= 0.5
            return self.a.b.c.d["lr"] * grad

    for make in (Deque, Keywords, Deep):
        opt = make()
        with pytest.raises(flr.StateError, match="put back"):
            flr.as_optax(opt).init(PARAMS)
    assert list(opt.a.b.c.d.values()) == [0.1]


def test_rebinding_a_global_is_refused():
    with pytest.raises(flr.StateError, match="changed `_CALLS`"):
        flr.as_optax(CountsGlobally()).init(PARAMS)
    assert _CALLS == 0


_CALLS = 0


class CountsGlobally(flr.optim.Optimizer):
    def call_param(self, key, grad, **_):
        global _CALLS
        _CALLS += 1
        return grad


def test_library_objects_and_caches_are_not_refused():
    import functools
    import logging

    class Config:
        @functools.cached_property
        def scale(self):
            return 2.0

    class Reads(flr.optim.Optimizer):
        def __init__(self):
            self.log = logging.getLogger("flr_nnx.test")
            self.mesh = jax.make_mesh((1,), ("x",))
            self.cfg = Config()
            self.memo = {}

        def call_param(self, key, grad, **_):
            self.log.debug("tracing")
            self.memo.setdefault("n", self.mesh.shape["x"])  # a cache: only gains entries
            return grad * self.cfg.scale * self.memo["n"]

    tx = flr.as_optax(Reads())
    updates, _ = jax.jit(tx.update)(GRADS, tx.init(PARAMS), PARAMS)
    np.testing.assert_allclose(updates["w"], -2.0 * GRADS["w"])


def test_initial_values_through_custom_derivatives_and_device_put():
    class Init(flr.optim.Optimizer):
        def __init__(self):
            self.relu, self.copy = {}, {}

        def call_param(self, key, grad, param, **_):
            if key not in self.relu:
                self.relu[key] = jax.nn.relu(param)  # a custom_jvp function
                self.copy[key] = jax.device_put(param, jax.devices()[0])  # same buffer
            self.relu[key] = self.relu[key] + grad
            self.copy[key] = 0.5 * self.copy[key] + 0.5 * param
            return grad

    tx = flr.as_optax(Init())
    state = tx.init(PARAMS)
    np.testing.assert_array_equal(state.tree["relu"]["w"], jax.nn.relu(PARAMS["w"]))
    np.testing.assert_array_equal(state.tree["copy"]["w"], PARAMS["w"])
    params = {"w": jnp.array(PARAMS["w"])}
    step = jax.jit(tx.update, donate_argnums=(1,))
    step(GRADS, state, params)  # the state is donated: it must not share the params' buffer
    np.testing.assert_array_equal(params["w"], PARAMS["w"])


def test_numpy_array_read_by_hooks_is_copied_when_wrapped():
    lr = np.array(0.1, np.float32)
    tx = flr.as_optax(flr.optim.SGD(lr))
    state = tx.init(PARAMS)
    lr[...] = 100.0  # the user's array changes after wrapping: the transformation does not
    eager, _ = tx.update(GRADS, state, PARAMS)
    jitted, _ = jax.jit(tx.update)(GRADS, state, PARAMS)
    np.testing.assert_allclose(eager["w"], -0.1 * GRADS["w"])
    np.testing.assert_array_equal(eager["w"], jitted["w"])


def test_value_fn_called_with_unknown_keys_is_an_error():
    class Probe(flr.optim.Optimizer):
        def call_model(self, grads, value_fn, **_):
            value_fn({"w": jnp.zeros(2)})  # not a parameter key: ('w',) is
            return grads

    tx = flr.as_optax(Probe())
    state = tx.init(PARAMS)
    with pytest.raises(flr.ArgumentError, match=r"value_fn was called with keys \['w'\]"):
        tx.update(GRADS, state, PARAMS, value_fn=lambda p: jnp.sum(p["w"]))


def test_optax_schedules_that_rebind_their_closure_are_not_refused():
    import optax

    # optax's cosine schedule turns its closure's `decay_steps` from int to float when called.
    schedule = optax.cosine_decay_schedule(1e-2, decay_steps=1000)
    tx, twin = flr.as_optax(flr.optim.Adam(schedule)), optax.adam(schedule)
    ours, _ = jax.jit(tx.update)(GRADS, tx.init(PARAMS), PARAMS)
    theirs, _ = jax.jit(twin.update)(GRADS, twin.init(PARAMS), PARAMS)
    np.testing.assert_array_equal(ours["w"], theirs["w"])


@pytest.mark.parametrize("number, dtype", [(2**31 + 5, jnp.int32), (3 + 4j, jnp.float32)])
def test_python_number_that_the_state_cannot_hold_is_refused(number, dtype):
    class Starts(flr.optim.Optimizer):
        def __init__(self):
            self.v = number

        def call_model(self, grads, **_):
            self.v = jnp.zeros((), dtype)
            return grads

    with pytest.raises(flr.StateError, match=r"opt\.v starts as the Python number"):
        flr.as_optax(Starts()).init(PARAMS)


def test_more_hook_mutations_are_refused_and_lazy_caches_are_not():
    class Counter:
        def __init__(self):
            self.n = 0

        def bump(self):
            self.n += 1
            return float(self.n)

    class Kind:
        count = 0

    class Bound(flr.optim.Optimizer):
        def __init__(self, counter):
            self.cb = counter.bump

        def call_param(self, key, grad, **_):
            return grad * self.cb()

    class ClassOfConfig(flr.optim.Optimizer):
        def __init__(self):
            self.cfg = Kind()

        def call_param(self, key, grad, **_):
            type(self.cfg).count += 1
            return grad

    class ArrayInConfig(flr.optim.Optimizer):
        def __init__(self):
            self.cfg = types.SimpleNamespace(arr=np.zeros(3))

        def call_param(self, key, grad, **_):
            self.cfg.arr[0] += 1
            return grad

    counter = Counter()
    for opt in (Bound(counter), ClassOfConfig(), ArrayInConfig()):
        with pytest.raises(flr.StateError, match="put back"):
            flr.as_optax(opt).init(PARAMS)
    assert counter.n == 0 and Kind.count == 0 and opt.cfg.arr.tolist() == [0.0, 0.0, 0.0]

    class Lazy(flr.optim.Optimizer):
        _coef = None

        def call_param(self, key, grad, **_):
            if type(self)._coef is None:
                type(self)._coef = 0.5
            return grad * type(self)._coef

    tx = flr.as_optax(Lazy())
    updates, _ = jax.jit(tx.update)(GRADS, tx.init(PARAMS), PARAMS)
    np.testing.assert_allclose(updates["w"], -0.5 * GRADS["w"])


def test_live_view_keeps_optax_state_field_names():
    import optax

    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    optimizer = flr.NNXOptimizer(model, flr.from_optax(optax.adam(0.1)), wrt=nnx.Param)
    adam_state = optimizer.opt.tx_state[0]
    assert type(adam_state).__name__ == "ScaleByAdamState"
    assert sorted(adam_state.mu) == [("bias",), ("kernel",)]
    assert int(adam_state.count) == 0
