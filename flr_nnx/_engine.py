"""The engine: runs a mutable hook optimizer as a pure JAX function.

This module is the only place where hooks are executed. Both bridges (NNX and
optax) call :func:`init` and :func:`step`; nothing else touches an optimizer's
state.

How it works:

- The optimizer object is a tree of Python containers: optimizer objects
  (their attributes), dicts (e.g. ``self.m`` keyed by parameter key), lists and
  tuples (e.g. :class:`~flr_nnx.optim.Chain`'s links). Every JAX array in that
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

import copy
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from flr_nnx._errors import HookError, StateError, StructureError, describe
from flr_nnx._optimizer import _ON_NEW_ATTRIBUTE, Key, Optimizer

ATTR, ITEM, INDEX, NODE = "attr", "item", "index", "node"
Step = tuple[str, Any]
Path = tuple[Step, ...]


class _Absent:
    """Marks a container that does not exist yet in the template."""


_ABSENT = _Absent()


def is_array(value: Any) -> bool:
    """Whether ``value`` is optimizer state (a JAX or NumPy array)."""
    return isinstance(value, (jax.Array, np.ndarray))


def format_path(path: Path, root: str = "opt") -> str:
    """Renders a state path as Python, e.g. ``opt.links[0].m[('w',)]``."""
    text = root
    for kind, name in path:
        text += f".{name}" if kind == ATTR else f"[{name!r}]"
    return text


# --------------------------------------------------------------------------
# Walking and rebuilding the optimizer's object tree.


def _pytree_children(node: Any) -> tuple[list[Any], Any] | None:
    leaves, treedef = jax.tree_util.tree_flatten(node, is_leaf=lambda x: x is not node)
    if treedef.num_nodes == 1 and len(leaves) == 1 and leaves[0] is node:
        return None
    return leaves, treedef


def _children(node: Any) -> Iterator[tuple[Step, Any]] | None:
    if isinstance(node, Optimizer):
        return (((ATTR, k), v) for k, v in vars(node).items())
    if isinstance(node, dict):
        return (((ITEM, k), v) for k, v in node.items())
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


def walk(root: Any) -> _Walk:
    """Collects every array (state) and static leaf of an optimizer tree by path."""
    out = _Walk()

    def visit(node: Any, path: Path) -> None:
        children = _children(node)
        if children is None:
            (out.arrays if is_array(node) else out.statics)[path] = node
            return
        out.containers.setdefault(id(node), path)
        for step, child in children:
            visit(child, (*path, step))

    visit(root, ())
    return out


def _group(values: Mapping[Path, Any]) -> dict[Step, dict[Path, Any]]:
    grouped: dict[Step, dict[Path, Any]] = {}
    for path, value in values.items():
        grouped.setdefault(path[0], {})[path[1:]] = value
    return grouped


def rebuild(node: Any, values: Mapping[Path, Any], make_dict: type[dict] = dict) -> Any:
    """A fresh copy of an optimizer tree with ``values`` put at their paths.

    Every container is copied, so hooks running on the copy cannot reach the
    original. Paths that do not exist yet are created (dicts for dict keys,
    lists for indices, attributes on optimizer objects).
    """
    if () in values:
        return values[()]
    grouped = _group(values)

    def child(step: Step, old: Any) -> Any:
        return rebuild(old, grouped.pop(step, {}), make_dict)

    if node is _ABSENT:
        if not grouped:
            return node
        node = {} if next(iter(grouped))[0] == ITEM else []
    if isinstance(node, Optimizer):
        new = object.__new__(type(node))
        attrs = new.__dict__
        for name, old in vars(node).items():
            attrs[name] = child((ATTR, name), old)
        for step in list(grouped):
            attrs[step[1]] = child(step, _ABSENT)
        return new
    if isinstance(node, dict):
        new_dict = make_dict() if type(node) is dict else copy.copy(node)
        for key, old in node.items():
            dict.__setitem__(new_dict, key, child((ITEM, key), old))
        for step in list(grouped):
            dict.__setitem__(new_dict, step[1], child(step, _ABSENT))
        return new_dict
    if isinstance(node, (list, tuple)):
        size = max([len(node)] + [i + 1 for _, i in grouped])
        items = [child((INDEX, i), node[i] if i < len(node) else _ABSENT) for i in range(size)]
        if hasattr(node, "_fields"):
            return type(node)._make(items)
        return type(node)(items)
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

    def record(self, container: Any, step: Step, value: Any) -> Any:
        value = _recording_copy(value)
        self.records.append((container, step, walk(value).arrays))
        return value

    def on_new_attribute(self, obj: Any, name: str, value: Any) -> Any:
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


def _recording_copy(value: Any) -> Any:
    """Plain dicts inside a newly assigned value become recording dicts."""
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
    """

    paths: tuple[Path, ...]
    mirror: tuple[tuple[Any, ...], ...]
    param_keys: tuple[Key, ...]
    param_of: tuple[int, ...]
    statics: tuple[tuple[Path, Any], ...]


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
# init and step.


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


