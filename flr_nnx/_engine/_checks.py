"""The hook contract, checked around every run, and the messages that explain it.

Nothing here runs a hook: :mod:`flr_nnx._engine._run` runs them and asks these
checks about what they were given, what they returned and what they left in
the optimizer copy.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flr_nnx._contract import per_example_mismatch
from flr_nnx._engine._grouped import is_elementwise
from flr_nnx._engine._state import Layout
from flr_nnx._engine._walk import ATTR, Path, Walk, format_path, is_array, owner, traverse, walk
from flr_nnx._errors import (
    HookError,
    HyperparameterError,
    Missing,
    StateError,
    StructureError,
    describe,
)
from flr_nnx._optimizer import Key, Optimizer


def check_grads(
    layout: Layout,
    grads: Mapping[Key, Any],
    params: Mapping[Key, Any] | Any = None,
    opt: Optimizer | None = None,
) -> None:
    """Raises :class:`StructureError` for keys, shapes or dtypes unlike those at init.

    ``opt``'s ``per_example_grads`` says whether the gradients carry a batch axis.
    """
    if tuple(grads) == layout.param_keys:
        _check_shapes(layout, grads, params, opt)
        return
    known = set(layout.param_keys)
    missing = [k for k in layout.param_keys if k not in grads]
    extra = [k for k in grads if k not in known]
    if missing or extra:
        raise StructureError(
            "The gradients do not match the parameters the optimizer was initialised with. "
            f"Missing keys: {missing[:10]}{' ...' if len(missing) > 10 else ''}; "
            f"extra keys: {extra[:10]}{' ...' if len(extra) > 10 else ''}. "
            "Fix: pass gradients of the same parameters (same `wrt` filter) as at init, "
            "or initialise a new optimizer state for the new parameters."
        )
    _check_shapes(layout, grads, params, opt)


def _check_shapes(
    layout: Layout,
    grads: Mapping[Key, Any],
    params: Mapping[Key, Any] | Any,
    opt: Optimizer | None = None,
) -> None:
    per_example = getattr(opt, "per_example_grads", False)
    for key, shape in zip(layout.param_keys, layout.param_shapes):
        grad = grads.get(key)
        if grad is None:
            continue
        # Without the optimizer (parameters checked alone), no gradient kind to name.
        mismatch = opt is not None and per_example_mismatch(
            type(opt).__name__, key, shape, tuple(grad.shape), per_example
        )
        if mismatch:
            raise StructureError(mismatch)
        got = tuple(grad.shape)[1:] if per_example else tuple(grad.shape)
        if got != shape:
            raise StructureError(
                f"Parameter {key} had shape {shape} when the optimizer state was initialised; "
                f"its gradient now has shape {tuple(grad.shape)}. The state (moments, ...) "
                "has the old shape. Fix: initialise a new optimizer state for the new "
                "parameters (`tx.init(params)` or a new NNXOptimizer)."
            )
        if isinstance(params, Mapping) and key in params and grad is not None:
            param = params[key]
            if tuple(param.shape) != shape:
                raise StructureError(
                    f"Parameter {key} had shape {shape} at init and now has shape "
                    f"{tuple(param.shape)}. Fix: initialise a new optimizer state for the "
                    "new parameters."
                )
            if grad.dtype != param.dtype:
                raise StructureError(
                    f"The gradient of parameter {key} is {grad.dtype} but the parameter is "
                    f"{param.dtype}. optax accepts that and returns {grad.dtype} updates, "
                    "changing its state's dtype (and recompiling); flr_nnx keeps each state's "
                    "dtype. Fix: cast the gradients to the parameters' dtype, e.g. "
                    "`jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)`, and "
                    "wrap the optimizer in flr.compose.MixedPrecision(opt) to keep its state "
                    "in float32."
                )


def check_updates(
    opt: Optimizer, updates: Any, grads: Mapping[Key, Any], params: Mapping[Key, Any] | Any
) -> dict[Key, Any]:
    """Validates what ``opt.__call__`` returned; fills zeros for skipped keys."""
    name = type(opt).__name__
    batch_axes = 1 if opt.per_example_grads else 0  # updates have the parameters' shapes
    if not isinstance(updates, Mapping):
        raise HookError(
            f"{name}.__call__ returned {describe(updates)}; expected a dict from parameter "
            "key to update. Fix: return a dict keyed like `grads`."
        )
    out = {}
    for key, grad in grads.items():
        shape = tuple(grad.shape)[batch_axes:]
        if key not in updates:
            out[key] = jnp.zeros(shape, grad.dtype)
            continue
        update = updates[key]
        param = params[key] if isinstance(params, Mapping) else grad
        where = f"{name}.call_param for parameter {key}"
        if update is None or not hasattr(update, "shape") or not hasattr(update, "dtype"):
            raise HookError(
                f"{where} returned {describe(update)}; expected an array of shape "
                f"{shape} and dtype {param.dtype}. Fix: return the update "
                "as a JAX array (positive means descent)."
            )
        if tuple(update.shape) != shape or update.dtype != param.dtype:
            raise HookError(
                f"{where} returned {describe(update)}; expected shape {shape} "
                f"and dtype {param.dtype} (those of the parameter). Fix: make the update "
                f"match the parameter, e.g. `update.astype(param.dtype)`, and avoid "
                "broadcasting against state of another shape."
            )
        out[key] = update
    extra = [key for key in updates if key not in grads]
    if extra:
        raise HookError(
            f"{name}.__call__ returned updates for keys that are not parameters: {extra[:5]}. "
            "Fix: only return keys of `grads`."
        )
    return out


def explain(error: Exception, work: Optimizer, params: Any, loss: Any) -> Exception | None:
    """The clear error for a JAX error a hook raised, or None to let it pass.

    A hook that branches on a traced value, computes with a :class:`Missing`
    ``params`` or ``loss`` (JAX's own checks reject the stand-in first and name
    it, e.g. in ``jnp.sqrt(param)``) or with a hyperparameter left None.
    """
    if isinstance(error, jax.errors.ConcretizationTypeError):
        return HookError(
            f"A hook of {type(work).__name__} needed the value of a traced array in Python "
            "(an `if` or `while` on it, `float(loss)`, `bool(...)`, `int(...)`). Hooks are "
            "traced: they run once, while JAX compiles the step, on abstract arrays with no "
            "values yet. Fix: choose between values with `jnp.where(cond, a, b)` or "
            "`jax.lax.cond(cond, f, g, ...)`, loop with `jax.lax.while_loop`/`fori_loop`, and "
            "look at values with `jax.debug.print`. JAX said: " + str(error).split("\n")[0]
        )
    if not isinstance(error, (TypeError, ValueError)):
        return None
    text = str(error)
    for value in (params, loss):
        if isinstance(value, Missing) and ("_errors.Missing" in text or repr(value) in text):
            return value.error()
    nones = [p for p, v in walk(work).statics.items() if v is None and _not_none(work, p)]
    if "None" in text and nones:
        shown = ", ".join(f"`{format_path(p)}`" for p in nones[:5])
        return HyperparameterError(
            f"A hook of {type(work).__name__} computed with None ({text}). These "
            f"hyperparameters are None: {shown}; a hook used one. Fix: give it a value the "
            "hooks can compute with (a number, an array or a schedule), as the constructor "
            "takes it."
        )
    return None


def _not_none(root: Any, path: Path) -> bool:
    """Whether ``path`` is a constructor argument of its optimizer that is not None by default."""
    found = owner(root, path)
    if found is None:
        return False
    try:
        parameter = inspect.signature(type(found).__init__).parameters.get(path[-1][1])
    except (TypeError, ValueError):
        return False
    return parameter is not None and parameter.default is not None


def contract_hint(opt: Optimizer) -> str:
    """What an ``elementwise = True`` declaration adds to a state error."""
    if not is_elementwise(opt):
        return ""
    name = type(opt).__name__
    return (
        f" Note: {name} declares `elementwise = True`, so init discovered its state on one "
        "parameter per shape and dtype and repeated it for the others. If its hooks create "
        "state that depends on the parameter key, or on how the parameters are split into "
        f"leaves, remove `elementwise = True` from {name}."
    )


def and_more(names: Sequence[str]) -> str:
    """`` (also a, b, c and 2 more)`` for the places after the first one named."""
    if not names:
        return ""
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f" (also {shown})"


def check_unchanged(opt: Optimizer, changed: Sequence[str], where: str) -> None:
    """Refuses changes a hook made to objects the engine neither copies nor reads back."""
    if not changed:
        return
    raise StateError(
        f"A hook of {type(opt).__name__} changed `{changed[0]}`{and_more(changed[1:])} during "
        f"{where}: a Python object (or class attribute) that the engine neither copies nor "
        "keeps as state. Under jit the change would happen once, while tracing, and your "
        "object would be left changed; it has been put back. Fix: keep what changes on `self` "
        "as JAX arrays (e.g. `self.lr = jnp.asarray(1.0)`; attributes and dicts of `self` are "
        "optimizer state), or compute it from the step count."
    )


def _same_static(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:
        return False


def check_statics(before: Mapping[Path, Any], after: Mapping[Path, Any], where: str) -> None:
    """Refuses a hook changing a static (Python) value: the change would be lost."""
    for path, value in after.items():
        if path in before and not _same_static(before[path], value):
            raise StateError(
                f"{format_path(path)} is a Python value (a compile-time constant), but a hook "
                f"changed it from {before[path]!r} to {value!r} during {where}; the change would "
                "be lost after this step. Fix: store it as a JAX array "
                "(e.g. `jnp.asarray(value)`) so it becomes optimizer state, or use flr_nnx.hyper."
            )


def initial_value(path: Path, value: Any, final: Any) -> Any:
    """A state's first value as an array, checked against what the first step made of it."""
    if not is_array(value):  # a Python number: the state's value everywhere
        value = _number_as_state(path, value, final)
    value = jnp.asarray(value)
    if value.shape != final.shape or value.dtype != final.dtype:
        raise StateError(
            f"{format_path(path)} starts as {describe(value)} but the first step turns "
            f"it into {describe(final)}; state must keep its shape and dtype. "
            "Fix: create it with the dtype and shape the update produces "
            "(e.g. `jnp.zeros_like(param)` or `.astype(...)` in the hook)."
        )
    return value


