"""Checkpoints: the state of a model, an optimizer or an optax state as plain nested dicts.

What orbax-checkpoint (or any pytree checkpointer) saves and restores.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flr_nnx import _engine
from flr_nnx._errors import StructureError, describe
from flr_nnx._tree import flatten, is_concrete, leaf_paths, lookup


def state_dict(obj: Any) -> dict[Any, Any]:
    """The state of a model, an optimizer or an optax state as a nested dict of arrays.

    This is what to save with orbax-checkpoint (or any pytree checkpointer):
    for an NNX object (a model, an :class:`~flr_nnx.NNXOptimizer`) it is
    ``nnx.to_pure_dict(nnx.state(obj))``; for an optax state (including a
    :class:`~flr_nnx.HookState` from :func:`~flr_nnx.as_optax`) it is the state's
    leaves nested by their key path. Load it back with :func:`load_state_dict`.

    Args:
        obj: an NNX module or pytree node, or an optax state.

    Returns:
        A nested dict of arrays.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.Adam(0.1))
        >>> sorted(flr.state_dict(tx.init({"w": jnp.ones(2)}))["tree"])
        ['count', 'mu', 'nu']
    """
    out: dict[Any, Any] = {}
    for key, leaf in _flat_leaves(obj):
        node = out
        for part in key[:-1]:
            node = node.setdefault(part, {})
        node[key[-1] if key else "value"] = leaf
    return out


def _flat_leaves(obj: Any) -> list[tuple[tuple[Any, ...], Any]]:
    if isinstance(obj, (nnx.Module, nnx.Pytree)):
        return [
            (tuple(path), var.get_value() if isinstance(var, nnx.Variable) else var)
            for path, var in nnx.to_flat_state(nnx.state(obj))
        ]
    keys, leaves, _ = flatten(obj)
    return list(zip(keys, leaves, strict=True))


def load_state_dict(obj: Any, tree: dict[Any, Any]) -> Any:
    """Loads a :func:`state_dict` (e.g. restored by orbax-checkpoint) into ``obj``.

    Integer path parts saved as strings (as orbax-checkpoint does) are matched.
    Every array is checked against ``obj``'s before anything changes, and is
    placed with the sharding of the array it replaces.

    Args:
        obj: an NNX module or pytree node (updated in place), or an optax state
            (not modified; the loaded state is returned).
        tree: a nested dict of arrays, as returned by :func:`state_dict`.

    Returns:
        ``obj`` (NNX) or the loaded optax state.

    Raises:
        StructureError: if ``tree`` does not have exactly the paths of ``obj``'s
            state, with the same shapes and dtypes (e.g. a checkpoint of another
            model or another optimizer).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.Adam(0.1))
        >>> state = tx.init({"w": jnp.ones(2)})
        >>> saved = flr.state_dict(state)
        >>> flr.load_state_dict(state, saved).tree["count"]
        Array(0, dtype=int32)
    """
    leaves = _flat_leaves(obj)
    what = type(obj).__name__
    expected = {tuple(map(str, key)) for key, _ in leaves}
    saved = (tuple(map(str, p)) for p in leaf_paths(tree))
    extra = sorted(p for p in saved if p not in expected)
    values = []
    missing = []
    for key, old in leaves:
        new = lookup(tree, key, _engine.ABSENT, str_keys=True)
        if new is _engine.ABSENT or isinstance(new, dict):
            missing.append("/".join(map(str, key)))
            continue
        dtype = getattr(new, "dtype", None) or np.asarray(new).dtype
        if np.shape(new) != np.shape(old) or dtype != old.dtype:
            raise StructureError(
                f"Checkpoint entry {'/'.join(map(str, key))} is {describe(new)}, but {what} "
                f"expects {describe(old)}. Fix: restore into a {what} built like the one that "
                "was saved (same model sizes, same optimizer and hyperparameter types)."
            )
        sharding = old.sharding if is_concrete(old) else None
        values.append(jax.device_put(new, sharding) if sharding is not None else jnp.asarray(new))
    if missing or extra:
        raise StructureError(
            f"The checkpoint does not match this {what}. Missing entries: {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}; unexpected entries: "
            f"{['/'.join(p) for p in extra[:8]]}{' ...' if len(extra) > 8 else ''}. Fix: "
            f"restore into a {what} built like the one that was saved (same model, same "
            "optimizer); a checkpoint of another structure cannot be loaded."
        )
    if isinstance(obj, (nnx.Module, nnx.Pytree)):
        flat = [(key, value) for (key, _), value in zip(leaves, values, strict=True)]
        nnx.update(obj, nnx.from_flat_state(flat))
        return obj
    return jax.tree.unflatten(jax.tree.structure(obj), values)
