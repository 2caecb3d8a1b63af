"""Cross-checking a hook optimizer against an optax transformation, step by step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optax
from flax import nnx
from flax.nnx import filterlib

from flr_nnx._bridges import is_optax, optax_name
from flr_nnx._errors import BridgeError, HyperparameterError, describe
from flr_nnx._optimizer import Optimizer
from flr_nnx.testing._compare import Bridge, MatchReport, compare_updates
from flr_nnx.testing._run import Case, GradsFn, ValueFn, run_cases


def _check_args(bridge: Any, steps: int, rtol: float, atol: float) -> None:
    if bridge not in ("optax", "nnx"):
        raise HyperparameterError(
            f"assert_matches(bridge={bridge!r}): expected 'optax' or 'nnx'. Fix: pass one of those."
        )
    if steps < 1:
        raise HyperparameterError(
            f"assert_matches(steps={steps!r}): expected at least 1 step. Fix: pass steps >= 1."
        )
    if rtol < 0 or atol < 0:
        raise HyperparameterError(
            f"assert_matches(rtol={rtol!r}, atol={atol!r}): tolerances must be >= 0. "
            "Fix: pass rtol=0 and atol=0 to require bit-identical updates."
        )


def _check_sides(opt: Any, tx: Any) -> None:
    """The hook optimizer comes first and the optax reference second; say so when not."""
    if isinstance(tx, Optimizer) and is_optax(opt):
        raise BridgeError(
            f"assert_matches(opt, tx, ...) got {optax_name(opt)} as `opt` and the hook "
            f"optimizer {type(tx).__name__} as `tx`: the arguments are swapped. Fix: pass the "
            "hook optimizer under test first and its optax twin second: "
            "`flr.testing.assert_matches(hook_opt, optax_tx, params)`."
        )
    if not isinstance(opt, Optimizer):
        raise BridgeError(
            f"assert_matches(opt, tx, ...) got {describe(opt)} as `opt`; expected the hook "
            "optimizer under test (a flr.optim.Optimizer). Fix: pass it first, e.g. "
            "`flr.testing.assert_matches(flr.optim.Adam(1e-3), optax.adam(1e-3), params)`."
        )
    if not is_optax(tx):
        raise BridgeError(
            f"assert_matches(opt, tx, ...) got {describe(tx)} as `tx`; expected the optax "
            "transformation to compare with. Fix: pass an optax transformation (a hook "
            "optimizer as the reference: flr.as_optax(reference))."
        )


def assert_matches(
    opt: Optimizer,
    tx: optax.GradientTransformation,
    params: Any,
    *,
    grads_fn: GradsFn | None = None,
    value_fn: ValueFn | None = None,
    steps: int = 10,
    rtol: float = 0.0,
    atol: float = 0.0,
    bridge: Bridge = "optax",
    wrt: filterlib.Filter = nnx.Param,
    extra_args: Mapping[str, Any] | None = None,
    jit_each_step: bool = False,
) -> MatchReport:
    r"""Runs a hook optimizer and an optax transformation side by side and compares them.

    Both sides run in the same ``jax.jit``-compiled ``lax.scan`` over ``steps``
    steps (the states are created by another jitted program), on the same
    gradients and the same parameters: after each step the parameters move by
    optax's update, so every step compares the two updates from the same inputs,
    while each side keeps its own state. Step ``i`` passes when, for every
    parameter,

    .. math::

        \max |u^{hook}_i - u^{optax}_i| \le \mathrm{atol} + \mathrm{rtol} \cdot \max |u^{optax}_i|

    and with ``rtol = atol = 0`` the updates must be bit-identical. Note that XLA
    on CPU contracts ``a * b + c`` into fused multiply-adds depending on the
    surrounding program, so the same arithmetic can round differently by one ulp
    in some programs.

    Args:
        opt: the hook optimizer under test (not mutated).
        tx: its optax twin.
        params: the initial parameters: a pytree of arrays, or an NNX module
            (its ``wrt`` Variables are the parameters; the module is not changed).
        grads_fn: ``grads_fn(step, params) -> grads``, called under jit with an
            int32 ``step`` (0-based) and the current parameters. Default:
            :func:`default_grads`; if only ``value_fn`` is given, its gradient.
        value_fn: ``value_fn(step, params) -> loss``; when given, the loss is
            passed to both sides as optax's ``value=`` (for optimizers that
            read it, like ``optax.polyak_sgd``).
        steps: how many steps to compare.
        rtol: relative tolerance per step, per parameter (see above).
        atol: absolute tolerance per step, per parameter.
        bridge: run the hook optimizer through ``'optax'`` (:func:`flr_nnx.as_optax`)
            or ``'nnx'`` (:class:`flr_nnx.NNXOptimizer`; a pytree of arrays is
            held in a module of ``nnx.Param`` for it).
        wrt: which Variables of an NNX module are parameters.
        extra_args: more keyword arguments for both sides' ``update`` (e.g.
            ``{"foo": 1}``: optimizers must ignore what they do not know).
        jit_each_step: instead of one scan, compile each side's update as a
            program of its own and call it once per step, as a training loop
            that jits the update alone does (see :func:`run_cases`).

    Returns:
        A :class:`MatchReport`: the max deviation per step and whether all
        updates were bit-identical.

    Raises:
        MismatchError: at the first step and parameter where the two sides
            part (or where their update dtypes or structures differ). It is an
            ``AssertionError`` and a :class:`flr_nnx.FlrError`.
        BridgeError: if ``opt`` is not a hook optimizer or ``tx`` not an optax
            transformation (e.g. the two swapped).

    Example:
        >>> import jax.numpy as jnp, optax
        >>> import flr_nnx as flr
        >>> params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
        >>> report = flr.testing.assert_matches(flr.optim.Adam(1e-2), optax.adam(1e-2), params)
        >>> report.bit_identical, report.steps
        (True, 10)
        >>> try:  # twice the learning rate: they part at once
        ...     flr.testing.assert_matches(flr.optim.Adam(1e-2), optax.adam(2e-2), params)
        ... except flr.testing.MismatchError as error:
        ...     print(error.step, error.key, round(error.deviation, 3))
        0 ('b',) 0.5
    """
    _check_args(bridge, steps, rtol, atol)
    _check_sides(opt, tx)
    case = Case(
        opt,
        tx,
        params,
        bridge=bridge,
        wrt=wrt,
        grads_fn=grads_fn,
        value_fn=value_fn,
        extra_args=extra_args,
    )
    hook, ref = run_cases([case], steps, jit_each_step=jit_each_step).updates[0]
    return compare_updates(hook, ref, name=type(opt).__name__, bridge=bridge, rtol=rtol, atol=atol)
