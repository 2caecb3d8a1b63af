"""Every option of every built-in optimizer against its optax twin, and the same arguments.

Each case runs the hook optimizer through ``flr.as_optax`` and its optax twin side by
side with ``flr.testing`` (one jitted scan, the same parameters at every step) and
requires bit-identical updates at every step, or a stated tolerance with the reason.
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flr_nnx as flr


def small_params():
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    return {
        "dense": {"kernel": jax.random.normal(k1, (4, 5)), "bias": jnp.zeros(5)},
        "out": [jax.random.normal(k2, (5,)), jax.random.normal(k3, ())],
    }


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


def numpy_grads(params, steps=STEPS):
    """``gradients`` of every step, as a ``grads_fn`` for ``flr.testing``."""
    stacked = jax.tree.map(lambda *g: jnp.stack(g), *(gradients(params, i) for i in range(steps)))
    return lambda step, _: jax.tree.map(lambda g: g[step], stacked)


@pytest.mark.parametrize(
    ("make", "twin", "dtype"),
    [pytest.param(m, t, jnp.float32, id=f"{n}-f32") for n, m, t in CASES]
    + [pytest.param(m, t, jnp.bfloat16, id=f"{n}-bf16") for n, m, t in CASES if n in BF16_CASES],
)
def test_bit_identical_to_optax_twin(make, twin, dtype):
    params = jax.tree.map(lambda x: x.astype(dtype), small_params())
    # Each side's update jitted alone, as a training loop compiles it. Raises
    # flr.testing.MismatchError at the first step and key where they part.
    report = flr.testing.assert_matches(
        make(), twin(), params, grads_fn=numpy_grads(params), steps=STEPS, jit_each_step=True
    )
    assert report.bit_identical and report.steps == STEPS


def test_cases_cover_every_optimizer_whose_signature_is_checked():
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
    # where these optimizers are not bit-identical, and the reason.
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


# -- RMSProp, Adagrad, Adafactor, LAMB, PolyakSGD, Muon and the Chain blocks ------------
#
# On a dict pytree with a matrix, a vector, a scalar and a conv-like rank-4 leaf, with
# gradients of a quadratic plus noise.


def make_params(big=False):
    keys = jax.random.split(jax.random.key(0), 4)
    rows = 160 if big else 12
    return {
        "dense": {"kernel": jax.random.normal(keys[0], (rows, 8)), "bias": jnp.zeros(8)},
        "conv": jax.random.normal(keys[1], (3, 3, 4, 6)),
        "scale": jax.random.normal(keys[2], ()),
        "head": jax.random.normal(keys[3], (8,)),
    }


def _noise(steps, params):
    """Per-step Gaussian noise of growing size, generated once (no RNG in the steps)."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    scale = (1 + jnp.arange(steps) % 5).astype(jnp.float32)
    return treedef.unflatten(
        [
            jax.random.normal(k, (steps, *p.shape)) * scale.reshape((steps,) + (1,) * p.ndim)
            for k, p in zip(keys, leaves, strict=True)
        ]
    )


def grads_at(noise, i, params):
    """Gradients of a quadratic plus noise, so every state evolves."""
    return jax.tree.map(lambda n, p: 0.1 * p + n[i], noise, params)


def loss_at(i, params):
    return 0.5 * sum(jnp.sum(p**2) for p in jax.tree.leaves(params)) + 0.01 * i


def run_side_by_side(hook_opt, twin, *, params=None, steps=STEPS, rtol=0.0, with_loss=False):
    """Steps both from the same parameters (the twin's trajectory); checks every step.

    With ``rtol == 0`` every update must be bitwise equal to the twin's; otherwise
    within ``rtol`` relative deviation per parameter; and every update is finite.
    Returns the final states (hook, twin).
    """
    params = make_params() if params is None else params
    noise = _noise(steps, params)
    case = flr.testing.Case(
        hook_opt,
        twin,
        params,
        grads_fn=lambda i, p: grads_at(noise, i, p),
        value_fn=loss_at if with_loss else None,
    )
    run = flr.testing.run_cases([case], steps)
    hook, ref = run.updates[0]
    # Raises flr.testing.MismatchError at the first step and key where they part.
    flr.testing.compare_updates(hook, ref, name=type(hook_opt).__name__, rtol=rtol)
    for path, leaf in jax.tree_util.tree_leaves_with_path(hook):
        assert np.all(np.isfinite(leaf)), f"non-finite update of {jax.tree_util.keystr(path)}"
    return run.states[0]


