"""init, step and evaluate: the only place hooks are executed.

A step rebuilds a private copy of the optimizer with the state put back, runs
its ``__call__`` and reads the state out. Init runs the same step once, traced,
with recording containers, and keeps the first value each state array was
given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend.core import jaxpr_as_fun

from flr_nnx._engine import _checks, _leaks
from flr_nnx._engine._eval_point import check_passed_on
from flr_nnx._engine._grouped import init_grouped, is_elementwise
from flr_nnx._engine._jaxpr import evaluate_outputs
from flr_nnx._engine._record import RUN, Recorder, RecordingDefaultDict, RecordingDict, scalars
from flr_nnx._engine._sharding import spread_shardings, state_shardings
from flr_nnx._engine._state import HookState, check_sortable, is_live, make_layout, nest
from flr_nnx._engine._walk import Path, format_path, owner, rebuild, walk
from flr_nnx._errors import FlrError, HookError, describe
from flr_nnx._optimizer import Key, Optimizer, call


def call_hooks(
    work: Optimizer, loss: Any, grads: dict[Key, Any], params: Any, extra: Mapping[str, Any]
) -> Any:
    """Runs ``work``; a JAX error about a :class:`Missing` (and others) becomes a clear error."""
    try:
        return call(work, loss=loss, grads=grads, params=params, **extra)
    except FlrError:
        raise
    except (TypeError, ValueError) as error:
        clear = _checks.explain(error, work, params, loss)
        if clear is None:
            raise
        raise clear from error


def _guarded(opt: Optimizer, work: Optimizer, where: str, run: Any) -> Any:
    """Runs ``run()`` (the hooks) with the places the engine does not copy watched."""
    roots = _leaks.unmanaged(work)
    known_tracers = _leaks.tracers(roots)
    guard = _leaks.guard(roots)
    try:
        result = run()
        _leaks.check_leaks(opt, known_tracers, work, where)
    finally:
        changed = guard.restore()
    _checks.check_unchanged(opt, changed, where)
    return result


def _is_state(path: Path, value: Any, before: Mapping[Path, Any]) -> bool:
    """Whether an array found after the discovery step is state.

    State is what the hooks create or assign, and arrays made live with
    ``flr_nnx.hyper``. An array the optimizer held before the step and the hooks
    only read is a constant of the step, like a value captured by an optax
    closure: it is read from the optimizer at every step, so a hyperparameter
    that ``optax.inject_hyperparams`` passes as an array takes effect.
    """
    old = before.get(path)
    return old is None or value is not old or is_live(old)


def _owner_name(root: Any, path: Path) -> str:
    """The class name of the optimizer whose attribute ``path`` is, or ``""``."""
    found = owner(root, path)
    return "" if found is None else type(found).__name__


def discovery(
    opt: Optimizer,
    keys: tuple[Key, ...],
    found: dict[str, Any],
    given: Mapping[str, Any] | None = None,
) -> Any:
    """The function :func:`init` traces: one step that records first values.

    ``given`` are the extra arguments known at init (the NNX bridge's Variables);
    optax's, not known until a step, get stand-ins of their form.

    Tracing it fills ``found`` with the state's paths, the static values and
    the containers the hooks created; it returns the initial value of every
    state array, in path order.
    """

    def discover(values: list[Any]) -> list[Any]:
        flat = dict(zip(keys, values, strict=True))
        recorder = Recorder()
        work = rebuild(opt, {}, RecordingDict, default_dict=RecordingDefaultDict)
        before = walk(work)
        # A batch of one stand-in example for an optimizer that takes per-example gradients.
        grads = {
            k: jnp.zeros((1, *v.shape), v.dtype) if opt.per_example_grads else jnp.zeros_like(v)
            for k, v in flat.items()
        }
        loss = jnp.zeros((), jnp.float32)
        # optax's extra arguments are not known at init: stand-ins of their form.
        extra = {"grad": dict(grads), "value_fn": lambda _: loss, **(given or {})}

        def run() -> Any:
            token = RUN.set(recorder)
            try:
                return call_hooks(work, loss, grads, flat, extra)
            finally:
                RUN.reset(token)

        updates = _guarded(opt, work, "init", run)
        recorder.check_aliases()
        _checks.check_updates(opt, updates, grads, flat)
        after = walk(work)
        _checks.check_statics(before.statics, after.statics, "init")
        first = recorder.first_values(after.containers)
        paths = tuple(p for p, value in after.arrays.items() if _is_state(p, value, before.arrays))
        numbers = scalars(before.statics)
        initial = [
            _checks.initial_value(
                path,
                numbers.get(path, before.arrays.get(path, first.get(path, after.arrays[path]))),
                after.arrays[path],
            )
            for path in paths
        ]
        found["containers"] = tuple((p, k) for p, k in after.kinds.items() if p not in before.kinds)
        found["paths"] = paths
        found["statics"] = tuple(
            (p, v) for p, v in after.statics.items() if p not in before.statics
        )
        found["hypers"] = tuple(
            (p, _owner_name(work, p))
            for p in paths
            if p in before.arrays and after.arrays[p] is before.arrays[p]
        )
        return initial

    return discover


def init(
    opt: Optimizer,
    params: Mapping[Key, Any],
    shardings: Mapping[Key, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> HookState:
    """Discovers an optimizer's state on ``params`` and returns its initial value.

    Runs one traced step with zero gradients and records, for every state array
    the hooks create, the first value assigned to it. Nothing is computed
    eagerly apart from those initial values.

    For an optimizer whose class declares ``elementwise = True`` (the contract
    :class:`~flr_nnx.compose.Packed` relies on: ``call_param`` treats every
    parameter alike and ``call_model`` does not depend on how the parameters
    are split into leaves), the step is traced on one parameter per shape and
    dtype, and the state found for it is repeated for the others, when its
    initial values do not depend on the parameter's values. The first real step
    traces every parameter and rejects state that breaks the contract.

    Args:
        opt: the hook optimizer (not mutated).
        params: float parameters, a mapping from key to array.
        shardings: the sharding of the state of each parameter key (state keyed
            by a parameter and of its shape is created with it; other state is
            left to XLA). Default: the parameters' own shardings when they are
            spread over several devices.
        extra: extra arguments known at init (the NNX bridge's Variables), passed
            to the hooks with the stand-ins of optax's.

    Returns:
        The initial :class:`HookState`.
    """
    keys = tuple(params)
    _checks.check_transient(opt)
    if shardings is None:
        shardings = spread_shardings(params)

    def discover_with_extra(o: Optimizer, k: tuple[Key, ...], f: dict[str, Any]) -> Any:
        return discovery(o, k, f, extra)

    grouped = (
        init_grouped(opt, params, shardings, discover_with_extra) if is_elementwise(opt) else None
    )
    if grouped is not None:
        paths, initial, statics, containers, hypers = grouped
    else:
        found: dict[str, Any] = {}
        discover = discovery(opt, keys, found, extra)
        values = list(params.values())
        closed = jax.jit(discover).trace(values).jaxpr
        flat = jax.tree.leaves(values)
        if len(closed.jaxpr.invars) != len(flat):
            # The optimizer holds tracers of an enclosing jit (it was built inside it):
            # they are extra inputs of the traced step, which only jit passes on.
            initial = jax.jit(discover)(values)
        elif shardings:
            # Without out_shardings XLA replicates fresh zeros: create every state
            # array keyed by a parameter (and of its shape) with that parameter's sharding.
            shaped = [(p, a.shape) for p, a in zip(found["paths"], closed.out_avals, strict=True)]
            out_shardings = state_shardings(shaped, params, shardings)
            initial = jax.jit(jaxpr_as_fun(closed), out_shardings=out_shardings)(*flat)
        else:
            initial = evaluate_outputs(closed, flat)
        paths, statics, containers = found["paths"], found["statics"], found["containers"]
        hypers = found["hypers"]
    layout = make_layout(paths, params, statics, containers, hypers)
    tree = nest(layout.mirror, initial, paths)
    check_sortable(tree)
    return HookState(tree, layout)


def step(
    opt: Optimizer,
    state: HookState,
    grads: Mapping[Key, Any],
    params: Mapping[Key, Any] | Any,
    loss: Any,
    extra: Mapping[str, Any] | None = None,
) -> tuple[dict[Key, Any], HookState]:
    """Runs one step of ``opt`` as a pure function.

    Args:
        opt: the hook optimizer (not mutated).
        state: its state, as returned by :func:`init` or a previous step.
        grads: gradients, keyed like the parameters at init.
        params: current parameters (or a :class:`~flr_nnx._errors.Missing`).
        loss: the loss (or a :class:`~flr_nnx._errors.Missing`).
        extra: optax's other extra arguments, in the hooks' form (see
            :func:`flr_nnx._tree.hook_extras`).

    Returns:
        The updates (positive = descent), keyed like ``grads``, and the new state.
    """
    layout = state.layout
    _checks.check_grads(layout, grads, params, opt)
    leaves = state.leaves()
    values: dict[Path, Any] = dict(zip(layout.paths, leaves, strict=True))
    values.update(layout.statics)
    work = rebuild(opt, values, kinds=dict(layout.containers))
    before = walk(work)
    updates = _guarded(
        opt, work, "a step", lambda: call_hooks(work, loss, dict(grads), params, extra or {})
    )
    updates = _checks.check_updates(opt, updates, grads, params)
    after = walk(work)
    _checks.check_statics(before.statics, after.statics, "a step")
    new_leaves = _checks.read_state(opt, layout, leaves, before, after)
    return updates, HookState(nest(layout.mirror, new_leaves), layout)


def evaluate(opt: Optimizer, state: HookState, params: Mapping[Key, Any]) -> dict[Key, Any]:
    """Runs ``opt.eval_params`` on ``state``: the parameters to evaluate at.

    The optimizer is rebuilt with the state put back, as for a step; ``eval_params``
    only reads it (an assignment is a :class:`HookError`). A wrapper that would drop an
    inner optimizer's evaluation point (it inherits the identity) is a :class:`HookError`.

    Args:
        opt: the hook optimizer (not mutated).
        state: its state, as returned by :func:`init` or a step.
        params: the current parameters, keyed like the parameters at init.

    Returns:
        The evaluation parameters, keyed like ``params``, of their shapes and dtypes.
    """
    layout = state.layout
    _checks.check_grads(layout, params)
    leaves = state.leaves()
    values: dict[Path, Any] = dict(zip(layout.paths, leaves, strict=True))
    values.update(layout.statics)
    work = rebuild(opt, values, kinds=dict(layout.containers))
    check_passed_on(work)  # a wrapper that inherits the identity would return the iterate
    result = _guarded(opt, work, "eval_params", lambda: work.eval_params(dict(params)))
    after = walk(work).arrays
    name = type(opt).__name__
    changed = [p for p, old in zip(layout.paths, leaves) if after.get(p) is not old]
    if changed:
        raise HookError(
            f"{name}.eval_params assigned its state ({format_path(changed[0])}); it may only "
            "read it (the state changes only in a step). Fix: compute the evaluation "
            "parameters in local variables."
        )
    if not isinstance(result, Mapping) or set(result) != set(params):
        raise HookError(
            f"{name}.eval_params returned {describe(result)}; expected a dict with the keys "
            "of `params`. Fix: return one value per parameter, e.g. `dict(params)`."
        )
    for key, param in params.items():
        value = result[key]
        if jnp.shape(value) != jnp.shape(param) or jnp.result_type(value) != param.dtype:
            raise HookError(
                f"{name}.eval_params returned {describe(value)} for parameter {key}; expected "
                f"shape {tuple(param.shape)} and dtype {param.dtype} (the parameter's). Fix: "
                "cast it, e.g. `value.astype(param.dtype)`."
            )
    return {key: result[key] for key in params}
