"""Places a hook can reach that the engine neither copies nor reads back.

Static objects of the optimizer tree, class attributes of its optimizer
classes, and the globals and closure variables of its methods. Two checks
watch them during a run: the :class:`~flr_nnx._engine._mutation.MutationGuard`
puts back what a hook changed there, and :func:`check_leaks` refuses a tracer
a hook stored there (it would escape the traced step).
"""

from __future__ import annotations

import collections
import functools
import sys
import types
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax

from flr_nnx._engine._mutation import LIBRARIES, OPAQUE, MutationGuard
from flr_nnx._engine._walk import ATTR, INDEX, ITEM, SKIP, format_path, is_array, traverse
from flr_nnx._errors import TracerLeakError
from flr_nnx._optimizer import Optimizer

_SCAN_BUDGET = 10_000  # objects inspected per scan; a scan only runs while tracing


class Root(NamedTuple):
    """A place a hook can reach that the engine neither copies nor reads back.

    ``holder`` and ``name`` say where the value is bound, so that rebinding it
    can be seen: the class of a class attribute, the globals dict of a global,
    the cell of a closure variable (``name`` unused), or None for an object in
    the optimizer tree.
    """

    where: str
    value: Any
    what: str
    holder: Any = None
    name: str = ""


def _functions_of(value: Any) -> list[Any]:
    """The Python functions behind a hook method or a static callable."""
    if isinstance(value, (staticmethod, classmethod, types.MethodType)):
        value = value.__func__
    if isinstance(value, property):
        return [f for f in (value.fget, value.fset) if f is not None]
    if isinstance(value, functools.partial):
        return [*_functions_of(value.func), *value.args, *value.keywords.values()]
    return [value] if isinstance(value, types.FunctionType) else []


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _library(function: types.FunctionType) -> bool:
    """Whether ``function`` belongs to an installed library, not to the user's code."""
    root = (function.__module__ or "").partition(".")[0]
    return root in LIBRARIES or root in sys.stdlib_module_names


def unmanaged(work: Any) -> list[Root]:
    """Places a hook can write to that the engine neither copies nor reads back.

    These are the static (non-container) objects of the optimizer tree, the
    class attributes of its optimizer classes, and the globals and closure
    variables that their methods and static callables refer to.
    """
    roots: list[Root] = []
    classes: dict[type, None] = {}
    functions: list[tuple[str, Any]] = []
    for path, node, leaf in traverse(work):
        if isinstance(node, Optimizer):
            classes.setdefault(type(node))
        if not leaf or is_array(node):
            continue
        where = format_path(path)
        roots.append(Root(where, node, "an object the engine does not copy"))
        if isinstance(node, types.MethodType):  # a user object's method: the object too
            roots.append(Root(f"{where}.__self__", node.__self__, "a method's object"))
        functions.extend((where, f) for f in _functions_of(node))
    for cls in classes:
        for klass in cls.__mro__:
            if klass in (Optimizer, object):
                continue
            for name, value in vars(klass).items():
                found = _functions_of(value)
                functions.extend((f"{klass.__name__}.{name}", f) for f in found)
                if not found and not name.startswith("__"):
                    roots.append(
                        Root(f"{klass.__name__}.{name}", value, "a class attribute", klass, name)
                    )
    done: set[int] = set()
    for owner, function in functions:  # grows: functions held in closures are scanned too
        if not isinstance(function, types.FunctionType) or id(function) in done:
            continue
        done.add(id(function))
        if _library(function):  # optax's schedules rebind their own closure variables
            continue
        for name in sorted(_global_names(function.__code__)):
            if name in function.__globals__:
                value = function.__globals__[name]
                roots.append(
                    Root(name, value, f"a global used by {owner}", function.__globals__, name)
                )
                functions.extend((f"{owner} -> {name}", f) for f in _functions_of(value))
        cells = function.__closure__ or ()
        for name, cell in zip(function.__code__.co_freevars, cells):
            try:
                roots.append(
                    Root(name, cell.cell_contents, f"a closure variable of {owner}", cell, name)
                )
                functions.extend(
                    (f"{owner} -> {name}", f) for f in _functions_of(cell.cell_contents)
                )
            except ValueError:  # an empty cell
                continue
    return roots


def tracers(roots: Sequence[Root]) -> dict[int, tuple[str, str, Any]]:
    """Every tracer reachable from ``roots`` through data (not code), by id."""
    found: dict[int, tuple[str, str, Any]] = {}
    seen: set[int] = set()
    budget = [_SCAN_BUDGET]
    top: list[Any] = [None]

    def reach(value: Any) -> Any:
        """The data a value holds, for :func:`traverse`; each object is scanned once."""
        if budget[0] <= 0 or id(value) in seen:
            return SKIP
        seen.add(id(value))
        budget[0] -= 1
        is_top = value is top[0]
        if isinstance(value, jax.core.Tracer) or is_array(value):
            return None
        if isinstance(value, OPAQUE) and not is_top:
            return None
        if isinstance(value, dict):
            return [((ITEM, k), child) for k, child in list(value.items())]
        if isinstance(value, (list, tuple, set, frozenset, collections.deque)):
            return [((INDEX, i), child) for i, child in enumerate(list(value))]
        if isinstance(value, type) and is_top:
            return [((ATTR, n), c) for n, c in list(vars(value).items()) if not n.startswith("__")]
        if not isinstance(value, OPAQUE) and isinstance(getattr(value, "__dict__", None), dict):
            return [((ATTR, n), c) for n, c in list(vars(value).items())]
        return None

    for root in roots:
        top[0] = root.value
        for path, value, _ in traverse(root.value, reach):
            if isinstance(value, jax.core.Tracer):
                found.setdefault(id(value), (format_path(path, root.where), root.what, value))
    return found


def guard(roots: Sequence[Root]) -> MutationGuard:
    """Watches ``roots`` for changes made by the hooks (put back by ``restore()``)."""
    return MutationGuard([(r.where, r.value, r.holder, r.name) for r in roots])


def check_leaks(opt: Optimizer, before: Mapping[int, Any], work: Any, where: str) -> None:
    """Refuses tracers the hooks stored in places the engine does not read back."""
    leaked = [hit for key, hit in tracers(unmanaged(work)).items() if key not in before]
    if not leaked:
        return
    place, what, tracer = leaked[0]
    aval = getattr(getattr(tracer, "aval", None), "str_short", lambda: "value")()
    more = f" (and {len(leaked) - 1} more)" if len(leaked) > 1 else ""
    raise TracerLeakError(
        f"A hook of {type(opt).__name__} stored a traced {aval} in `{place}` ({what}){more} during "
        f"{where}. The engine neither copies nor reads back that place, so the value would "
        "escape the step and fail later with JAX's UnexpectedTracerError. Fix: keep what a "
        "hook computes on `self` (attributes and dicts of `self` are optimizer state) or "
        "return it; to look at values during training use `jax.debug.print` or "
        "`jax.debug.callback`."
    )
