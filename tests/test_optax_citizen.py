"""flr_nnx as an optax citizen: optax's wrappers, tree utilities and extra arguments.

Each test compares numbers against optax itself, and fails on the behaviour it guards
against (issue "A faithful optax and Flax citizen").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import flr_nnx as flr

PARAMS = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array(0.25)}
GRADS = {"w": jnp.array([0.3, -0.1, 0.2]), "b": jnp.array(-0.4)}


def _run(tx, steps=3, jit=True, **extra):
    state = tx.init(PARAMS)
    update = jax.jit(tx.update) if jit else tx.update
    out = []
    params = PARAMS
    for _ in range(steps):
        updates, state = update(GRADS, state, params, **extra)
        params = optax.apply_updates(params, updates)
        out.append(updates)
    return out, state


# -- optax.inject_hyperparams: an injected value takes effect at the next update.

INJECTED = [
    (lambda learning_rate: flr.as_optax(flr.optim.SGD(learning_rate)), optax.sgd),
    # A lambda, not optax.adam itself: inject_hyperparams would also inject adam's defaults.
    (
        lambda learning_rate: flr.as_optax(flr.optim.Adam(learning_rate)),
        lambda learning_rate: optax.adam(learning_rate),
    ),
    (
        lambda learning_rate: flr.as_optax(
            flr.compose.MultiSteps(flr.optim.Adam(learning_rate), every_k=1)
        ),
        lambda learning_rate: optax.MultiSteps(
            optax.adam(learning_rate), every_k_schedule=1
        ).gradient_transformation(),
    ),
]


@pytest.mark.parametrize("jit", [True, False], ids=["jit", "eager"])
@pytest.mark.parametrize("make, twin", INJECTED, ids=["SGD", "Adam", "MultiSteps(Adam)"])
def test_inject_hyperparams_schedule_takes_effect(make, twin, jit):
    schedule = optax.linear_schedule(1.0, 0.0, 2)
    ours, _ = _run(optax.inject_hyperparams(make)(learning_rate=schedule), jit=jit)
    theirs, _ = _run(optax.inject_hyperparams(twin)(learning_rate=schedule), jit=jit)
    # Bit-identical under jit; eagerly optax runs op by op, so XLA's fusion may round apart.
    rtol = 0 if jit else 1e-6
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a["w"], b["w"], rtol=rtol, atol=0)
        np.testing.assert_allclose(a["b"], b["b"], rtol=rtol, atol=0)
    assert float(ours[-1]["w"][0]) == 0.0  # the schedule reached 0: no update


def test_inject_hyperparams_value_set_between_steps():
    tx = optax.inject_hyperparams(lambda learning_rate: flr.as_optax(flr.optim.SGD(learning_rate)))(
        learning_rate=0.5
    )
    state = tx.init(PARAMS)
    update = jax.jit(tx.update)
    u1, state = update(GRADS, state, PARAMS)
    state.hyperparams["learning_rate"] = jnp.asarray(0.25)
    u2, state = update(GRADS, state, PARAMS)
    np.testing.assert_allclose(u1["w"], -0.5 * GRADS["w"])
    np.testing.assert_allclose(u2["w"], -0.25 * GRADS["w"])


def test_read_only_array_is_a_constant_and_hyper_is_state():
    constant = flr.as_optax(flr.optim.Adam(jnp.asarray(0.1)))
    assert sorted(constant.init(PARAMS).tree) == ["count", "mu", "nu"]
    live = flr.as_optax(flr.optim.Adam(flr.hyper(0.1)))
    state = live.init(PARAMS)
    assert sorted(state.tree) == ["count", "learning_rate", "mu", "nu"]
    state = flr.set_hyper(state, "learning_rate", 0.0)
    updates, _ = jax.jit(live.update)(GRADS, state, PARAMS)
    np.testing.assert_array_equal(updates["w"], jnp.zeros(3))


def test_array_assigned_only_after_init_is_an_error():
    class Late(flr.optim.Optimizer):
        def __init__(self):
            self.scale = jnp.asarray(1.0)
            self.calls = jnp.zeros((), jnp.int32)

        def call_model(self, grads, **_):
            self.calls = self.calls + 1
            return grads

        def call_param(self, key, grad, **_):
            return grad * self.scale

    opt = Late()
    tx = flr.as_optax(opt)
    state = tx.init(PARAMS)

    # A hook that starts writing a read-only array after init: the subclass is
    # swapped in under the same layout, as a user editing a class between runs would.
    class Later(Late):
        def call_model(self, grads, **_):
            self.scale = self.scale * 2
            return super().call_model(grads)

    bad = flr.as_optax(Later())
    with pytest.raises(flr.StateError, match=r"opt\.scale was only read by the hooks at init"):
        bad.update(GRADS, state, PARAMS)


# -- Extra arguments reach the hooks and wrapped optax transformations.


def _quadratic(params):
    return sum(jnp.sum((leaf - 0.3) ** 2) for leaf in jax.tree.leaves(params))


class LineSearchSGD(flr.optim.Optimizer):
    """Steps along -grad, halving the step until value_fn says the loss went down."""

    def __init__(self, step=1.0):
        self.step = step

    def call_model(self, grads, params, loss, value_fn, grad):
        step = jnp.asarray(self.step)
        for _ in range(4):
            trial = {k: params[k] - step * grad[k] for k in grads}
            step = jnp.where(value_fn(trial) < loss, step, step / 2)
        return {k: step * g for k, g in grads.items()}


def test_extra_arguments_reach_call_model_in_both_bridges():
    from flax import nnx

    tx = flr.as_optax(LineSearchSGD(4.0))
    grads = jax.grad(_quadratic)(PARAMS)
    value = _quadratic(PARAMS)

    @jax.jit
    def step(state):
        return tx.update(grads, state, PARAMS, value=value, grad=grads, value_fn=_quadratic)

    updates, _ = step(tx.init(PARAMS))
    # By hand: 4 -> 2 -> 1 -> 0.5 (each trial overshoots) -> 0.5 accepted.
    expected = 4.0
    for _ in range(4):
        trial = jax.tree.map(lambda p, g, s=expected: p - s * g, PARAMS, grads)
        expected = expected if _quadratic(trial) < value else expected / 2
    assert expected < 4.0
    np.testing.assert_allclose(updates["w"], -expected * grads["w"], rtol=1e-6)

    class Model(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(PARAMS["w"])
            self.b = nnx.Param(PARAMS["b"])

    model = Model()
    optimizer = flr.NNXOptimizer(model, LineSearchSGD(4.0), wrt=nnx.Param)
    graphdef = nnx.graphdef(model)

    def loss_of_state(state):
        m = nnx.merge(graphdef, state)
        return _quadratic({"w": m.w[...], "b": m.b[...]})

    grads_nnx = nnx.grad(lambda m: _quadratic({"w": m.w[...], "b": m.b[...]}))(model)
    optimizer.update(model, grads_nnx, grad=grads_nnx, value_fn=loss_of_state, value=value)
    np.testing.assert_allclose(model.w[...], PARAMS["w"] - expected * grads["w"], rtol=1e-6)


def test_hooks_that_do_not_name_an_extra_argument_still_run():
    ours, _ = _run(flr.as_optax(flr.optim.Adam(0.1)), grad=GRADS, unknown=1.0)
    theirs, _ = _run(optax.adam(0.1))
    np.testing.assert_array_equal(ours[-1]["w"], theirs[-1]["w"])


def _lbfgs_run(tx, steps=4):
    update = jax.jit(lambda g, s, p, v: tx.update(g, s, p, value=v, grad=g, value_fn=_quadratic))
    params, state, out = PARAMS, tx.init(PARAMS), []
    for _ in range(steps):
        value, grads = jax.value_and_grad(_quadratic)(params)
        updates, state = update(grads, state, params, value)
        params = optax.apply_updates(params, updates)
        out.append(params)
    return out, state


def test_from_optax_lbfgs_line_search_bit_identical_to_optax():
    ours, _ = _lbfgs_run(flr.as_optax(flr.from_optax(optax.lbfgs())))
    theirs, _ = _lbfgs_run(optax.lbfgs())
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a["w"], b["w"])
        np.testing.assert_array_equal(a["b"], b["b"])
    assert float(_quadratic(ours[-1])) < 1e-6


def test_from_optax_lbfgs_in_nnx_optimizer_equals_nnx_optimizer():
    from flax import nnx

    def train(make_optimizer):
        model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
        optimizer = make_optimizer(model)
        x, y = jnp.linspace(-1, 1, 12).reshape(4, 3), jnp.ones((4, 2))
        loss_fn = lambda m: ((m(x) - y) ** 2).mean()  # noqa: E731
        graphdef = nnx.graphdef(model)
        loss_of_state = lambda state: loss_fn(nnx.merge(graphdef, state))  # noqa: E731

        @nnx.jit
        def step(model, optimizer):
            loss, grads = nnx.value_and_grad(loss_fn)(model)
            optimizer.update(model, grads, grad=grads, value_fn=loss_of_state, value=loss)
            return loss

        losses = [float(step(model, optimizer)) for _ in range(4)]
        return losses, model

    ours, model_a = train(
        lambda m: flr.NNXOptimizer(m, flr.from_optax(optax.lbfgs()), wrt=nnx.Param)
    )
    theirs, model_b = train(lambda m: nnx.Optimizer(m, optax.lbfgs(), wrt=nnx.Param))
    assert ours == theirs
    assert ours[-1] < 0.5 * ours[0]
    np.testing.assert_array_equal(model_a.kernel[...], model_b.kernel[...])


def test_partition_gives_each_group_its_own_keys_of_an_extra_argument():
    seen = {}

    class Recorder(flr.optim.Optimizer):
        def __init__(self, name):
            self.name = name

        def call_model(self, grads, grad, **_):
            seen[self.name] = sorted(grad)
            return grads

    opt = flr.compose.Partition([(("w",), Recorder("w"))], default=Recorder("rest"))
    tx = flr.as_optax(opt)
    tx.update(GRADS, tx.init(PARAMS), PARAMS, grad=GRADS)
    assert seen == {"w": [("w",)], "rest": [("b",)]}


# -- from_optax keeps optax's state structure, with field names and parameter paths.


def test_from_optax_state_has_optax_field_names_and_parameter_paths():
    from flax import nnx

    params = {"layers": [{"kernel": jnp.ones((2, 3))}], "bias": jnp.zeros(3)}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    tx = flr.as_optax(flr.from_optax(optax.adam(0.1)))
    state = jax.jit(tx.update)(grads, tx.init(params), params)[1]
    twin = optax.adam(0.1)
    twin_state = jax.jit(twin.update)(grads, twin.init(params), params)[1]
    tree = state.tree["tx_state"][0]
    np.testing.assert_array_equal(
        tree["mu"]["layers"][0]["kernel"], twin_state[0].mu["layers"][0]["kernel"]
    )
    np.testing.assert_array_equal(tree["nu"]["bias"], twin_state[0].nu["bias"])
    assert int(tree["count"]) == int(twin_state[0].count) == 1
    assert "opt.tx_state[0].mu[('layers', 0, 'kernel')]" in [
        flr._engine.format_path(p) for p in state.layout.paths
    ]

    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    optimizer = flr.NNXOptimizer(model, flr.from_optax(optax.adam(0.1)), wrt=nnx.Param)
    slot = optimizer.opt_state["tx_state"][0]["mu"]["kernel"]
    assert isinstance(slot, flr.OptimizerSlot) and slot.get_value().shape == (3, 2)


class _Mixed:
    """A pytree whose children's keys mix an integer and a string at one level."""

    def __init__(self, first, scale):
        self.first, self.scale = first, scale


