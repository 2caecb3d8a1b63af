"""Cross-checking a hook optimizer against an optax transformation, step by step."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from flax.nnx import filterlib

from flr_nnx._bridges import is_optax, optax_name
from flr_nnx._errors import BridgeError, FlrError, HyperparameterError, describe
from flr_nnx._nnx import NNXOptimizer
from flr_nnx._optax import as_optax
from flr_nnx._optimizer import Key, Optimizer
from flr_nnx._tree import key_of

Bridge = Literal["optax", "nnx"]
GradsFn = Callable[[jax.Array, Any], Any]
ValueFn = Callable[[jax.Array, Any], Any]


class MismatchError(FlrError, AssertionError):
    """A hook optimizer and its optax twin parted: raised by :func:`assert_matches`.

    It is an ``AssertionError`` (pytest reports it as a failed assertion) and a
    :class:`flr_nnx.FlrError`.

    Attributes:
        step: the first step (0-based, the ``step`` given to ``grads_fn``) where
            the updates differ by more than the tolerance.
        key: the parameter key where they differ (the first one in key order).
        deviation: ``max|hook - optax| / max|optax|`` over that parameter
            (the absolute difference where optax's update is all zeros).
        report: the :class:`MatchReport` of the steps up to and including ``step``.
    """

    def __init__(self, message: str, *, step: int, key: Key, deviation: float, report: MatchReport):
        super().__init__(message)
        self.step, self.key, self.deviation, self.report = step, key, deviation, report


@dataclasses.dataclass(frozen=True)
class MatchReport:
    """What :func:`assert_matches` measured.

    Attributes:
        bridge: ``'optax'`` (:func:`flr_nnx.as_optax`) or ``'nnx'``
            (:class:`flr_nnx.NNXOptimizer`): how the hook optimizer ran.
        deviations: per step, the largest relative deviation over all parameters
            (``max|hook - optax| / max|optax|`` per parameter); ``0.0`` where the
            two sides agree in value.
        bit_identical: whether every update of every step had exactly the same
            bits on both sides (except that ``0.0`` and ``-0.0`` agree, as they
            are the same update, and so do NaNs with different payloads).
        keys: the parameter keys compared, in order.
    """

    bridge: Bridge
    deviations: tuple[float, ...]
    bit_identical: bool
    keys: tuple[Key, ...]

    @property
    def steps(self) -> int:
        """How many steps were compared."""
        return len(self.deviations)

    @property
    def max_deviation(self) -> float:
        """The largest relative deviation over all steps."""
        return max(self.deviations, default=0.0)

    def __str__(self) -> str:
        if self.bit_identical:
            return f"bit-identical over {self.steps} steps ({self.bridge} bridge)"
        return (
            f"max relative deviation {self.max_deviation:.3g} over {self.steps} steps "
            f"({self.bridge} bridge)"
        )


def default_grads(step: jax.Array, params: Any) -> Any:
    """Deterministic, cheap test gradients: a sinusoid per leaf, varying with ``step``.

    Leaf ``n`` gets ``sin(0.7 * j + 1.3 * step + n) * (1 + step % 3)`` at flat
    index ``j``: both signs, magnitudes up to 3, a different pattern per leaf and
    per step. A complex leaf also gets the imaginary part
    ``i cos(0.5 * j - 0.9 * step + n) * (1 + step % 3)``, so that arithmetic
    that is only right for real numbers (``g**2`` for :math:`|g|^2`) shows.
    No random number generator, so it adds little to compile time.

    Args:
        step: the step index (an int32 scalar, traced under jit).
        params: the current parameters (a pytree of arrays).

    Returns:
        Gradients of the same structure, shapes and dtypes as ``params``.
    """
    leaves, treedef = jax.tree.flatten(params)
    t = jnp.asarray(step, jnp.float32)
    scale = 1.0 + jnp.asarray(step % 3, jnp.float32)
    out = []
    for n, p in enumerate(leaves):
        j = jnp.arange(np.size(p), dtype=jnp.float32).reshape(jnp.shape(p))
        grad = jnp.sin(0.7 * j + 1.3 * t + float(n)) * scale
        if jnp.iscomplexobj(p):
            grad = grad + 1j * (jnp.cos(0.5 * j - 0.9 * t + float(n)) * scale)
        out.append(grad.astype(p.dtype))
    return treedef.unflatten(out)


def _as_real(x: np.ndarray) -> np.ndarray:
    # A complex array as its (real, imaginary) pairs: each part is compared bit by bit.
    return np.stack([x.real, x.imag], axis=-1) if x.dtype.kind == "c" else x


def _bits(x: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(x).reshape(-1)
    if x.dtype.kind == "f" and x.dtype.itemsize in (1, 2, 4, 8):
        return flat.view(f"u{x.dtype.itemsize}")
    return flat


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    a, b = _as_real(a), _as_real(b)
    same = _bits(a) == _bits(b)
    if a.dtype.kind == "f":
        # A NaN is a NaN whatever its payload, and 0.0 and -0.0 are the same
        # update (``p + 0.0 == p - 0.0``); neither is a difference in arithmetic.
        a64, b64 = a.astype(np.float64).reshape(-1), b.astype(np.float64).reshape(-1)
        same = same | (np.isnan(a64) & np.isnan(b64)) | ((a64 == 0) & (b64 == 0))
    return bool(np.all(same))


def _deviation(hook: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    """(absolute difference, reference scale, relative deviation) of one leaf."""
    wide = np.complex128 if np.iscomplexobj(hook) or np.iscomplexobj(ref) else np.float64
    h, r = hook.astype(wide), ref.astype(wide)  # |h - r| is the complex modulus for complex
    both_nan = np.isnan(h) & np.isnan(r)
    diff = np.where(both_nan, 0.0, np.abs(h - r))
    abs_diff = float(np.max(diff, initial=0.0))
    if np.isnan(abs_diff):
        abs_diff = float("inf")
    scale = float(np.max(np.where(np.isnan(r), 0.0, np.abs(r)), initial=0.0))
    rel = abs_diff / scale if scale > 0 else abs_diff
    return abs_diff, scale, rel


class _Wrapper(nnx.Module):
    """A pytree of arrays as an NNX module of ``nnx.Param``, for the NNX bridge."""

    def __init__(self, params: Any):
        if isinstance(params, Mapping) and all(
            isinstance(k, str)
            and k.isidentifier()
            and not k.startswith("_")
            and not hasattr(nnx.Module, k)
            for k in params
        ):
            # Top-level keys become attributes, so keys match the optax bridge's.
            for name, value in params.items():
                setattr(self, name, nnx.data(jax.tree.map(nnx.Param, value)))
        else:
            self.tree = nnx.data(jax.tree.map(nnx.Param, params))


@dataclasses.dataclass(frozen=True)
class _Case:
    """One hook optimizer against one optax transformation, for :func:`_run_cases`."""

    opt: Optimizer
    tx: optax.GradientTransformation
    params: Any
    bridge: str = "optax"  # or "nnx", or "tx" where `opt` is an optax transformation
    wrt: filterlib.Filter = nnx.Param
    grads_fn: GradsFn | None = None
    value_fn: ValueFn | None = None
    extra_args: Mapping[str, Any] | None = None


Updater = Callable[[Any, Any, Any, dict], tuple[Any, Any]]


def _prepare(case: _Case) -> tuple[Any, Any, Callable[[Any, Any], tuple[Any, Updater]]]:
    """Returns ``(params, hook_inputs, start)`` for one case.

    ``params`` is the pure parameter pytree optax sees; ``start(hook_inputs,
    params)`` runs under the caller's jit and returns the hook side's initial
    state and its ``update(grads, state, params, extra)``, so one compile covers
    init and every step.
    """
    if case.bridge in ("optax", "tx"):
        params = case.params
        if isinstance(params, nnx.Module):
            params = nnx.as_pure(nnx.state(params, case.wrt))
        hook = as_optax(case.opt) if case.bridge == "optax" else _with_extra_args(case.opt)

        def optax_update(grads: Any, state: Any, params: Any, extra: dict) -> tuple[Any, Any]:
            return hook.update(grads, state, params, **extra)

        def start_optax(_: Any, params: Any) -> tuple[Any, Updater]:
            return hook.init(params), optax_update

        return params, None, start_optax

    is_module = isinstance(case.params, nnx.Module)
    model = case.params if is_module else _Wrapper(case.params)
    model_def, model_state = nnx.split(model)
    params = nnx.as_pure(nnx.state(model, case.wrt)) if is_module else case.params
    wrt = case.wrt

    def start_nnx(model_state: Any, params: Any) -> tuple[Any, Updater]:
        model = nnx.merge(model_def, model_state)
        optimizer = NNXOptimizer(model, case.opt, wrt=wrt)
        graphdef, state = nnx.split((model, optimizer))
        var_def = jax.tree.structure(nnx.state(model, wrt))
        param_def = jax.tree.structure(params)

        def nnx_update(grads: Any, state: Any, params: Any, extra: dict) -> tuple[Any, Any]:
            model, optimizer = nnx.merge(graphdef, state)
            # The hook side sees the same parameters as optax at every step.
            nnx.update(model, var_def.unflatten(jax.tree.leaves(params)))
            grad_state = var_def.unflatten(jax.tree.leaves(grads))
            loss = extra.get("value")
            kwargs = {k: v for k, v in extra.items() if k != "value"}
            updates = optimizer.update(model, grad_state, loss=loss, **kwargs)
            updates = param_def.unflatten(jax.tree.leaves(updates))
            return updates, nnx.state((model, optimizer))

        return state, nnx_update

    return params, model_state, start_nnx


def _with_extra_args(tx: Any) -> optax.GradientTransformationExtraArgs:
    # optax.MultiSteps is an object whose update takes extra arguments, but its
    # gradient_transformation() (and so with_extra_args_support) would drop them.
    if isinstance(tx, optax.MultiSteps):
        return optax.GradientTransformationExtraArgs(tx.init, tx.update)
    return optax.with_extra_args_support(tx)


def _reference_key(case: _Case) -> tuple[Any, ...]:
    # Cases that share the optax transformation, the parameters and the inputs
    # share one optax run (the bridges of one optimizer, say).
    return (id(case.tx), id(case.params), case.grads_fn, case.value_fn, id(case.extra_args))


@dataclasses.dataclass
class _Run:
    """What :func:`_run_cases` returns.

    Attributes:
        outputs: per case, the stacked ``(hook, optax)`` updates of every step.
        traces: how many times the step program was traced (1: no recompile).
        signatures: the tree structure, shapes and dtypes of every state, after
            init and after each chunk of steps (all equal: stable state).
    """

    outputs: list[tuple[Any, Any]]
    traces: int
    signatures: list[Any]


def _signature(tree: Any) -> tuple[Any, list[tuple[tuple[int, ...], Any]]]:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, [(tuple(jnp.shape(x)), jnp.result_type(x)) for x in leaves]


def _run_cases(cases: list[_Case], steps: int, chunks: int = 1) -> _Run:
    """Runs every case for ``steps`` steps under jit, all cases in the same programs.

    One jitted program creates every state; another runs ``steps // chunks``
    steps of every case in one ``lax.scan`` and is called ``chunks`` times,
    carrying the states from call to call. Cases with the same ``tx`` object,
    ``params`` object and inputs share one optax run. A case with bridge
    ``'tx'`` compares two optax transformations (``case.opt`` is one).
    """
    if steps % chunks:
        raise HyperparameterError(f"{steps} steps do not split into {chunks} equal chunks.")
    groups: dict[tuple[Any, ...], list[int]] = {}
    for n, case in enumerate(cases):
        groups.setdefault(_reference_key(case), []).append(n)
    prepared = [_prepare(case) for case in cases]
    step_fns: list[Callable[..., Any]] = []

    def start_group(members: list[int], params: Any, hook_inputs: list[Any]) -> Any:
        lead = cases[members[0]]
        tx = _with_extra_args(lead.tx)
        grads_fn = lead.grads_fn
        if grads_fn is None:
            grads_fn = default_grads if lead.value_fn is None else jax.grad(lead.value_fn, 1)
        hook_states, updaters = [], []
        for n, inputs in zip(members, hook_inputs, strict=True):
            state, update = prepared[n][2](inputs, params)
            hook_states.append(state)
            updaters.append(update)

        def step(carry: Any, i: jax.Array) -> tuple[Any, Any]:
            params, hook_states, ref_state = carry
            grads = grads_fn(i, params)
            extra = dict(lead.extra_args or {})
            if lead.value_fn is not None:
                extra["value"] = lead.value_fn(i, params)
            ref, ref_state = tx.update(grads, ref_state, params, **extra)
            hooks, new_states = [], []
            for update, state in zip(updaters, hook_states, strict=True):
                hook, state = update(grads, state, params, extra)
                hooks.append(hook)
                new_states.append(state)
            carry = (optax.apply_updates(params, ref), new_states, ref_state)
            return carry, (hooks, ref)

        # The step closes over static things only (transformations, graph
        # definitions), so the init program's trace can hand it to the step program.
        step_fns.append(step)
        return (params, hook_states, tx.init(params))

    @jax.jit
    def init(inputs: list[Any]) -> list[Any]:
        step_fns.clear()
        return [
            start_group(members, params, hook_inputs)
            for members, (params, hook_inputs) in zip(groups.values(), inputs, strict=True)
        ]

    traces = []
    length = steps // chunks

    @jax.jit
    def advance(carries: list[Any], first: jax.Array) -> tuple[list[Any], list[Any]]:
        traces.append(first)

        def body(carries: list[Any], i: jax.Array) -> tuple[list[Any], list[Any]]:
            outs = [fn(carry, i) for fn, carry in zip(step_fns, carries, strict=True)]
            return [carry for carry, _ in outs], [out for _, out in outs]

        return jax.lax.scan(body, carries, first + jnp.arange(length, dtype=jnp.int32))

    carries = init([(prepared[m[0]][0], [prepared[n][1] for n in m]) for m in groups.values()])
    signatures = [_signature(carries)]
    chunk_outputs = []
    for chunk in range(chunks):
        carries, out = advance(carries, np.int32(chunk * length))
        signatures.append(_signature(carries))
        chunk_outputs.append(jax.device_get(out))
    outputs = jax.tree.map(lambda *xs: np.concatenate(xs), *chunk_outputs)
    results: list[tuple[Any, Any]] = [None] * len(cases)  # type: ignore[list-item]
    for members, (hooks, ref) in zip(groups.values(), outputs, strict=True):
        for n, hook in zip(members, hooks, strict=True):
            results[n] = (hook, ref)
    return _Run(results, len(traces), signatures)


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
    case = _Case(opt, tx, params, bridge, wrt, grads_fn, value_fn, extra_args)
    hook, ref = _run_cases([case], steps).outputs[0]
    return _compare(opt, hook, ref, bridge, rtol, atol)


def _compare(
    opt: Optimizer,
    hook: Any,
    ref: Any,
    bridge: Bridge,
    rtol: float,
    atol: float,
    *,
    check: bool = True,
) -> MatchReport:
    """Compares stacked updates step by step; raises at the first mismatch if ``check``."""
    name = type(opt).__name__
    ref_paths, ref_def = jax.tree_util.tree_flatten_with_path(ref)
    hook_leaves, hook_def = jax.tree.flatten(hook)
    keys = tuple(key_of(path) for path, _ in ref_paths)
    if hook_def != ref_def:
        raise MismatchError(
            f"{name}'s updates are structured as {hook_def}, optax's as {ref_def}. Fix: the "
            "hook optimizer must return an update for every parameter optax updates.",
            step=0,
            key=(),
            deviation=float("inf"),
            report=MatchReport(bridge, (), False, keys),
        )
    hooks = [np.asarray(leaf) for leaf in hook_leaves]
    refs = [np.asarray(leaf) for _, leaf in ref_paths]
    steps = refs[0].shape[0] if refs else 0
    deviations: list[float] = []
    identical = True
    for i in range(steps):
        worst = 0.0
        for key, h_all, r_all in zip(keys, hooks, refs):
            h, r = h_all[i], r_all[i]
            if h.dtype != r.dtype:
                raise MismatchError(
                    f"{name} returns updates of dtype {h.dtype} for parameter {key}, optax "
                    f"returns {r.dtype}. Fix: return updates in the parameter's dtype.",
                    step=i,
                    key=key,
                    deviation=float("inf"),
                    report=MatchReport(bridge, (*deviations, float("inf")), False, keys),
                )
            same = _same_bits(h, r)
            identical = identical and same
            abs_diff, scale, rel = _deviation(h, r)
            worst = max(worst, rel)
            exact = rtol == 0 and atol == 0
            if not check:
                continue
            if (exact and not same) or (not exact and not abs_diff <= atol + rtol * scale):
                report = MatchReport(bridge, (*deviations, max(worst, rel)), False, keys)
                wide = np.complex128 if np.iscomplexobj(h) else np.float64
                at = int(np.argmax(np.abs(h.astype(wide) - r.astype(wide))))
                h_at, r_at = h.reshape(-1)[at], r.reshape(-1)[at]
                wanted = (
                    "bit-identical updates"
                    if exact
                    else f"|difference| <= atol + rtol * max|optax| = {atol + rtol * scale:.3g}"
                )
                raise MismatchError(
                    f"{name} and its optax twin part at step {i}, parameter {key}: max "
                    f"|difference| {abs_diff:.3g} (relative {rel:.3g}; at flat index {at}: "
                    f"hook {h_at!r}, optax {r_at!r}); expected {wanted} ({bridge} bridge). "
                    "Fix: compare the arithmetic of this step with optax's source, or pass "
                    "a tolerance (rtol) if the difference is rounding by design.",
                    step=i,
                    key=key,
                    deviation=rel,
                    report=report,
                )
        deviations.append(worst)
    return MatchReport(bridge, tuple(deviations), identical, keys)
