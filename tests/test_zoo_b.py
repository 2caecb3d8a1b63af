"""Zoo part B against their optax twins, step by step under jit.

Each test runs the hook optimizer through ``flr.as_optax`` and its optax twin
side by side inside one jitted step, on a dict pytree with a matrix, a vector,
a scalar and a conv-like rank-4 leaf, and requires identical updates at every
step (or a stated relative tolerance, with the reason).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flr_nnx as flr

STEPS = 50


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


@jax.jit
def compare(a, b):
    """Per leaf: bitwise equal, deviation max|a - b| / max|b| (as flr.testing), finite."""
    same, dev, finite = [], [], []
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = x.astype(jnp.float32), y.astype(jnp.float32)
        same.append(jnp.all(x == y))
        dev.append(jnp.max(jnp.abs(x - y)) / jnp.maximum(jnp.max(jnp.abs(y)), 1e-30))
        finite.append(jnp.all(jnp.isfinite(x)))
    return jnp.stack(same), jnp.stack(dev), jnp.stack(finite)


def run_side_by_side(hook_opt, twin, *, params=None, steps=STEPS, rtol=0.0, with_loss=False):
    """Steps both from the same parameters (the twin's trajectory); checks every step.

    With ``rtol == 0`` every update must be bitwise equal to the twin's; otherwise
    within ``rtol`` relative deviation per parameter. Returns the final states.
    """
    params = make_params() if params is None else params
    hook = flr.as_optax(hook_opt)
    h_state, t_state = hook.init(params), twin.init(params)

    # The updates leave this function (no fusion with the comparison), as in training.
    noise = _noise(steps, params)

    @jax.jit
    def both(i, params, h_state, t_state):
        grads = grads_at(noise, i, params)
        extra = {"value": loss_at(i, params)} if with_loss else {}
        h, h_state = hook.update(grads, h_state, params, **extra)
        t, t_state = twin.update(grads, t_state, params, **extra)
        return h, t, optax.apply_updates(params, t), h_state, t_state

    checks = []
    for i in range(steps):
        h, t, params, h_state, t_state = both(i, params, h_state, t_state)
        checks.append(compare(h, t))
    names = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(h)]
    for i, (same, dev, finite) in enumerate(jax.device_get(checks)):
        assert finite.all(), f"step {i}: non-finite update"
        bad = ~same if rtol == 0.0 else dev > rtol
        if bad.any():
            n = int(np.argmax(bad))
            pytest.fail(f"step {i}: {names[n]} deviates by {dev[n]:.3g} (rtol {rtol})")
    return params, h_state, t_state


# -- RMSProp ---------------------------------------------------------------------

SCHEDULE = optax.warmup_cosine_decay_schedule(0.0, 1e-2, warmup_steps=5, decay_steps=40)
NO_BIAS = flr.helpers.key_mask(lambda key: key[-1] != "bias")


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
        (SCHEDULE, {"eps_in_sqrt": False, "initial_scale": 1.0, "decay": 0.8}),
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
    run_side_by_side(flr.optim.Adagrad(SCHEDULE, **kwargs), optax.adagrad(SCHEDULE, **kwargs))


# -- Adafactor -------------------------------------------------------------------


def test_adafactor_factored_state_is_smaller_than_the_param_and_matches():
    kwargs = {"learning_rate": 1e-2, "min_dim_size_to_factor": 4}
    _, h_state, t_state = run_side_by_side(flr.optim.Adafactor(**kwargs), optax.adafactor(**kwargs))
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
            "learning_rate": SCHEDULE,
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
    kwargs = {"weight_decay": SCHEDULE, "mask": mask, "b1": 0.8}
    run_side_by_side(flr.optim.LAMB(SCHEDULE, **kwargs), optax.lamb(SCHEDULE, **kwargs))


# -- PolyakSGD -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"variant": "sps+", "f_min": 1e3, "max_learning_rate": 0.5, "scaling": SCHEDULE}],
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
    _, h_state, t_state = run_side_by_side(flr.optim.Muon(1e-2), optax.contrib.muon(1e-2))
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
        "adam_learning_rate": SCHEDULE,
        "weight_decay": 1e-2,
        "weight_decay_mask": NO_BIAS,
    }
    # With several matrices XLA rewrites optax's bias-correction divisions into
    # reciprocal multiplications in a program-dependent way; Newton-Schulz then
    # amplifies that last-bit difference (measured max 1.1e-6 of the update scale).
    _, h_state, _ = run_side_by_side(
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
        flr.optim.AddDecayedWeights(SCHEDULE, mask=mask),
        flr.optim.Clip(0.05),
        flr.optim.ScaleByLearningRate(SCHEDULE),
    )
    twin = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.scale_by_adam(),
        optax.add_decayed_weights(SCHEDULE, mask=mask),
        optax.clip(0.05),
        optax.scale_by_learning_rate(SCHEDULE),
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
def test_invalid_hyperparameters_raise(make, match):
    with pytest.raises(flr.HyperparameterError, match=match):
        make()