jax.tree_util.register_pytree_with_keys(
    _Mixed,
    lambda m: (
        [(jax.tree_util.SequenceKey(0), m.first), (jax.tree_util.GetAttrKey("scale"), m.scale)],
        None,
    ),
    lambda _, children: _Mixed(*children),
)


@pytest.mark.parametrize(
    "make", [lambda: flr.from_optax(optax.adam(0.1)), lambda: flr.optim.Adam(0.1)]
)
def test_keys_mixing_strings_and_integers_get_the_nested_state_error(make):
    # Parameter keys ('blocks', 0) and ('blocks', 'scale'): optax's transformation sees
    # them in a ParamDict (a plain dict keyed by them cannot be flattened: JAX sorts dict
    # keys), so from_optax reaches the same clear error as any hook optimizer.
    params = {"blocks": _Mixed(jnp.ones(2), jnp.full(3, 2.0))}
    with pytest.raises(flr.StateError, match=r"keys mix int and str \(\[0, 'scale'\]\)"):
        flr.as_optax(make()).init(params)


# -- The sign convention: as_optax(sign="gradient") for a link before scale_by_learning_rate.


def test_as_optax_gradient_sign_before_scale_by_learning_rate_equals_optax():
    direction = flr.optim.Adam(1.0)  # learning rate 1: the bias-corrected direction
    ours, _ = _run(
        optax.chain(flr.as_optax(direction, sign="gradient"), optax.scale_by_learning_rate(0.1))
    )
    theirs, _ = _run(optax.chain(optax.scale_by_adam(), optax.scale_by_learning_rate(0.1)))
    uphill, _ = _run(optax.chain(flr.as_optax(direction), optax.scale_by_learning_rate(0.1)))
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a["w"], b["w"])
    # The default sign there would step uphill: the same magnitudes, the other way.
    np.testing.assert_array_equal(uphill[0]["w"], -ours[0]["w"])
    assert float(jnp.vdot(ours[0]["w"], GRADS["w"])) < 0  # descent