def _number_as_state(path: Path, number: Any, final: Any) -> Any:
    """A Python number that starts an array state, broadcast to it; refused if it does not fit."""
    dtype = np.dtype(final.dtype)
    if isinstance(number, complex) and number.imag and dtype.kind != "c":
        fits = False
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        real = complex(number)
        fits = not real.imag and real.real.is_integer() and info.min <= real.real <= info.max
    elif dtype.kind == "b":
        fits = number in (0, 1)
    else:
        fits = True
    if not fits:
        raise StateError(
            f"{format_path(path)} starts as the Python number {number!r}, but the first step "
            f"turns it into {describe(final)}, which cannot hold that value. Fix: start it "
            "as an array of the dtype it will have, e.g. `jnp.asarray(value, dtype)`."
        )
    return jnp.full(final.shape, number.real if dtype.kind != "c" else number, final.dtype)


def read_state(
    opt: Optimizer, layout: Layout, leaves: Sequence[Any], before: Walk, after: Walk
) -> list[Any]:
    """The state after a step, in layout order; refuses state lost, changed or created."""
    hint = contract_hint(opt)
    new_leaves = []
    for path, old in zip(layout.paths, leaves, strict=True):
        if path not in after.arrays:
            raise StateError(
                f"{format_path(path)} was optimizer state at init but is gone after this step. "
                "Fix: keep every state entry (assign a new value instead of deleting it)." + hint
            )
        new = after.arrays[path]
        if not is_array(new) or new.shape != old.shape or new.dtype != old.dtype:
            raise StateError(
                f"{format_path(path)} changed from {describe(old)} to {describe(new)} during a "
                "step; state must keep its shape and dtype so the step compiles once. Fix: "
                f"cast it back, e.g. `.astype({old.dtype})`, or create it with the right dtype."
                + hint
            )
        new_leaves.append(new)
    known = set(layout.paths) | {p for p, _ in layout.statics}
    for path, value in before.arrays.items():
        if path not in known and after.arrays.get(path) is not value:
            raise StateError(
                f"{format_path(path)} was only read by the hooks at init, so it is a constant "
                "of the step (like a value captured by an optax closure), but a hook assigned "
                "it during this step; the new value would be lost. Fix: assign it on every "
                "step, including the first, so it becomes state, or mark it live with "
                "`flr.hyper(...)`." + hint
            )
    created = [p for p in after.arrays if p not in known and p not in before.arrays]
    created += [p for p in after.statics if p not in before.statics and p not in known]
    if created:
        raise StateError(
            f"{format_path(created[0])} was created after init"
            f"{and_more([format_path(p) for p in created[1:]])}. The state "
            "structure is fixed by the first step (at init) so training compiles once. "
            "Fix: create all state on the first call of the hook (e.g. in `_build`), "
            "for every parameter, or initialise again with the new parameters." + hint
        )
    return new_leaves


def check_transient(root: Any) -> None:
    """Transient attributes are per-step values: declared as names, never set in ``__init__``."""
    for path, node, _ in traverse(root):
        if not isinstance(node, Optimizer):
            continue
        names = type(node).transient
        cls = type(node).__name__
        if not isinstance(names, (tuple, list, frozenset, set)) or not all(
            isinstance(n, str) for n in names
        ):
            raise StateError(
                f"{cls}.transient is {names!r}; expected a tuple of attribute names. "
                f"Fix: e.g. `transient = ('lr_t', 'bc1')`."
            )
        for name in names:
            if name in vars(node):
                raise StateError(
                    f"{format_path((*path, (ATTR, name)))} is listed in {cls}.transient but "
                    "already has a value before the first step. Transient attributes are "
                    "not kept between steps, so that value would be lost (or state that "
                    "should persist silently reset). Fix: compute it in a hook at every "
                    "step, or remove it from `transient` to keep it as state."
                )
