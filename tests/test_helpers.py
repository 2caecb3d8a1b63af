"""flr.helpers: the layering rule of the zoo, and the helpers' contracts."""

from __future__ import annotations

import ast
import inspect
import pathlib
import sys
from typing import ClassVar

import jax.numpy as jnp
import pytest

import flr_nnx as flr

ZOO_DIR = pathlib.Path(flr.optim.__file__).parent
ALLOWED = {"flr_nnx._optimizer", "flr_nnx.helpers", "flr_nnx._errors", "flr_nnx.optim"}
THIRD_PARTY = {"jax", "numpy", "optax", "__future__"}


def _imports(path: pathlib.Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append(node.module or "")
    return names


@pytest.mark.parametrize("path", sorted(ZOO_DIR.glob("*.py")), ids=lambda p: p.name)
def test_zoo_imports_only_base_class_helpers_and_errors(path):
    for name in _imports(path):
        top = name.split(".")[0]
        if top == "flr_nnx":
            ok = any(name == a or name.startswith(a + ".") for a in ALLOWED)
            ok = ok and not name.startswith("flr_nnx.helpers._")
            assert ok, f"{path.name} imports {name}: the zoo may use only the public helpers"
        else:
            assert top in THIRD_PARTY or top in sys.stdlib_module_names, (path.name, name)


def test_set_hypers_checks_by_name_and_class_overrides():
    class Mine(flr.optim.Optimizer):
        hyper_bounds: ClassVar = {"momentum": flr.helpers.UNIT_CLOSED}

        def __init__(self, b1=0.9, momentum=None, eps=1e-8):
            flr.helpers.set_hypers(self, b1=b1, momentum=momentum, eps=eps)

    assert Mine().momentum is None and Mine(momentum=1.0).momentum == 1.0
    expected = r"Mine\(b1=1.0\): expected b1 in \[0.0, 1.0\)"
    with pytest.raises(flr.HyperparameterError, match=expected):
        Mine(b1=1.0)
    with pytest.raises(flr.HyperparameterError, match=r"expected eps in >= 0.0"):
        Mine(eps=-1.0)
    with pytest.raises(ValueError):
        flr.optim.SGD(0.1, momentum=1.0)  # SGD keeps the default bound [0, 1)
    flr.optim.RMSProp(0.1, momentum=1.0)  # RMSProp overrides it: [0, 1]


def test_with_defaults_keeps_optax_order_and_new_defaults():
    sig = inspect.signature(flr.optim.NAdam)
    assert list(sig.parameters)[5] == "mu_dtype"
    assert sig.parameters["nesterov"].default is True
    assert flr.optim.NAdam(0.1, 0.9, 0.999, 1e-8, 0.0, jnp.bfloat16).mu_dtype == jnp.bfloat16
    assert inspect.signature(flr.optim.NAdamW).parameters["nesterov"].default is True
    assert flr.optim.NAdamW(0.1, weight_decay=0.5).nesterov
    with pytest.raises(flr.ArgumentError, match=r"^NAdam\(learning_rate"):
        flr.optim.NAdam(lr=0.1)


def test_decay_rule_selects_through_the_mask_and_skips_constant_zero():
    mask = flr.helpers.Mask({"a": True, "b": False})
    grads = {("a",): jnp.ones(1), ("b",): jnp.ones(1)}
    assert flr.helpers.decayed(0.1, mask, grads) == {("a",)}
    assert flr.helpers.decayed(0.0, mask, grads) == frozenset()
    assert flr.helpers.decayed(lambda count: 0.0, mask, grads) == {("a",)}  # a schedule counts


def test_global_norm_matches_optax_bit_for_bit():
    import optax

    tree = {"a": jnp.arange(5.0) / 7, "b": jnp.array([1 + 2j, 3 - 1j], jnp.complex64)}
    flat = {(k,): v for k, v in sorted(tree.items())}
    assert flr.helpers.global_norm(flat) == optax.tree.norm(tree)
