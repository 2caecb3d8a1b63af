"""Optimizer zoo, part A: masks, and each optimizer against its optax twin."""

import inspect

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


# -- masks --------------------------------------------------------------------

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


# -- every optimizer against its optax twin, ~50 steps under jit ---------------

STEPS = 50
SCHEDULE = optax.warmup_cosine_decay_schedule(0.0, 0.05, 10, STEPS)
WD_SCHEDULE = optax.linear_schedule(0.1, 0.0, STEPS)
NO_BIAS = flr.helpers.key_mask(lambda key: key[-1] != "bias")


def matrices_only(params):
    return jax.tree.map(lambda x: x.ndim > 1, params)


zoo = flr.optim
# (id, hook factory, twin factory): every option of every optimizer.
CASES = [
    ("SGD", lambda: zoo.SGD(0.05), lambda: optax.sgd(0.05)),
    ("SGD-momentum", lambda: zoo.SGD(0.05, 0.9), lambda: optax.sgd(0.05, 0.9)),
    (
        "SGD-nesterov-schedule",
        lambda: zoo.SGD(SCHEDULE, 0.9, True),
        lambda: optax.sgd(SCHEDULE, 0.9, True),
    ),
    (
        "SGD-accumulator_dtype",
        lambda: zoo.SGD(0.05, 0.9, accumulator_dtype=jnp.bfloat16),
        lambda: optax.sgd(0.05, 0.9, accumulator_dtype=jnp.bfloat16),
    ),
    (
        "AdamW",
        lambda: zoo.AdamW(0.01, weight_decay=0.1),
        lambda: optax.adamw(0.01, weight_decay=0.1),
    ),
    (
        "AdamW-key_mask-schedules",
        lambda: zoo.AdamW(SCHEDULE, weight_decay=WD_SCHEDULE, mask=NO_BIAS),
        lambda: optax.adamw(SCHEDULE, weight_decay=WD_SCHEDULE, mask=NO_BIAS),
    ),
    (
        "AdamW-pytree_mask-mu_dtype-nesterov",
        lambda: zoo.AdamW(
            0.01,
            mu_dtype=jnp.bfloat16,
            weight_decay=0.1,
            mask={"dense": True, "out": [False, True]},
            nesterov=True,
        ),
        lambda: optax.adamw(
            0.01,
            mu_dtype=jnp.bfloat16,
            weight_decay=0.1,
            mask={"dense": True, "out": [False, True]},
            nesterov=True,
        ),
    ),
    ("NAdam", lambda: zoo.NAdam(0.01, eps_root=1e-8), lambda: optax.nadam(0.01, eps_root=1e-8)),
    (
        "NAdamW-callable_mask",
        lambda: zoo.NAdamW(0.01, weight_decay=0.1, mask=matrices_only),
        lambda: optax.nadamw(0.01, weight_decay=0.1, mask=matrices_only),
    ),
    ("Adamax", lambda: zoo.Adamax(SCHEDULE, b1=0.8), lambda: optax.adamax(SCHEDULE, b1=0.8)),
    ("AMSGrad", lambda: zoo.AMSGrad(0.01), lambda: optax.amsgrad(0.01)),
    (
        "AMSGrad-no_bias_correction-mu_dtype",
        lambda: zoo.AMSGrad(
            0.01, mu_dtype=jnp.bfloat16, bias_correction_mu=False, bias_correction_nu=False
        ),
        lambda: optax.amsgrad(
            0.01, mu_dtype=jnp.bfloat16, bias_correction_mu=False, bias_correction_nu=False
        ),
    ),
    ("AdaBelief", lambda: zoo.AdaBelief(0.01), lambda: optax.adabelief(0.01)),
    (
        "AdaBelief-nesterov",
        lambda: zoo.AdaBelief(0.01, nesterov=True),
        lambda: optax.adabelief(0.01, nesterov=True),
    ),
    ("RAdam", lambda: zoo.RAdam(0.01), lambda: optax.radam(0.01)),
    (
        "RAdam-nesterov-threshold",
        lambda: zoo.RAdam(SCHEDULE, threshold=4.5, nesterov=True),
        lambda: optax.radam(SCHEDULE, threshold=4.5, nesterov=True),
    ),
    ("Lion", lambda: zoo.Lion(1e-3), lambda: optax.lion(1e-3)),
    (
        "Lion-key_mask-schedules-mu_dtype",
        lambda: zoo.Lion(SCHEDULE, mu_dtype=jnp.bfloat16, weight_decay=WD_SCHEDULE, mask=NO_BIAS),
        lambda: optax.lion(SCHEDULE, mu_dtype=jnp.bfloat16, weight_decay=WD_SCHEDULE, mask=NO_BIAS),
    ),
    ("SignSGD", lambda: zoo.SignSGD(0.01), lambda: optax.sign_sgd(0.01)),
    ("SignSGD-schedule", lambda: zoo.SignSGD(SCHEDULE), lambda: optax.sign_sgd(SCHEDULE)),
]
# bfloat16 parameters, for the options whose arithmetic is dtype-sensitive.
BF16_CASES = {"SGD-nesterov-schedule", "AdamW-pytree_mask-mu_dtype-nesterov", "RAdam", "Lion"}


