"""The nested-dict toolkit: trees as flat dicts keyed by path tuples, and back.

Shared by the engine (the nested state), both bridges (parameter trees) and
the helpers. A *key path* is a tuple of parts (dict keys, list indices,
attribute names): ``('layers', 0, 'kernel')``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from flr_nnx._errors import ArgumentError, StateError, StructureError
from flr_nnx._optimizer import Key


def _part(entry: Any) -> str | int:
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            part = getattr(entry, attr)
            break
    else:
        part = str(entry)
    if isinstance(part, (str, int)):
        return part
    return str(part)


def key_of(path: tuple[Any, ...]) -> Key:
    """The plain key of a JAX key path; a Variable's trailing ``.value`` is dropped."""
    if path and isinstance(path[-1], jax.tree_util.GetAttrKey) and path[-1].name == "value":
        path = path[:-1]
    return tuple(_part(entry) for entry in path)


def group_by_head(flat: Mapping[tuple[Any, ...], Any]) -> dict[Any, dict[tuple[Any, ...], Any]]:
    """Splits a flat dict by the first part of each key path: ``{head: {rest: value}}``."""
    grouped: dict[Any, dict[tuple[Any, ...], Any]] = {}
    for path, value in flat.items():
        grouped.setdefault(path[0], {})[path[1:]] = value
    return grouped


def nest(
    paths: Sequence[tuple[Any, ...]],
    leaves: Sequence[Any],
    name_of: Callable[[int], str] | None = None,
) -> dict[Any, Any]:
    """A nested dict with ``leaves[n]`` at key path ``paths[n]``.

    Raises:
        StateError: if a leaf lands where another leaf (or a dict of them)
            already is; ``name_of(n)`` names the ``n``-th leaf in the message.
    """
    tree: dict[Any, Any] = {}
    for n, (parts, leaf) in enumerate(zip(paths, leaves, strict=True)):
        node = tree
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            existing = node.get(part)
            if existing is not None and (last or not isinstance(existing, dict)):
                where = name_of(n) if name_of else "/".join(map(str, parts))
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


def unnest(paths: Sequence[tuple[Any, ...]], tree: Mapping[Any, Any]) -> list[Any]:
    """The leaves at ``paths`` of a nested dict, in that order (the inverse of :func:`nest`)."""
    leaves = []
    for parts in paths:
        node: Any = tree
        for part in parts:
            node = node[part]
        leaves.append(node)
    return leaves


def lookup(
    tree: Any, parts: tuple[Any, ...], default: Any = None, *, str_keys: bool = False
) -> Any:
    """The value at key path ``parts`` of a nested dict, or ``default`` where there is none.

    With ``str_keys``, a part is also found as its string (orbax-checkpoint saves integer
    keys, such as layer indices, as strings).
    """
    node = tree
    for part in parts:
        if not isinstance(node, dict):
            return default
        if part in node:
            node = node[part]
        elif str_keys and str(part) in node:
            node = node[str(part)]
        else:
            return default
    return node


def leaf_paths(tree: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The key path of every leaf of a nested dict (a non-dict value is a leaf)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from leaf_paths(value, (*prefix, key))
    else:
        yield prefix


def is_concrete(value: Any) -> bool:
    """Whether ``value`` is a JAX array with a value (not a tracer)."""
    return isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer)


def is_float(leaf: Any) -> bool:
    """Whether a leaf is optimized: float (or complex) arrays only."""
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jnp.inexact)


def flatten(tree: Any) -> tuple[list[Key], list[Any], Any]:
    """Flattens a pytree into keys, leaves and its treedef.

    Raises:
        StructureError: if two leaves map to the same key.
    """
    with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    keys = [key_of(path) for path, _ in with_path]
    if len(set(keys)) != len(keys):
        seen: set[Key] = set()
        dup = next(k for k in keys if k in seen or seen.add(k))
        raise StructureError(
            f"Two parameters have the same key {dup}. Fix: use distinct dict keys or "
            "attribute names in the parameter tree."
        )
    return keys, [leaf for _, leaf in with_path], treedef


