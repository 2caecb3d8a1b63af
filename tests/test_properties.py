"""Property tests: the bridges agree with each other and with the hooks run by hand.

For random parameter trees (nested dicts, lists and tuples with ``None``, scalar,
zero-size, integer and float16/bfloat16/float32 leaves; float64 under x64 in a
subprocess) and NNX models built from random layer stacks:

- ``as_optax`` and ``NNXOptimizer`` give bit-identical updates and states to an
  eager reference that calls the hooks directly on a deepcopy (no engine), when run
  eagerly, and to each other under ``jit``;
- the state's structure, shapes and dtypes never change across steps;
- the user's optimizer object is unchanged; ``init`` is deterministic.

Plus numerics: zero gradients give no NaN, the step counter saturates like optax's
``safe_increment``, bfloat16 parameters train.

Hypothesis runs a fixed, derandomised set of small examples (profile ``flr``);
set ``FLR_HYPOTHESIS_EXAMPLES`` to run more locally.
"""

from __future__ import annotations

import copy
import os
import pathlib
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _subprocess import python_env, run_python
from flax import nnx
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tutorial_adam import Adam as TutorialAdam

import flr_nnx as flr
from flr_nnx._engine import unnest, walk

settings.register_profile(
    "flr",
    max_examples=int(os.environ.get("FLR_HYPOTHESIS_EXAMPLES", "10")),
    deadline=None,
    derandomize=True,  # the same examples on every run: CI time is bounded and stable
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = settings.get_profile("flr")
STEPS = 3

# -- the optimizers under test ------------------------------------------------------


class WeightEMA(flr.optim.Optimizer):
    """SGD keeping an EMA of the weights (a slot that starts as a copy of the
    parameter) and the best loss seen (reads ``loss``)."""

    def __init__(self, lr=0.1, decay=0.9):
        self.lr, self.decay = lr, decay
        self.ema = {}
        self.best = jnp.asarray(jnp.inf, jnp.float32)

    def call_model(self, grads, loss, **_):
        self.best = jnp.minimum(self.best, loss)
        return grads

    def call_param(self, key, grad, param):
        if key not in self.ema:
            self.ema[key] = param
        self.ema[key] = self.decay * self.ema[key] + (1 - self.decay) * param
        return self.lr * grad


OPTIMIZERS = {
    "adam": lambda: flr.optim.Adam(1e-2),
    "adam_nesterov": lambda: flr.optim.Adam(1e-2, nesterov=True),
    "tutorial_adam": lambda: TutorialAdam(1e-2),
    "weight_ema": lambda: WeightEMA(),
}
# The tutorial's Adam divides by ``1 - β**t`` with a float32 power of its uint32
# step, so its update is float32 whatever the parameter: on a low-precision
# parameter that is a HookError, never a silently wrong dtype.
WIDE_ONLY = {"tutorial_adam"}

# -- random trees -------------------------------------------------------------------------

FLOATS = ["float32", "bfloat16", "float16"]
SHAPES = [(), (0,), (1,), (3,), (2, 3), (0, 2)]


def leaves(dtypes):
    floats = st.tuples(st.just("float"), st.sampled_from(SHAPES), st.sampled_from(dtypes))
    ints = st.tuples(st.just("int"), st.sampled_from(SHAPES), st.just("int32"))
    return st.one_of(floats, floats, ints, st.none())


def trees(dtypes=FLOATS):
    names = st.sampled_from(["a", "b", "kernel", "bias", "w"])
    return st.recursive(
        leaves(dtypes),
        lambda children: st.one_of(
            st.dictionaries(names, children, max_size=3),
            st.lists(children, max_size=3),
            st.lists(children, max_size=3).map(tuple),
        ),
        max_leaves=6,
    )


def build(spec, rng):
    """Materialises a tree spec with values from ``rng``."""
    if spec is None:
        return None
    if isinstance(spec, dict):
        return {k: build(v, rng) for k, v in spec.items()}
    if isinstance(spec, list):
        return [build(v, rng) for v in spec]
    if isinstance(spec, tuple) and spec and spec[0] in ("float", "int"):
        kind, shape, dtype = spec
        if kind == "int":
            return jnp.asarray(rng.integers(-5, 5, shape), jnp.int32)
        # NumPy (with ml_dtypes) makes the values: no XLA compile per shape and dtype.
        return jnp.asarray(rng.normal(size=shape).astype(jnp.dtype(dtype)))
    return tuple(build(v, rng) for v in spec)


# -- the reference: the hooks called by hand, no engine -----------------------------------


def _part(entry):
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return getattr(entry, attr)
    raise AssertionError(entry)


def keyed(tree):
    """Float leaves by key path, as documented for ``call_param``'s ``key``."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        tuple(_part(e) for e in path): leaf
        for path, leaf in flat
        if jnp.issubdtype(leaf.dtype, jnp.floating)
    }


def reference_run(opt, params, grads_seq, losses):
    """Runs the hooks eagerly on a deepcopy of ``opt``.

    Returns the updates of each step (descent sign, keyed), the float parameters
    after each step (keyed), and the final optimizer object.
    """
    ref = copy.deepcopy(opt)
    flat = keyed(params)
    steps_seq, params_seq = [], []
    for grads, loss in zip(grads_seq, losses):
        g = keyed(grads)
        steps = ref(loss=loss, grads=g, params=flat)
        steps = {k: steps.get(k, jnp.zeros_like(v)) for k, v in g.items()}  # dropped: no update
        flat = {k: p - steps[k] for k, p in flat.items()}
        steps_seq.append(steps)
        params_seq.append(flat)
    return steps_seq, params_seq, ref


# -- comparisons --------------------------------------------------------------------------


def bits(x):
    x = np.asarray(x)
    return x.dtype, x.shape, x.tobytes()


def assert_bit_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b) or len(la) == len(lb)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        assert bits(x) == bits(y)


def signature(state):
    """What must never change across steps: structure, shapes and dtypes."""
    return jax.tree.structure(state), [(x.shape, x.dtype) for x in jax.tree.leaves(state)]


def same_object(a, b):
    """Deep equality of two optimizer objects (arrays bitwise)."""
    if isinstance(a, flr.optim.Optimizer):
        return type(a) is type(b) and same_object(vars(a), vars(b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_object(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_object(x, y) for x, y in zip(a, b))
    if isinstance(a, (jax.Array, np.ndarray)):
        return bits(a) == bits(b)
    return a == b or a is b


def reference_state(ref, layout):
    """The reference object's arrays at the layout's state paths, in layout order."""
    arrays = walk(ref).arrays
    return [arrays[path] for path in layout.paths]


# -- random parameter trees ----------------------------------------------------------------


def _low_precision(params):
    return any(leaf.dtype not in (jnp.float32, jnp.float64) for leaf in keyed(params).values())


def check_tree(name, spec, seed):
    rng = np.random.default_rng(seed)
    params = build(spec, rng)
    grads_seq = [build(spec, rng) for _ in range(STEPS)]
    losses = [jnp.float32(rng.uniform(0.5, 2.0)) for _ in range(STEPS)]
    opt = OPTIMIZERS[name]()
    snapshot = copy.deepcopy(opt)

    tx = flr.as_optax(opt)
    if name in WIDE_ONLY and _low_precision(params):
        with pytest.raises(flr.HookError, match=r"expected shape .* and dtype"):
            tx.init(params)
        return

    state = tx.init(params)
    assert_bit_equal(state, flr.as_optax(opt).init(params))  # init is deterministic
    assert state.layout == flr.as_optax(opt).init(params).layout
    first = signature(state)

    # Eager bridge and eager reference: bit-identical updates and final state.
    expected, _, ref = reference_run(opt, params, grads_seq, losses)
    p, s = params, state
    for grads, loss, want in zip(grads_seq, losses, expected):
        updates, s = tx.update(grads, s, p, value=loss)
        assert signature(s) == first
        got = keyed(updates)
        assert got.keys() == want.keys()
        for key in want:
            assert bits(got[key]) == bits(-want[key]), key
        p = optax.apply_updates(p, updates)
    assert_bit_equal(s.leaves(), reference_state(ref, s.layout))

    # Under jit, inside optax.chain: the same state signature at every step.
    step = jax.jit(optax.chain(optax.identity(), tx).update)
    p, s = params, (optax.EmptyState(), state)
    for grads, loss in zip(grads_seq, losses):
        updates, s = step(grads, s, p, value=loss)
        assert signature(s[1]) == first
        p = optax.apply_updates(p, updates)

    assert same_object(opt, snapshot)  # the user's optimizer is untouched


MIXED = {
    "a": [("float", (2, 3), "bfloat16"), (("float", (), "float16"), None)],
    "b": ("float", (0, 2), "float32"),
    "c": {"kernel": ("float", (3,), "float32"), "step": ("int", (), "int32")},
}
LAYERED = {"layers": [{"kernel": ("float", (2, 3), "float32"), "bias": ("float", (3,), "float32")}]}


@settings(PROFILE)
@given(name=st.sampled_from(sorted(OPTIMIZERS)), spec=trees(), seed=st.integers(0, 2**16))
@example(name="adam", spec=MIXED, seed=1)
@example(name="weight_ema", spec=MIXED, seed=2)
@example(name="tutorial_adam", spec=MIXED, seed=3)
@example(name="tutorial_adam", spec=LAYERED, seed=4)
def test_random_trees(name, spec, seed):
    check_tree(name, spec, seed)


DEGENERATE = [
    {},
    [],
    None,
    ("float", (), "float32"),  # the whole tree is one scalar: its key is ()
    {"a": [None, ("float", (0,), "float32")], "b": (("int", (2,), "int32"),)},
]


def test_degenerate_trees():
    names = sorted(OPTIMIZERS)
    for i, spec in enumerate(DEGENERATE):
        check_tree(names[i % len(names)], spec, i)


@settings(PROFILE, max_examples=max(PROFILE.max_examples // 4, 2))
@given(
    name=st.sampled_from(sorted(OPTIMIZERS)),
    spec=trees(["float64", "float32"]),
    seed=st.integers(0, 2**16),
)
@example(name="adam", spec={"a": [("float", (2,), "float64"), ("float", (), "float64")]}, seed=0)
@example(name="tutorial_adam", spec=[("float", (3,), "float64"), ("int", (2,), "int32")], seed=1)
@example(name="weight_ema", spec=(("float", (0,), "float64"), ("float", (2,), "float32")), seed=2)
def x64_property(name, spec, seed):
    assert jax.config.jax_enable_x64
    check_tree(name, spec, seed)


def test_random_float64_trees_under_x64():
    """The same property with float64 leaves, in a subprocess with x64 enabled."""
    tests = pathlib.Path(__file__).resolve().parent
    code = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{str(tests)!r}, {str(tests.parent / "examples")!r}]
        import jax
        jax.config.update("jax_numpy_rank_promotion", "raise")
        import test_properties
        test_properties.x64_property()
        print("x64 ok")
        """
    )
    env = python_env(JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu")
    result = run_python(["-W", "error", "-c", code], env=env)
    assert result.returncode == 0 and "x64 ok" in result.stdout, result.stderr[-4000:]


# -- NNX models from random layer stacks ----------------------------------------------------

LAYERS = ["linear", "linear_no_bias", "layernorm", "batchnorm", "embed", "conv"]


def make_model(layers, width, dtype, seed):
    rngs = nnx.Rngs(seed)
    kw = {"param_dtype": dtype, "rngs": rngs}
    built = []
    for kind in layers:
        if kind == "linear":
            built.append(nnx.Linear(width, width, **kw))
        elif kind == "linear_no_bias":
            built.append(nnx.Linear(width, width, use_bias=False, **kw))
        elif kind == "layernorm":
            built.append(nnx.LayerNorm(width, **kw))
        elif kind == "batchnorm":  # its BatchStat Variables are not optimized
            built.append(nnx.BatchNorm(width, **kw))
        elif kind == "embed":
            built.append(nnx.Embed(5, width, **kw))
        else:
            built.append(nnx.Conv(width, width, kernel_size=(2,), **kw))
    return nnx.Sequential(*built)


def random_grads(model, rng):
    state = nnx.state(model, nnx.Param)
    return jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape).astype(x.dtype)), state)