# Each building block whose optax twin is a gradient transformation declares
# optax_sign = "gradient": as_optax(block) returns what its twin returns, so the natural
# port of optax.chain(<gradient transformation>, optax.sgd(lr)) descends as optax does.
GRADIENT_BLOCKS = [
    (lambda: flr.optim.ClipByGlobalNorm(0.2), lambda: optax.clip_by_global_norm(0.2)),
    (lambda: flr.optim.Clip(0.25), lambda: optax.clip(0.25)),
    (lambda: flr.optim.AddDecayedWeights(0.1), lambda: optax.add_decayed_weights(0.1)),
    (
        lambda: flr.optim.AddDecayedWeights(optax.linear_schedule(0.1, 0.0, 4)),
        lambda: optax.add_decayed_weights(optax.linear_schedule(0.1, 0.0, 4)),
    ),
    (flr.optim.Normalize, optax.contrib.normalize),
    (
        lambda: flr.from_optax(optax.clip_by_global_norm(0.2)),
        lambda: optax.clip_by_global_norm(0.2),
    ),
]


@pytest.mark.parametrize("jit", [True, False], ids=["jit", "eager"])
@pytest.mark.parametrize("make, make_optax", GRADIENT_BLOCKS)
def test_gradient_blocks_default_to_their_twins_sign_in_a_chain(make, make_optax, jit):
    assert make().optax_sign == "gradient"
    alone, _ = _run(flr.as_optax(make()), jit=jit)
    twin, _ = _run(make_optax(), jit=jit)
    ours, _ = _run(optax.chain(flr.as_optax(make()), optax.sgd(0.1)), jit=jit)
    theirs, _ = _run(optax.chain(make_optax(), optax.sgd(0.1)), jit=jit)
    for a, b in zip(alone + ours, twin + theirs, strict=True):
        for k in ("w", "b"):
            np.testing.assert_array_equal(a[k], b[k])
    assert float(jnp.vdot(ours[0]["w"], GRADS["w"])) < 0  # descent
    # An explicit sign still wins: "update" negates, as before.
    negated, _ = _run(flr.as_optax(make(), sign="update"), jit=jit)
    np.testing.assert_array_equal(negated[0]["w"], -alone[0]["w"])