# -- RMSProp ---------------------------------------------------------------------

WARMUP_DECAY = optax.warmup_cosine_decay_schedule(0.0, 1e-2, warmup_steps=5, decay_steps=40)


@pytest.mark.parametrize(
    "lr, kwargs",
    [
        (1e-2, {}),
        (1e-2, {"centered": True}),
        (1e-2, {"bias_correction": True, "eps_in_sqrt": False}),
        (1e-2, {"momentum": 0.9}),
        # Centred and debiased, the first variance is 0 up to rounding: eps keeps it positive.
        (
            1e-2,
            {
                "momentum": 0.9,
                "nesterov": True,
                "centered": True,
                "bias_correction": True,
                "eps": 1e-3,
            },
        ),
        (WARMUP_DECAY, {"eps_in_sqrt": False, "initial_scale": 1.0, "decay": 0.8}),
    ],
    ids=[
        "plain",
        "centered",
        "debiased-eps-outside",
        "momentum",
        "nesterov-centered-debiased",
        "schedule-eps-outside-tf1",
    ],
)
def test_rmsprop_bit_identical(lr, kwargs):
    run_side_by_side(flr.optim.RMSProp(lr, **kwargs), optax.rmsprop(lr, **kwargs))


# -- Adagrad ---------------------------------------------------------------------


def test_adagrad_bit_identical():
    kwargs = {"initial_accumulator_value": 0.0, "eps": 1e-5}  # the `where(G > 0)` branch
    run_side_by_side(
        flr.optim.Adagrad(WARMUP_DECAY, **kwargs), optax.adagrad(WARMUP_DECAY, **kwargs)
    )


# -- Adafactor -------------------------------------------------------------------


def test_adafactor_factored_state_is_smaller_than_the_param_and_matches():
    kwargs = {"learning_rate": 1e-2, "min_dim_size_to_factor": 4}
    h_state, t_state = run_side_by_side(flr.optim.Adafactor(**kwargs), optax.adafactor(**kwargs))
    tree = h_state.tree
    # (12, 8) kernel and (3, 3, 4, 6) conv are factored: row/column statistics only.
    assert tree["v_row"]["dense"]["kernel"].shape == (8,)
    assert tree["v_col"]["dense"]["kernel"].shape == (12,)
    assert tree["v_row"]["conv"].shape == (3, 3, 4)
    assert tree["v_col"]["conv"].shape == (3, 3, 6)
    # Vectors and scalars keep a full second moment, and nothing else.
    assert set(tree["v"]) == {"head", "scale", "dense"} and set(tree["v"]["dense"]) == {"bias"}
    assert set(tree["v_row"]) == {"dense", "conv"}
    twin = t_state[0]
    np.testing.assert_array_equal(tree["v_row"]["conv"], twin.v_row["conv"])
    np.testing.assert_array_equal(tree["v"]["head"], twin.v["head"])


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # nothing is factored below 128, no learning rate
        {
            "learning_rate": WARMUP_DECAY,
            "min_dim_size_to_factor": 4,
            "momentum": 0.9,
            "weight_decay_rate": 1e-3,
            "weight_decay_mask": NO_BIAS,
            "clipping_threshold": None,
            "multiply_by_parameter_scale": False,
        },
        {"learning_rate": 1e-2, "factored": False, "momentum": 0.5, "dtype_momentum": "bfloat16"},
    ],
    ids=["defaults", "momentum-decay-schedule", "unfactored"],
)
def test_adafactor_variants_bit_identical(kwargs):
    run_side_by_side(flr.optim.Adafactor(**kwargs), optax.adafactor(**kwargs))


