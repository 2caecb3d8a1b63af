"""Parameter trees as flat dicts keyed by path tuples, shared by both bridges."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from flr_nnx._errors import ArgumentError, StructureError
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
    like the hooks' ``grads`` (the parameters in ``keys``); ``value_fn`` (a
    function of the parameter tree) becomes a function of such a dict, the
    parameters it is not given taken from ``params``. Others pass unchanged.

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
        if name == "value_fn" and callable(value):
            out[name] = _flat_value_fn(value, updates if params is None else params)
        elif jax.tree.structure(value) == structure:
            value_keys, leaves, _ = flatten(value)
            out[name] = {k: leaf for k, leaf in zip(value_keys, leaves) if k in keys}
        else:
            out[name] = value
    return out


def _flat_value_fn(value_fn: Callable[[Any], Any], base: Any) -> Callable[[Any], Any]:
    base_keys, base_leaves, treedef = flatten(base)

    known = set(base_keys)

    def flat_value_fn(flat: Mapping[Key, Any]) -> Any:
        unknown = [k for k in flat if k not in known]
        if unknown:
            raise ArgumentError(
                f"value_fn was called with keys {unknown[:5]} that are not parameter keys "
                f"(they look like {base_keys[:3]}). Fix: call it with a dict keyed like "
                "`grads` (e.g. `{k: params[k] - step * g for k, g in grads.items()}`)."
            )
        return value_fn(treedef.unflatten([flat.get(k, v) for k, v in zip(base_keys, base_leaves)]))

    return flat_value_fn