def gradients(params, step):
    """Deterministic gradients, growing and shrinking, made with NumPy (no dispatch)."""
    rng = np.random.default_rng(step)
    return jax.tree.map(
        lambda p: jnp.asarray(rng.normal(size=p.shape) * (1 + step % 5), p.dtype), params
    )


def first_difference(hook_tx, twin_tx, params, steps=STEPS):
    """Runs both, each on its own trajectory, each jitted alone; the first (step, leaf) apart."""
    h_params, r_params = params, params
    h_state, r_state = hook_tx.init(params), twin_tx.init(params)
    h_update, r_update = jax.jit(hook_tx.update), jax.jit(twin_tx.update)
    for step in range(steps):
        h, h_state = h_update(gradients(h_params, step), h_state, h_params)
        r, r_state = r_update(gradients(r_params, step), r_state, r_params)
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(h), jax.tree.leaves(r)):
            if a.dtype != b.dtype or not np.array_equal(
                np.asarray(a), np.asarray(b), equal_nan=True
            ):
                return step, jax.tree_util.keystr(path), a, b
        h_params, r_params = optax.apply_updates(h_params, h), optax.apply_updates(r_params, r)
    return None


@pytest.mark.parametrize(
    ("make", "twin", "dtype"),
    [pytest.param(m, t, jnp.float32, id=f"{n}-f32") for n, m, t in CASES]
    + [pytest.param(m, t, jnp.bfloat16, id=f"{n}-bf16") for n, m, t in CASES if n in BF16_CASES],
)
def test_bit_identical_to_optax_twin(make, twin, dtype):
    params = jax.tree.map(lambda x: x.astype(dtype), small_params())
    assert first_difference(flr.as_optax(make()), twin(), params) is None


def test_cases_cover_every_optimizer_of_part_a():
    covered = {type(make()).__name__ for _, make, _ in CASES}
    assert covered == set(TWINS)


WIDER_THAN_BF16 = [
    pytest.param(
        lambda: zoo.AdamW(0.01, weight_decay=WD_SCHEDULE, mask=NO_BIAS),
        lambda: optax.adamw(0.01, weight_decay=WD_SCHEDULE, mask=NO_BIAS),
        id="AdamW-weight_decay_schedule",
    ),
    pytest.param(
        lambda: zoo.Lion(0.01, weight_decay=WD_SCHEDULE),
        lambda: optax.lion(0.01, weight_decay=WD_SCHEDULE),
        id="Lion-weight_decay_schedule",
    ),
    pytest.param(
        lambda: zoo.AMSGrad(0.01, mu_dtype=jnp.float32),
        lambda: optax.amsgrad(0.01, mu_dtype=jnp.float32),
        id="AMSGrad-float32_mu",
    ),
    pytest.param(
        lambda: zoo.SGD(0.01, 0.9, accumulator_dtype=jnp.float32),
        lambda: optax.sgd(0.01, 0.9, accumulator_dtype=jnp.float32),
        id="SGD-float32_accumulator",
    ),
]


@pytest.mark.parametrize(("make", "twin"), WIDER_THAN_BF16)
def test_where_optax_returns_a_wider_dtype_the_hook_returns_it_rounded(make, twin):
    # On bfloat16 parameters, a float32 weight-decay schedule value, moment or
    # accumulator makes optax return a float32 update; a hook returns the
    # parameter's dtype. The hook's update is then exactly optax's rounded to
    # bfloat16 (compared from the same parameters at every step): the one place
    # where part A is not bit-identical, and the reason.
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), small_params())
    hook_tx, twin_tx = flr.as_optax(make()), twin()
    h_state, r_state = hook_tx.init(params), twin_tx.init(params)
    h_update, r_update = jax.jit(hook_tx.update), jax.jit(twin_tx.update)
    for step in range(10):
        grads = gradients(params, step)
        h, h_state = h_update(grads, h_state, params)
        r, r_state = r_update(grads, r_state, params)
        assert r["dense"]["kernel"].dtype == jnp.float32
        assert h["dense"]["kernel"].dtype == jnp.bfloat16
        rounded = jax.tree.map(lambda x: x.astype(jnp.bfloat16), r)
        assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), h, rounded)), step
        params = optax.apply_updates(params, r)


