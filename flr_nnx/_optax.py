"""The optax bridge: a hook optimizer as an ``optax.GradientTransformationExtraArgs``."""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax

from flr_nnx import _engine
from flr_nnx._bridges import check_hook_optimizer, wrap_like_optax
from flr_nnx._errors import HyperparameterError, Missing, StructureError, describe
from flr_nnx._optimizer import Key, Optimizer
from flr_nnx._tree import flatten, hook_extras, is_float

_NO_LOSS = (
    "pass the loss as optax's `value=` extra argument, e.g. "
    "`tx.update(grads, state, params, value=loss)`."
)
Sign = Literal["update", "gradient"]

_NO_PARAMS = "pass the parameters: `tx.update(grads, state, params)`."


def as_optax(opt: Optimizer, sign: Sign | None = None) -> optax.GradientTransformationExtraArgs:
    """Wraps a hook optimizer as an optax gradient transformation.

    Hooks return descent directions (a positive update means descent). With
    ``sign="update"`` the transformation returns optax updates, to be added to
    the parameters: the hooks' output negated, as the last link of a chain.
    With ``sign="gradient"`` it returns the hooks' output as is, a
    gradient-like direction, for a link that a later optax transformation
    scales and negates (``optax.scale_by_learning_rate``, ``optax.sgd``); with
    ``"update"`` there, training would go uphill.

    By default the sign is the one ``opt``'s optax twin returns
    (:attr:`~flr_nnx.optim.Optimizer.optax_sign`): ``"update"`` for optimizers
    (``Adam`` as ``optax.adam``), ``"gradient"`` for the building blocks whose
    twin is a gradient transformation (``ClipByGlobalNorm``, ``Clip``,
    ``AddDecayedWeights``, ``Normalize``, ``DifferentiallyPrivateAggregate``),
    so that ``flr.as_optax(block)`` equals its twin and
    ``optax.chain(flr.as_optax(block), optax.sgd(lr))`` equals optax's chain.

    The optimizer is copied when wrapped; later changes to ``opt`` do not
    affect the transformation, and steps never change ``opt``.

    - ``init(params)`` returns the complete state (a
      :class:`~flr_nnx.HookState`), with lazily created state discovered.
    - ``update(updates, state, params=None, **extra)`` returns optax-sign
      updates (to be added to the parameters). The loss is read from optax's
      ``value=`` extra argument (or ``loss=``, as :class:`~flr_nnx.NNXOptimizer`
      takes it); the other extra arguments (e.g. ``grad=`` and ``value_fn=``
      of a line search) reach the hooks that name them (see
      :meth:`flr_nnx.optim.Optimizer.call_model`). Only float leaves are
      optimized; the updates of other leaves are zeros.

    Args:
        opt: a :class:`flr_nnx.optim.Optimizer`.
        sign: ``"update"`` (return updates to add) or ``"gradient"`` (return the
            hooks' directions unchanged), the words :func:`~flr_nnx.from_optax`
            uses for what an optax transformation returns; ``None`` (the
            default): ``opt.optax_sign``, what its optax twin returns.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` that works in
        ``optax.chain``, ``optax.MultiSteps``, ``optax.masked`` and
        ``nnx.Optimizer``.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> import flr_nnx as flr
        >>> tx = optax.chain(optax.clip_by_global_norm(1.0), flr.as_optax(flr.optim.Adam(0.1)))
        >>> params = {"w": jnp.ones(2)}
        >>> state = tx.init(params)
        >>> updates, state = tx.update({"w": jnp.ones(2)}, state, params)
        >>> updates["w"]
        Array([-0.09999935, -0.09999935], dtype=float32)
        >>> direction = flr.optim.Adam(1.0)  # lr 1: the bias-corrected direction
        >>> tx = optax.chain(flr.as_optax(direction, sign="gradient"),
        ...                  optax.scale_by_learning_rate(0.1))
        >>> tx.update({"w": jnp.ones(2)}, tx.init(params), params)[0]["w"]
        Array([-0.09999934, -0.09999934], dtype=float32)
        >>> clip = flr.as_optax(flr.optim.ClipByGlobalNorm(1.0))  # its twin's sign: "gradient"
        >>> tx = optax.chain(clip, optax.sgd(0.1))  # as optax.clip_by_global_norm(1.0)
        >>> tx.update({"w": jnp.array([3.0, 4.0])}, tx.init(params), params)[0]["w"]
        Array([-0.06      , -0.08000001], dtype=float32)
    """
    check_hook_optimizer(opt, "flr.as_optax")
    if sign is None:  # what the optimizer's optax twin returns
        sign = opt.optax_sign
    if sign not in ("update", "gradient"):
        raise HyperparameterError(
            f"as_optax(sign={sign!r}): expected 'update' (return updates to add to the "
            "parameters, the default) or 'gradient' (return the hooks' descent directions "
            "unchanged, for a chain that ends with optax.scale_by_learning_rate). Fix: pass "
            "one of those."
        )
    return transformation(hook_template(opt, "flr.as_optax"), negate=sign == "update")


