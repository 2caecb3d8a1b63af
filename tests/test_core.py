"""The core: hook API, engine, and both bridges, proven on the tutorial's Adam."""

import collections
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from tutorial_adam import Adam as TutorialAdam

import flr_nnx as flr


class MLP(nnx.Module):
    def __init__(self, rngs, sizes=(16, 128, 64, 1)):
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(sizes)])
        self.count = nnx.Variable(jnp.array(0))  # an int leaf that must be left alone

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = jax.nn.tanh(layer(x))
        return self.layers[-1](x)


DATA_X = jax.random.normal(jax.random.key(0), (32, 16))
DATA_Y = jnp.sin(DATA_X.sum(axis=1, keepdims=True))


def loss_fn(model):
    return ((model(DATA_X) - DATA_Y) ** 2).mean()


def dict_params():
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    return {
        "dense": {"kernel": jax.random.normal(k1, (20, 30)), "bias": jnp.zeros(30)},
        "out": [jax.random.normal(k2, (30,)), jax.random.normal(k3, ())],
    }


def dict_grads(i, params):
    key = jax.random.fold_in(jax.random.key(2), i)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten(
        [jax.random.normal(k, p.shape) * (1 + i % 7) for k, p in zip(keys, leaves, strict=True)]
    )


def rel_dev(a, b):
    """Relative deviation of two update trees: ||a - b|| / ||b|| over all leaves."""
    a = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(a)])
    b = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(b)])
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


def bit_equal(a, b):
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


# -- the tutorial's Adam against optax.adam ---------------------------------


def test_tutorial_adam_as_optax_dict_pytree_matches_optax():
    params = dict_params()
    hook, ref = flr.as_optax(TutorialAdam(0.01)), optax.adam(0.01, b1=0.9, b2=0.999, eps=1e-8)
    h_state, r_state = hook.init(params), ref.init(params)
    h_update, r_update = jax.jit(hook.update), jax.jit(ref.update)
    for i in range(100):
        grads = dict_grads(i, params)
        h, h_state = h_update(grads, h_state, params)
        r, r_state = r_update(grads, r_state, params)
        assert rel_dev(h, r) < 1e-6, i
        params = optax.apply_updates(params, r)


def test_tutorial_adam_nnx_optimizer_matches_optax_on_mlp():
    model, ref_model = MLP(nnx.Rngs(0)), MLP(nnx.Rngs(0))
    n_params = sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n_params >= 10_000
    opt = flr.NNXOptimizer(model, TutorialAdam(1e-3), wrt=nnx.Param)
    ref = nnx.Optimizer(ref_model, optax.adam(1e-3), wrt=nnx.Param)

    @nnx.jit
    def apply(model, optimizer, grads):
        return optimizer.update(model, grads)

    for i in range(100):
        # Same gradients on both sides, so each step compares the updates alone.
        grads = nnx.grad(loss_fn)(ref_model)
        h, r = apply(model, opt, grads), apply(ref_model, ref, grads)
        assert rel_dev(h, r) < 1e-6, i
    assert int(opt.step[...]) == 100
    assert int(model.count[...]) == 0


# -- flr.optim.Adam is bit-identical to optax.adam ----------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"nesterov": True}, {"eps_root": 1e-8}, {"b1": 0.8, "b2": 0.99, "eps": 1e-6}],
    ids=["default", "nesterov", "eps_root", "custom"],
)
def test_adam_bit_identical_to_optax_200_steps(kwargs):
    params = dict_params()
    hook, ref = flr.as_optax(flr.optim.Adam(3e-3, **kwargs)), optax.adam(3e-3, **kwargs)
    h_state, r_state = hook.init(params), ref.init(params)

    @jax.jit
    def both(i, params, h_state, r_state):
        grads = dict_grads(i, params)
        h, h_state = hook.update(grads, h_state, params)
        r, r_state = ref.update(grads, r_state, params)
        return h, r, optax.apply_updates(params, r), h_state, r_state

    for i in range(200):
        h, r, params, h_state, r_state = both(i, params, h_state, r_state)
        assert bit_equal(h, r), i
    assert bit_equal(h_state.tree["mu"], r_state[0].mu)
    assert bit_equal(h_state.tree["nu"], r_state[0].nu)


