"""Running hook optimizers and optax transformations side by side: :func:`run_cases`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from flax.nnx import filterlib

from flr_nnx._errors import HyperparameterError
from flr_nnx._nnx import NNXOptimizer
from flr_nnx._optax import as_optax

GradsFn = Callable[[jax.Array, Any], Any]
ValueFn = Callable[[jax.Array, Any], Any]


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
class Case:
    """One side-by-side comparison for :func:`run_cases`.

    Attributes:
        opt: the side under test: a hook optimizer, or with ``bridge='tx'`` an
            optax transformation (``optax.MultiSteps(flr.as_optax(opt))``, say).
        tx: the optax reference.
        params: the initial parameters: a pytree of arrays or an NNX module.
        bridge: ``'optax'`` (:func:`flr_nnx.as_optax`), ``'nnx'``
            (:class:`flr_nnx.NNXOptimizer`) or ``'tx'`` (``opt`` is already an
            optax transformation).
        wrt, grads_fn, value_fn, extra_args: as for :func:`assert_matches`.
    """

    opt: Any
    tx: optax.GradientTransformation
    params: Any
    _: dataclasses.KW_ONLY
    bridge: Literal["optax", "nnx", "tx"] = "optax"
    wrt: filterlib.Filter = nnx.Param
    grads_fn: GradsFn | None = None
    value_fn: ValueFn | None = None
    extra_args: Mapping[str, Any] | None = None


Updater = Callable[[Any, Any, Any, dict], tuple[Any, Any]]


def _prepare(case: Case) -> tuple[Any, Any, Callable[[Any, Any], tuple[Any, Updater]]]:
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


def _reference_key(case: Case) -> tuple[Any, ...]:
    # Cases that share the optax transformation, the parameters and the inputs
    # share one optax run (the bridges of one optimizer, say).
    return (id(case.tx), id(case.params), case.grads_fn, case.value_fn, id(case.extra_args))


@dataclasses.dataclass
class Run:
    """What :func:`run_cases` returns.

    Attributes:
        updates: per case, the ``(hook, optax)`` updates, each leaf stacked over
            the steps (for :func:`compare_updates`).
        states: per case, the ``(hook, optax)`` states after the last step; the
            hook side's is its ``as_optax`` state, or with the NNX bridge the
            ``nnx.State`` of ``(model, optimizer)``.
        traces: how many times the step program was traced (1: no recompile).
        signatures: the tree structure, shapes and dtypes of every state, after
            init and after each chunk of steps (all equal: stable state).
    """

    updates: list[tuple[Any, Any]]
    states: list[tuple[Any, Any]]
    traces: int
    signatures: list[Any]


def _signature(tree: Any) -> tuple[Any, list[tuple[tuple[int, ...], Any]]]:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, [(tuple(jnp.shape(x)), jnp.result_type(x)) for x in leaves]


def _run_each_step(case: Case, steps: int) -> tuple[Any, Any, int, list[Any]]:
    """One case with each side's update its own jitted program, called once per step.

    Returns ``(updates, states, traces, signatures)`` as :class:`Run` holds them.
    """
    params, hook_inputs, start = _prepare(case)
    tx = _with_extra_args(case.tx)
    grads_fn = case.grads_fn
    if grads_fn is None:
        grads_fn = default_grads if case.value_fn is None else jax.grad(case.value_fn, 1)
    updaters: list[Updater] = []
    traces: list[None] = []

    def init(hook_inputs: Any, params: Any) -> Any:
        state, update = start(hook_inputs, params)
        updaters.append(update)  # it closes over static things only, as in run_cases
        return state

    def extra_of(value: Any) -> dict:
        extra = dict(case.extra_args or {})
        return extra if value is None else {**extra, "value": value}

    @jax.jit
    def hook_update(grads: Any, state: Any, params: Any, value: Any) -> tuple[Any, Any]:
        traces.append(None)
        return updaters[0](grads, state, params, extra_of(value))

    @jax.jit
    def ref_update(grads: Any, state: Any, params: Any, value: Any) -> tuple[Any, Any]:
        return tx.update(grads, state, params, **extra_of(value))

    grads_at, value_at = jax.jit(grads_fn), jax.jit(case.value_fn or (lambda *_: None))
    state, ref_state = jax.jit(init)(hook_inputs, params), jax.jit(tx.init)(params)
    signatures = [_signature((state, ref_state))]
    hooks, refs = [], []
    for i in range(steps):
        grads, value = grads_at(np.int32(i), params), value_at(np.int32(i), params)
        hook, state = hook_update(grads, state, params, value)
        ref, ref_state = ref_update(grads, ref_state, params, value)
        hooks.append(hook)
        refs.append(ref)
        params = optax.apply_updates(params, ref)
    signatures.append(_signature((state, ref_state)))
    hooks, refs = jax.device_get((hooks, refs))
    stacked = [jax.tree.map(lambda *xs: np.stack(xs), *side) for side in (hooks, refs)]
    return (stacked[0], stacked[1]), (state, ref_state), len(traces), signatures


def run_cases(
    cases: Sequence[Case], steps: int, *, chunks: int = 1, jit_each_step: bool = False
) -> Run:
    """Runs every case for ``steps`` steps under jit, all cases in the same two programs.

    :func:`assert_matches` runs one case this way; a test suite that checks many
    cases saves most of its compile time by running them together and comparing
    each with :func:`compare_updates`. One jitted program creates every state;
    another runs ``steps // chunks`` steps of every case in one ``lax.scan`` and
    is called ``chunks`` times, carrying the states from call to call (so
    ``Run.traces`` and ``Run.signatures`` tell whether anything recompiled or
    changed shape). Cases with the same ``tx`` object, ``params`` object and
    inputs share one optax run.

    Args:
        cases: what to run.
        steps: how many steps.
        chunks: in how many calls of the step program (it must divide ``steps``).
        jit_each_step: compile each side's update as a program of its own, called
            once per step from Python, as a training loop that jits the update
            alone does (slower). XLA on CPU fuses and contracts ``a * b + c``
            depending on the surrounding program, so an optimizer can be
            bit-identical to its twin in these programs and not in a shared scan.
            Each case then runs on its own; ``chunks`` is not used.

    Returns:
        A :class:`Run`: per case, the updates of both sides and their final states.
    """
    if jit_each_step:
        runs = [_run_each_step(case, steps) for case in cases]
        signatures = [[run[3][n] for run in runs] for n in range(2)]
        return Run([r[0] for r in runs], [r[1] for r in runs], max(r[2] for r in runs), signatures)
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
    states: list[tuple[Any, Any]] = [None] * len(cases)  # type: ignore[list-item]
    for members, (hooks, ref), (_, hook_states, ref_state) in zip(
        groups.values(), outputs, carries, strict=True
    ):
        for n, hook, state in zip(members, hooks, hook_states, strict=True):
            results[n] = (hook, ref)
            states[n] = (state, ref_state)
    return Run(results, states, len(traces), signatures)