@pytest.mark.parametrize("jit", [True, False], ids=["jit", "eager"])
def test_private_aggregate_defaults_to_its_twins_sign_in_a_chain(jit):
    def run(tx):
        state, params, out = tx.init(PARAMS), PARAMS, []
        update = jax.jit(tx.update) if jit else tx.update
        for i in range(3):  # a batch of two examples: the gradient and a scaled copy
            per_example = {k: jnp.stack([g, (i + 2.0) * g]) for k, g in GRADS.items()}
            updates, state = update(per_example, state, params)
            params = optax.apply_updates(params, updates)
            out.append(updates)
        return out

    ours = run(
        optax.chain(
            flr.as_optax(flr.optim.DifferentiallyPrivateAggregate(0.3, 0.5, key=3)),
            optax.sgd(0.1),
        )
    )
    theirs = run(
        optax.chain(optax.contrib.differentially_private_aggregate(0.3, 0.5, key=3), optax.sgd(0.1))
    )
    for a, b in zip(ours, theirs, strict=True):
        for k in ("w", "b"):
            np.testing.assert_array_equal(a[k], b[k])
    assert flr.optim.DPSGD.optax_sign == "update"  # optax.contrib.dpsgd is an optimizer


@pytest.mark.parametrize(
    "make",
    [
        flr.optim.Adam,
        flr.optim.ScaleByLearningRate,  # optax.scale_by_learning_rate returns updates
        lambda lr: flr.compose.Chain(flr.optim.ClipByGlobalNorm(1.0), flr.optim.SGD(lr)),
        lambda lr: flr.from_optax(optax.sgd(lr)),
    ],
)
def test_optimizers_and_wrappers_keep_the_update_sign(make):
    assert make(0.1).optax_sign == "update"
    updates, _ = _run(flr.as_optax(make(0.1)), steps=1)
    assert float(jnp.vdot(updates[0]["w"], GRADS["w"])) < 0  # optax updates: descent


