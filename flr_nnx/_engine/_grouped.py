"""Init of an ``elementwise`` optimizer: discovery on one parameter per shape and dtype.

Tracing a step costs Python time for every parameter, about 20x what
``optax.adam().init`` spends on a parameter; most models have few distinct
shapes. For an optimizer whose class declares ``elementwise = True``, the state
found for a representative is repeated for every parameter of its group.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
from jax.extend.core import Literal

from flr_nnx._engine._jaxpr import evaluate_outputs
from flr_nnx._engine._sharding import spread
from flr_nnx._engine._walk import ITEM, Path, walk
from flr_nnx._optimizer import Key, Optimizer

Found = tuple[tuple[Path, ...], list[Any], tuple[Any, ...], tuple[Any, ...], tuple[Any, ...]]


def is_elementwise(opt: Any) -> bool:
    """Whether ``opt``'s own class declares ``elementwise = True``.

    Never inferred, and not inherited: a subclass may change ``call_param`` in a
    way that breaks the promise, so it must make the promise itself.
    """
    return vars(type(opt)).get("elementwise", False) is True


class _NotUniform(Exception):
    """The grouped discovery does not apply; run the full one."""


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


def init_grouped(
    opt: Optimizer,
    params: Mapping[Key, Any],
    shardings: Mapping[Key, Any],
    discovery: Callable[[Optimizer, tuple[Key, ...], dict[str, Any]], Any],
) -> Found | None:
    """Discovery on one parameter per shape and dtype, or None where it cannot apply.

    The state found for a representative is repeated for every parameter of
    its group, with fresh buffers (the state is donated). It falls back (None)
    when the initial values depend on the parameters' values, when hooks create
    state outside a parameter's entry, when the optimizer already holds
    per-parameter state, or when grouping saves little.

    Args:
        opt: the optimizer, whose class declares ``elementwise = True``.
        params: the parameters, by key.
        shardings: the sharding of each parameter's state, by key.
        discovery: the engine's discovery step (see ``_run.discovery``).

    Returns:
        The paths, initial values, statics, containers and live
        hyperparameters, as the full discovery finds them, or None.
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
    traced = jax.jit(discovery(opt, reps, found)).trace([params[k] for k in reps])
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
        initial = spread(traced.jaxpr, flat, paths, params, shardings)
    else:
        rep_values = evaluate_outputs(traced.jaxpr, flat)
        # The representative keeps its own buffer; the others get copies, never
        # aliases, because the state is donated at every step; one transfer for all.
        copies = iter(
            jax.device_put([rep_values[i] for _, i, own in paths if not own], may_alias=False)
        )
        initial = [rep_values[i] if own else next(copies) for _, i, own in paths]
    return (
        tuple(p[0] for p in paths),
        initial,
        tuple((p[0], found["statics"][p[1]][1]) for p in statics),
        tuple((p[0], found["containers"][p[1]][1]) for p in containers),
        found["hypers"],
    )
