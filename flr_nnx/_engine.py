"""The engine: runs a mutable hook optimizer as a pure JAX function.

This module is the only place where hooks are executed. Both bridges (NNX and
optax) call :func:`init` and :func:`step`; nothing else touches an optimizer's
state.

How it works:

- The optimizer object is a tree of Python containers: optimizer objects
  (their attributes), dicts (e.g. ``self.m`` keyed by parameter key), lists and
  tuples (e.g. :class:`~flr_nnx.compose.Chain`'s links). Every JAX array in that
  tree is *state*; everything else (Python floats, callables, ...) is static
  configuration that stays a compile-time constant.
- :func:`step` rebuilds a private copy of the optimizer with the state arrays
  put back in place, runs its ``__call__``, and reads the state back out. The
  user's object is never mutated.
- :func:`init` discovers lazily created state by tracing one step with
  recording containers: the initial value of a dict entry or attribute created
  by a hook is the first value the hook assigned to it (``_build``'s zeros,
  or a copy of ``param`` for an EMA of weights).
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import functools
import inspect
import sys
import types
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Literal, jaxpr_as_fun

from flr_nnx._errors import (
    FlrError,
    HookError,
    HyperparameterError,
    Missing,
    StateError,
    StructureError,
    TracerLeakError,
    describe,
)
from flr_nnx._jaxpr import evaluate_outputs
from flr_nnx._mutation import LIBRARIES, OPAQUE, MutationGuard
from flr_nnx._optimizer import _ON_NEW_ATTRIBUTE, Key, Optimizer, call

ATTR, ITEM, INDEX, FIELD, NODE = "attr", "item", "index", "field", "node"
Step = tuple[str, Any]
Path = tuple[Step, ...]


class _Absent:
    """Marks a container that does not exist yet in the template."""


_ABSENT = _Absent()


def is_array(value: Any) -> bool:
    """Whether ``value`` is optimizer state (a JAX or NumPy array)."""
    return isinstance(value, (jax.Array, np.ndarray))


# Arrays made live on purpose with `flr_nnx.hyper`: state even if the hooks only read them.
# Keyed by id (JAX arrays are unhashable), checked by identity, dropped when the array dies.
_LIVE: dict[int, weakref.ref] = {}


def mark_live(array: Any) -> Any:
    """Marks ``array`` as live state: kept in the state although the hooks only read it."""
    key = id(array)
    _LIVE[key] = weakref.ref(array, lambda _: _LIVE.pop(key, None))
    return array


def is_live(value: Any) -> bool:
    """Whether ``value`` was marked by :func:`mark_live` (e.g. made by ``flr_nnx.hyper``)."""
    ref = _LIVE.get(id(value))
    return ref is not None and ref() is value


def format_path(path: Path, root: str = "opt") -> str:
    """Renders a state path as Python, e.g. ``opt.links[0].m[('w',)]``."""
    text = root
    for kind, name in path:
        text += f".{name}" if kind in (ATTR, FIELD) else f"[{name!r}]"
    return text


# --------------------------------------------------------------------------
# Walking and rebuilding the optimizer's object tree.


def _is_namedtuple(node: Any) -> bool:
    return isinstance(node, tuple) and hasattr(type(node), "_fields")


def _pytree_children(node: Any) -> tuple[list[Any], Any] | None:
    leaves, treedef = jax.tree_util.tree_flatten(node, is_leaf=lambda x: x is not node)
    if treedef.num_nodes == 1 and len(leaves) == 1 and leaves[0] is node:
        return None
    return leaves, treedef


def _children(node: Any) -> Iterator[tuple[Step, Any]] | None:
    if isinstance(node, Optimizer):
        skip = type(node).transient
        return (((ATTR, k), v) for k, v in vars(node).items() if k not in skip)
    if isinstance(node, dict):
        return (((ITEM, k), v) for k, v in node.items())
    if _is_namedtuple(node):  # optax's states: keep their field names (`mu`, `nu`)
        return (((FIELD, f), getattr(node, f)) for f in node._fields)
    if isinstance(node, (list, tuple)):
        return (((INDEX, i), v) for i, v in enumerate(node))
    if is_array(node) or node is None or isinstance(node, (int, float, complex, str)):
        return None
    children = _pytree_children(node)
    if children is None:
        return None
    return (((NODE, i), v) for i, v in enumerate(children[0]))


@dataclasses.dataclass
class _Walk:
    arrays: dict[Path, Any] = dataclasses.field(default_factory=dict)
    statics: dict[Path, Any] = dataclasses.field(default_factory=dict)
    containers: dict[int, Path] = dataclasses.field(default_factory=dict)
    kinds: dict[Path, Any] = dataclasses.field(default_factory=dict)


def _kind(node: Any) -> Any:
    """What :func:`rebuild` needs to recreate a container created by a hook."""
    if isinstance(node, (dict, list, tuple, Optimizer)):
        return type(node)
    children = _pytree_children(node)
    return None if children is None else children[1]


def walk(root: Any) -> _Walk:
    """Collects every array (state) and static leaf of an optimizer tree by path."""
    out = _Walk()

    def visit(node: Any, path: Path) -> None:
        children = _children(node)
        if children is None:
            (out.arrays if is_array(node) else out.statics)[path] = node
            return
        out.containers.setdefault(id(node), path)
        out.kinds[path] = _kind(node)
        for step, child in children:
            visit(child, (*path, step))

    visit(root, ())
    return out


def _group(values: Mapping[Path, Any]) -> dict[Step, dict[Path, Any]]:
    grouped: dict[Step, dict[Path, Any]] = {}
    for path, value in values.items():
        grouped.setdefault(path[0], {})[path[1:]] = value
    return grouped


def rebuild(
    node: Any,
    values: Mapping[Path, Any],
    make_dict: type[dict] = dict,
    kinds: Mapping[Path, Any] | None = None,
    path: Path = (),
) -> Any:
    """A fresh copy of an optimizer tree with ``values`` put at their paths.

    Every container is copied, so hooks running on the copy cannot reach the
    original. Paths that do not exist yet are created: with the container type
    recorded in ``kinds`` (a namedtuple a hook created stays that namedtuple),
    else dicts for dict keys and lists for indices.
    """
    if () in values:
        return values[()]
    grouped = _group(values)
    if grouped and node is not _ABSENT and _children(node) is None:
        # A static value (`self.inner = None` in __init__) that a hook replaced at init
        # with a container holding state: recreate that container, with its state.
        node = _ABSENT

    def child(step: Step, old: Any) -> Any:
        return rebuild(old, grouped.pop(step, {}), make_dict, kinds, (*path, step))

    if node is _ABSENT:
        kind = (kinds or {}).get(path)
        if not grouped and kind is None:
            return node
        if isinstance(kind, type) and issubclass(kind, tuple) and hasattr(kind, "_fields"):
            return kind._make([child((FIELD, f), _ABSENT) for f in kind._fields])
        if isinstance(kind, type) and issubclass(kind, tuple):
            size = 1 + max(
                [i for _, i in grouped]
                + [p[-1][1] for p in kinds or () if len(p) == len(path) + 1 and p[:-1] == path],
                default=-1,
            )
            items = [child((INDEX, i), _ABSENT) for i in range(size)]
            return kind(items)
        if kind is not None and not isinstance(kind, type):  # a pytree node's treedef
            return kind.unflatten([child((NODE, i), _ABSENT) for i in range(kind.num_leaves)])
        if isinstance(kind, type) and issubclass(kind, Optimizer):
            node = object.__new__(kind)
        elif isinstance(kind, type) and issubclass(kind, (dict, list)):
            node = kind()
        elif not grouped:
            return node
        else:
            node = {} if next(iter(grouped))[0] == ITEM else []
    if isinstance(node, Optimizer):
        new = object.__new__(type(node))
        attrs = new.__dict__
        skip = type(node).transient
        for name, old in vars(node).items():
            if name not in skip:
                attrs[name] = child((ATTR, name), old)
        for step in list(grouped):
            attrs[step[1]] = child(step, _ABSENT)
        return new
    if isinstance(node, dict):
        if type(node) is collections.defaultdict and make_dict is not dict:
            new_dict = _RecordingDefaultDict(node.default_factory)
        else:
            new_dict = make_dict() if type(node) is dict else copy.copy(node)
        for key, old in node.items():
            dict.__setitem__(new_dict, key, child((ITEM, key), old))
        for step in list(grouped):
            dict.__setitem__(new_dict, step[1], child(step, _ABSENT))
        return new_dict
    if _is_namedtuple(node):
        return type(node)._make([child((FIELD, f), getattr(node, f)) for f in node._fields])
    if isinstance(node, (list, tuple)):
        size = max([len(node)] + [i + 1 for _, i in grouped])
        items = [child((INDEX, i), node[i] if i < len(node) else _ABSENT) for i in range(size)]
        return type(node)(items)
    if isinstance(node, np.ndarray):  # mutable and shared with the user: an immutable copy
        return jnp.asarray(node)
    if is_array(node):
        return node
    children = _pytree_children(node)
    if children is None:
        return node
    leaves, treedef = children
    return treedef.unflatten([child((NODE, i), leaf) for i, leaf in enumerate(leaves)])


# --------------------------------------------------------------------------
# Recording first assignments while discovering state at init.


class _Recorder:
    def __init__(self) -> None:
        self.records: list[tuple[Any, Step, dict[Path, Any]]] = []
        # Plain dicts replaced by recording copies: a hook still holding the original
        # (``self.m = m = {}``) would fill a dict the engine never sees.
        self.replaced: list[tuple[Any, Step, dict[Any, Any], dict[Any, Any]]] = []

    def record(self, container: Any, step: Step, value: Any) -> Any:
        copied = _recording_copy(value)
        if copied is not value and isinstance(value, dict):
            self.replaced.append((container, step, value, copied))
        found = walk(copied)
        # A Python number assigned first (`self.v[key] = 1.0`) is the entry's first value too.
        self.records.append((container, step, {**found.arrays, **_scalars(found.statics)}))
        return copied

    def check_aliases(self) -> None:
        for container, step, original, copied in self.replaced:
            if any(key not in copied for key in original):
                where = f".{step[1]}" if step[0] == ATTR else f"[{step[1]!r}]"
                raise StateError(
                    f"A hook of {type(container).__name__} assigned a dict to `{where}` and then "
                    "added entries through another name for it (e.g. `self.m = m = {}` followed "
                    "by `m[key] = ...`). During init the engine records state through the "
                    "attribute, so those entries would be lost. Fix: add entries through the "
                    "attribute itself (`self.m[key] = ...`)."
                )

    def on_new_attribute(self, obj: Any, name: str, value: Any) -> Any:
        if name in type(obj).transient:  # not state: nothing to record
            return value
        return self.record(obj, (ATTR, name), value)

    def first_values(self, containers: Mapping[int, Path]) -> dict[Path, Any]:
        first: dict[Path, Any] = {}
        for container, step, snapshot in self.records:
            base = containers.get(id(container))
            if base is None:
                continue
            for rel, leaf in snapshot.items():
                first.setdefault((*base, step, *rel), leaf)
        return first


_RECORDER: list[_Recorder] = []


class _RecordingDict(dict):
    """A dict that tells the active recorder about every new key."""

    def __setitem__(self, key: Any, value: Any) -> None:
        if key not in self and _RECORDER:
            value = _RECORDER[-1].record(self, (ITEM, key), value)
        dict.__setitem__(self, key, value)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value


class _RecordingDefaultDict(collections.defaultdict):
    """A defaultdict (torch-style ``self.state[key]``) that records new keys too."""

    __setitem__ = _RecordingDict.__setitem__
    setdefault = _RecordingDict.setdefault
    update = _RecordingDict.update

    def __missing__(self, key: Any) -> Any:
        if self.default_factory is None:
            raise KeyError(key)
        self[key] = self.default_factory()
        # The stored value is the recording copy, not the factory's original.
        return dict.__getitem__(self, key)


def _recording_copy(value: Any) -> Any:
    """Plain dicts inside a newly assigned value become recording dicts."""
    if type(value) is collections.defaultdict:
        new_default = _RecordingDefaultDict(value.default_factory)
        for key, child in value.items():
            dict.__setitem__(new_default, key, _recording_copy(child))
        return new_default
    if type(value) is dict:
        new = _RecordingDict()
        for key, child in value.items():
            dict.__setitem__(new, key, _recording_copy(child))
        return new
    return value


# --------------------------------------------------------------------------
# The state and its layout.


class Layout(NamedTuple):
    """The static description of a hook optimizer's state.

    Attributes:
        paths: where each state array lives in the optimizer's object tree.
        mirror: for each path, its key path in the nested state dict (the
            optimizer's attribute names, with parameter keys spliced in so the
            state mirrors the model).
        param_keys: the parameter keys seen at init, in order.
        param_of: for each path, the index of the parameter it is keyed by, or -1.
        statics: static attributes created by hooks, to recreate at each step.
        containers: containers created by hooks (their paths and types), so a
            namedtuple or pytree node a hook created is rebuilt as one.
        param_shapes: the shape of each parameter at init, in order.
        hypers: live hyperparameters (made with ``flr_nnx.hyper``, only read by
            the hooks): their paths and the class name of the optimizer holding
            them, whose constructor checks apply when they are set.
    """

    paths: tuple[Path, ...]
    mirror: tuple[tuple[Any, ...], ...]
    param_keys: tuple[Key, ...]
    param_of: tuple[int, ...]
    statics: tuple[tuple[Path, Any], ...]
    containers: tuple[tuple[Path, Any], ...] = ()
    hypers: tuple[tuple[Path, str], ...] = ()
    param_shapes: tuple[tuple[int, ...], ...] = ()


def _mirror(path: Path) -> tuple[Any, ...]:
    out: list[Any] = []
    for kind, name in path:
        if kind == ITEM and isinstance(name, tuple):
            out.extend(name)
        else:
            out.append(name)
    return tuple(out)


def _param_of(path: Path, index: Mapping[Key, int]) -> int:
    for kind, name in reversed(path):
        if kind == ITEM and isinstance(name, tuple) and name in index:
            return index[name]
    return -1


def nest(
    mirror: Sequence[tuple[Any, ...]], leaves: Sequence[Any], paths: Sequence[Path] = ()
) -> dict[Any, Any]:
    """Builds the nested state dict from mirrored key paths."""
    tree: dict[Any, Any] = {}
    for n, (parts, leaf) in enumerate(zip(mirror, leaves, strict=True)):
        node = tree
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            existing = node.get(part)
            if existing is not None and (last or not isinstance(existing, dict)):
                where = format_path(paths[n]) if paths else "/".join(map(str, parts))
                raise StateError(
                    f"State {where} lands on {'/'.join(map(str, parts[: depth + 1]))} in the "
                    "nested state, where other state already is. Fix: give the attributes or "
                    "dict keys distinct names."
                )
            if last:
                node[part] = leaf
            else:
                node = node.setdefault(part, {})
    return tree


def unnest(mirror: Sequence[tuple[Any, ...]], tree: Mapping[Any, Any]) -> list[Any]:
    """Reads leaves back from a nested state dict, in layout order."""
    leaves = []
    for parts in mirror:
        node: Any = tree
        for part in parts:
            node = node[part]
        leaves.append(node)
    return leaves


@jax.tree_util.register_pytree_with_keys_class
class HookState:
    """The state of a hook optimizer: a nested dict of arrays plus its layout.

    The nested dict mirrors the optimizer's attributes, with parameter keys
    spliced in: the tutorial's Adam on a model with ``layers[0].kernel`` has
    ``state.tree['m']['layers'][0]['kernel']`` and ``state.tree['t']``. The
    layout is static (part of the pytree structure), so the state can go
    through ``jax.jit``, ``optax.MultiSteps`` and checkpointing like any pytree.
    """

    def __init__(self, tree: dict[Any, Any], layout: Layout):
        self.tree = tree
        self.layout = layout

    def leaves(self) -> list[Any]:
        return unnest(self.layout.mirror, self.tree)

    def tree_flatten_with_keys(self) -> tuple[tuple[tuple[Any, Any], ...], Layout]:
        return ((jax.tree_util.GetAttrKey("tree"), self.tree),), self.layout

    @classmethod
    def tree_unflatten(cls, layout: Layout, children: Sequence[Any]) -> HookState:
        return cls(children[0], layout)

    def __repr__(self) -> str:
        return f"HookState({self.tree!r})"


# --------------------------------------------------------------------------
# Tracer leaks: traced values stored where the engine does not look.

_SCAN_BUDGET = 10_000  # objects inspected per scan; a scan only runs while tracing


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


def _unmanaged(work: Any) -> list[Root]:
    """Places a hook can write to that the engine neither copies nor reads back.

    These are the static (non-container) objects of the optimizer tree, the
    class attributes of its optimizer classes, and the globals and closure
    variables that their methods and static callables refer to.
    """
    roots: list[Root] = []
    classes: dict[type, None] = {}
    functions: list[tuple[str, Any]] = []

    def visit(node: Any, path: Path) -> None:
        if isinstance(node, Optimizer):
            classes.setdefault(type(node))
        children = _children(node)
        if children is None:
            if not is_array(node):
                roots.append(Root(format_path(path), node, "an object the engine does not copy"))
                if isinstance(node, types.MethodType):  # a user object's method: the object too
                    roots.append(
                        Root(f"{format_path(path)}.__self__", node.__self__, "a method's object")
                    )
                functions.extend((format_path(path), f) for f in _functions_of(node))
            return
        for step_, child in children:
            visit(child, (*path, step_))

    visit(work, ())
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


def _library(function: types.FunctionType) -> bool:
    """Whether ``function`` belongs to an installed library, not to the user's code."""
    root = (function.__module__ or "").partition(".")[0]
    return root in LIBRARIES or root in sys.stdlib_module_names