def test_nnx_optimizer_still_descends_along_a_gradient_block():
    # NNXOptimizer subtracts the hooks' descent directions, whatever optax_sign says.
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    optimizer = flr.NNXOptimizer(model, flr.optim.ClipByGlobalNorm(0.1), wrt=nnx.Param)
    x = jnp.ones((4, 3))

    def loss_fn(m):
        return jnp.mean((m(x) - 5.0) ** 2)

    before = [jnp.asarray(p) for p in jax.tree.leaves(nnx.state(model, nnx.Param))]
    grads = nnx.grad(loss_fn)(model)
    clipped = jax.tree.leaves(optax.clip_by_global_norm(0.1).update(grads, None)[0])
    loss_before = loss_fn(model)
    optimizer.update(model, grads)
    after = jax.tree.leaves(nnx.state(model, nnx.Param))
    for a, p, c in zip(after, before, clipped, strict=True):
        np.testing.assert_array_equal(a, p - c)
    assert loss_fn(model) < loss_before


def test_as_optax_rejects_an_unknown_sign():
    with pytest.raises(flr.HyperparameterError, match=r"'update'.*'gradient'"):
        flr.as_optax(flr.optim.Adam(0.1), sign="descent")


# -- optax's tree utilities on as_optax state.


def _specs_of(tx, state, specs):
    from jax.sharding import PartitionSpec

    return optax.tree.map_params(
        tx,
        lambda _, spec: spec,
        state,
        specs,
        transform_non_params=lambda _: PartitionSpec(),
        is_leaf=lambda x: isinstance(x, PartitionSpec),
    )