def hook_template(opt: Optimizer, where: str) -> Optimizer:
    """A bridge's private copy of a hook optimizer, which its steps rebuild from.

    Raises:
        BridgeError: if ``opt`` is not a hook optimizer (``where`` names the bridge).
    """
    check_hook_optimizer(opt, where)
    _engine.check_transient(opt)
    return _engine.rebuild(opt, {})


def transformation(
    template: Optimizer, negate: bool = True
) -> optax.GradientTransformationExtraArgs:
    """The optax transformation that runs ``template`` (see :func:`as_optax`)."""
    layouts: list[_engine.Layout] = []  # the distinct state layouts init has made

    def init_fn(params: Any) -> _engine.HookState:
        if isinstance(params, _ParamsPlaceholder):
            return _placeholder_state(template, layouts)
        state = init_state(template, params)
        if state.layout not in layouts:
            layouts.append(state.layout)
        _RECENT[fingerprint(template)] = state.layout
        while len(_RECENT) > 256:  # configurations; the oldest is forgotten first
            del _RECENT[next(iter(_RECENT))]
        # Under nnx.Optimizer the parameters arrive as Variables: keep their metadata.
        return wrap_like_optax(state, params)

    def update_fn(
        updates: Any, state: _engine.HookState, params: Any = None, **extra: Any
    ) -> tuple[Any, _engine.HookState]:
        if not isinstance(state, _engine.HookState):
            raise StructureError(
                f"update got {describe(state)} as its state; expected the HookState that "
                "this transformation's init returned (or its last update). Fix: pass "
                "`tx.init(params)`'s result, not the state of another transformation."
            )
        # `loss=` too: a train step written for NNXOptimizer passes it through nnx.Optimizer.
        loss = extra.pop("value", extra.pop("loss", Missing("loss", _NO_LOSS)))
        steps, state = step_state(template, state, updates, params, loss, extra)
        return optax_updates(steps, updates, negate), state

    TEMPLATES[update_fn] = template  # for flr.eval_params(tx, state, params)
    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# The hook optimizer behind each transformation, by its update function (which it keeps alive).
TEMPLATES: weakref.WeakKeyDictionary[Any, Optimizer] = weakref.WeakKeyDictionary()


# -- the pure path both bridges run -----------------------------------------------------


