"""Reading and setting hyperparameters between steps: :func:`get_hyper` and :func:`set_hyper`.

They work on any holder of a hook optimizer's state: an ``NNXOptimizer``, an
``nnx.Optimizer`` running ``as_optax``, or an optax state.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from flax import nnx

from flr_nnx._engine import ABSENT, HookState
from flr_nnx._errors import HyperparameterError, describe
from flr_nnx._hyper import HyperName, cast_like, check_assignment, require_hyper
from flr_nnx._optimizer import Optimizer
from flr_nnx._tree import lookup, unnest


def _path_of(layout: Any, parts: tuple[Any, ...]) -> Any:
    for path, mirror in zip(layout.paths, layout.mirror, strict=True):
        if mirror == parts:
            return path
    return None


def _parts(name: HyperName) -> tuple[str | int, ...]:
    if isinstance(name, str):
        return tuple(int(p) if p.isdigit() else p for p in name.split("."))
    return tuple(name)


def _hook_states(state: Any) -> list[HookState]:
    return [
        leaf
        for leaf in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, HookState))
        if isinstance(leaf, HookState)
    ]


def _holder(state: Any, name: HyperName) -> tuple[HookState, tuple[Any, ...]]:
    parts = _parts(name)
    states = _hook_states(state)
    private = any(isinstance(part, str) and part.startswith("_") for part in parts)
    found = [] if private else [s for s in states if _is_array(lookup(s.tree, parts))]
    text = ".".join(map(str, parts))
    if not states:
        raise HyperparameterError(
            f"get_hyper/set_hyper({text!r}): {describe(state)} contains no flr_nnx state. "
            "Fix: pass a flr.NNXOptimizer, an nnx.Optimizer whose transformation contains "
            "flr.as_optax(...), or the state returned by such a transformation."
        )
    if not found:
        live = sorted({".".join(map(str, k)) for s in states for k in _scalar_names(s.tree)})
        raise HyperparameterError(
            f"No live hyperparameter {text!r} in this optax state; its scalar entries are "
            f"{live}. A Python float is a compile-time constant, and a schedule is evaluated "
            "inside the step from the step count: neither is in the state. Fix: construct "
            f"the optimizer with flr.hyper(value) for {parts[-1]!r}, or use one of the names "
            "above (dotted for nested optimizers, e.g. 'links.1.learning_rate'); for a "
            "schedule, its value at the next step is `schedule(flr.get_hyper(state, "
            "'count'))` (or flr.get_hyper(optimizer, name) on a flr.NNXOptimizer)."
        )
    if len(found) > 1:
        raise HyperparameterError(
            f"{len(found)} hook optimizers in this state have a hyperparameter {text!r}. "
            "Fix: pass the state of one of them (e.g. `state[1]` of an optax.chain) and "
            "put the result back into the outer state."
        )
    return found[0], parts


def _scalar_names(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = []
    for key, value in tree.items():
        if isinstance(key, str) and key.startswith("_"):  # private state, not a hyperparameter
            continue
        if isinstance(value, dict):
            if not isinstance(key, tuple):
                out += _scalar_names(value, (*prefix, key))
        elif _is_array(value) and np.ndim(_unwrap(value)) == 0:
            out.append((*prefix, key))
    return out


def _unwrap(value: Any) -> Any:
    # Under nnx.Optimizer every leaf of the optax state is an OptState Variable.
    return value.get_value() if isinstance(value, nnx.Variable) else value


def _is_array(value: Any) -> bool:
    return isinstance(_unwrap(value), (jax.Array, np.ndarray))


def _optax_state(holder: Any) -> Any:
    return holder.opt_state if isinstance(holder, nnx.Optimizer) else holder


def _hook_optimizer(holder: Any) -> Any:
    """The hook optimizer run natively by ``holder`` (a flr.NNXOptimizer), or None."""
    return getattr(holder, "_template", None) if isinstance(holder, nnx.Optimizer) else None


# -- NNXOptimizer with a hook optimizer: state in its slots, the rest in the optimizer


def _slots(holder: Any) -> dict[tuple[Any, ...], Any]:
    leaves = unnest(holder.layout.mirror, holder.opt_state)
    return dict(zip(holder.layout.mirror, leaves, strict=True))


def _static(holder: Any, parts: tuple[Any, ...]) -> Any:
    """The Python value at ``parts`` in the hook optimizer (a constant or a schedule)."""
    node = holder._template
    for part in parts:
        if isinstance(node, Optimizer) and isinstance(part, str):
            node = vars(node).get(part, ABSENT)
        elif isinstance(node, dict):
            node = node.get(part, ABSENT)
        elif isinstance(node, (list, tuple)) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return ABSENT
    return node


def _hyper_names(layout: Any) -> list[str]:
    """The live hyperparameters of a layout, dotted."""
    mirror = dict(zip(layout.paths, layout.mirror, strict=True))
    return sorted(".".join(map(str, mirror[path])) for path, _ in layout.hypers)


def _nnx_names(holder: Any) -> list[str]:
    return sorted(
        ".".join(map(str, parts))
        for parts, slot in _slots(holder).items()
        if not any(isinstance(p, str) and p.startswith("_") for p in parts)
        and np.ndim(slot.get_value()) == 0
    )


def _nnx_get(holder: Any, parts: tuple[Any, ...]) -> Any:
    text = ".".join(map(str, parts))
    slots = _slots(holder)
    private = any(isinstance(part, str) and part.startswith("_") for part in parts)
    if parts in slots and not private:
        return slots[parts].get_value()
    value = ABSENT if private else _static(holder, parts)
    if callable(value) and not isinstance(value, (Optimizer, type)):
        count = slots.get((*parts[:-1], "count"))
        if count is None:
            raise HyperparameterError(
                f"Hyperparameter {text!r} is a schedule, but its optimizer has no step count "
                "`count` in its state to evaluate it at. Fix: read the step count your "
                f"optimizer keeps and call the schedule with it (`optimizer.opt.{text}` is "
                "the schedule)."
            )
        # What the built-in optimizers use at the next step: `value_at(schedule, count)`
        # before `count` advances; jitted, as in the training step.
        return jax.jit(value)(count.get_value())
    if isinstance(value, (int, float, complex, bool)) and not isinstance(value, Optimizer):
        return value
    raise HyperparameterError(
        f"{type(holder._template).__name__} has no hyperparameter {text!r}; its live "
        f"(scalar state) entries are {_nnx_names(holder)}. Fix: use one of those names, "
        "dotted for nested optimizers (e.g. 'links.1.learning_rate'), or the name of a "
        "float or schedule attribute."
    )


def _nnx_set(holder: Any, parts: tuple[Any, ...], value: Any) -> Any:
    text = ".".join(map(str, parts))
    slot = _slots(holder).get(parts)
    private = any(isinstance(part, str) and part.startswith("_") for part in parts)
    if slot is not None and not private and np.ndim(slot.get_value()) == 0:
        path = _path_of(holder.layout, parts)
        require_hyper(holder.layout, path, text)
        check_assignment(holder.layout, path, value, f"Hyperparameter {text!r}")
        slot.set_value(cast_like(value, slot.get_value(), f"Hyperparameter {text!r}"))
        return holder
    if not private and _static(holder, parts) is not ABSENT:
        raise HyperparameterError(
            f"Hyperparameter {text!r} is a Python value (or an array the hooks only read), "
            "compiled into the training step as a constant; setting it would not change "
            f"training. Fix: construct the optimizer with `flr.hyper(...)` for {parts[-1]!r} "
            "to make it live state (e.g. `flr.optim.Adam(flr.hyper(1e-3))`). An flr.hyper "
            "array is live only as that object: a copy (copy.deepcopy, pickle) of the "
            "optimizer holds a plain array."
        )
    raise HyperparameterError(
        f"No live hyperparameter {text!r} in {type(holder._template).__name__}; its live "
        f"entries are {_hyper_names(holder.layout)}. Fix: use one of those names (dotted "
        "for nested optimizers), or construct the optimizer with flr.hyper(value) for it."
    )


def get_hyper(holder: Any, name: HyperName) -> Any:
    """Reads a hyperparameter: a live one (see :func:`hyper`), or a schedule's current value.

    Works on every holder of flr_nnx state: a :class:`~flr_nnx.NNXOptimizer`, an
    ``nnx.Optimizer`` whose transformation is or contains
    :func:`~flr_nnx.as_optax` (or its ``opt_state``), and the optax state of such
    a transformation (also inside an ``optax.chain``'s state).

    An :class:`~flr_nnx.NNXOptimizer` running a hook optimizer knows its Python
    values too: for a schedule it returns the value the **next** step uses
    (the schedule at the optimizer's current ``count``, as every built-in
    optimizer evaluates it before advancing the count; this is what
    ``optax.inject_hyperparams`` reports after that step), and for a Python
    constant the constant. An optax state holds neither; for a schedule there,
    call it with ``get_hyper(state, "count")``.

    Args:
        holder: a :class:`~flr_nnx.NNXOptimizer`, an ``nnx.Optimizer``, its
            ``opt_state``, or an optax state containing exactly one
            :func:`~flr_nnx.as_optax` state with ``name``.
        name: the attribute name, dotted for nested optimizers
            (``"links.1.learning_rate"`` in a :class:`~flr_nnx.compose.Chain`).

    Returns:
        The current value (an array; a Python number for a constant).

    Raises:
        HyperparameterError: if there is no such hyperparameter.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> import flr_nnx as flr
        >>> tx = optax.chain(optax.clip(1.0), flr.as_optax(flr.optim.Adam(flr.hyper(3e-4))))
        >>> flr.get_hyper(tx.init({"w": jnp.ones(2)}), "learning_rate")
        Array(0.0003, dtype=float32)
        >>> from flax import nnx
        >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
        >>> schedule = optax.linear_schedule(0.1, 0.0, transition_steps=10)
        >>> optimizer = flr.NNXOptimizer(model, flr.optim.Adam(schedule), wrt=nnx.Param)
        >>> flr.get_hyper(optimizer, "learning_rate")  # what the next step uses
        Array(0.1, dtype=float32)
    """
    parts = _parts(name)
    if _hook_optimizer(holder) is not None:
        return _nnx_get(holder, parts)
    state, parts = _holder(_optax_state(holder), name)
    return _unwrap(lookup(state.tree, parts))


def set_hyper(holder: Any, name: HyperName, value: Any) -> Any:
    """Sets a live hyperparameter (see :func:`hyper`); the next step uses ``value``.

    The value is cast to the hyperparameter's dtype, and keeps its weak type and
    placement, so a jitted step does not recompile. NNX holders (a
    :class:`~flr_nnx.NNXOptimizer`, an ``nnx.Optimizer`` or its ``opt_state``)
    are updated in place and returned; an optax state is immutable, so a new
    state is returned and ``holder`` is not modified. It works inside
    ``nnx.jit`` / ``jax.jit`` too, with a traced ``value``.

    Args:
        holder: as for :func:`get_hyper`.
        name: as for :func:`get_hyper`.
        value: the new value (cast to the hyperparameter's dtype).

    Returns:
        ``holder`` (NNX, changed in place), or the new optax state.

    Raises:
        HyperparameterError: if there is no such live hyperparameter (a Python
            constant or a schedule cannot be set), or the value has another shape.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.optim.Adam(flr.hyper(0.1)))
        >>> state = flr.set_hyper(tx.init({"w": jnp.ones(2)}), "learning_rate", 0.5)
        >>> state.tree["learning_rate"]
        Array(0.5, dtype=float32)
    """
    if _hook_optimizer(holder) is not None:
        return _nnx_set(holder, _parts(name), value)
    state = _optax_state(holder)
    found, parts = _holder(state, name)
    where = f"Hyperparameter {'.'.join(map(str, parts))!r}"
    path = _path_of(found.layout, parts)
    require_hyper(found.layout, path, ".".join(map(str, parts)))
    check_assignment(found.layout, path, value, where)
    current = lookup(found.tree, parts)
    if isinstance(current, nnx.Variable):  # nnx.Optimizer's state: in place
        current.set_value(cast_like(value, current.get_value(), where))
        return holder
    new_value = cast_like(value, current, where)

    def replaced(node: dict[Any, Any], depth: int) -> dict[Any, Any]:
        new = dict(node)
        part = parts[depth]
        new[part] = new_value if depth == len(parts) - 1 else replaced(node[part], depth + 1)
        return new

    new_holder = HookState(replaced(found.tree, 0), found.layout)
    return jax.tree.map(
        lambda leaf: new_holder if leaf is found else leaf,
        state,
        is_leaf=lambda x: isinstance(x, HookState),
    )
