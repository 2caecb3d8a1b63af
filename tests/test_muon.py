"""Muon against optax.contrib.muon with several matrices and a stacked parameter, one jit."""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax.contrib import MuonDimensionNumbers

import flr_nnx as flr

SHAPES = {"a": (16, 32), "b": (32, 8), "c": (24, 24), "stack": (3, 16, 12), "v": (16,)}
DIMS = {
    "a": MuonDimensionNumbers(),
    "b": MuonDimensionNumbers(),
    "c": MuonDimensionNumbers(),
    "stack": MuonDimensionNumbers(1, 2),  # three stacked 16x12 layers
    "v": None,  # Adam
}
# Several matrices in one program is what once cost bit-identity: optax divides
# every matrix by one shared bias correction, which XLA keeps as a division, where
# a divisor per matrix (single use) is rewritten as a reciprocal multiplication.
CONFIGS = {
    "nesterov": {},
    "momentum+decay": {"nesterov": False, "weight_decay": 0.1, "adam_weight_decay": 0.1},
}
BRIDGES = ("optax", "nnx")
STEPS = 20


def make(config: str) -> flr.optim.Muon:
    return flr.optim.Muon(1e-2, muon_weight_dimension_numbers=DIMS, **CONFIGS[config])


@functools.cache
def crosscheck(dtype: str) -> dict[tuple[str, str], tuple]:
    """Every config through both bridges, ``STEPS`` steps in one jitted program."""
    params = {
        k: jnp.asarray(np.random.default_rng(i).normal(size=s), dtype)
        for i, (k, s) in enumerate(SHAPES.items())
    }
    keys, cases = [], []
    for config, kwargs in CONFIGS.items():
        tx = optax.contrib.muon(1e-2, muon_weight_dimension_numbers=DIMS, **kwargs)
        for bridge in BRIDGES:
            keys.append((config, bridge))
            cases.append(flr.testing.Case(make(config), tx, params, bridge=bridge))
    return dict(zip(keys, flr.testing.run_cases(cases, STEPS).updates, strict=True))


@pytest.mark.parametrize("bridge", BRIDGES)
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_muon_several_matrices_and_a_stacked_parameter_are_bit_identical(dtype, config, bridge):
    hook, ref = crosscheck(dtype)[config, bridge]
    report = flr.testing.compare_updates(hook, ref, name="Muon", bridge=bridge)
    assert report.bit_identical, report
    assert report.steps == STEPS
    for key in SHAPES:
        assert hook[key].dtype == ref[key].dtype == jnp.dtype(dtype)
        np.testing.assert_array_equal(np.asarray(hook[key]), np.asarray(ref[key]), err_msg=key)


def test_muon_crosscheck_can_fail():
    # The other configuration's optax updates must not pass as these ones.
    hook, _ = crosscheck("float32")["nesterov", "optax"]
    _, other = crosscheck("float32")["momentum+decay", "optax"]
    with pytest.raises(flr.testing.MismatchError):
        flr.testing.compare_updates(hook, other, name="Muon")