def _tracers(roots: Sequence[Root]) -> dict[int, tuple[str, str, Any]]:
    """Every tracer reachable from ``roots`` through data (not code), by id."""
    found: dict[int, tuple[str, str, Any]] = {}
    seen: set[int] = set()
    budget = [_SCAN_BUDGET]

    def scan(value: Any, where: str, top: bool, what: str) -> None:
        if budget[0] <= 0 or id(value) in seen:
            return
        seen.add(id(value))
        budget[0] -= 1
        if isinstance(value, jax.core.Tracer):
            found.setdefault(id(value), (where, what, value))
        elif is_array(value) or (isinstance(value, OPAQUE) and not top):
            return
        elif isinstance(value, dict):
            for key, child in list(value.items()):
                scan(child, f"{where}[{key!r}]", False, what)
        elif isinstance(value, (list, tuple, set, frozenset, collections.deque)):
            for i, child in enumerate(list(value)):
                scan(child, f"{where}[{i}]", False, what)
        elif isinstance(value, type) and top:
            for name, child in list(vars(value).items()):
                if not name.startswith("__"):
                    scan(child, f"{where}.{name}", False, what)
        elif not isinstance(value, OPAQUE) and isinstance(getattr(value, "__dict__", None), dict):
            for name, child in list(vars(value).items()):
                scan(child, f"{where}.{name}", False, what)

    for root in roots:
        scan(root.value, root.where, True, root.what)
    return found