def test_adam_bit_identical_through_nnx_optimizer():
    model, ref_model = MLP(nnx.Rngs(3)), MLP(nnx.Rngs(3))
    opt = flr.NNXOptimizer(model, flr.optim.Adam(1e-2, nesterov=True), wrt=nnx.Param)
    ref = nnx.Optimizer(ref_model, optax.adam(1e-2, nesterov=True), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer):
        optimizer.update(model, nnx.grad(loss_fn)(model))

    for _ in range(50):
        train_step(model, opt)
        train_step(ref_model, ref)
    assert bit_equal(nnx.state(model, nnx.Param), nnx.state(ref_model, nnx.Param))


# -- composition ---------------------------------------------------------------


def test_optax_chain_with_hook_adam_equals_optax_adam():
    params = dict_params()
    hook = optax.chain(optax.clip_by_global_norm(1.0), flr.as_optax(flr.optim.Adam(0.1)))
    ref = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.1))
    h_state, r_state = hook.init(params), ref.init(params)
    for i in range(20):
        grads = dict_grads(i, params)
        h, h_state = jax.jit(hook.update)(grads, h_state, params)
        r, r_state = jax.jit(ref.update)(grads, r_state, params)
        assert bit_equal(h, r)
        params = optax.apply_updates(params, r)


class Scale(flr.optim.Optimizer):
    def __init__(self, factor):
        self.factor = factor

    def call_param(self, grad, **_):
        return self.factor * grad


def test_chain_of_hooks_equals_composition_by_hand():
    params = dict_params()
    chained = flr.as_optax(flr.compose.Chain(Scale(0.5), flr.optim.Adam(0.1)))
    adam = flr.as_optax(flr.optim.Adam(0.1))
    c_state, a_state = chained.init(params), adam.init(params)
    for i in range(10):
        grads = dict_grads(i, params)
        c, c_state = chained.update(grads, c_state, params)
        a, a_state = adam.update(jax.tree.map(lambda g: 0.5 * g, grads), a_state, params)
        assert bit_equal(c, a)
    # The link's state lives under the Chain's `links` attribute.
    assert set(c_state.tree["links"][1]) >= {"mu", "nu", "count"}


# -- the hooks see the right values ---------------------------------------------


class Recorder(flr.optim.Optimizer):
    """Returns loss * param as the update, so both values are checked."""

    def call_param(self, key, grad, param):
        return self.loss * param + 0 * grad

    def call_model(self, grads, params, loss):
        self.loss = jnp.asarray(loss, jnp.float32)
        return grads


def test_hooks_read_loss_and_param_through_both_bridges():
    model = MLP(nnx.Rngs(0), sizes=(3, 4, 1))
    before = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))
    opt = flr.NNXOptimizer(model, Recorder(), wrt=nnx.Param)
    opt.update(model, nnx.grad(loss_fn_small)(model), loss=jnp.float32(0.25))
    after = nnx.state(model, nnx.Param)
    for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(before), strict=True):
        np.testing.assert_allclose(a, 0.75 * b, rtol=1e-6)

    params = {"w": jnp.arange(3.0)}
    tx = flr.as_optax(Recorder())
    updates, _ = tx.update({"w": jnp.ones(3)}, tx.init(params), params, value=jnp.float32(2.0))
    np.testing.assert_allclose(updates["w"], -2.0 * params["w"])


def loss_fn_small(model):
    return (model(jnp.ones((2, 3))) ** 2).mean()


# -- keys ----------------------------------------------------------------------