# -- LAMB ------------------------------------------------------------------------


def test_lamb_key_mask_bit_identical():
    kwargs = {"weight_decay": 1e-2, "mask": NO_BIAS, "eps_root": 1e-8}
    run_side_by_side(flr.optim.LAMB(1e-2, **kwargs), optax.lamb(1e-2, **kwargs))


def test_lamb_callable_mask_bit_identical():
    def mask(params):
        return jax.tree.map(lambda x: x.ndim > 1, params)

    kwargs = {"weight_decay": 1e-1, "mask": mask}
    run_side_by_side(flr.optim.LAMB(1e-2, **kwargs), optax.lamb(1e-2, **kwargs))


def test_lamb_pytree_mask_and_schedules_bit_identical():
    mask = {"dense": {"kernel": True, "bias": False}, "conv": True, "scale": False, "head": True}
    kwargs = {"weight_decay": WARMUP_DECAY, "mask": mask, "b1": 0.8}
    run_side_by_side(flr.optim.LAMB(WARMUP_DECAY, **kwargs), optax.lamb(WARMUP_DECAY, **kwargs))


# -- PolyakSGD -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"variant": "sps+", "f_min": 1e3, "max_learning_rate": 0.5, "scaling": WARMUP_DECAY}],
    ids=["sps", "sps+"],
)
def test_polyak_sgd_reads_the_loss_bit_identical(kwargs):
    run_side_by_side(flr.optim.PolyakSGD(**kwargs), optax.polyak_sgd(**kwargs), with_loss=True)


def test_polyak_sgd_without_loss_is_a_clear_error():
    tx = flr.as_optax(flr.optim.PolyakSGD())
    params = {"w": jnp.ones(2)}
    with pytest.raises(flr.MissingArgumentError, match="value="):
        tx.update(params, tx.init(params), params)


# -- Muon ------------------------------------------------------------------------


def test_muon_orthogonalizes_matrices_and_adam_for_the_rest():
    h_state, t_state = run_side_by_side(flr.optim.Muon(1e-2), optax.contrib.muon(1e-2))
    tree = h_state.tree
    # Only the (12, 8) kernel is a matrix; the vectors, scalar and conv use Adam.
    assert set(tree["mu"]) == {"dense"} and set(tree["mu"]["dense"]) == {"kernel"}
    assert set(tree["adam_mu"]) == {"dense", "conv", "scale", "head"}
    muon_state = t_state.inner_states["muon"].inner_state[0]
    np.testing.assert_array_equal(tree["mu"]["dense"]["kernel"], muon_state.mu["dense"]["kernel"])


def test_muon_update_of_a_matrix_is_nearly_orthogonal():
    tx = flr.as_optax(flr.optim.Muon(1.0, nesterov=False, beta=0.0))
    params = {"w": jnp.zeros((16, 8))}
    grads = {"w": jax.random.normal(jax.random.key(3), (16, 8))}
    updates, _ = tx.update(grads, tx.init(params), params)
    singular = np.linalg.svd(np.asarray(updates["w"]), compute_uv=False)
    # Newton-Schulz's quintic pushes every singular value into roughly [0.5, 1.5].
    assert singular.min() > 0.4 and singular.max() < 1.6, singular


def test_muon_variants_bit_identical():
    kwargs = {"nesterov": False, "weight_decay": 1e-2, "adam_weight_decay": 1e-3, "adaptive": True}
    run_side_by_side(flr.optim.Muon(1e-2, **kwargs), optax.contrib.muon(1e-2, **kwargs))


