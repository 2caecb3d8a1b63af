"""The optimizer zoo against optax, driven by ONE table: ``tests/zoo.py``'s ``ZOO``.

For every entry:

- cross-check with its optax twin (``flr.testing.run_cases``) for every bridge
  (``as_optax``, ``NNXOptimizer``) × dtype (float32, bfloat16) × parameter tree
  (a dict pytree; an NNX model with ``nnx.Conv``, ``nnx.LayerNorm`` and an
  ``nnx.List`` of ``nnx.Linear``): bit-identical where the entry says so, else
  within its ``rtol`` per step. All cases of an entry run in the same two
  jitted programs, one that creates the states and one that steps them
  (compile time dominates on CPU); a failing batch is re-run combination by
  combination so each test reports its own first step, key and deviation.
  Every measurement is recorded (``record_property('zoo', ...)``, and as JSON
  in the file named by ``$FLR_ZOO_REPORT`` when set).
- converges on a parabola and on Rosenbrock (hyperparameters from ``extra``);
- compiles once and keeps its state's structure and dtypes (the cross-check's
  step program is called twice and traced once), ignores unknown extra arguments
  (every cross-check passes ``foo=1``), and matches its twin inside
  ``optax.MultiSteps`` (an extra case of the same batch);
- and docs/zoo_table.rst, generated from the same table, is current.

Per-entry test settings are read from ``Entry.extra`` (see ``tests/zoo.py``).
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from zoo import ZOO, Entry

import flr_nnx as flr

STEPS = 8  # per cross-check: compile time, not steps, is the cost
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
BRIDGES = ("optax", "nnx")
TREES = ("dict", "model")
COMBOS = list(itertools.product(BRIDGES, DTYPES, TREES))
RESULTS: dict[str, dict[str, dict]] = {}
EXTRA = {"foo": 1}  # an argument no optimizer knows: both sides must ignore it


class Net(nnx.Module):
    """Conv, LayerNorm and an nnx.List of Linear layers: 5 parameters of ranks 1-4."""

    def __init__(self, dtype):
        kw = {"dtype": dtype, "param_dtype": dtype, "rngs": nnx.Rngs(0)}
        self.conv = nnx.Conv(2, 3, kernel_size=(2, 2), use_bias=False, **kw)
        self.norm = nnx.LayerNorm(3, use_bias=False, **kw)
        self.layers = nnx.List([nnx.Linear(3, 4, **kw), nnx.Linear(4, 2, use_bias=False, **kw)])


@functools.cache
def params_of(tree: str, dtype: str):
    dt = DTYPES[dtype]
    if tree == "model":
        return Net(dt)
    # Nested dict, list, and ranks 0-2; few leaves, as compile time grows with them.
    kernel = np.linspace(-1.0, 1.0, 20, dtype=np.float32).reshape(5, 4)
    return {
        "dense": {"kernel": jnp.asarray(kernel, dt)},
        "out": [jnp.full(4, 0.5, dt), jnp.asarray(-0.3, dt)],
    }


def loss_value(step, params):
    """A positive loss for optimizers that read it (PolyakSGD)."""
    del step
    leaves = jax.tree.leaves(params)
    return 1.0 + 0.5 * sum(jnp.sum(jnp.square(p.astype(jnp.float32))) for p in leaves)


def tolerance(entry: Entry, dtype: str) -> float:
    """0.0 (bit-identical) or the entry's documented per-step relative tolerance."""
    if dtype == "bfloat16" and "bf16_rtol" in entry.extra:
        return entry.extra["bf16_rtol"]
    return 0.0 if entry.bit_identical else entry.rtol


def cases_of(entry: Entry) -> list[flr.testing.Case]:
    """The eight combinations, then ``optax.MultiSteps`` of ``as_optax`` against
    MultiSteps of the twin. Both bridges of one dtype and tree share the same twin
    object, hence one optax run."""
    twins = {(dtype, tree): entry.twin() for dtype in DTYPES for tree in TREES}
    value_fn = loss_value if entry.needs_loss else None
    cases = [
        flr.testing.Case(
            entry.make(),
            twins[dtype, tree],
            params_of(tree, dtype),
            bridge=bridge,
            value_fn=value_fn,
            extra_args=EXTRA,
        )
        for bridge, dtype, tree in COMBOS
    ]
    cases.append(
        flr.testing.Case(
            optax.MultiSteps(flr.as_optax(entry.make()), every_k_schedule=2),
            optax.MultiSteps(entry.twin(), every_k_schedule=2),
            params_of("dict", "float32"),
            bridge="tx",
            value_fn=value_fn,
            extra_args=EXTRA,
        )
    )
    return cases