def init_state(
    template: Optimizer,
    params: Any,
    shardings: Mapping[Key, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> _engine.HookState:
    """The initial state of ``template`` for the float leaves of a parameter tree.

    Args:
        template: the bridge's private copy of the hook optimizer.
        params: a parameter tree (arrays, or ``nnx.Variable`` leaves).
        shardings: the sharding of the state of each parameter key (see
            :func:`flr_nnx._engine.init`).
        extra: extra arguments the hooks get at init besides optax's stand-ins.
    """
    keys, leaves, _ = flatten(params)
    # jnp.asarray costs a dispatch even on a JAX array: only NumPy leaves need it.
    floats = {
        k: v if isinstance(v, jax.Array) else jnp.asarray(v)
        for k, v in zip(keys, leaves)
        if is_float(v)
    }
    return _engine.init(template, floats, shardings, extra)


def step_state(
    template: Optimizer,
    state: _engine.HookState,
    updates: Any,
    params: Any,
    loss: Any,
    extra: Mapping[str, Any],
) -> tuple[dict[Key, Any], _engine.HookState]:
    """One step on the float leaves of ``updates``: the hooks' directions and the new state.

    Args:
        template: the bridge's private copy of the hook optimizer.
        state: the current state.
        updates: the gradients, a tree.
        params: the parameters, a tree like ``updates`` (or ``None``).
        loss: the loss, or a :class:`~flr_nnx._errors.Missing` naming how to pass it.
        extra: optax's other extra arguments, as given to ``update``.

    Raises:
        StructureError: if a gradient's parameter is missing from ``params``.
    """
    keys, grads, _ = flatten(updates)
    floats = {k: g for k, g in zip(keys, grads) if is_float(g)}
    if params is None:
        flat_params: Any = Missing("params", _NO_PARAMS)
    else:
        param_keys, param_leaves, _ = flatten(params)
        flat_params = {k: p for k, p in zip(param_keys, param_leaves) if k in floats}
        known = set(state.layout.param_keys)  # others: the engine names the mismatch
        missing = [k for k in floats if k not in flat_params and k in known]
        if missing:
            raise StructureError(
                f"update got gradients for parameters {missing[:5]} that are not in "
                "`params`. Fix: pass the parameters the gradients belong to (the same "
                "tree as the gradients)."
            )
    extra = hook_extras(extra, updates, params, floats)
    return _engine.step(template, state, floats, flat_params, loss, extra)


def optax_updates(steps: Mapping[Key, Any], tree: Any, negate: bool = True) -> Any:
    """The hooks' directions as a tree like ``tree``, negated to optax's sign if ``negate``.

    Leaves without a direction (not float, or frozen) get zeros (a ``float0``
    gradient stays itself).
    """
    keys, leaves, treedef = flatten(tree)
    return treedef.unflatten(
        [
            (-steps[k] if negate else steps[k]) if k in steps else _untouched(leaf)
            for k, leaf in zip(keys, leaves)
        ]
    )


def _untouched(leaf: Any) -> Any:
    dtype = getattr(leaf, "dtype", None)
    if dtype is None or dtype == jax.dtypes.float0:
        return leaf
    return jnp.zeros_like(leaf)


# -- optax's tree utilities ------------------------------------------------------------
#
# `optax.tree.map_params(tx, f, state, ...)` calls `tx.init` on a placeholder standing for
# the whole parameter tree and expects a state of the same structure as `state`, with the
# placeholder wherever optax would hold a copy of the parameter tree. A hook state's
# structure depends on the parameters, which the placeholder does not show: it is taken
# from the last `init` of an optimizer of the same configuration (`inject_hyperparams`
# builds a new transformation at every call).

try:
    from optax.tree_utils._state_utils import _ParamsPlaceholder
except ImportError:  # pragma: no cover - a future optax that moved it

    class _ParamsPlaceholder:  # type: ignore[no-redef]
        """Never matches: map_params then gets the clear error below."""


# The last layout init made for each optimizer configuration, for a transformation that
# never ran init itself: `inject_hyperparams` builds a new one at every call.
_RECENT: dict[Any, _engine.Layout] = {}


def fingerprint(template: Optimizer) -> Any:
    """What fixes a state's layout for given parameters, apart from them: classes and statics."""
    found = _engine.walk(template)
    statics = []
    for path, value in found.statics.items():
        try:
            hash(value)
        except TypeError:
            value = ("id", id(value))
        statics.append((path, value))
    return (tuple(found.kinds.items()), tuple(statics), tuple(found.arrays))


def _placeholder_state(template: Optimizer, layouts: list[_engine.Layout]) -> _engine.HookState:
    if not layouts and fingerprint(template) in _RECENT:
        layouts = [_RECENT[fingerprint(template)]]
    if len(layouts) > 1:
        raise StructureError(
            f"init was called with optax's parameter placeholder (from optax.tree.map_params) "
            f"for {type(template).__name__}, which has been initialised on "
            f"{len(layouts)} different parameter structures; the placeholder does not say "
            "which one the state belongs to. Fix: call optax.tree.map_params with a "
            "transformation initialised on one parameter structure only."
        )
    layout = layouts[0] if layouts else None
    if layout is None:
        raise StructureError(
            f"init was called with optax's parameter placeholder (from optax.tree.map_params) "
            f"for {type(template).__name__}, which has not been initialised with real "
            "parameters. A hook optimizer's state structure depends on the parameters. Fix: "
            "call `tx.init(params)` (or `jax.eval_shape(tx.init, params)`) before "
            "optax.tree.map_params."
        )
    placeholder = _ParamsPlaceholder()
    # Other leaves only need to be leaves: map_params passes the state's own value on.
    tree: Any = _engine.nest(layout.mirror, [0] * len(layout.mirror))
    for prefix in sorted(_parameter_copies(layout), key=len):
        if prefix == ():
            tree = placeholder
            break
        node = tree
        for part in prefix[:-1]:
            node = node[part]
        node[prefix[-1]] = placeholder
    return _engine.HookState(tree, layout)


def _suffixes(layout: _engine.Layout) -> list[tuple[tuple[Any, ...], int]]:
    """Each state array's mirrored path, and how many trailing parts are its parameter key."""
    out = []
    for parts, owner, path in zip(layout.mirror, layout.param_of, layout.paths, strict=True):
        last = path[-1] if path else None
        keyed = owner >= 0 and last is not None and last[1] == layout.param_keys[owner]
        out.append((parts, len(layout.param_keys[owner]) if keyed else -1))
    return out


def _parameter_copies(layout: _engine.Layout) -> set[tuple[Any, ...]]:
    """Places in the nested state holding one array per parameter and nothing else."""
    members: dict[tuple[Any, ...], set[int]] = {}
    for (parts, n), owner in zip(_suffixes(layout), layout.param_of, strict=True):
        if n >= 0:
            members.setdefault(parts[: len(parts) - n], set()).add(owner)
    everything = set(range(len(layout.param_keys)))
    copies = set()
    for prefix, owners in members.items():
        inside = [p for p in layout.mirror if p[: len(prefix)] == prefix]
        if owners == everything and len(inside) == len(everything):
            copies.add(prefix)
    return copies
