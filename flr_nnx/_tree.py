"""Parameter trees as flat dicts keyed by path tuples, shared by both bridges."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from flr_nnx._errors import StructureError
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