def _params(model):
    return nnx.as_pure(nnx.state(model, nnx.Param))


@settings(PROFILE, max_examples=max(PROFILE.max_examples // 2, 2))
@given(
    name=st.sampled_from(sorted(OPTIMIZERS)),
    layers=st.lists(st.sampled_from(LAYERS), min_size=0, max_size=3),
    width=st.integers(1, 4),
    dtype=st.sampled_from(["float32", "bfloat16"]),
    seed=st.integers(0, 2**16),
)
def test_random_nnx_models(name, layers, width, dtype, seed):
    opt = OPTIMIZERS[name]()
    snapshot = copy.deepcopy(opt)
    model = make_model(layers, width, dtype, seed)
    models = [model, nnx.clone(model), nnx.clone(model)]
    rng = np.random.default_rng(seed)
    grads_seq = [random_grads(model, rng) for _ in range(STEPS)]
    losses = [jnp.float32(1.0 + i) for i in range(STEPS)]
    if name in WIDE_ONLY and dtype != "float32" and layers:
        with pytest.raises(flr.HookError):
            flr.NNXOptimizer(models[0], opt, wrt=nnx.Param)
        return

    native = flr.NNXOptimizer(models[0], opt, wrt=nnx.Param)
    wrapped = nnx.Optimizer(models[1], flr.as_optax(opt), wrt=nnx.Param)
    first = signature(nnx.as_pure(native.opt_state))
    pure_grads = [nnx.as_pure(g) for g in grads_seq]
    _, expected, ref = reference_run(opt, _params(models[2]), pure_grads, losses)
    for grads, loss, want in zip(grads_seq, losses, expected):
        native.update(models[0], grads, value=loss)
        wrapped.update(models[1], grads, value=loss)
        assert signature(nnx.as_pure(native.opt_state)) == first
        a, b = keyed(_params(models[0])), keyed(_params(models[1]))
        assert a.keys() == b.keys() == want.keys()
        for key in want:
            assert bits(a[key]) == bits(b[key]) == bits(want[key]), key
    slots = [slot.get_value() for slot in unnest(native.layout.mirror, native.opt_state)]
    assert_bit_equal(slots, reference_state(ref, native.layout))
    assert_bit_equal(nnx.as_pure(native.opt_state), nnx.as_pure(wrapped.opt_state).tree)
    assert same_object(opt, snapshot)

    # More steps under nnx.jit: NNXOptimizer and nnx.Optimizer(as_optax) stay identical.
    @nnx.jit
    def step(model, optimizer, grads, loss):
        optimizer.update(model, grads, value=loss)

    for grads, loss in zip(grads_seq, losses):
        step(models[0], native, grads, loss)
        step(models[1], wrapped, grads, loss)
    assert_bit_equal(_params(models[0]), _params(models[1]))
    assert_bit_equal(nnx.as_pure(native.opt_state), nnx.as_pure(wrapped.opt_state).tree)
    assert signature(nnx.as_pure(native.opt_state)) == first


# -- numerics ---------------------------------------------------------------------------------


def _finite(tree):
    return all(bool(jnp.isfinite(x.astype(jnp.float32)).all()) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_zero_gradients_give_no_nan(dtype):
    params = {"w": jnp.ones((2, 3), dtype), "b": jnp.zeros((3,), dtype), "s": jnp.ones((), dtype)}
    zeros = jax.tree.map(jnp.zeros_like, params)
    for name in sorted(OPTIMIZERS):
        if name in WIDE_ONLY and dtype != "float32":
            continue
        tx = flr.as_optax(OPTIMIZERS[name]())
        state, step = tx.init(params), jax.jit(tx.update)
        for _ in range(3):
            updates, state = step(zeros, state, params, value=jnp.float32(0.0))
            assert _finite(updates) and _finite(state), name
            assert all(bool((u == 0).all()) for u in jax.tree.leaves(updates)), name


def test_zero_gradients_float16_as_optax_adam():
    """In float16 an eps of 1e-8 rounds to 0, so 0/0 is NaN in optax.adam too;
    flr.optim.Adam matches it bit for bit, and a representable eps gives zeros."""
    params = {"w": jnp.ones(3, jnp.float16)}
    zeros = {"w": jnp.zeros(3, jnp.float16)}
    for eps in (1e-8, 1e-4):
        ours, theirs = flr.as_optax(flr.optim.Adam(1e-2, eps=eps)), optax.adam(1e-2, eps=eps)
        a, _ = jax.jit(ours.update)(zeros, ours.init(params), params)
        b, _ = jax.jit(theirs.update)(zeros, theirs.init(params), params)
        assert bits(a["w"]) == bits(b["w"])
    assert _finite(a) and bool((a["w"] == 0).all())


def test_step_counter_saturates_like_optax_safe_increment():
    top = jnp.iinfo(jnp.int32).max
    params = {"w": jnp.linspace(-1.0, 1.0, 5)}
    ours, theirs = flr.as_optax(flr.optim.Adam(1e-2)), optax.adam(1e-2)
    s_ours, s_theirs = ours.init(params), theirs.init(params)
    s_ours.tree["count"] = jnp.asarray(top - 2, jnp.int32)
    s_theirs = (s_theirs[0]._replace(count=jnp.asarray(top - 2, jnp.int32)), *s_theirs[1:])
    step_ours, step_theirs = jax.jit(ours.update), jax.jit(theirs.update)
    counts = []
    for i in range(4):
        grads = {"w": jnp.full(5, 0.1 * (i + 1))}
        a, s_ours = step_ours(grads, s_ours, params)
        b, s_theirs = step_theirs(grads, s_theirs, params)
        assert bits(a["w"]) == bits(b["w"]) and _finite(a)
        counts.append(int(s_ours.tree["count"]))
    assert counts == [top - 1, top, top, top]  # saturates, never wraps to negative
    assert int(s_theirs[0].count) == top


def test_bfloat16_parameters_train_like_optax():
    def make():
        return nnx.Sequential(
            nnx.Linear(4, 16, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0)),
            nnx.tanh,
            nnx.Linear(16, 1, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(1)),
        )

    x = jax.random.normal(jax.random.key(0), (64, 4))
    y = jnp.sin(x.sum(axis=1, keepdims=True))

    def loss_fn(model):
        return ((model(x.astype(jnp.bfloat16)).astype(jnp.float32) - y) ** 2).mean()

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    model, ref_model = make(), make()
    optimizer = flr.NNXOptimizer(model, flr.optim.Adam(1e-2), wrt=nnx.Param)
    ref = nnx.Optimizer(ref_model, optax.adam(1e-2), wrt=nnx.Param)
    losses = [float(step(model, optimizer)) for _ in range(100)]
    for _ in range(100):
        step(ref_model, ref)
    assert losses[-1] < 0.2 * losses[0] and np.isfinite(losses).all()
    params = _params(model)
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
    assert {x.dtype for x in jax.tree.leaves(nnx.as_pure(optimizer.opt_state["mu"]))} == {
        jnp.dtype(jnp.bfloat16)
    }
    assert_bit_equal(params, _params(ref_model))