def test_muon_on_a_conv_kernel_with_dimension_numbers():
    dims = optax.contrib.MuonDimensionNumbers(reduction_axis=(0, 1, 2), output_axis=3)
    spec = {
        "dense": {"kernel": optax.contrib.MuonDimensionNumbers(), "bias": None},
        "conv": dims,
        "scale": None,
        "head": None,
    }
    kwargs = {
        "muon_weight_dimension_numbers": spec,
        "ns_coeffs": "dion",
        "preconditioning": "aol",
        "consistent_rms": 0.2,
        "adam_learning_rate": WARMUP_DECAY,
        "weight_decay": 1e-2,
        "weight_decay_mask": NO_BIAS,
    }
    # With several matrices XLA rewrites optax's bias-correction divisions into
    # reciprocal multiplications in a program-dependent way; Newton-Schulz then
    # amplifies that last-bit difference (measured max 1.1e-6 of the update scale).
    h_state, _ = run_side_by_side(
        flr.optim.Muon(1e-2, **kwargs), optax.contrib.muon(1e-2, **kwargs), rtol=1e-5
    )
    assert h_state.tree["mu"]["conv"].shape == (3, 3, 4, 6)
    assert "conv" not in h_state.tree["adam_mu"]


def test_muon_rejects_a_vector_named_as_a_matrix():
    def spec(params):
        return jax.tree.map(lambda _: optax.contrib.MuonDimensionNumbers(), params)

    tx = flr.as_optax(flr.optim.Muon(1e-2, muon_weight_dimension_numbers=spec))
    with pytest.raises(flr.StructureError, match=r"rank >= 2.*None"):
        tx.init({"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)})


# -- building blocks ---------------------------------------------------------------


def test_blocks_chain_equals_optax_chain():
    def mask(params):
        return jax.tree.map(lambda x: x.ndim > 1, params)

    hook = flr.compose.Chain(
        flr.optim.ClipByGlobalNorm(1.0),
        flr.optim.Adam(1.0),  # learning rate 1: Adam's scaling alone
        flr.optim.AddDecayedWeights(WARMUP_DECAY, mask=mask),
        flr.optim.Clip(0.05),
        flr.optim.ScaleByLearningRate(WARMUP_DECAY),
    )
    twin = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.scale_by_adam(),
        optax.add_decayed_weights(WARMUP_DECAY, mask=mask),
        optax.clip(0.05),
        optax.scale_by_learning_rate(WARMUP_DECAY),
    )
    run_side_by_side(hook, twin)


def test_blocks_constant_rates_key_mask_and_flip_sign():
    hook = flr.compose.Chain(
        flr.optim.ClipByGlobalNorm(3.0),
        flr.optim.AddDecayedWeights(1e-2, mask=NO_BIAS),
        flr.optim.ScaleByLearningRate(0.1, flip_sign=False),
        flr.optim.ScaleByLearningRate(None),
    )
    twin = optax.chain(
        optax.clip_by_global_norm(3.0),
        optax.add_decayed_weights(1e-2, mask=NO_BIAS),
        optax.scale_by_learning_rate(0.1, flip_sign=False),
        optax.scale_by_learning_rate(None),
    )
    run_side_by_side(hook, twin, steps=10)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: flr.optim.RMSProp(-1.0), "learning_rate"),
        (lambda: flr.optim.RMSProp(0.1, decay=1.5), "decay"),
        (lambda: flr.optim.Adagrad(0.1, eps=-1.0), "eps"),
        (lambda: flr.optim.LAMB(0.1, b2=1.0), "b2"),
        (lambda: flr.optim.PolyakSGD(variant="sps++"), "variant"),
        (lambda: flr.optim.Muon(0.1, preconditioning="qr"), "preconditioning"),
        (lambda: flr.optim.Muon(0.1, ns_coeffs="fast"), "ns_coeffs"),
        (lambda: flr.optim.Adafactor(momentum=2.0), "momentum"),
        (lambda: flr.optim.ClipByGlobalNorm(-1.0), "max_norm"),
    ],
)
def test_invalid_hyperparameters_name_the_argument(make, match):
    with pytest.raises(flr.HyperparameterError, match=match):
        make()
