"""The one walker over an optimizer's object tree, and the rebuild of a private copy.

An optimizer is a tree of Python containers: optimizer objects (their
attributes), dicts, lists, tuples, namedtuples and registered pytree nodes.
A *path* names a place in it as a tuple of steps ``(kind, name)``:

- ``(ATTR, name)``: an attribute of an optimizer (``opt.m``);
- ``(ITEM, key)``: a dict entry (``opt.m[('w',)]``);
- ``(INDEX, i)``: a list or tuple element (``opt.links[0]``);
- ``(FIELD, name)``: a namedtuple field (optax's ``state.mu``);
- ``(NODE, i)``: the ``i``-th child of another pytree node.

:func:`traverse` is the only traversal: every walk of the engine (state
discovery, the leak scan, the transient check) and of the wrappers is a
:func:`traverse` with :func:`children` or another expansion.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flr_nnx._optimizer import Optimizer
from flr_nnx._tree import group_by_head

ATTR, ITEM, INDEX, FIELD, NODE = "attr", "item", "index", "field", "node"
Step = tuple[str, Any]
Path = tuple[Step, ...]
Expand = Callable[[Any], Any]  # a node -> its (step, child) pairs, None (a leaf) or SKIP


class _Absent:
    """Marks a place that does not exist (yet): a container a hook has still to create."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = _Absent()
SKIP = object()
"""Returned by an expansion given to :func:`traverse`: do not visit this node at all."""


def is_array(value: Any) -> bool:
    """Whether ``value`` is optimizer state (a JAX or NumPy array)."""
    return isinstance(value, (jax.Array, np.ndarray))


def format_path(path: Path, root: str = "opt") -> str:
    """Renders a path as Python, e.g. ``opt.links[0].m[('w',)]``."""
    text = root
    for kind, name in path:
        text += f".{name}" if kind in (ATTR, FIELD) else f"[{name!r}]"
    return text


def is_namedtuple(node: Any) -> bool:
    """Whether ``node`` is a namedtuple (its children are named fields)."""
    return isinstance(node, tuple) and hasattr(type(node), "_fields")


def pytree_children(node: Any) -> tuple[list[Any], Any] | None:
    """The children and treedef of a registered pytree node, or None for a leaf."""
    leaves, treedef = jax.tree_util.tree_flatten(node, is_leaf=lambda x: x is not node)
    if treedef.num_nodes == 1 and len(leaves) == 1 and leaves[0] is node:
        return None
    return leaves, treedef


def is_transient(opt: Optimizer, name: str) -> bool:
    """Whether attribute ``name`` of ``opt`` is a per-step value, never state.

    The one reading of ``Optimizer.transient``: :func:`children` (so every walk,
    :func:`rebuild` and the recording of init) leaves these attributes out.
    """
    return name in type(opt).transient


def transient_values(opt: Optimizer) -> dict[str, Any]:
    """The per-step values ``opt``'s hooks have assigned in this step, by name."""
    found = vars(opt)
    return {name: found[name] for name in type(opt).transient if name in found}


def children(node: Any) -> Iterator[tuple[Step, Any]] | None:
    """The children of a node of the optimizer tree, or None for a leaf.

    An optimizer's transient attributes (:func:`is_transient`) are not
    children: they are per-step values, never state.
    """
    if isinstance(node, Optimizer):
        return (((ATTR, k), v) for k, v in vars(node).items() if not is_transient(node, k))
    if isinstance(node, dict):
        return (((ITEM, k), v) for k, v in node.items())
    if is_namedtuple(node):  # optax's states: keep their field names (`mu`, `nu`)
        return (((FIELD, f), getattr(node, f)) for f in node._fields)
    if isinstance(node, (list, tuple)):
        return (((INDEX, i), v) for i, v in enumerate(node))
    if is_array(node) or node is None or isinstance(node, (int, float, complex, str)):
        return None
    found = pytree_children(node)
    if found is None:
        return None
    return (((NODE, i), v) for i, v in enumerate(found[0]))


def traverse(root: Any, expand: Expand = children) -> Iterator[tuple[Path, Any, bool]]:
    """Every node under ``root``, depth first in child order: ``(path, node, is_leaf)``.

    Args:
        root: where to start; its path is ``()``.
        expand: a node's children as ``(step, child)`` pairs, or None for a
            leaf, or :data:`SKIP` to leave the node out (and all below it).
            It is called once per node, when the node is reached.
    """
    stack: list[tuple[Path, Any]] = [((), root)]
    while stack:
        path, node = stack.pop()
        found = expand(node)
        if found is SKIP:
            continue
        yield path, node, found is None
        if found is not None:
            stack.extend(((*path, s), c) for s, c in reversed(list(found)))


@dataclasses.dataclass
class Walk:
    """What :func:`walk` finds in an optimizer tree, by path."""

    arrays: dict[Path, Any] = dataclasses.field(default_factory=dict)
    statics: dict[Path, Any] = dataclasses.field(default_factory=dict)
    containers: dict[int, Path] = dataclasses.field(default_factory=dict)
    kinds: dict[Path, Any] = dataclasses.field(default_factory=dict)


