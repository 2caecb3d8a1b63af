"""Complex parameters: every built-in treats them exactly as its optax twin does.

optax squares a complex gradient as :math:`|g|^2` (``numerics.abs_sq``); ``g**2``
would be complex and silently wrong. For every ``tests/zoo.py`` entry, and a few
variants that reach the other complex-sensitive code paths (Lion's complex sign,
AMSGrad's ``maximum``, RMSProp without centering, Adafactor's momentum, Muon's
AOL step and adaptive scaling), complex64 parameters of several shapes (a
scalar included) are cross-checked step by step against the optax twin through
both bridges, in one jitted program per entry. Where optax refuses complex
numbers (``optax.clip``) or silently drops their imaginary part (a real
``mu_dtype``), flr_nnx raises :class:`flr_nnx.ComplexParameterError` naming the
parameter, and the test runs optax to show that it does.
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from optax.contrib._muon import orthogonalize_via_newton_schulz
from zoo import ZOO, Entry

import flr_nnx as flr

# RAdam's rectified step starts once rho_t > 5, at step 6: 8 steps reach it.
STEPS = 8
BRIDGES = ("optax", "nnx")


class ComplexNet(nnx.Module):
    """Complex Params of ranks 0-2 (two matrices of different shapes, for Muon)."""

    def __init__(self):
        def param(shape, phase):
            size = int(np.prod(shape))
            re = np.linspace(-1.0, 1.0, size, dtype=np.float32)
            im = np.cos(np.arange(size, dtype=np.float32) + phase)
            return nnx.Param(jnp.asarray((re + 1j * im).reshape(shape), jnp.complex64))

        self.kernel = param((3, 4), 0.0)
        self.proj = param((4, 2), 1.0)
        self.bias = param((3,), 2.0)
        self.scale = param((), 3.0)


def loss_value(step, params):
    """A positive real loss for PolyakSGD."""
    del step
    return 1.0 + 0.5 * sum(jnp.sum(flr.helpers.abs_sq(p)) for p in jax.tree.leaves(params))


# Complex-capable variants that reach code paths the ZOO entries do not.
VARIANTS = [
    Entry("AMSGrad[mu_dtype=None]", lambda: flr.optim.AMSGrad(1e-2), lambda: optax.amsgrad(1e-2)),
    Entry(
        "Lion[decay]",
        lambda: flr.optim.Lion(3e-3, weight_decay=0.1),
        lambda: optax.lion(3e-3, weight_decay=0.1),
    ),
    Entry(
        "RMSProp[eps outside sqrt]",
        lambda: flr.optim.RMSProp(1e-2, eps_in_sqrt=False),
        lambda: optax.rmsprop(1e-2, eps_in_sqrt=False),
    ),
    Entry(
        "Adafactor[momentum, unfactored]",
        lambda: flr.optim.Adafactor(
            1e-2, factored=False, momentum=0.9, dtype_momentum=jnp.complex64
        ),
        lambda: optax.adafactor(1e-2, factored=False, momentum=0.9, dtype_momentum=jnp.complex64),
    ),
    Entry(
        "Muon[aol, adaptive]",
        lambda: flr.optim.Muon(1e-2, preconditioning="aol", adaptive=True, weight_decay=0.1),
        lambda: optax.contrib.muon(1e-2, preconditioning="aol", adaptive=True, weight_decay=0.1),
    ),
    Entry(
        "Chain[global norm]",
        lambda: flr.compose.Chain(
            flr.optim.ClipByGlobalNorm(1.0),
            flr.optim.Adam(1.0),
            flr.optim.AddDecayedWeights(1e-2),
            flr.optim.ScaleByLearningRate(1e-2),
        ),
        lambda: optax.chain(
            optax.clip_by_global_norm(1.0),
            optax.scale_by_adam(),
            optax.add_decayed_weights(1e-2),
            optax.scale_by_learning_rate(1e-2),
        ),
    ),
]

# Where optax has no right answer for complex parameters, flr_nnx raises instead:
# the entry, then how optax behaves ("raises" a ValueError, or keeps a "real state"
# for a complex parameter: its imaginary part is silently dropped).
REFUSED = {
    "AMSGrad": "real state",  # mu_dtype=bfloat16
    "Lion": "real state",  # mu_dtype=bfloat16
    "Chain(blocks)": "raises",  # optax.clip: complex numbers have no order
    # optax.contrib.mechanize keeps complex learners, then clips and maxes them: no order
    "Mechanize(Adam)": "complex state",
    "SM3": "raises",  # optax.sm3 refuses complex parameters
    "ADOPT": "raises",  # its clipping: complex numbers have no order
    "MADGRAD": "raises",  # jnp.cbrt takes no complex numbers (a TypeError)
    "Sophia": "raises",  # its clip raises on complex numbers, as optax's jnp.clip does
    "Rprop": "raises",  # optax.rprop clips: complex numbers have no order
    "Adadelta": "complex state",  # optax.adadelta squares complex gradients (g**2)
    "OptimisticAdamV2": "real state",  # mu_dtype=bfloat16
    "GaLore": "complex state",  # optax.contrib.galore's SVD drops the imaginary part
}
REFUSED_VARIANTS = [
    Entry(
        "Muon[schatten]",  # optax's Schatten step forms X X^T, not X X^H
        lambda: flr.optim.Muon(1e-2, preconditioning="schatten"),
        lambda: optax.contrib.muon(1e-2, preconditioning="schatten"),
    ),
    Entry(
        "Adafactor[float32 momentum]",
        lambda: flr.optim.Adafactor(1e-2, momentum=0.9),
        lambda: optax.adafactor(1e-2, momentum=0.9),
    ),
    Entry(
        "SGD[float32 accumulator]",
        lambda: flr.optim.SGD(1e-2, momentum=0.9, accumulator_dtype=jnp.float32),
        lambda: optax.sgd(1e-2, momentum=0.9, accumulator_dtype=jnp.float32),
    ),
]
CHECKED = [e for e in ZOO if e.name not in REFUSED] + VARIANTS


@functools.cache
def crosscheck(name: str):
    """Both bridges of one entry in one jitted program: ``{bridge: (hook, optax)}``."""
    entry = next(e for e in CHECKED if e.name == name)
    tx, model = entry.twin(), ComplexNet()
    value_fn = loss_value if entry.needs_loss else None
    cases = [
        flr.testing.Case(entry.make(), tx, model, bridge=bridge, value_fn=value_fn)
        for bridge in BRIDGES
    ]
    return dict(zip(BRIDGES, flr.testing.run_cases(cases, STEPS).updates, strict=True))


@pytest.mark.parametrize("bridge", BRIDGES)
@pytest.mark.parametrize("entry", CHECKED, ids=lambda e: e.name)
def test_complex_matches_twin(entry, bridge):
    hook, ref = crosscheck(entry.name)[bridge]
    rtol = 0.0 if entry.bit_identical else entry.rtol
    report = flr.testing.compare_updates(hook, ref, name=entry.name, bridge=bridge, rtol=rtol)
    if rtol == 0.0:
        assert report.bit_identical, report
    else:
        assert report.max_deviation <= rtol, report
    # The updates really are complex (not a real computation in complex clothing).
    for leaf in jax.tree.leaves(ref):
        assert leaf.dtype == np.complex64
        assert np.any(np.asarray(leaf).imag != 0)


def test_complex_gradients_are_complex():
    # The cross-checks' gradients have imaginary parts, so g**2 != |g|^2 shows.
    grads = flr.testing.default_grads(jnp.int32(0), {"w": jnp.zeros((2, 3), jnp.complex64)})
    assert grads["w"].dtype == jnp.complex64
    assert np.all(np.asarray(flr.helpers.abs_sq(grads["w"])) != np.asarray(grads["w"] ** 2).real)


def _optax_behaviour(entry: Entry) -> str:
    params = nnx.as_pure(nnx.state(ComplexNet(), nnx.Param))
    tx = entry.twin()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            state = jax.jit(tx.init)(params)
            grads = flr.testing.default_grads(jnp.int32(0), params)
            jax.jit(tx.update)(grads, state, params)
        except (ValueError, TypeError):
            return "raises"
    # JAX warns as optax casts the complex moment to its real state dtype.
    dropped = any("Casting from complex to real" in str(w.message) for w in caught)
    real = [x for x in jax.tree.leaves(state) if jnp.ndim(x) > 0 and not jnp.iscomplexobj(x)]
    return "real state" if real and dropped else "complex state"


@pytest.mark.parametrize("bridge", BRIDGES)
@pytest.mark.parametrize(
    "entry", [e for e in ZOO if e.name in REFUSED] + REFUSED_VARIANTS, ids=lambda e: e.name
)
def test_complex_refused_where_optax_has_no_answer(entry, bridge):
    expected = REFUSED.get(entry.name, "raises" if "schatten" in entry.name else "real state")
    if entry.name != "Muon[schatten]":  # see test_optax_schatten_has_no_answer_...
        assert _optax_behaviour(entry) == expected
    # optax's side of the shared step warns as it drops the imaginary part; ours raises.
    with (
        warnings.catch_warnings(),
        pytest.raises(flr.ComplexParameterError, match=r"parameter \(") as caught,
    ):
        warnings.filterwarnings("ignore", "Casting from complex to real", DeprecationWarning)
        flr.testing.assert_matches(entry.make(), entry.twin(), ComplexNet(), steps=1, bridge=bridge)
    assert isinstance(caught.value, ValueError)  # the kind of error optax raises


def test_optax_schatten_has_no_answer_for_complex_matrices():
    # Why Muon refuses preconditioning='schatten' for complex matrices: optax's
    # Schatten step forms X X^T, and on these complex matrices its iteration
    # ends in NaN, where Frobenius preconditioning orthogonalizes them.
    coeffs = jnp.asarray((3.4445, -4.7750, 2.0315))
    for x in (ComplexNet().kernel[...], ComplexNet().proj[...]):
        good = orthogonalize_via_newton_schulz(x, coeffs, 5, "frobenius")
        singular = np.linalg.svd(np.asarray(good), compute_uv=False)
        assert np.all((singular > 0.5) & (singular < 1.5)), singular
        bad = orthogonalize_via_newton_schulz(x, coeffs, 5, "schatten")
        assert np.all(np.isnan(np.asarray(bad)))