class KeyCollector(flr.optim.Optimizer):
    def __init__(self):
        self.seen = {}

    def call_param(self, key, grad, **_):
        if key not in self.seen:
            self.seen[key] = jnp.zeros((), jnp.float32)
        return grad


def test_same_keys_through_both_bridges():
    model = MLP(nnx.Rngs(0), sizes=(3, 4, 1))
    nnx_keys = set()
    opt = flr.NNXOptimizer(model, KeyCollector(), wrt=nnx.Param)
    nnx_keys = {k for k in opt.layout.param_keys}
    tx = flr.as_optax(KeyCollector())
    optax_keys = set(tx.init(nnx.state(model, nnx.Param)).layout.param_keys)
    pure_keys = set(tx.init(nnx.as_pure(nnx.state(model, nnx.Param))).layout.param_keys)
    expected = {("layers", i, name) for i in (0, 1) for name in ("kernel", "bias")}
    assert nnx_keys == optax_keys == pure_keys == expected
    for key in expected:
        assert all(type(part) in (str, int) for part in key)


# -- lazy state ----------------------------------------------------------------


class WeightEMA(flr.optim.Optimizer):
    """SGD that also tracks an EMA of the weights, started at the weights."""

    def __init__(self, lr=0.1, decay=0.5):
        self.lr, self.decay = lr, decay
        self.ema = {}

    def call_param(self, key, grad, param):
        if key not in self.ema:
            self.ema[key] = param
        self.ema[key] = self.decay * self.ema[key] + (1 - self.decay) * param
        return self.lr * grad


def test_lazy_state_starts_with_the_first_assigned_value():
    params = {"w": jnp.array([1.0, 2.0])}
    state = flr.as_optax(WeightEMA()).init(params)
    np.testing.assert_array_equal(state.tree["ema"]["w"], params["w"])
    adam_state = flr.as_optax(TutorialAdam()).init(params)
    np.testing.assert_array_equal(adam_state.tree["m"]["w"], jnp.zeros(2))
    assert adam_state.tree["t"] == 0 and adam_state.tree["t"].dtype == jnp.uint32


def test_state_created_after_init_is_a_clear_error():
    class Sneaky(flr.optim.Optimizer):
        def __init__(self):
            self.calls = []
            self.buf = {}

        def call_param(self, key, grad, **_):
            self.calls.append(key)
            # A new entry on every call (keys grow): impossible with a fixed state.
            self.buf[(*key, len(self.calls))] = grad
            return grad

    params = {"w": jnp.ones(2)}
    tx = flr.as_optax(Sneaky())
    state = tx.init(params)
    with pytest.raises(flr.StateError, match=r"opt\.buf\[\('w', 2\)\].*created after init"):
        tx.update(params, state, params)


# -- sub-optimizers, purity ----------------------------------------------------


class Holder(flr.optim.Optimizer):
    def __init__(self):
        self.by_name = {"a": flr.optim.Adam(0.1)}
        self.pair = (Scale(2.0), [flr.compose.Chain(flr.optim.Adam(0.01))])

    def __call__(self, loss, grads, params):
        grads = self.pair[0](loss=loss, grads=grads, params=params)
        grads = self.pair[1][0](loss=loss, grads=grads, params=params)
        return self.by_name["a"](loss=loss, grads=grads, params=params)


def test_state_of_nested_sub_optimizers_at_any_depth():
    params = dict_params()
    tx = flr.as_optax(Holder())
    state = tx.init(params)
    assert "mu" in state.tree["by_name"]["a"]
    assert "mu" in state.tree["pair"][1][0]["links"][0]
    grads = dict_grads(0, params)
    _, new_state = tx.update(grads, state, params)
    assert int(new_state.tree["pair"][1][0]["links"][0]["count"]) == 1
    assert int(new_state.tree["by_name"]["a"]["count"]) == 1