def run_entry(entry: Entry, steps: int = STEPS):
    """All cases of one entry in the same two jitted programs (docs/zoo_table.py too).

    The steps run in two calls of one program, so the run also tells whether it
    recompiled and whether any state changed signature.
    """
    run = flr.testing.run_cases(cases_of(entry), steps, chunks=2)
    return dict(zip([*COMBOS, "multisteps"], run.updates, strict=True)), run


@functools.cache
def crosscheck(name: str):
    """``run_entry`` of the named entry, or the exception it raised."""
    try:
        return run_entry(next(e for e in ZOO if e.name == name))
    except Exception as error:
        return error


def record(entry: Entry, combo: tuple[str, str, str], report) -> None:
    RESULTS.setdefault(entry.name, {})["/".join(combo)] = {
        "bit_identical": report.bit_identical,
        "max_deviation": report.max_deviation,
        "claimed_bit_identical": tolerance(entry, combo[1]) == 0.0,
    }
    path = os.environ.get("FLR_ZOO_REPORT")
    if path:
        with open(path, "w") as file:
            json.dump(RESULTS, file, indent=1, sort_keys=True)


@pytest.mark.parametrize(("bridge", "dtype", "tree"), COMBOS, ids=["-".join(c) for c in COMBOS])
@pytest.mark.parametrize("entry", ZOO, ids=lambda e: e.name)
def test_matches_twin(entry, bridge, dtype, tree, record_property):
    rtol = tolerance(entry, dtype)
    batch = crosscheck(entry.name)
    if isinstance(batch, Exception):
        # Re-run this combination alone, so the failure is this combination's own.
        report = flr.testing.assert_matches(
            entry.make(),
            entry.twin(),
            params_of(tree, dtype),
            steps=STEPS,
            rtol=rtol,
            bridge=bridge,
            value_fn=loss_value if entry.needs_loss else None,
            extra_args=EXTRA,
        )
    else:
        hook, ref = batch[0][(bridge, dtype, tree)]
        report = flr.testing.compare_updates(hook, ref, name=entry.name, bridge=bridge, rtol=rtol)
    record(entry, (bridge, dtype, tree), report)
    record_property("zoo", f"{entry.name} {bridge}/{dtype}/{tree}: {report}")
    if rtol == 0.0:
        assert report.bit_identical
    else:
        assert report.max_deviation <= rtol


# -- convergence ----------------------------------------------------------------

CURVATURE = jnp.array([[1.0, 3.0], [0.5, 2.0]])
TARGET = {"w": jnp.array([[1.0, -2.0], [0.5, 1.5]]), "b": jnp.array([-1.0, 0.25])}


def parabola(params):
    return 0.5 * (
        jnp.sum(CURVATURE * (params["w"] - TARGET["w"]) ** 2)
        + jnp.sum((params["b"] - TARGET["b"]) ** 2)
    )


def rosenbrock(params):
    x, y = params["xy"][0], params["xy"][1]
    return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2


PROBLEMS = {
    "parabola": (parabola, {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}),
    "rosenbrock": (rosenbrock, {"xy": jnp.array([-1.0, 1.0])}),
}


@functools.cache
def converge(name: str):
    """Final/initial loss on both problems, trained through ``as_optax`` in one jit."""
    entry = next(e for e in ZOO if e.name == name)
    steps = entry.extra.get("converge_steps", 2000)
    make = entry.extra.get("converge", entry.make)
    makers = {"parabola": make, "rosenbrock": entry.extra.get("rosenbrock", make)}
    txs = {problem: flr.as_optax(makers[problem]()) for problem in PROBLEMS}

    def train(problem):
        loss_fn, params = PROBLEMS[problem]
        tx = txs[problem]

        def body(carry, _):
            params, state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, state = tx.update(grads, state, params, value=loss)
            return (optax.apply_updates(params, updates), state), None

        (final, _), _ = jax.lax.scan(body, (params, tx.init(params)), None, length=steps)
        return loss_fn(params), loss_fn(final)

    return jax.device_get(jax.jit(lambda: {p: train(p) for p in PROBLEMS})())


@pytest.mark.parametrize("problem", list(PROBLEMS))
@pytest.mark.parametrize("entry", ZOO, ids=lambda e: e.name)
def test_converges(entry, problem):
    start, final = converge(entry.name)[problem]
    assert np.isfinite(final), f"{entry.name} diverged on {problem}"
    factor = {"parabola": 1e-3, "rosenbrock": 1e-2}[problem]
    assert final < factor * start, f"{entry.name} on {problem}: loss {start:.3g} -> {final:.3g}"