def _check_leaks(opt: Optimizer, before: Mapping[int, Any], work: Any, where: str) -> None:
    leaked = [hit for key, hit in _tracers(_unmanaged(work)).items() if key not in before]
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


# --------------------------------------------------------------------------
# init and step.


def _guard(roots: Sequence[Root]) -> MutationGuard:
    return MutationGuard([(r.where, r.value, r.holder, r.name) for r in roots])


def _check_unchanged(opt: Optimizer, changed: Sequence[str], where: str) -> None:
    if not changed:
        return
    raise StateError(
        f"A hook of {type(opt).__name__} changed `{changed[0]}`{_and_more(changed[1:])} during "
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


def _check_statics(before: Mapping[Path, Any], after: Mapping[Path, Any], where: str) -> None:
    for path, value in after.items():
        if path in before and not _same_static(before[path], value):
            raise StateError(
                f"{format_path(path)} is a Python value (a compile-time constant), but a hook "
                f"changed it from {before[path]!r} to {value!r} during {where}; the change would "
                "be lost after this step. Fix: store it as a JAX array "
                "(e.g. `jnp.asarray(value)`) so it becomes optimizer state, or use flr_nnx.hyper."
            )


def _discovery(
    opt: Optimizer,
    keys: tuple[Key, ...],
    found: dict[str, Any],
    given: Mapping[str, Any] | None = None,
) -> Any:
    """The function :func:`init` traces: one step that records first values.

    Tracing it fills ``found`` with the state's paths, the static values and
    the containers the hooks created; it returns the initial value of every
    state array, in path order.
    """

    def discover(values: list[Any]) -> list[Any]:
        flat = dict(zip(keys, values, strict=True))
        recorder = _Recorder()
        work = rebuild(opt, {}, _RecordingDict)
        before = walk(work)
        roots = _unmanaged(work)
        known_tracers = _tracers(roots)
        guard = _guard(roots)
        _RECORDER.append(recorder)
        token = _ON_NEW_ATTRIBUTE.set(recorder.on_new_attribute)
        try:
            grads = {k: jnp.zeros_like(v) for k, v in flat.items()}
            loss = jnp.zeros((), jnp.float32)
            # optax's extra arguments are not known at init: stand-ins of their form.
            extra = {"grad": dict(grads), "value_fn": lambda _: loss, **(given or {})}
            try:
                updates = _call_hooks(work, loss, grads, flat, extra)
                _check_leaks(opt, known_tracers, work, "init")
            finally:
                changed = guard.restore()
        finally:
            _ON_NEW_ATTRIBUTE.reset(token)
            _RECORDER.pop()
        _check_unchanged(opt, changed, "init")
        recorder.check_aliases()
        check_updates(opt, updates, grads, flat)
        after = walk(work)
        _check_statics(before.statics, after.statics, "init")
        first = recorder.first_values(after.containers)
        paths = tuple(p for p, value in after.arrays.items() if _is_state(p, value, before.arrays))
        initial = []
        for path in paths:
            value = before.arrays.get(path, first.get(path, after.arrays[path]))
            value = _scalars(before.statics).get(path, value)
            final = after.arrays[path]
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
            initial.append(value)
        new_statics = tuple((p, v) for p, v in after.statics.items() if p not in before.statics)
        found["containers"] = tuple((p, k) for p, k in after.kinds.items() if p not in before.kinds)
        found["paths"] = paths
        found["statics"] = new_statics
        found["hypers"] = tuple(
            (p, _owner_name(work, p))
            for p in paths
            if p in before.arrays and after.arrays[p] is before.arrays[p]
        )
        return initial

    return discover


def _owner(root: Any, path: Path) -> Optimizer | None:
    """The optimizer whose attribute ``path`` is, or None."""
    node = root
    for kind, name in path[:-1]:
        if kind == ATTR:
            node = vars(node).get(name)
        elif kind in (ITEM, INDEX) and isinstance(node, (dict, list, tuple)):
            node = node[name]
        else:
            return None
    return node if isinstance(node, Optimizer) and path[-1][0] == ATTR else None


def _owner_name(root: Any, path: Path) -> str:
    """The class name of the optimizer whose attribute ``path`` is, or ``""``."""
    owner = _owner(root, path)
    return "" if owner is None else type(owner).__name__


def _not_none(root: Any, path: Path) -> bool:
    """Whether ``path`` is a constructor argument of its optimizer that is not None by default."""
    owner = _owner(root, path)
    if owner is None:
        return False
    try:
        parameter = inspect.signature(type(owner).__init__).parameters.get(path[-1][1])
    except (TypeError, ValueError):
        return False
    return parameter is not None and parameter.default is not None


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


def _scalars(statics: Mapping[Path, Any]) -> dict[Path, Any]:
    return {p: v for p, v in statics.items() if isinstance(v, (bool, int, float, complex))}


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


def is_elementwise(opt: Any) -> bool:
    """Whether ``opt``'s own class declares ``elementwise = True``.

    Never inferred, and not inherited: a subclass may change ``call_param`` in a
    way that breaks the promise, so it must make the promise itself.
    """
    return vars(type(opt)).get("elementwise", False) is True


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
    check_transient(opt)
    if shardings is None:
        shardings = _spread_shardings(params)
    grouped = _init_grouped(opt, params, shardings, extra) if is_elementwise(opt) else None
    if grouped is not None:
        paths, initial, statics, containers, hypers = grouped
    else:
        found: dict[str, Any] = {}
        discover = _discovery(opt, keys, found, extra)
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
            out_shardings = _state_shardings(shaped, params, shardings)
            initial = jax.jit(jaxpr_as_fun(closed), out_shardings=out_shardings)(*flat)
        else:
            initial = evaluate_outputs(closed, flat)
        paths, statics, containers = found["paths"], found["statics"], found["containers"]
        hypers = found["hypers"]
    mirror = tuple(_mirror(p) for p in paths)
    index = {k: i for i, k in enumerate(keys)}
    layout = Layout(
        paths=paths,
        mirror=mirror,
        param_keys=keys,
        param_shapes=tuple(tuple(jnp.shape(params[k])) for k in keys),
        param_of=tuple(_param_of(p, index) for p in paths),
        statics=statics,
        containers=containers,
        hypers=hypers,
    )
    tree = nest(mirror, initial, paths)
    _check_sortable(tree)
    return HookState(tree, layout)


def _check_sortable(tree: Mapping[Any, Any], where: tuple[Any, ...] = ()) -> None:
    """JAX flattens a dict in sorted key order, so keys of one dict must compare."""
    try:
        sorted(tree)
    except TypeError:
        kinds = sorted({type(k).__name__ for k in tree})
        place = "top level" if not where else "/".join(map(str, where))
        raise StateError(
            f"The optimizer's state has a dict at `{place}` (in the nested state) whose keys mix "
            f"{' and '.join(kinds)} ({list(tree)[:6]}); JAX sorts dict keys to flatten a "
            "pytree and cannot compare these. Fix: use keys of one type in that dict "
            "(e.g. `str(i)` for integer indices)."
        ) from None
    for key, child in tree.items():
        if isinstance(child, dict):
            _check_sortable(child, (*where, key))


def check_transient(root: Any) -> None:
    """Transient attributes are per-step values: declared as names, never set in ``__init__``."""

    def visit(node: Any, path: Path) -> None:
        if isinstance(node, Optimizer):
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
        children = _children(node)
        for step_, child in children or ():
            visit(child, (*path, step_))

    visit(root, ())


class _NotUniform(Exception):
    """The grouped discovery does not apply; run the full one."""


def _init_grouped(
    opt: Optimizer,
    params: Mapping[Key, Any],
    shardings: Mapping[Key, Any],
    extra: Mapping[str, Any] | None = None,
) -> tuple[tuple[Path, ...], list[Any], tuple[Any, ...], tuple[Any, ...], tuple[Any, ...]] | None:
    """Discovery on one parameter per shape and dtype, or None where it cannot apply.

    Tracing a step costs Python time for every parameter, about 20x what
    ``optax.adam().init`` spends on a parameter; most models have few distinct
    shapes. The state found for a representative is repeated for every
    parameter of its group, with fresh buffers (the state is donated). It falls
    back (None) when the initial values depend on the parameters' values, when
    hooks create state outside a parameter's entry, when the optimizer already
    holds per-parameter state, or when grouping saves little.
    """
    keys = tuple(params)
    groups: dict[Any, list[Key]] = {}
    for key, value in params.items():
        aval = jax.typeof(value)
        # Under an explicit-axes mesh the type carries the sharding, and state
        # derived from a parameter inherits it: group by it too.
        signature = (
            tuple(aval.shape),
            aval.dtype,
            getattr(aval, "weak_type", False),
            getattr(aval, "sharding", None),
        )
        groups.setdefault(signature, []).append(key)
    if len(groups) * 2 > len(keys):
        return None
    members = {group[0]: group for group in groups.values()}
    keyset = set(keys)
    existing = walk(opt)
    for path in (*existing.arrays, *existing.statics, *existing.kinds):
        if any(kind == ITEM and _is_key(name, keyset) for kind, name in path):
            return None  # state the user created per parameter cannot be repeated
    found: dict[str, Any] = {}
    reps = tuple(members)
    traced = jax.jit(_discovery(opt, reps, found, extra)).trace([params[k] for k in reps])
    if len(traced.jaxpr.jaxpr.invars) != len(reps) or any(_input_dependent(traced.jaxpr)):
        return None  # initial values depend on the parameters or on an enclosing jit
    # State a hook creates outside a parameter's entry (a count of all elements, a
    # dict keyed by strings) may depend on the whole set of parameters, which the
    # representatives do not show.
    rep_set = set(reps)
    created = [p for p in found["paths"] if p not in existing.arrays]
    created += [p for p, _ in (*found["statics"], *found["containers"])]
    if any(not any(k == ITEM and _is_key(n, rep_set) for k, n in p) for p in created):
        return None
    index = {k: i for i, k in enumerate(keys)}
    try:
        paths = _repeat(found["paths"], members, index)
        statics = _repeat([p for p, _ in found["statics"]], members, index)
        containers = _repeat([p for p, _ in found["containers"]], members, index)
    except _NotUniform:
        return None
    flat = jax.tree.leaves([params[k] for k in reps])
    if shardings:
        initial = _spread(traced.jaxpr, flat, paths, params, shardings)
    else:
        rep_values = evaluate_outputs(traced.jaxpr, flat)
        # The representative keeps its own buffer; the others get copies, never
        # aliases, because the state is donated at every step.
        initial = [rep_values[i] if own else jnp.copy(rep_values[i]) for _, i, own in paths]
    return (
        tuple(p[0] for p in paths),
        initial,
        tuple((p[0], found["statics"][p[1]][1]) for p in statics),
        tuple((p[0], found["containers"][p[1]][1]) for p in containers),
        found["hypers"],
    )


def _state_shardings(
    shaped: Sequence[tuple[Path, Sequence[int]]],
    params: Mapping[Key, Any],
    shardings: Mapping[Key, Any],
) -> list[Any]:
    """The sharding of each state array, given its path and shape.

    State keyed by a parameter and of its shape gets that parameter's sharding;
    other state (step counts, factored moments) is left to XLA (None).
    """
    keys = tuple(params)
    index = {k: i for i, k in enumerate(keys)}
    out = []
    for path, shape in shaped:
        owner = _param_of(path, index)
        same_shape = owner >= 0 and tuple(shape) == tuple(jnp.shape(params[keys[owner]]))
        out.append(shardings.get(keys[owner]) if same_shape else None)
    return out


def _spread(
    closed: Any,
    flat: list[Any],
    paths: Sequence[tuple[Path, int, bool]],
    params: Mapping[Key, Any],
    shardings: Mapping[Key, Any],
) -> list[Any]:
    """Every parameter's initial state, created directly with its parameter's sharding.

    One program computes the representatives' (input-independent) values and
    returns one output per parameter: XLA writes each shard in place, never a
    whole array on one device, and gives repeated outputs distinct buffers.
    """
    shaped = [(path, closed.out_avals[i].shape) for path, i, _ in paths]
    out_shardings = _state_shardings(shaped, params, shardings)
    order = [i for _, i, _ in paths]
    values = jaxpr_as_fun(closed)

    def spread(*leaves: Any) -> list[Any]:
        outs = values(*leaves)
        return [outs[i] for i in order]

    return jax.jit(spread, out_shardings=out_shardings)(*flat)


def _is_key(name: Any, keyset: set[Key]) -> bool:
    try:
        return name in keyset
    except TypeError:  # an unhashable dict key cannot be a parameter key
        return False


def _input_dependent(closed: Any) -> list[bool]:
    """For each output of a traced function, whether it depends on an input."""
    jaxpr = closed.jaxpr
    tainted = set(jaxpr.invars)
    for eqn in jaxpr.eqns:
        if any(not isinstance(v, Literal) and v in tainted for v in eqn.invars):
            tainted.update(eqn.outvars)
    return [not isinstance(v, Literal) and v in tainted for v in jaxpr.outvars]


def _repeat(
    paths: Sequence[Path], members: Mapping[Key, list[Key]], index: Mapping[Key, int]
) -> list[tuple[Path, int, bool]]:
    """Repeats paths keyed by a representative for every parameter of its group.

    Returns ``(path, position in paths, whether it is the representative's own)``
    in the order the full discovery walks them: a dict keyed by parameters
    lists them in parameter order.
    """
    rows = []
    first: dict[Path, int] = {}
    for i, path in enumerate(paths):
        hits = [j for j, (kind, name) in enumerate(path) if kind == ITEM and name in members]
        if len(hits) > 1:
            raise _NotUniform
        if not hits:
            rows.append(((i, -1, i), path, i, True))
            continue
        j = hits[0]
        prefix, rep = path[:j], path[j][1]
        start = first.setdefault(prefix, i)
        for key in members[rep]:
            new = (*prefix, (ITEM, key), *path[j + 1 :])
            rows.append(((start, index[key], i), new, i, key == rep))
    rows.sort(key=lambda row: row[0])
    return [(path, i, own) for _, path, i, own in rows]


def _spread_shardings(params: Mapping[Key, Any]) -> dict[Key, Any]:
    """The shardings of the concrete parameters that live on several devices."""
    out = {}
    for key, value in params.items():
        if isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer):
            sharding = value.sharding
            if len(sharding.device_set) > 1:
                out[key] = sharding
    return out


