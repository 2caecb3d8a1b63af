"""Python objects the hooks must not change: static objects and class attributes.

The engine copies the optimizer's containers (optimizers, dicts, lists, tuples)
and reads every JAX array in them back as state. Anything else a hook can reach
through ``self`` is shared with the user: a ``set``, a ``SimpleNamespace`` or
other plain object held in an attribute, and the attributes of the optimizer's
classes. A hook that changes one of those would change the user's object, and
under ``jit`` it would change once, while tracing, and never again: eager and
jitted training would silently disagree. :class:`MutationGuard` snapshots them
before the hooks run, puts every change back afterwards, and reports it.
"""

from __future__ import annotations

import collections
import functools
import sys
import types
from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np

_DEPTH = 6  # how deep plain objects are compared and restored
_SMALL = 1 << 16  # NumPy arrays in plain objects up to this size are compared by value
# Code and descriptors: never data a hook changes.
OPAQUE = (
    types.ModuleType,
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    property,
    staticmethod,
    classmethod,
)


# Objects of these libraries (meshes, loggers, ...) keep caches of their own.
LIBRARIES = frozenset(
    {"jax", "jaxlib", "flax", "optax", "numpy", "ml_dtypes", "orbax", "chex", "equinox", "scipy"}
)


def _user_object(value: Any) -> bool:
    """A plain object of the user's (a config, a namespace), not a library's or Python's."""
    if isinstance(value, types.SimpleNamespace):
        return True
    if isinstance(value, OPAQUE) or not isinstance(getattr(value, "__dict__", None), dict):
        return False
    return _user_class(type(value))


def _user_class(klass: type) -> bool:
    root = klass.__module__.partition(".")[0]
    return root not in LIBRARIES and root not in sys.stdlib_module_names


def _mutable(value: Any) -> bool:
    """A static object whose contents a hook could change in place."""
    return isinstance(
        value, (set, bytearray, list, dict, collections.deque, functools.partial)
    ) or _user_object(value)


def _binding(
    where: str, value: Any, holder: Any, name: str
) -> tuple[str, Callable[[], Any], Any, Callable[[], None]]:
    """Watches a name bound to ``value`` (in a class, a globals dict or a cell).

    A class attribute's contents are watched too. A global's or a closure
    variable's are not: appending eager values to a module-level log is a
    debugging habit (a traced value stored there is still a tracer leak);
    rebinding the name (``global n; n += 1``) is a change.
    """
    contents = isinstance(holder, type)
    undo_inner = _save(value) if contents else (lambda: None)

    def get() -> Any:
        if isinstance(holder, type):
            return vars(holder).get(name, _MISSING)
        if isinstance(holder, dict):
            return holder.get(name, _MISSING)
        try:
            return holder.cell_contents
        except ValueError:
            return _MISSING

    def current() -> Any:
        now = get()
        if now is not value and (_same_number(now, value) or value is None):
            # rebound to an equal number (optax's schedules turn ints into floats), or
            # filled lazily on first use (`if _cache is None: _cache = ...`)
            now = value
        return (id(now), _freeze(now) if now is value and contents else None)

    def restore() -> None:
        undo_inner()
        if isinstance(holder, type):
            setattr(holder, name, value)
        elif isinstance(holder, dict):
            holder[name] = value
        else:
            holder.cell_contents = value

    return (where, current, current(), restore)


def _same_number(a: Any, b: Any) -> bool:
    numbers = (int, float, complex)
    return isinstance(a, numbers) and isinstance(b, numbers) and a == b


def _cached(value: Any) -> set[str]:
    """Attributes a ``functools.cached_property`` of ``value``'s class fills on first read."""
    return {
        name
        for klass in type(value).__mro__
        for name, attr in vars(klass).items()
        if isinstance(attr, functools.cached_property)
    }


def _freeze(value: Any, depth: int = _DEPTH) -> Any:
    """A comparable picture of ``value``; equal pictures mean unchanged contents.

    Containers compare their items by identity first (so a NaN or an array
    that was not reassigned is unchanged), then by equality. A dict (or an
    object) that only gained entries is unchanged: a cache filled on first
    use, like ``functools.cached_property`` or a memo table. A set that gained
    members is changed.
    """
    if isinstance(value, np.ndarray) and value.size <= _SMALL:
        return ("ndarray", value.shape, value.dtype.str, value.tobytes())
    if depth <= 0 or isinstance(value, (OPAQUE, jax.Array, np.ndarray)):
        return ("id", id(value))
    if isinstance(value, (set, frozenset)):
        return ("set", frozenset(value))
    if isinstance(value, (list, tuple, collections.deque)):
        return ("seq", type(value), tuple(_freeze(v, depth - 1) for v in value))
    if isinstance(value, functools.partial):
        return (
            "partial",
            id(value.func),
            _freeze(value.args, depth),
            _freeze(value.keywords, depth),
        )
    if isinstance(value, dict):
        return _Entries({k: _freeze(v, depth - 1) for k, v in value.items()})
    if isinstance(value, bytearray):
        return ("bytes", bytes(value))
    if _user_object(value):
        skip = _cached(value)
        entries = {k: _freeze(v, depth - 1) for k, v in vars(value).items() if k not in skip}
        return ("obj", type(value), _Entries(entries))
    return ("value", value)


