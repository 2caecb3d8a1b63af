"""The benchmark script runs end to end in its smoke mode (no timing assertions)."""

import importlib.util
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flr_nnx as flr

RUN = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


def load_benchmarks():
    spec = importlib.util.spec_from_file_location("flr_benchmarks_run", RUN)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defined
    spec.loader.exec_module(module)
    return module


def test_smoke_run_writes_table_and_plot(tmp_path):
    results = load_benchmarks().main(["--smoke", "--out", str(tmp_path)])
    text = (tmp_path / "benchmarks.md").read_text()
    for section in ("Update step", "NNX", "Trace + compile", "Init time", "Machine:"):
        assert section in text
    assert jax.__version__ in text
    png = (tmp_path / "_static" / "benchmarks.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    # Every implementation was timed, compiled and checked for donation.
    case = results["optax_cases"][0]
    assert set(case["stats"]) == {"optax.adam", "flr as_optax(Adam)", "flr as_optax(Packed(Adam))"}
    for built in case["built"].values():
        assert built.alias_bytes > 0 and built.bytes_per_param > 0
    assert all(stat.median > 0 for stat in results["nnx"]["stats"].values())
    # One optimizer per family, each timed against its optax twin.
    families = {row["family"] for row in results["families"]}
    assert {"first-order", "line search", "schedule-free"} <= families
    assert all(set(row["stats"]) == {"optax", "flr"} for row in results["families"])
    assert "one optimizer per family" in text


# -- flr.compose.Packed: the opt-in multi-tensor path --------------------------


def mixed_params(bf16=True):
    keys = jax.random.split(jax.random.key(3), 5)
    params = {
        "dense": {"kernel": jax.random.normal(keys[0], (5, 7)), "bias": jnp.zeros(7)},
        "scalar": jax.random.normal(keys[1], ()),
        "half": jax.random.normal(keys[2], (3, 4)).astype(jnp.bfloat16),
        "empty": jnp.zeros((0, 3)),
        "count": jnp.array(3),  # an int leaf: left alone by both paths
    }
    if not bf16:
        del params["half"]
    return params


def grads_at(i, params):
    key = jax.random.fold_in(jax.random.key(4), i)
    return jax.tree.map(
        lambda p: (
            (jax.random.normal(key, p.shape) * (1 + i % 5)).astype(p.dtype)
            if jnp.issubdtype(p.dtype, jnp.inexact)
            else p
        ),
        params,
    )


def bit_equal(a, b):
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def run_optax(tx, params, steps=5):
    state, out = tx.init(params), []

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return updates, state

    for i in range(steps):
        updates, state = step(params, state, grads_at(i, params))
        out.append(updates)
        params = jax.tree.map(
            lambda p, u: p + u if jnp.issubdtype(p.dtype, jnp.inexact) else p, params, updates
        )
    return out


def elementwise_tutorial_adam():
    from tutorial_adam import Adam as TutorialAdam

    # The tutorial's call_param is elementwise and its call_model only counts steps.
    class ElementwiseTutorialAdam(TutorialAdam):
        elementwise = True

    return ElementwiseTutorialAdam(0.01)


@pytest.mark.parametrize(
    "make",
    [lambda: flr.optim.Adam(0.01), lambda: flr.optim.Adam(0.01, nesterov=True, eps_root=1e-8)],
    ids=["Adam", "NAdam"],
)
def test_packed_is_bit_identical_to_per_leaf_as_optax(make):
    params = mixed_params()
    packed = run_optax(flr.as_optax(flr.compose.Packed(make())), params)
    per_leaf = run_optax(flr.as_optax(make()), params)
    assert bit_equal(packed, per_leaf)


def test_packed_tutorial_adam_matches_per_leaf():
    # The tutorial computes its bias corrections inside call_param, so XLA fuses
    # `b ** t` into every parameter's loop; on a shape-() parameter that scalar
    # code may round differently from the vector loop of the packed buffer (we
    # measured 1 ulp on the scalar leaf at the first step). Every other leaf is
    # bit-identical. flr.optim.Adam computes them once in call_model: no difference.
    params = mixed_params(bf16=False)  # its updates are float32 whatever the parameter
    packed = run_optax(flr.as_optax(flr.compose.Packed(elementwise_tutorial_adam())), params)
    per_leaf = run_optax(flr.as_optax(elementwise_tutorial_adam()), params)
    for a, b in zip(packed, per_leaf, strict=True):
        assert bit_equal(
            {k: v for k, v in a.items() if k != "scalar"},
            {k: v for k, v in b.items() if k != "scalar"},
        )
        np.testing.assert_allclose(a["scalar"], b["scalar"], rtol=2e-7, atol=0)


def test_packed_is_bit_identical_to_per_leaf_in_nnx():
    from flax import nnx

    def train(opt):
        model = nnx.Sequential(
            nnx.Linear(3, 8, rngs=nnx.Rngs(0)), nnx.Linear(8, 2, rngs=nnx.Rngs(1))
        )
        optimizer = flr.NNXOptimizer(model, opt, wrt=nnx.Param)
        x = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)

        @nnx.jit
        def step(model, optimizer):
            grads = nnx.grad(lambda m: (m(x) ** 2).mean())(model)
            optimizer.update(model, grads)

        for _ in range(4):
            step(model, optimizer)
        return nnx.state(model, nnx.Param)

    packed = train(flr.compose.Packed(flr.optim.Adam(0.01)))
    assert bit_equal(packed, train(flr.optim.Adam(0.01)))


def test_packed_state_is_one_buffer_per_dtype():
    state = flr.as_optax(flr.compose.Packed(flr.optim.Adam(0.01))).init(mixed_params())
    mu = state.tree["inner"]["mu"]["packed"]
    assert {k: v.shape for k, v in mu.items()} == {"float32": (5 * 7 + 7 + 1,), "bfloat16": (12,)}


def test_packed_refuses_optimizers_not_declared_elementwise():
    from tutorial_adam import Adam as TutorialAdam

    with pytest.raises(flr.HyperparameterError, match=r"elementwise = True"):
        flr.compose.Packed(TutorialAdam())
    with pytest.raises(flr.HyperparameterError, match=r"hook optimizer"):
        flr.compose.Packed(lambda grads: grads)