def check_grads(
    layout: Layout, grads: Mapping[Key, Any], params: Mapping[Key, Any] | Any = None
) -> None:
    """Raises :class:`StructureError` for keys, shapes or dtypes unlike those at init."""
    if tuple(grads) == layout.param_keys:
        _check_shapes(layout, grads, params)
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
    _check_shapes(layout, grads, params)


def _check_shapes(
    layout: Layout, grads: Mapping[Key, Any], params: Mapping[Key, Any] | Any
) -> None:
    for key, shape in zip(layout.param_keys, layout.param_shapes):
        grad = grads.get(key)
        if grad is not None and tuple(grad.shape) != shape:
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
    if not isinstance(updates, Mapping):
        raise HookError(
            f"{name}.__call__ returned {describe(updates)}; expected a dict from parameter "
            "key to update. Fix: return a dict keyed like `grads`."
        )
    out = {}
    for key, grad in grads.items():
        if key not in updates:
            out[key] = jnp.zeros_like(grad)
            continue
        update = updates[key]
        param = params[key] if isinstance(params, Mapping) else grad
        where = f"{name}.call_param for parameter {key}"
        if update is None or not hasattr(update, "shape") or not hasattr(update, "dtype"):
            raise HookError(
                f"{where} returned {describe(update)}; expected an array of shape "
                f"{tuple(grad.shape)} and dtype {param.dtype}. Fix: return the update "
                "as a JAX array (positive means descent)."
            )
        if tuple(update.shape) != tuple(grad.shape) or update.dtype != param.dtype:
            raise HookError(
                f"{where} returned {describe(update)}; expected shape {tuple(grad.shape)} "
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


def _call_hooks(
    work: Optimizer, loss: Any, grads: dict[Key, Any], params: Any, extra: Mapping[str, Any]
) -> Any:
    """Runs ``work``; a JAX error about a :class:`Missing` becomes its clear error."""
    try:
        return call(work, loss=loss, grads=grads, params=params, **extra)
    except FlrError:
        raise
    except jax.errors.ConcretizationTypeError as error:
        raise HookError(
            f"A hook of {type(work).__name__} needed the value of a traced array in Python "
            "(an `if` or `while` on it, `float(loss)`, `bool(...)`, `int(...)`). Hooks are "
            "traced: they run once, while JAX compiles the step, on abstract arrays with no "
            "values yet. Fix: choose between values with `jnp.where(cond, a, b)` or "
            "`jax.lax.cond(cond, f, g, ...)`, loop with `jax.lax.while_loop`/`fori_loop`, and "
            "look at values with `jax.debug.print`. JAX said: " + str(error).split("\n")[0]
        ) from error
    except (TypeError, ValueError) as error:
        # JAX's own checks reject the stand-in first (``jnp.sqrt(param)``) and name it.
        text = str(error)
        for value in (params, loss):
            if isinstance(value, Missing) and ("_errors.Missing" in text or repr(value) in text):
                raise value.error() from error
        nones = [p for p, v in walk(work).statics.items() if v is None and _not_none(work, p)]
        if "None" in text and nones:
            shown = ", ".join(f"`{format_path(p)}`" for p in nones[:5])
            raise HyperparameterError(
                f"A hook of {type(work).__name__} computed with None ({text}). These "
                f"hyperparameters are None: {shown}; a hook used one. Fix: give it a value the "
                "hooks can compute with (a number, an array or a schedule), as the constructor "
                "takes it."
            ) from error
        raise


def _contract_hint(opt: Optimizer) -> str:
    if not is_elementwise(opt):
        return ""
    name = type(opt).__name__
    return (
        f" Note: {name} declares `elementwise = True`, so init discovered its state on one "
        "parameter per shape and dtype and repeated it for the others. If its hooks create "
        "state that depends on the parameter key, or on how the parameters are split into "
        f"leaves, remove `elementwise = True` from {name}."
    )


def _and_more(names: Sequence[str]) -> str:
    if not names:
        return ""
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f" (also {shown})"


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
    check_grads(layout, grads, params)
    leaves = state.leaves()
    values: dict[Path, Any] = dict(zip(layout.paths, leaves, strict=True))
    values.update(layout.statics)
    work = rebuild(opt, values, kinds=dict(layout.containers))
    before = walk(work)
    roots = _unmanaged(work)
    known_tracers = _tracers(roots)
    guard = _guard(roots)
    try:
        updates = _call_hooks(work, loss, dict(grads), params, extra or {})
        _check_leaks(opt, known_tracers, work, "a step")
    finally:
        changed = guard.restore()
    _check_unchanged(opt, changed, "a step")
    updates = check_updates(opt, updates, grads, params)
    after = walk(work)
    _check_statics(before.statics, after.statics, "a step")
    new_leaves = []
    for path, old in zip(layout.paths, leaves, strict=True):
        if path not in after.arrays:
            raise StateError(
                f"{format_path(path)} was optimizer state at init but is gone after this step. "
                "Fix: keep every state entry (assign a new value instead of deleting it)."
                + _contract_hint(opt)
            )
        new = after.arrays[path]
        if not is_array(new) or new.shape != old.shape or new.dtype != old.dtype:
            raise StateError(
                f"{format_path(path)} changed from {describe(old)} to {describe(new)} during a "
                "step; state must keep its shape and dtype so the step compiles once. Fix: "
                f"cast it back, e.g. `.astype({old.dtype})`, or create it with the right dtype."
                + _contract_hint(opt)
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
                "`flr.hyper(...)`." + _contract_hint(opt)
            )
    created = [p for p in after.arrays if p not in known and p not in before.arrays]
    created += [p for p in after.statics if p not in before.statics and p not in known]
    if created:
        raise StateError(
            f"{format_path(created[0])} was created after init"
            f"{_and_more([format_path(p) for p in created[1:]])}. The state "
            "structure is fixed by the first step (at init) so training compiles once. "
            "Fix: create all state on the first call of the hook (e.g. in `_build`), "
            "for every parameter, or initialise again with the new parameters."
            + _contract_hint(opt)
        )
    return updates, HookState(nest(layout.mirror, new_leaves), layout)