def test_steps_never_mutate_the_users_optimizer_and_repeat_identically():
    opt = TutorialAdam(0.01)
    model_a, model_b = MLP(nnx.Rngs(0), (3, 4, 1)), MLP(nnx.Rngs(0), (3, 4, 1))
    optimizer_a = flr.NNXOptimizer(model_a, opt, wrt=nnx.Param)
    optimizer_b = flr.NNXOptimizer(model_b, opt, wrt=nnx.Param)
    tx = flr.as_optax(opt)
    params = nnx.as_pure(nnx.state(model_a, nnx.Param))
    state = tx.init(params)
    for _ in range(3):
        grads = nnx.grad(loss_fn_small)(model_a)
        ua = optimizer_a.update(model_a, grads)
        ub = optimizer_b.update(model_b, nnx.grad(loss_fn_small)(model_b))
        uo, state = tx.update(nnx.as_pure(grads), state, params)
        params = optax.apply_updates(params, uo)
        assert bit_equal(ua, ub) and bit_equal(ua, uo)
    assert opt.m == {} and opt.v == {} and int(opt.t) == 0


# -- filters and dtypes ----------------------------------------------------------


def test_wrt_filter_and_non_float_leaves():
    class Model(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(3, 2, rngs=rngs)
            self.frozen = nnx.BatchStat(jnp.ones(2))
            self.steps = nnx.Param(jnp.array([1, 2], jnp.int32))

        def __call__(self, x):
            return self.linear(x) * self.frozen

    model = Model(nnx.Rngs(0))
    optimizer = flr.NNXOptimizer(model, flr.optim.Adam(0.1), wrt=nnx.Param)
    assert set(optimizer.layout.param_keys) == {("linear", "kernel"), ("linear", "bias")}
    grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
    optimizer.update(model, grads)
    np.testing.assert_array_equal(model.steps[...], [1, 2])
    np.testing.assert_array_equal(model.frozen[...], jnp.ones(2))

    tx = flr.as_optax(flr.optim.Adam(0.1))
    params = {"w": jnp.ones(2), "n": jnp.array([3, 4])}
    updates, _ = tx.update({"w": jnp.ones(2), "n": jnp.array([7, 7])}, tx.init(params), params)
    np.testing.assert_array_equal(optax.apply_updates(params, updates)["n"], [3, 4])


def test_python_float_hyperparameters_stay_constants():
    tx = flr.as_optax(flr.optim.Adam(0.1))
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    assert "learning_rate" not in state.tree and "b1" not in state.tree
    jaxpr = jax.make_jaxpr(tx.update)(params, state, params)
    assert len(jaxpr.jaxpr.invars) == len(jax.tree.leaves((params, state, params)))
    assert "0.1" in str(jaxpr)  # the learning rate is a literal in the program


# -- compile once ----------------------------------------------------------------


def test_fifty_steps_compile_once_nnx_jit_and_jax_jit():
    traces = {"nnx": 0, "jax": 0}
    model = MLP(nnx.Rngs(0), (3, 8, 1))
    optimizer = flr.NNXOptimizer(model, TutorialAdam(0.01), wrt=nnx.Param)

    @nnx.jit
    def nnx_step(model, optimizer):
        traces["nnx"] += 1
        loss, grads = nnx.value_and_grad(loss_fn_small)(model)
        optimizer.update(model, grads, loss=loss)
        return loss

    tx = flr.as_optax(TutorialAdam(0.01))
    params = dict_params()
    state = tx.init(params)

    @jax.jit
    def jax_step(i, params, state):
        traces["jax"] += 1
        updates, state = tx.update(dict_grads(i, params), state, params)
        return optax.apply_updates(params, updates), state

    for i in range(50):
        nnx_step(model, optimizer)
        params, state = jax_step(i, params, state)
    assert traces == {"nnx": 1, "jax": 1}
    assert int(optimizer.step[...]) == 50
    assert int(state.tree["t"]) == 50


# -- NNX integration -------------------------------------------------------------


def test_nnx_state_split_merge_and_slot_metadata():
    model = MLP(nnx.Rngs(0), (3, 4, 1))
    optimizer = flr.NNXOptimizer(model, flr.optim.Adam(0.1), wrt=nnx.Param)
    state = nnx.state(optimizer, flr.OptimizerSlot)
    assert isinstance(optimizer.opt_state["mu"]["layers"][0]["kernel"], flr.OptimizerSlot)
    assert isinstance(optimizer.opt_state["mu"]["layers"][0]["kernel"], nnx.OptState)
    assert (
        len(jax.tree.leaves(state)) == 2 * 4 + 1
    )  # mu, nu per param; count (bc1, bc2 are transient)
    graphdef, full_state = nnx.split(optimizer)
    clone = nnx.merge(graphdef, full_state)
    clone.update(model, nnx.grad(loss_fn_small)(model))
    assert int(clone.step[...]) == 1 and int(optimizer.step[...]) == 1  # merged shares Variables


def test_as_optax_inside_nnx_optimizer_multisteps_and_masked():
    model, ref_model = MLP(nnx.Rngs(0), (3, 4, 1)), MLP(nnx.Rngs(0), (3, 4, 1))
    opt = nnx.Optimizer(model, flr.as_optax(flr.optim.Adam(0.05)), wrt=nnx.Param)
    ref = nnx.Optimizer(ref_model, optax.adam(0.05), wrt=nnx.Param)
    step = nnx.jit(lambda m, o: o.update(m, nnx.grad(loss_fn_small)(m)))
    for _ in range(5):
        step(model, opt)
        step(ref_model, ref)
    assert bit_equal(nnx.state(model, nnx.Param), nnx.state(ref_model, nnx.Param))

    params = dict_params()
    for hook, ref_tx in [
        (
            optax.MultiSteps(flr.as_optax(flr.optim.Adam(0.1)), 3),
            optax.MultiSteps(optax.adam(0.1), 3),
        ),
        (
            optax.masked(flr.as_optax(flr.optim.Adam(0.1)), {"dense": True, "out": False}),
            optax.masked(optax.adam(0.1), {"dense": True, "out": False}),
        ),
    ]:
        h_state, r_state = hook.init(params), ref_tx.init(params)
        for i in range(7):
            grads = dict_grads(i, params)
            h, h_state = jax.jit(hook.update)(grads, h_state, params)
            r, r_state = jax.jit(ref_tx.update)(grads, r_state, params)
            assert bit_equal(h, r)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1e-3])