class _Entries(dict):
    """The entries of a dict or an object in a picture; more entries later is no change."""


def _unchanged(before: Any, after: Any) -> bool:
    """Whether the picture ``after`` shows the same contents as ``before`` (or added entries)."""
    if before == ("value", None):  # filled lazily on first use: a cache, like the ones above
        return True
    if isinstance(before, _Entries):
        return isinstance(after, _Entries) and all(
            k in after and _unchanged(v, after[k]) for k, v in before.items()
        )
    if isinstance(before, tuple) and isinstance(after, tuple):
        return len(before) == len(after) and all(
            _unchanged(a, b) for a, b in zip(before, after, strict=True)
        )
    return before is after or before == after


def _save(value: Any, depth: int = _DEPTH) -> Callable[[], None]:
    """A function that puts ``value``'s contents back as they are now."""
    if isinstance(value, np.ndarray) and value.size <= _SMALL and value.flags.writeable:
        saved = value.copy()
        return lambda: np.copyto(value, saved)
    if depth <= 0 or not _mutable(value):
        return lambda: None
    if isinstance(value, functools.partial):  # its keywords are a dict of its own
        return _save(value.keywords, depth)
    if isinstance(value, (set, bytearray, list, dict, collections.deque)):
        items = value.copy()
        children = value.values() if isinstance(value, dict) else value
        inner = [_save(v, depth - 1) for v in children if not isinstance(value, (set, bytearray))]
    else:
        items = dict(vars(value))
        inner = [_save(v, depth) for v in items.values()]  # an object's attributes: same level

    def restore() -> None:
        for undo in inner:
            undo()
        if isinstance(value, (set, dict)):
            value.clear()
            value.update(items)
        elif isinstance(value, collections.deque):
            value.clear()
            value.extend(items)
        elif isinstance(value, (list, bytearray)):
            value[:] = items
        else:
            vars(value).clear()
            vars(value).update(items)

    return restore


class MutationGuard:
    """Snapshots shared objects before the hooks run; restores and reports changes.

    Args:
        places: ``(where, value, holder, name)`` for every place the engine
            neither copies nor reads back (see ``flr_nnx._engine._leaks.Root``): an object of
            the optimizer tree (``holder`` None: its contents are watched), or a
            binding whose rebinding is watched too: a class attribute
            (``holder`` the class), a global (the globals dict), a closure
            variable (its cell).
    """

    def __init__(self, places: Iterable[tuple[str, Any, Any, str]]):
        self.watched: list[tuple[str, Callable[[], Any], Any, Callable[[], None]]] = []
        seen: set[tuple[int, str]] = set()
        for where, value, holder, name in places:
            if holder is None:
                if _mutable(value) and (id(value), "") not in seen:
                    seen.add((id(value), ""))
                    self.watched.append(
                        (where, lambda v=value: _freeze(v), _freeze(value), _save(value))
                    )
                if _user_object(value):  # and the attributes of its (user) class
                    for klass in type(value).__mro__[:-1]:
                        if not _user_class(klass):
                            continue
                        skip = _cached(value)
                        for attr, bound in list(vars(klass).items()):
                            if attr.startswith("__") or attr in skip or isinstance(bound, OPAQUE):
                                continue
                            if (id(klass), attr) not in seen:
                                seen.add((id(klass), attr))
                                self.watched.append(
                                    _binding(f"{klass.__name__}.{attr}", bound, klass, attr)
                                )
            elif not isinstance(value, OPAQUE) and (id(holder), name) not in seen:
                seen.add((id(holder), name))
                self.watched.append(_binding(where, value, holder, name))

    def restore(self) -> list[str]:
        """Puts every changed object back; returns where the changes were."""
        changed = []
        for where, current, before, restore in self.watched:
            if not _unchanged(before, current()):
                changed.append(where)
                restore()
        return changed


_MISSING = object()
