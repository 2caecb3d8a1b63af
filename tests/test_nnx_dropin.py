"""NNXOptimizer as a drop-in for nnx.Optimizer, also with optax transformations; as_optax
state under nnx.Optimizer carries the Variable metadata optax's own state carries."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import flr_nnx as flr


class MLP(nnx.Module):
    def __init__(self, rngs):
        self.layers = nnx.List([nnx.Linear(3, 5, rngs=rngs), nnx.Linear(5, 1, rngs=rngs)])

    def __call__(self, x):
        return self.layers[1](jnp.tanh(self.layers[0](x)))


X = jax.random.normal(jax.random.key(0), (8, 3))
Y = jnp.cos(X.sum(axis=1, keepdims=True))


def loss_fn(model):
    return ((model(X) - Y) ** 2).mean()


def variables(tree):
    return jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


def assert_same_nnx_state(a, b):
    """Same structure, same Variable types and metadata, bit-identical values."""
    sa, sb = nnx.state(a), nnx.state(b)
    assert jax.tree.structure(sa) == jax.tree.structure(sb)
    for va, vb in zip(variables(sa), variables(sb), strict=True):
        assert type(va) is type(vb)
        assert va.get_metadata() == vb.get_metadata()
        assert np.array_equal(va.get_value(), vb.get_value())
        assert va.get_value().dtype == vb.get_value().dtype


TRANSFORMS = {
    "adam": lambda: optax.adam(1e-2),
    "chain_clip_adamw_schedule": lambda: optax.chain(
        optax.clip_by_global_norm(0.5), optax.adamw(optax.linear_schedule(1e-2, 1e-3, 5))
    ),
    "multisteps": lambda: optax.MultiSteps(optax.sgd(0.1, momentum=0.9), every_k_schedule=2),
    "as_optax": lambda: flr.as_optax(flr.optim.Adam(1e-2)),
}


@pytest.mark.parametrize("graph", [True, False], ids=["graph", "tree"])
@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_optax_transformation_trains_exactly_as_nnx_optimizer(name, graph):
    make = TRANSFORMS[name]
    ours_model, ref_model = MLP(nnx.Rngs(0)), MLP(nnx.Rngs(0))
    ours = flr.NNXOptimizer(ours_model, make(), wrt=nnx.Param, graph=graph)
    ref = nnx.Optimizer(ref_model, make(), wrt=nnx.Param, graph=graph)
    assert_same_nnx_state(ours, ref)  # the same opt_state, Variable types included

    @nnx.jit(graph=graph)
    def train_step(model, optimizer):
        loss, grads = nnx.value_and_grad(loss_fn, graph=graph)(model)
        optimizer.update(model, grads, value=loss)
        return loss

    for _ in range(4):
        assert float(train_step(ours_model, ours)) == float(train_step(ref_model, ref))
        assert_same_nnx_state(ours, ref)
        assert_same_nnx_state(ours_model, ref_model)
    # One eager step too: the same updates, returned and applied.
    grads = nnx.grad(loss_fn)(ours_model)
    ours_updates = ours.update(ours_model, grads)
    ref_updates = ref.update(ref_model, nnx.grad(loss_fn)(ref_model))
    assert all(
        np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(ours_updates), jax.tree.leaves(ref_updates), strict=True)
    )
    assert_same_nnx_state(ours, ref)
    assert ours.tx is not None and int(ours.step[...]) == 5


def test_update_forwards_extra_arguments_as_nnx_optimizer_does():
    # optax's line search reads value=, grad= and value_fn=, as flax's docstring says.
    def make():
        return optax.chain(
            optax.sgd(1.0), optax.scale_by_backtracking_linesearch(max_backtracking_steps=8)
        )

    ours_model, ref_model = MLP(nnx.Rngs(1)), MLP(nnx.Rngs(1))
    ours = flr.NNXOptimizer(ours_model, make(), wrt=nnx.Param)
    ref = nnx.Optimizer(ref_model, make(), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer):
        graphdef, _, rest = nnx.split(model, nnx.Param, ...)

        def value_fn(params):
            return loss_fn(nnx.merge(graphdef, params, rest))

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(
            model, grads, value=loss, grad=nnx.as_pure(grads), value_fn=nnx.as_pure(value_fn)
        )
        return loss

    for _ in range(3):
        assert float(train_step(ours_model, ours)) == float(train_step(ref_model, ref))
        assert_same_nnx_state(ours_model, ref_model)
        assert_same_nnx_state(ours, ref)
    # The line search did shrink the step at some point (else the test proves little).
    assert float(ref.opt_state[1].learning_rate[...]) < 1.0


def test_loss_keyword_reaches_optax_as_value():
    # A training loop written for NNXOptimizer passes `loss=`; optax reads `value=`.
    ours_model, ref_model = MLP(nnx.Rngs(2)), MLP(nnx.Rngs(2))
    ours = flr.NNXOptimizer(ours_model, optax.polyak_sgd(max_learning_rate=0.5), wrt=nnx.Param)
    ref = nnx.Optimizer(ref_model, optax.polyak_sgd(max_learning_rate=0.5), wrt=nnx.Param)
    for _ in range(3):
        loss, grads = nnx.value_and_grad(loss_fn)(ours_model)
        ours.update(ours_model, grads, loss=loss)
        loss, grads = nnx.value_and_grad(loss_fn)(ref_model)
        ref.update(ref_model, grads, value=loss)
        assert_same_nnx_state(ours_model, ref_model)


@pytest.mark.parametrize("graph", [True, False], ids=["graph", "tree"])
def test_tx_of_a_hook_optimizer_is_its_as_optax(graph):
    # `.tx` of a hook NNXOptimizer trains under nnx.Optimizer exactly as NNXOptimizer does.
    ours_model, ref_model = MLP(nnx.Rngs(3)), MLP(nnx.Rngs(3))
    ours = flr.NNXOptimizer(ours_model, flr.optim.Adam(1e-2), wrt=nnx.Param, graph=graph)
    ref = nnx.Optimizer(ref_model, ours.tx, wrt=nnx.Param, graph=graph)
    assert ours.tx.update.__qualname__ == flr.as_optax(flr.optim.SGD(0.1)).update.__qualname__

    @nnx.jit(graph=graph)
    def train_step(model, optimizer):
        loss, grads = nnx.value_and_grad(loss_fn, graph=graph)(model)
        optimizer.update(model, grads, loss=loss)
        return loss

    for _ in range(3):
        assert float(train_step(ours_model, ours)) == float(train_step(ref_model, ref))
        assert_same_nnx_state(ours_model, ref_model)
    ours_mu = ours.opt_state["mu"]["layers"][0]["kernel"].get_value()
    assert np.array_equal(ours_mu, ref.opt_state.tree["mu"]["layers"][0]["kernel"].get_value())


def test_hook_optimizer_where_optax_is_expected_names_the_fix():
    params = {"w": jnp.ones(3)}
    match = r"Adam\.init\(\) .*Fix: wrap it: flr\.as_optax\(opt\), or use flr\.NNXOptimizer"
    with pytest.raises(flr.BridgeError, match=match):
        optax.MultiSteps(flr.optim.Adam(0.1), every_k_schedule=2).init(params)
    with pytest.raises(flr.BridgeError, match=r"Adam\.update\(\)"):
        flr.optim.Adam(0.1).update(params, None, params)
    # The same optimizers, wrapped, work there (bit-identical to optax.adam).
    tx = optax.MultiSteps(flr.as_optax(flr.optim.Adam(0.1)), every_k_schedule=2)
    ref = optax.MultiSteps(optax.adam(0.1), every_k_schedule=2)
    state, ref_state = tx.init(params), ref.init(params)
    for i in range(4):
        grads = {"w": jnp.arange(3.0) - i}
        u, state = jax.jit(tx.update)(grads, state, params)
        r, ref_state = jax.jit(ref.update)(grads, ref_state, params)
        assert np.array_equal(u["w"], r["w"])
    assert float(jnp.abs(r["w"]).max()) > 0


def test_no_optimizer_class_overrides_the_refusing_init_and_update():
    # Optimizer.init/update only raise BridgeError; a built-in that defined its own
    # would both shadow the check and look like optax to nnx.Optimizer.
    classes = [v for v in vars(flr.optim).values() if inspect.isclass(v)]
    classes = [c for c in classes if issubclass(c, flr.optim.Optimizer)]
    assert len(classes) > 20
    for cls in classes:
        assert cls.init is flr.optim.Optimizer.init, cls
        assert cls.update is flr.optim.Optimizer.update, cls


def test_as_optax_rejects_what_is_not_a_hook_optimizer():
    with pytest.raises(flr.BridgeError, match="already an optax transformation"):
        flr.as_optax(optax.MultiSteps(optax.adam(0.1), every_k_schedule=2))
    with pytest.raises(flr.BridgeError, match=r"got float 0\.1; expected a hook optimizer"):
        flr.as_optax(0.1)
    with pytest.raises(flr.BridgeError, match="expected a hook optimizer"):
        flr.NNXOptimizer(MLP(nnx.Rngs(0)), flr.optim.Adam, wrt=nnx.Param)


def test_assert_matches_checks_which_side_is_which():
    params = {"w": jnp.ones(3)}
    with pytest.raises(flr.BridgeError, match="swapped"):
        flr.testing.assert_matches(optax.sgd(0.1), flr.optim.SGD(0.1), params)
    with pytest.raises(flr.BridgeError, match="expected the optax transformation"):
        flr.testing.assert_matches(flr.optim.SGD(0.1), flr.optim.SGD(0.1), params)
    report = flr.testing.assert_matches(
        flr.optim.SGD(0.1), flr.as_optax(flr.optim.SGD(0.1)), params, steps=3
    )
    assert report.bit_identical


# -- sharding metadata of as_optax state under nnx.Optimizer ---------------------------


class Sharded(nnx.Module):
    def __init__(self, rngs):
        kernel = nnx.with_partitioning(nnx.initializers.lecun_normal(), (None, "model"))
        bias = nnx.with_partitioning(nnx.initializers.zeros_init(), ("model",))
        self.up = nnx.Linear(3, 4, kernel_init=kernel, bias_init=bias, rngs=rngs)
        self.down = nnx.Linear(4, 1, rngs=rngs)  # not annotated

    def __call__(self, x):
        return self.down(jnp.tanh(self.up(x)))


def test_as_optax_state_carries_the_metadata_optax_state_carries():
    mesh = jax.make_mesh((1,), ("model",))
    with jax.set_mesh(mesh):
        ours_model, ref_model = Sharded(nnx.Rngs(0)), Sharded(nnx.Rngs(0))
        ours = nnx.Optimizer(ours_model, flr.as_optax(flr.optim.Adam(1e-2)), wrt=nnx.Param)
        ref = nnx.Optimizer(ref_model, optax.adam(1e-2), wrt=nnx.Param)

        def pairs():
            for moment in ("mu", "nu"):
                for layer in ("up", "down"):
                    for name in ("kernel", "bias"):
                        yield (
                            ours.opt_state.tree[moment][layer][name],
                            getattr(ref.opt_state[0], moment)[layer][name],
                        )

        for a, b in pairs():
            assert type(a) is type(b) is nnx.training.optimizer.OptVariable
            assert a.get_metadata() == b.get_metadata()
        assert ours.opt_state.tree["mu"]["up"]["kernel"].get_metadata()["out_sharding"] == (
            None,
            "model",
        )
        # The step count is a plain OptArray on both sides.
        assert type(ours.opt_state.tree["count"]) is type(ref.opt_state[0].count)

        @nnx.jit
        def train_step(model, optimizer):
            loss, grads = nnx.value_and_grad(loss_fn)(model)
            optimizer.update(model, grads)
            return loss

        for _ in range(3):
            assert float(train_step(ours_model, ours)) == float(train_step(ref_model, ref))
            assert_same_nnx_state(ours_model, ref_model)
        for a, b in pairs():
            assert a.get_metadata() == b.get_metadata()
            assert np.array_equal(a.get_value(), b.get_value())


def test_as_optax_state_of_plain_arrays_stays_plain():
    params = {"w": jnp.ones((2, 3))}
    state = flr.as_optax(flr.optim.Adam(0.1)).init(params)
    assert not any(isinstance(v, nnx.Variable) for v in variables(state))
    assert state.tree["mu"]["w"].shape == (2, 3)


def test_hooks_see_the_models_variables_only_by_name():
    """NNXOptimizer passes the model's Variables as `nnx_variables` to a hook that names it;
    a hook taking `**kwargs` (which it may pass on to optax) never sees it."""
    seen = []

    class Named(flr.optim.Optimizer):
        def call_model(self, grads, nnx_variables=None, **kwargs):
            seen.append((type(nnx_variables.get(("kernel",))).__name__, "nnx_variables" in kwargs))
            return grads

    class Unnamed(flr.optim.Optimizer):
        def call_model(self, grads, **kwargs):
            seen.append(("-", "nnx_variables" in kwargs))
            return grads

    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    for opt in (Named(), Unnamed()):
        optimizer = flr.NNXOptimizer(model, opt, wrt=nnx.Param)
        optimizer.update(model, nnx.state(model, nnx.Param))
    assert seen == [("Param", False)] * 2 + [("-", False)] * 2
    assert not hasattr(flr, "LiveView")