def test_non_finite_or_negative_learning_rate_is_rejected(bad):
    with pytest.raises(flr.HyperparameterError, match="learning_rate"):
        flr.optim.Adam(bad)


# -- state created in unusual but ordinary ways (review findings) ----------------


class NoneThenArray(flr.optim.Optimizer):
    """A counter that starts as None in __init__ and becomes an array in a hook."""

    def __init__(self):
        self.t = None

    def call_model(self, grads, **_):
        if self.t is None:
            self.t = jnp.zeros((), jnp.float32)
        self.t = self.t + 1
        return grads

    def call_param(self, grad, **_):
        return self.t * grad


class TorchStyle(flr.optim.Optimizer):
    """Per-parameter state in a defaultdict, as torch.optim keeps it."""

    def __init__(self):
        self.state = collections.defaultdict(dict)

    def call_param(self, key, grad, **_):
        slot = self.state[key]
        if "step" not in slot:
            slot["step"] = jnp.zeros((), jnp.float32)
        slot["step"] = slot["step"] + 1
        return slot["step"] * grad


class LazyInner(flr.optim.Optimizer):
    """A sub-optimizer created inside a hook on the first step."""

    def __call__(self, loss, grads, params):
        if not hasattr(self, "inner"):
            self.inner = flr.optim.Adam(0.1)
        return self.inner(loss=loss, grads=grads, params=params)