def kind_of(node: Any) -> Any:
    """What :func:`rebuild` needs to recreate a container created by a hook."""
    if isinstance(node, (dict, list, tuple, Optimizer)):
        return type(node)
    found = pytree_children(node)
    return None if found is None else found[1]


def walk(root: Any) -> Walk:
    """Collects every array (state) and static leaf of an optimizer tree by path."""
    out = Walk()
    for path, node, leaf in traverse(root):
        if leaf:
            (out.arrays if is_array(node) else out.statics)[path] = node
        else:
            out.containers.setdefault(id(node), path)
            out.kinds[path] = kind_of(node)
    return out


def owner(root: Any, path: Path) -> Optimizer | None:
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


def put(node: Any, values: Mapping[Path, Any]) -> Any:
    """In place: puts ``values`` at their (existing) paths of ``node``.

    Mutable containers are updated in place, so records of where state was
    created stay valid; immutable ones (tuples, pytree nodes) are rebuilt.
    Returns ``node``, or its replacement where it is immutable.
    """
    if () in values:
        return values[()]
    grouped = group_by_head(values)
    if not grouped:
        return node
    if isinstance(node, Optimizer):
        for (_, name), sub in grouped.items():
            object.__setattr__(node, name, put(vars(node)[name], sub))
        return node
    if isinstance(node, (dict, list)):
        for (_, key), sub in grouped.items():
            new = put(node[key], sub)
            if isinstance(node, dict):
                dict.__setitem__(node, key, new)
            else:
                node[key] = new
        return node
    items = [put(c, grouped.get(s, {})) for s, c in children(node) or ()]
    if is_namedtuple(node):
        return type(node)._make(items)
    if isinstance(node, tuple):
        return type(node)(items)
    return pytree_children(node)[1].unflatten(items)  # type: ignore[index]


def rebuild(
    node: Any,
    values: Mapping[Path, Any],
    make_dict: type[dict] = dict,
    kinds: Mapping[Path, Any] | None = None,
    path: Path = (),
    default_dict: type[dict] | None = None,
) -> Any:
    """A fresh copy of an optimizer tree with ``values`` put at their paths.

    Every container is copied, so hooks running on the copy cannot reach the
    original. Paths that do not exist yet are created: with the container type
    recorded in ``kinds`` (a namedtuple a hook created stays that namedtuple),
    else dicts for dict keys and lists for indices. ``make_dict`` (and
    ``default_dict`` for a ``collections.defaultdict``) make the copies of
    plain dicts: the recording dicts of init's discovery.
    """
    if () in values:
        return values[()]
    grouped = group_by_head(values)
    if grouped and node is not ABSENT and children(node) is None:
        # A static value (`self.inner = None` in __init__) that a hook replaced at init
        # with a container holding state: recreate that container, with its state.
        node = ABSENT

    def child(step: Step, old: Any) -> Any:
        return rebuild(old, grouped.pop(step, {}), make_dict, kinds, (*path, step), default_dict)

    if node is ABSENT:
        kind = (kinds or {}).get(path)
        if not grouped and kind is None:
            return node
        if isinstance(kind, type) and issubclass(kind, tuple) and hasattr(kind, "_fields"):
            return kind._make([child((FIELD, f), ABSENT) for f in kind._fields])
        if isinstance(kind, type) and issubclass(kind, tuple):
            size = 1 + max(
                [i for _, i in grouped]
                + [p[-1][1] for p in kinds or () if len(p) == len(path) + 1 and p[:-1] == path],
                default=-1,
            )
            return kind([child((INDEX, i), ABSENT) for i in range(size)])
        if kind is not None and not isinstance(kind, type):  # a pytree node's treedef
            return kind.unflatten([child((NODE, i), ABSENT) for i in range(kind.num_leaves)])
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
        for step, old in children(node) or ():
            attrs[step[1]] = child(step, old)
        for step in list(grouped):
            attrs[step[1]] = child(step, ABSENT)
        return new
    if isinstance(node, dict):
        if type(node) is collections.defaultdict and default_dict is not None:
            new_dict = default_dict(node.default_factory)
        else:
            new_dict = make_dict() if type(node) is dict else copy.copy(node)
        for key, old in node.items():
            dict.__setitem__(new_dict, key, child((ITEM, key), old))
        for step in list(grouped):
            dict.__setitem__(new_dict, step[1], child(step, ABSENT))
        return new_dict
    if is_namedtuple(node):
        return type(node)._make([child((FIELD, f), getattr(node, f)) for f in node._fields])
    if isinstance(node, (list, tuple)):
        size = max([len(node)] + [i + 1 for _, i in grouped])
        items = [child((INDEX, i), node[i] if i < len(node) else ABSENT) for i in range(size)]
        return type(node)(items)
    if isinstance(node, np.ndarray):  # mutable and shared with the user: an immutable copy
        return jnp.asarray(node)
    if is_array(node):
        return node
    found = pytree_children(node)
    if found is None:
        return node
    leaves, treedef = found
    return treedef.unflatten([child((NODE, i), leaf) for i, leaf in enumerate(leaves)])