def hook_extras(
    extra: Mapping[str, Any], updates: Any, params: Any, keys: Iterable[Key]
) -> dict[str, Any]:
    """optax's extra arguments in the form the hooks see them.

    An argument shaped like the updates (optax's ``grad=``) becomes a dict keyed
    like the hooks' ``grads`` (the parameters in ``keys``); a callable, such as
    ``value_fn`` or ``optax.contrib.sophia``'s ``obj_fn`` (a function of the
    parameter tree), becomes a function of such a dict, the parameters it is not
    given taken from ``params`` (called with anything but a dict, it gets its
    arguments unchanged; its other arguments pass unchanged), and what it returns
    shaped like the parameters (a gradient, as ``optax.contrib.sam``'s
    ``grad_fn(params, i)`` returns) comes back as such a dict. Others pass unchanged.

    Args:
        extra: the extra arguments given to ``update``, without ``value``.
        updates: the updates (gradients) given to ``update``.
        params: the parameters given to ``update`` (or ``None``).
        keys: the keys of the parameters the hooks optimize.
    """
    clash = sorted(set(extra) & {"grads", "params", "loss"})
    if clash:
        raise ArgumentError(
            f"update() got the extra argument {clash[0]}=, a name the hooks already take "
            "from the bridge (the gradients, the parameters and the loss). Fix: pass the "
            "gradients and parameters positionally and the loss as `value=`."
        )
    keys = set(keys)
    structure = jax.tree.structure(updates)
    out: dict[str, Any] = {}
    for name, value in extra.items():
        if callable(value):  # value_fn, sophia's obj_fn: functions of the parameters
            out[name] = _flat_value_fn(value, updates if params is None else params, keys)
        elif jax.tree.structure(value) == structure:
            value_keys, leaves, _ = flatten(value)
            out[name] = {k: leaf for k, leaf in zip(value_keys, leaves) if k in keys}
        else:
            out[name] = value
    return out


def _flat_value_fn(value_fn: Callable[..., Any], base: Any, keys: set[Key]) -> Callable[..., Any]:
    base_keys, base_leaves, treedef = flatten(base)

    known = set(base_keys)

    def flat_value_fn(flat: Mapping[Key, Any], *args: Any, **kwargs: Any) -> Any:
        if not isinstance(flat, Mapping):  # not called with parameters: passed unchanged
            return value_fn(flat, *args, **kwargs)
        unknown = [k for k in flat if k not in known]
        if unknown:
            raise ArgumentError(
                f"value_fn was called with keys {unknown[:5]} that are not parameter keys "
                f"(they look like {base_keys[:3]}). Fix: call it with a dict keyed like "
                "`grads` (e.g. `{k: params[k] - step * g for k, g in grads.items()}`)."
            )
        tree = treedef.unflatten([flat.get(k, v) for k, v in zip(base_keys, base_leaves)])
        result = value_fn(tree, *args, **kwargs)
        if not _like(result, treedef, base_leaves):  # a value (a loss): as it is
            return result
        # A tree like the parameters (a gradient): keyed like `grads`, as `flat` is.
        result_keys, leaves, _ = flatten(result)
        return {k: leaf for k, leaf in zip(result_keys, leaves) if k in keys}

    # inspect.signature then names value_fn's own arguments: a line search passes it the
    # extra arguments it names (data), as optax's do.
    flat_value_fn.__wrapped__ = value_fn  # type: ignore[attr-defined]
    return flat_value_fn


def keyed_like(value: Any, keys: Iterable[Key]) -> bool:
    """Whether an extra argument is keyed by parameter, like ``grads`` (optax's ``grad=``)."""
    return isinstance(value, Mapping) and all(key in value for key in keys)


def restrict(extra: Mapping[str, Any], keys: Iterable[Key]) -> dict[str, Any]:
    """The extra arguments for a subset of the parameters, e.g. one group of a partition.

    Extra arguments keyed by parameter keep only ``keys``; the others (a loss
    value, ``value_fn``, which fills in the parameters it is not given) pass
    unchanged.
    """
    keys = list(keys)
    return {
        name: {k: value[k] for k in keys} if keyed_like(value, keys) else value
        for name, value in extra.items()
    }


def _like(result: Any, treedef: Any, leaves: Sequence[Any]) -> bool:
    """Whether ``result`` is a tree like the parameters (not a scalar value, even of one
    scalar parameter)."""
    if jax.tree.structure(result) != treedef:
        return False
    shapes = [jnp.shape(leaf) for leaf in jax.tree.leaves(result)]
    if shapes != [jnp.shape(leaf) for leaf in leaves]:
        return False
    return not (treedef.num_leaves == 1 and treedef.num_nodes == 1 and shapes == [()])