@pytest.mark.parametrize("opt", [NoneThenArray, TorchStyle], ids=["none-then-array", "defaultdict"])
def test_state_first_assigned_in_a_hook_starts_from_that_value(opt):
    params = {"w": jnp.ones(2)}
    tx = flr.as_optax(opt())
    state = tx.init(params)
    assert [float(x) for x in jax.tree.leaves(state)] == [0.0]
    updates, state = tx.update({"w": jnp.ones(2)}, state, params)
    np.testing.assert_array_equal(updates["w"], [-1.0, -1.0])
    updates, _ = tx.update({"w": jnp.ones(2)}, state, params)
    np.testing.assert_array_equal(updates["w"], [-2.0, -2.0])


def test_sub_optimizer_created_in_a_hook_matches_adam():
    params = dict_params()
    hook, ref = flr.as_optax(LazyInner()), flr.as_optax(flr.optim.Adam(0.1))
    h_state, r_state = hook.init(params), ref.init(params)
    for i in range(3):
        grads = dict_grads(i, params)
        h, h_state = hook.update(grads, h_state, params)
        r, r_state = ref.update(grads, r_state, params)
        assert bit_equal(h, r)


def test_live_view_items_refuse_writes():
    class Lists(flr.optim.Optimizer):
        def __init__(self):
            self.lrs = [flr.hyper(0.1)]
            self.by_name = {"lr": flr.hyper(0.1)}

        def call_param(self, grad, **_):
            return self.lrs[0] * self.by_name["lr"] * grad

    optimizer = flr.NNXOptimizer(nnx.Linear(1, 1, rngs=nnx.Rngs(0)), Lists(), wrt=nnx.Param)
    assert float(optimizer.opt.lrs[0]) == pytest.approx(0.1)
    with pytest.raises(flr.HyperparameterError, match=r"optimizer\.opt\.lrs.*snapshot"):
        optimizer.opt.lrs[0] = 0.5
    with pytest.raises(flr.HyperparameterError, match=r"optimizer\.opt\.by_name.*snapshot"):
        optimizer.opt.by_name["lr"] = 0.5


def test_dict_filled_through_an_alias_is_a_clear_error_at_init():
    class Aliased(flr.optim.Optimizer):
        def call_param(self, key, grad, **_):
            if not hasattr(self, "m"):
                self.m = m = {}
                m[key] = jnp.zeros_like(grad)
            return grad

    with pytest.raises(flr.StateError, match=r"`\.m`.*another name"):
        flr.as_optax(Aliased()).init({"w": jnp.ones(2)})


# -- transient attributes ---------------------------------------------------------


def test_transient_attributes_stay_out_of_the_state_and_change_nothing_else():
    class Scaled(flr.optim.Optimizer):
        def __init__(self):
            self.count = jnp.zeros((), jnp.int32)
            self.m = {}

        def call_model(self, grads, **_):
            self.count = self.count + 1
            self.lr_t = 0.1 / self.count.astype(jnp.float32)
            return grads

        def call_param(self, key, grad, **_):
            if key not in self.m:
                self.m[key] = jnp.zeros_like(grad)
            self.m[key] = 0.9 * self.m[key] + grad
            return self.lr_t * self.m[key]

    class ScaledTransient(Scaled):
        transient = ("lr_t",)

    params = {"a": jnp.ones((2, 3)), "b": jnp.linspace(-1.0, 1.0, 4)}
    kept, dropped = flr.as_optax(Scaled()), flr.as_optax(ScaledTransient())
    state_kept, state_dropped = kept.init(params), dropped.init(params)
    assert "lr_t" in state_kept.tree and "lr_t" not in state_dropped.tree
    assert sorted(state_dropped.tree) == ["count", "m"]
    p1 = p2 = params
    for i in range(3):
        grads = jax.tree.map(lambda p, i=i: jnp.cos(p * (i + 1)), p1)
        u1, state_kept = jax.jit(kept.update)(grads, state_kept, p1)
        u2, state_dropped = jax.jit(dropped.update)(grads, state_dropped, p2)
        for k in params:
            np.testing.assert_array_equal(u1[k], u2[k])
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)