# -- compile once, stable state, extra arguments, MultiSteps -------------------


def batch_of(entry: Entry):
    batch = crosscheck(entry.name)
    if isinstance(batch, Exception):
        raise batch
    return batch


@pytest.mark.parametrize("entry", ZOO, ids=lambda e: e.name)
def test_compiles_once_keeps_state_signature_ignores_unknown_args(entry):
    """The cross-check's step program (both bridges, every dtype and tree, called
    with ``foo=1``) is called twice: traced once, every state keeps its tree
    structure, shapes and dtypes."""
    _, run = batch_of(entry)
    assert run.traces == 1, "recompiled after the first call"
    assert len(run.signatures) == 3
    assert run.signatures[1] == run.signatures[0], "a state changed structure or dtype"
    assert run.signatures[2] == run.signatures[0], "a state changed structure or dtype"


@pytest.mark.parametrize("entry", ZOO, ids=lambda e: e.name)
def test_compiled_step_is_no_bigger_than_the_twins(entry):
    """The compiled step (update + apply, donated) has no more kernels and moves no more
    bytes than the optax twin's: per-step values are transient, counts exist only where
    a schedule needs them. A structural check, free of timing noise."""
    from test_benchmarks import load_benchmarks

    kernel_count = load_benchmarks().kernel_count
    params = {f"p{i}": jnp.full((16, 8), i + 1.0) for i in range(4)}
    params["b"] = jnp.ones((8,))
    grads = jax.tree.map(lambda p: 0.01 * p, params)

    def size(tx):
        extra = {"value": jnp.float32(1.0)} if entry.needs_loss else {}

        def step(p, s, g):
            updates, s = tx.update(g, s, p, **extra)
            return optax.apply_updates(p, updates), s

        compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, tx.init(params), grads)
        compiled = compiled.compile()
        return kernel_count(compiled.as_text()), compiled.cost_analysis()["bytes accessed"]

    (flr_kernels, flr_bytes), (kernels, nbytes) = (
        size(flr.as_optax(entry.make())),
        size(entry.twin()),
    )
    assert flr_kernels <= kernels and flr_bytes <= nbytes


@pytest.mark.parametrize("entry", ZOO, ids=lambda e: e.name)
def test_multisteps_of_as_optax_matches_multisteps_of_twin(entry):
    outputs, _ = batch_of(entry)
    hook, ref = outputs["multisteps"]
    # Inside MultiSteps' lax.cond XLA fuses each side's arithmetic on its own, so a
    # bit-identical entry may round differently by an ulp: per-step tolerance >= 1e-6.
    rtol = max(tolerance(entry, "float32"), 1e-6)
    # Raises flr.testing.MismatchError with the step and key where they part.
    report = flr.testing.compare_updates(hook, ref, name=entry.name, rtol=rtol)
    assert report.steps == STEPS and report.max_deviation <= rtol
    # Every other step is a mini-step: the updates are zeros there, not elsewhere.
    assert all(not np.any(leaf[0::2]) for leaf in jax.tree.leaves(ref))
    assert any(np.any(leaf[1::2]) for leaf in jax.tree.leaves(ref))


# -- the docs table -----------------------------------------------------------------


def load_zoo_table():
    path = pathlib.Path(__file__).resolve().parents[1] / "docs" / "zoo_table.py"
    spec = importlib.util.spec_from_file_location("zoo_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_zoo_table_is_current():
    """docs/zoo_table.rst lists every entry with its twin, reason and lines, and its
    measurements agree with this run's (which are a prefix of its steps)."""
    zoo_table = load_zoo_table()
    assert zoo_table.stale() == [], "regenerate it: python docs/zoo_table.py"
    for row in zoo_table.parse(zoo_table.TABLE.read_text()):
        name = row[0].strip("`")
        for cell, dtype in ((row[2], "float32"), (row[3], "bfloat16")):
            measured = [m for k, m in RESULTS.get(name, {}).items() if f"/{dtype}/" in k]
            if len(measured) < len(BRIDGES) * len(TREES):
                continue  # this run did not cross-check it (e.g. `-k`)
            if cell == "bit-identical":
                assert all(m["bit_identical"] for m in measured), (name, dtype)
            else:
                bound = float(cell.split()[-1])
                # Another compile of the same steps: allow rounding-level slack.
                assert max(m["max_deviation"] for m in measured) <= 2 * bound + 1e-12
