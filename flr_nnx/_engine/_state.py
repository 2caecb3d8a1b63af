"""The state of a hook optimizer: its static :class:`Layout` and :class:`HookState`."""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax

from flr_nnx import _tree
from flr_nnx._engine._walk import ITEM, Path, format_path
from flr_nnx._errors import StateError
from flr_nnx._optimizer import Key


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


def mirror_of(path: Path) -> tuple[Any, ...]:
    """A state path's key path in the nested state: parameter keys spliced in."""
    out: list[Any] = []
    for kind, name in path:
        if kind == ITEM and isinstance(name, tuple):
            out.extend(name)
        else:
            out.append(name)
    return tuple(out)


def param_of(path: Path, index: Mapping[Key, int]) -> int:
    """The index of the parameter a state path is keyed by (innermost), or -1."""
    for kind, name in reversed(path):
        if kind == ITEM and isinstance(name, tuple) and name in index:
            return index[name]
    return -1


def nest(
    mirror: Sequence[tuple[Any, ...]], leaves: Sequence[Any], paths: Sequence[Path] = ()
) -> dict[Any, Any]:
    """Builds the nested state dict; a clash names the state by its path in the optimizer."""
    return _tree.nest(mirror, leaves, (lambda n: format_path(paths[n])) if paths else None)


def make_layout(
    paths: tuple[Path, ...],
    params: Mapping[Key, Any],
    statics: tuple[tuple[Path, Any], ...],
    containers: tuple[tuple[Path, Any], ...],
    hypers: tuple[tuple[Path, str], ...],
) -> Layout:
    """The layout of state found at ``paths`` for ``params``."""
    keys = tuple(params)
    index = {k: i for i, k in enumerate(keys)}
    return Layout(
        paths=paths,
        mirror=tuple(mirror_of(p) for p in paths),
        param_keys=keys,
        param_shapes=tuple(tuple(jax.numpy.shape(params[k])) for k in keys),
        param_of=tuple(param_of(p, index) for p in paths),
        statics=statics,
        containers=containers,
        hypers=hypers,
    )


def check_sortable(tree: Mapping[Any, Any], where: tuple[Any, ...] = ()) -> None:
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
            check_sortable(child, (*where, key))


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
        return _tree.unnest(self.layout.mirror, self.tree)

    def tree_flatten_with_keys(self) -> tuple[tuple[tuple[Any, Any], ...], Layout]:
        return ((jax.tree_util.GetAttrKey("tree"), self.tree),), self.layout

    @classmethod
    def tree_unflatten(cls, layout: Layout, children: Sequence[Any]) -> HookState:
        return cls(children[0], layout)

    def __repr__(self) -> str:
        return f"HookState({self.tree!r})"


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
