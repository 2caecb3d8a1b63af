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

import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import numpy as np

_DEPTH = 3  # how deep plain objects are compared and restored
_OPAQUE = (
    types.ModuleType,
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    property,
    staticmethod,
    classmethod,
)


def _mutable(value: Any) -> bool:
    """A static object whose contents a hook could change in place."""
    if isinstance(value, (set, bytearray, list, dict)):
        return True
    if isinstance(value, (_OPAQUE, jax.Array, np.ndarray, np.generic, np.dtype)):
        return False
    return isinstance(getattr(value, "__dict__", None), dict)


def _freeze(value: Any, depth: int = _DEPTH) -> Any:
    """A comparable picture of ``value``; equal pictures mean unchanged contents.

    Containers compare their items by identity first (so a NaN or an array
    that was not reassigned is unchanged), then by equality.
    """
    if depth <= 0 or isinstance(value, (_OPAQUE, jax.Array, np.ndarray)):
        return ("id", id(value))
    if isinstance(value, (set, frozenset)):
        return ("set", frozenset(value))
    if isinstance(value, (list, tuple)):
        return ("seq", type(value), tuple(_freeze(v, depth - 1) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((k, _freeze(v, depth - 1)) for k, v in value.items()))
    if isinstance(value, bytearray):
        return ("bytes", bytes(value))
    if _mutable(value):
        return ("obj", type(value), _freeze(vars(value), depth - 1))
    return ("value", value)


def _save(value: Any, depth: int = _DEPTH) -> Callable[[], None]:
    """A function that puts ``value``'s contents back as they are now."""
    if depth <= 0 or not _mutable(value):
        return lambda: None
    if isinstance(value, (set, bytearray, list, dict)):
        items = value.copy()
        inner = [_save(v, depth - 1) for v in (value.values() if isinstance(value, dict) else ())]
    else:
        items = dict(vars(value))
        inner = [_save(v, depth - 1) for v in items.values()]

    def restore() -> None:
        for undo in inner:
            undo()
        if isinstance(value, (set, dict)):
            value.clear()
            value.update(items)
        elif isinstance(value, (list, bytearray)):
            value[:] = items
        else:
            vars(value).clear()
            vars(value).update(items)

    return restore


class MutationGuard:
    """Snapshots shared objects before the hooks run; restores and reports changes.

    Args:
        statics: the static (non-state) leaves of the optimizer tree, by where
            they are (``opt.cfg``).
        classes: the optimizer classes in the tree; their own attributes
            (other than methods) are watched too.
    """

    def __init__(self, statics: Mapping[str, Any], classes: Iterable[type]):
        self.watched: list[tuple[str, Callable[[], Any], Any, Callable[[], None]]] = []
        for where, value in statics.items():
            if _mutable(value):
                self.watched.append(
                    (where, lambda v=value: _freeze(v), _freeze(value), _save(value))
                )
        for cls in classes:
            for klass in cls.__mro__[:-1]:
                if klass.__module__.startswith("flr_nnx._optimizer"):
                    continue
                for name, value in list(vars(klass).items()):
                    if name.startswith("__") or isinstance(value, _OPAQUE):
                        continue
                    self.watched.append(self._class_attribute(klass, name, value))

    @staticmethod
    def _class_attribute(
        klass: type, name: str, value: Any
    ) -> tuple[str, Callable[[], Any], Any, Callable[[], None]]:
        undo_inner = _save(value)

        def current() -> Any:
            now = vars(klass).get(name, _MISSING)
            return (id(now), _freeze(now) if now is value else None)

        def restore() -> None:
            undo_inner()
            setattr(klass, name, value)

        return (f"{klass.__name__}.{name}", current, current(), restore)

    def restore(self) -> list[str]:
        """Puts every changed object back; returns where the changes were."""
        changed = []
        for where, current, before, restore in self.watched:
            if current() != before:
                changed.append(where)
                restore()
        return changed


_MISSING = object()