def test_map_params_builds_state_specs_like_optax():
    from jax.sharding import PartitionSpec

    params = {"w": jnp.ones((4, 2)), "b": jnp.zeros(2)}
    specs = {"w": PartitionSpec("x"), "b": PartitionSpec()}
    tx = flr.as_optax(flr.optim.Adam(0.1))
    ours = _specs_of(tx, tx.init(params), specs)
    theirs = _specs_of(optax.adam(0.1), optax.adam(0.1).init(params), specs)[0]
    assert ours.tree == {"count": theirs.count, "mu": theirs.mu, "nu": theirs.nu}
    assert ours.tree["mu"]["w"] == PartitionSpec("x")


@pytest.mark.parametrize(
    "make",
    [
        lambda: flr.as_optax(flr.optim.Adam(0.1)),
        lambda: flr.as_optax(flr.from_optax(optax.adam(0.1))),
        lambda: optax.inject_hyperparams(
            lambda learning_rate: flr.as_optax(flr.optim.Adam(learning_rate))
        )(learning_rate=0.1),
    ],
    ids=["Adam", "from_optax", "inject_hyperparams"],
)
def test_map_params_maps_every_copy_of_the_parameters(make):
    tx = make()
    state = tx.init(PARAMS)
    state, _ = _step_once(tx, state)
    mapped = optax.tree.map_params(tx, lambda v: v + 100.0, state)
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        text = jax.tree_util.keystr(path)
        new = _leaf_at(mapped, path)
        per_parameter = "'mu'" in text or "'nu'" in text
        np.testing.assert_array_equal(new, leaf + 100.0 if per_parameter else leaf, err_msg=text)
    # The mapped state still steps (same structure).
    _step_once(tx, mapped)


def _step_once(tx, state):
    updates, state = jax.jit(tx.update)(GRADS, state, PARAMS)
    return state, updates


def _leaf_at(tree, path):
    leaves = dict(jax.tree_util.tree_leaves_with_path(tree))
    return leaves[path]


def test_map_params_before_any_init_is_a_clear_error():
    class NeverInitialised(flr.optim.Optimizer):
        def __init__(self):
            self.m = {}

        def call_param(self, key, grad, **_):
            self.m[key] = grad
            return grad

    tx = flr.as_optax(NeverInitialised())
    with pytest.raises(flr.StructureError, match=r"call `tx\.init\(params\)`"):
        optax.tree.map_params(tx, lambda v: v, {})


def test_tree_get_and_set_on_as_optax_state():
    x = jnp.array([0.0, 1.0])
    tx = flr.as_optax(flr.optim.Adam(0.1, mu_dtype=jnp.bfloat16))
    state = tx.init(x)
    assert optax.tree.get(state, "mu").dtype == jnp.bfloat16
    assert optax.tree.get(state, "nu").dtype == jnp.float32
    state = optax.tree.set(state, count=jnp.asarray(7, jnp.int32))
    assert int(optax.tree.get(state, "count")) == 7
    twin = optax.adam(0.1, mu_dtype=jnp.bfloat16)
    twin_state = optax.tree.set(twin.init(x), count=jnp.asarray(7, jnp.int32))
    ours = jax.jit(tx.update)(x, state, x)[0]
    theirs = jax.jit(twin.update)(x, twin_state, x)[0]
    np.testing.assert_array_equal(ours, theirs)


def test_extra_argument_named_like_a_hook_argument_is_a_clear_error():
    tx = flr.as_optax(flr.optim.Adam(0.1))
    with pytest.raises(flr.ArgumentError, match=r"extra argument grads="):
        tx.update(GRADS, tx.init(PARAMS), PARAMS, grads=GRADS)


def test_loss_keyword_reaches_hooks_through_nnx_optimizer():
    from flax import nnx

    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    x = jnp.ones((3, 2))
    loss_fn = lambda m: (m(x) ** 2).mean()  # noqa: E731
    ours = nnx.Optimizer(model, flr.as_optax(flr.optim.PolyakSGD(1.0)), wrt=nnx.Param)
    twin_model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    theirs = nnx.Optimizer(twin_model, optax.polyak_sgd(1.0), wrt=nnx.Param)
    for m, opt, key in ((model, ours, "loss"), (twin_model, theirs, "value")):
        loss, grads = nnx.value_and_grad(loss_fn)(m)
        opt.update(m, grads, **{key: loss})
    np.testing.assert_allclose(model.kernel[...], twin_model.kernel[...], rtol=1e-6)


