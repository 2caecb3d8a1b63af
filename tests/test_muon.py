"""Muon against optax.contrib.muon with several matrices and a stacked parameter, one jit."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax.contrib import MuonDimensionNumbers

import flr_nnx as flr
from flr_nnx.testing._assert_matches import _Case, _compare, _run_cases

SHAPES = {"a": (16, 32), "b": (32, 8), "c": (24, 24), "stack": (3, 16, 12), "v": (16,)}
DIMS = {
    "a": MuonDimensionNumbers(),
    "b": MuonDimensionNumbers(),
    "c": MuonDimensionNumbers(),
    "stack": MuonDimensionNumbers(1, 2),  # three stacked 16x12 layers
    "v": None,  # Adam
}
# Measured (CPU, jax 0.10.2, optax 0.2.8): max per-step relative deviation 7.6e-5
# over 20 steps, ~5e-5 from step 0 on every matrix; the Adam leaf is bit-identical.
# The docstring of flr_nnx.optim.Muon quotes this figure.
RTOL = 1e-4


def test_muon_several_matrices_and_a_stacked_parameter_match_optax():
    params = {
        k: jnp.asarray(np.random.default_rng(i).normal(size=s), jnp.float32)
        for i, (k, s) in enumerate(SHAPES.items())
    }
    tx = optax.contrib.muon(1e-2, muon_weight_dimension_numbers=DIMS)

    def make():
        return flr.optim.Muon(1e-2, muon_weight_dimension_numbers=DIMS)

    bridges = ("optax", "nnx")
    run = _run_cases([_Case(make(), tx, params, b) for b in bridges], 20)
    for (hook, ref), bridge in zip(run.outputs, bridges, strict=True):
        report = _compare(make(), hook, ref, bridge, RTOL, 0.0)
        assert report.max_deviation <= RTOL, report
        assert np.array_equal(hook["v"], ref["v"])  # the Adam branch is bit-identical
    with pytest.raises(flr.testing.MismatchError):  # the check can fail
        _compare(make(), *run.outputs[0], "optax", RTOL / 100, 0.0)