def test_builtin_state_holds_no_per_step_scalars():
    params = {"w": jnp.ones(3)}
    adam = flr.as_optax(flr.optim.Adam(1e-3, nesterov=True)).init(params)
    assert sorted(adam.tree) == ["count", "mu", "nu"]  # optax.adam: count, mu, nu
    adamw = flr.as_optax(flr.optim.AdamW(1e-3, weight_decay=0.1)).init(params)
    assert sorted(adamw.tree) == ["count", "mu", "nu"]


def test_transient_must_be_a_tuple_of_names():
    class Wrong(flr.optim.Optimizer):
        transient = "lr_t"  # a string, not a tuple of names

    with pytest.raises(flr.StateError, match=r"Wrong\.transient is 'lr_t'; expected a tuple"):
        flr.as_optax(Wrong()).init({"w": jnp.ones(3)})


def test_transient_dict_filled_through_a_local_name_works():
    class PerKeyRates(flr.optim.Optimizer):
        transient = ("rates",)

        def call_model(self, grads, **_):
            self.rates = rates = {}
            for key in grads:
                rates[key] = 0.1
            return grads

        def call_param(self, key, grad, **_):
            return self.rates[key] * grad

    tx = flr.as_optax(PerKeyRates())
    params = {"a": jnp.ones(2), "b": jnp.ones(3)}
    updates, _ = tx.update(params, tx.init(params), params)
    np.testing.assert_allclose(updates["b"], -0.1 * np.ones(3))


def test_private_state_is_not_offered_as_a_hyperparameter():
    tx = flr.as_optax(flr.compose.Packed(flr.optim.Adam(0.1)))
    state = tx.init({"w": jnp.ones(3)})
    assert "_per_step_scalars" in state.tree
    with pytest.raises(flr.HyperparameterError, match=r"scalar entries are \['inner\.count'\]"):
        flr.set_hyper(state, "_per_step_scalars.bc1", 1.0)


def test_schedule_assigned_after_construction_gets_a_step_count():
    # A float learning rate needs no step count; a schedule set later still gets one.
    opt = flr.optim.SGD(0.1)
    opt.learning_rate = optax.linear_schedule(0.1, 0.0, 10)
    tx = flr.as_optax(opt)
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    assert int(state.tree["count"]) == 0
    updates, state = tx.update(params, state, params)
    np.testing.assert_allclose(updates["w"], [-0.1, -0.1])
    assert int(state.tree["count"]) == 1


@pytest.mark.parametrize("make", [lambda: flr.optim.Adam(1e-2), lambda: TutorialAdam(η=1e-2)])
def test_optimizer_built_inside_jit_has_the_state_built_outside(make):
    # Built inside nnx.jit, the optimizer's own arrays (Adam's count) are tracers of the
    # enclosing jit: extra inputs of init's traced step, which must not shift its outputs.
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Linear(3, 5, rngs=rngs)
            self.b = nnx.Linear(5, 2, rngs=rngs)

    @nnx.jit
    def create():
        model = Net(nnx.Rngs(0))
        return model, flr.NNXOptimizer(model, make(), wrt=nnx.Param)

    _, inside = create()
    outside = flr.NNXOptimizer(Net(nnx.Rngs(0)), make(), wrt=nnx.Param)
    ours = nnx.to_pure_dict(nnx.state(inside.opt_state))
    theirs = nnx.to_pure_dict(nnx.state(outside.opt_state))
    assert jax.tree.map(jnp.shape, ours) == jax.tree.map(jnp.shape, theirs)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        np.testing.assert_array_equal(a, b)