def test_map_params_with_a_transformation_initialised_on_two_structures_is_a_clear_error():
    tx = flr.as_optax(flr.optim.Adam(0.1))
    state = tx.init(PARAMS)
    tx.init({"x": jnp.ones(5)})
    with pytest.raises(flr.StructureError, match="initialised on 2 different parameter"):
        optax.tree.map_params(tx, lambda v: v, state)


def test_flr_hyper_inside_inject_hyperparams_is_a_clear_error():
    tx = optax.inject_hyperparams(
        lambda learning_rate: flr.as_optax(flr.optim.SGD(flr.hyper(learning_rate)))
    )(learning_rate=0.1)
    state = tx.init(PARAMS)
    with pytest.raises(flr.HyperparameterError, match=r"flr\.hyper got a traced value"):
        jax.jit(tx.update)(GRADS, state, PARAMS)


def test_chain_and_from_optax_mix_ups_are_bridge_errors():
    with pytest.raises(flr.BridgeError, match=r"Chain link 0 .*flr\.from_optax"):
        flr.compose.Chain(optax.adam(0.1))
    with pytest.raises(flr.BridgeError, match="already a hook optimizer"):
        flr.from_optax(flr.optim.Adam(0.1))


@pytest.mark.parametrize("bridge", ["optax", "nnx"])
def test_a_required_extra_argument_a_step_lacks_raises_instead_of_a_default(bridge):
    """An extra named without a default is required: never silently replaced at a step."""

    class NeedsObjective(flr.optim.Optimizer):
        def __init__(self):
            self.seen = jnp.zeros(())

        def call_model(self, grads, params, objective, **_):
            # None at init only, where optax's extras are not known
            self.seen = jnp.zeros(()) if objective is None else objective(params)
            return grads

    f = lambda p: jnp.sum(p["w"] ** 2)  # noqa: E731
    if bridge == "optax":
        tx = flr.as_optax(NeedsObjective())
        p = {"w": jnp.ones(2)}
        state = tx.init(p)
        _, state = tx.update(p, state, p, objective=f)
        assert float(state.tree["seen"]) == 2.0
        with pytest.raises(
            flr.MissingArgumentError,
            match=r"NeedsObjective.call_model reads `objective`.*objective=",
        ):
            tx.update(p, state, p)
        with pytest.raises(flr.MissingArgumentError, match="`objective`"):
            jax.jit(lambda p, s: tx.update(p, s, p))(p, state)
    else:
        model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
        opt = flr.NNXOptimizer(model, NeedsObjective(), wrt=nnx.Param)
        grads = nnx.state(model, nnx.Param)
        with pytest.raises(flr.MissingArgumentError, match="`objective`"):
            opt.update(model, grads)


@pytest.mark.parametrize(
    "make, given, missing",
    [
        (lambda: flr.optim.LBFGS(), {"value", "grad"}, "value_fn"),
        (lambda: flr.optim.LBFGS(), {"value", "value_fn"}, "grad"),
        (lambda: flr.optim.Sophia(0.1), {}, "obj_fn"),
    ],
)
def test_line_search_and_hessian_optimizers_refuse_a_step_without_their_extras(
    make, given, missing
):
    f = lambda p: jnp.sum((p["w"] - 1.0) ** 2)  # noqa: E731
    p = {"w": jnp.array([3.0, -1.0])}
    value, grad = jax.value_and_grad(f)(p)
    extras = {"value": value, "grad": grad, "value_fn": f}
    tx = flr.as_optax(make())
    with pytest.raises(flr.MissingArgumentError, match=f"`{missing}`"):
        tx.update(grad, tx.init(p), p, **{k: extras[k] for k in given})