def init(opt: Optimizer, params: Mapping[Key, Any]) -> HookState:
    """Discovers an optimizer's state on ``params`` and returns its initial value.

    Runs one traced step with zero gradients and records, for every state array
    the hooks create, the first value assigned to it. Nothing is computed
    eagerly apart from those initial values.

    Args:
        opt: the hook optimizer (not mutated).
        params: float parameters, a mapping from key to array.

    Returns:
        The initial :class:`HookState`.
    """
    keys = tuple(params)
    found: dict[str, Any] = {}

    def discover(values: list[Any]) -> list[Any]:
        flat = dict(zip(keys, values, strict=True))
        recorder = _Recorder()
        work = rebuild(opt, {}, _RecordingDict)
        before = walk(work)
        _RECORDER.append(recorder)
        token = _ON_NEW_ATTRIBUTE.set(recorder.on_new_attribute)
        try:
            grads = {k: jnp.zeros_like(v) for k, v in flat.items()}
            loss = jnp.zeros((), jnp.float32)
            updates = work(loss=loss, grads=grads, params=flat)
        finally:
            _ON_NEW_ATTRIBUTE.reset(token)
            _RECORDER.pop()
        check_updates(opt, updates, grads, flat)
        after = walk(work)
        _check_statics(before.statics, after.statics, "init")
        first = recorder.first_values(after.containers)
        paths = tuple(after.arrays)
        initial = []
        for path in paths:
            value = before.arrays.get(path, first.get(path, after.arrays[path]))
            value = jnp.asarray(value)
            final = after.arrays[path]
            if value.shape != final.shape or value.dtype != final.dtype:
                raise StateError(
                    f"{format_path(path)} starts as {describe(value)} but the first step turns "
                    f"it into {describe(final)}; state must keep its shape and dtype. "
                    "Fix: create it with the dtype and shape the update produces "
                    "(e.g. `jnp.zeros_like(param)` or `.astype(...)` in the hook)."
                )
            initial.append(value)
        new_statics = tuple((p, v) for p, v in after.statics.items() if p not in before.statics)
        found["paths"] = paths
        found["statics"] = new_statics
        return initial

    initial = jax.jit(discover)(list(params.values()))
    paths = found["paths"]
    mirror = tuple(_mirror(p) for p in paths)
    index = {k: i for i, k in enumerate(keys)}
    layout = Layout(
        paths=paths,
        mirror=mirror,
        param_keys=keys,
        param_of=tuple(_param_of(p, index) for p in paths),
        statics=found["statics"],
    )
    return HookState(nest(mirror, initial, paths), layout)


def check_grads(layout: Layout, grads: Mapping[Key, Any]) -> None:
    """Raises :class:`StructureError` listing missing and extra keys."""
    if tuple(grads) == layout.param_keys:
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


def step(
    opt: Optimizer,
    state: HookState,
    grads: Mapping[Key, Any],
    params: Mapping[Key, Any] | Any,
    loss: Any,
) -> tuple[dict[Key, Any], HookState]:
    """Runs one step of ``opt`` as a pure function.

    Args:
        opt: the hook optimizer (not mutated).
        state: its state, as returned by :func:`init` or a previous step.
        grads: gradients, keyed like the parameters at init.
        params: current parameters (or a :class:`~flr_nnx._errors.Missing`).
        loss: the loss (or a :class:`~flr_nnx._errors.Missing`).

    Returns:
        The updates (positive = descent), keyed like ``grads``, and the new state.
    """
    layout = state.layout
    check_grads(layout, grads)
    leaves = state.leaves()
    values: dict[Path, Any] = dict(zip(layout.paths, leaves, strict=True))
    values.update(layout.statics)
    work = rebuild(opt, values)
    before = walk(work)
    updates = work(loss=loss, grads=dict(grads), params=params)
    updates = check_updates(opt, updates, grads, params)
    after = walk(work)
    _check_statics(before.statics, after.statics, "a step")
    new_leaves = []
    for path, old in zip(layout.paths, leaves, strict=True):
        if path not in after.arrays:
            raise StateError(
                f"{format_path(path)} was optimizer state at init but is gone after this step. "
                "Fix: keep every state entry (assign a new value instead of deleting it)."
            )
        new = after.arrays[path]
        if not is_array(new) or new.shape != old.shape or new.dtype != old.dtype:
            raise StateError(
                f"{format_path(path)} changed from {describe(old)} to {describe(new)} during a "
                "step; state must keep its shape and dtype so the step compiles once. Fix: "
                f"cast it back, e.g. `.astype({old.dtype})`, or create it with the right dtype."
            )
        new_leaves.append(new)
    known = set(layout.paths) | {p for p, _ in layout.statics}
    created = [p for p in after.arrays if p not in known]
    created += [p for p in after.statics if p not in before.statics and p not in known]
    if created:
        raise StateError(
            f"{format_path(created[0])} was created after init"
            f"{f' (and {len(created) - 1} more)' if len(created) > 1 else ''}. The state "
            "structure is fixed by the first step (at init) so training compiles once. "
            "Fix: create all state on the first call of the hook (e.g. in `_build`), "
            "for every parameter, or initialise again with the new parameters."
        )
    return updates, HookState(nest(layout.mirror, new_leaves), layout)