def test_adamw_decays_the_parameter_not_the_gradient():
    # With zero gradients Adam's direction is exactly 0, so the whole update is
    # lr * wd * param; decaying the gradient instead (flarejax's bug) gives 0.
    params = {"kernel": jnp.array([1.0, -2.0, 4.0]), "bias": jnp.array([3.0])}
    grads = jax.tree.map(jnp.zeros_like, params)
    tx = flr.as_optax(zoo.AdamW(0.5, weight_decay=0.25, mask=NO_BIAS))
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    np.testing.assert_array_equal(updates["kernel"], -0.5 * (0.25 * params["kernel"]))
    np.testing.assert_array_equal(updates["bias"], jnp.zeros(1))
    # and with a gradient unrelated to the parameter, the decay still follows the parameter
    grads = {"kernel": jnp.array([1.0, 1.0, 1.0]), "bias": jnp.array([1.0])}
    flat, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    undecayed = flr.as_optax(zoo.AdamW(0.5, weight_decay=0.0))
    base, _ = jax.jit(undecayed.update)(grads, undecayed.init(params), params)
    np.testing.assert_allclose(
        flat["kernel"] - base["kernel"], -0.125 * params["kernel"], rtol=1e-6
    )


def test_mu_dtype_sets_the_dtype_of_the_first_moment_only():
    params = small_params()
    for opt in (
        zoo.AdamW(0.1, mu_dtype=jnp.bfloat16),
        zoo.NAdam(0.1, mu_dtype=jnp.bfloat16),
        zoo.AMSGrad(0.1, mu_dtype=jnp.bfloat16),
        zoo.Lion(0.1, mu_dtype=jnp.bfloat16),
    ):
        tree = flr.as_optax(opt).init(params).tree
        assert {x.dtype for x in jax.tree.leaves(tree["mu"])} == {jnp.dtype(jnp.bfloat16)}
        if "nu" in tree:
            assert {x.dtype for x in jax.tree.leaves(tree["nu"])} == {jnp.dtype(jnp.float32)}
    trace = flr.as_optax(zoo.SGD(0.1, 0.9, accumulator_dtype=jnp.bfloat16)).init(params).tree
    assert {x.dtype for x in jax.tree.leaves(trace["trace"])} == {jnp.dtype(jnp.bfloat16)}


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
    opt = flr.NNXOptimizer(model, zoo.AdamW(0.05, weight_decay=0.5, mask=no_decay), wrt=nnx.Param)
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


# -- same arguments as the twin, validated --------------------------------------

TWINS = {
    "SGD": optax.sgd,
    "AdamW": optax.adamw,
    "NAdam": optax.nadam,
    "NAdamW": optax.nadamw,
    "Adamax": optax.adamax,
    "AMSGrad": optax.amsgrad,
    "AdaBelief": optax.adabelief,
    "RAdam": optax.radam,
    "Lion": optax.lion,
    "SignSGD": optax.sign_sgd,
}


@pytest.mark.parametrize("name", list(TWINS))
def test_same_arguments_and_defaults_as_the_optax_twin(name):
    ours = inspect.signature(getattr(flr.optim, name)).parameters.values()
    theirs = inspect.signature(TWINS[name]).parameters.values()
    assert [(p.name, p.kind, p.default) for p in ours] == [
        (p.name, p.kind, p.default) for p in theirs
    ]


@pytest.mark.parametrize("name", list(TWINS))
def test_invalid_hyperparameters_raise(name):
    cls = getattr(flr.optim, name)
    arguments = inspect.signature(cls).parameters
    bad = [("learning_rate", -0.1)]
    bad += [(b, v) for b in ("b1", "b2") if b in arguments for v in (1.0, -0.1)]
    bad += [(e, -1e-8) for e in ("eps", "eps_root", "weight_decay") if e in arguments]
    if "momentum" in arguments:
        bad += [("momentum", -0.5), ("momentum", 1.0)]
    for argument, value in bad:
        kwargs = {"learning_rate": 0.1, argument: value}
        with pytest.raises(flr.HyperparameterError, match=f"{name}\\({argument}="):
            cls(**kwargs)
    cls(0.1)  # the defaults are valid
