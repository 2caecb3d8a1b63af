"""Evaluation parameters through both bridges: the point an optimizer says to evaluate at.

:meth:`flr_nnx.optim.Optimizer.eval_params` computes it from the state (schedule-free's
average :math:`x`, not its iterate :math:`y`); the engine runs it (:func:`_engine.evaluate`).
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from flr_nnx import _engine
from flr_nnx._bridges import is_optax
from flr_nnx._errors import BridgeError, StructureError, describe
from flr_nnx._nnx_variables import keep_sharding
from flr_nnx._optax import TEMPLATES, fingerprint, hook_template
from flr_nnx._optimizer import Optimizer
from flr_nnx._tree import flatten, is_float


def eval_params(opt: Any, state: Any, params: Any) -> Any:
    """The parameters to evaluate (or export) at, for the optax bridge.

    The twin of ``optax.contrib.schedule_free_eval_params(state, params)``, for any
    hook optimizer: it runs :meth:`~flr_nnx.optim.Optimizer.eval_params` on ``state``.
    Most optimizers evaluate where they train (``params`` come back unchanged); a
    schedule-free one returns its average :math:`x`. Training goes on from ``params``;
    evaluate (and export) the result. Works eagerly and under ``jax.jit``.

    Args:
        opt: the transformation :func:`~flr_nnx.as_optax` returned, or the hook
            optimizer given to it (the state alone does not hold the hyperparameters).
        state: its state (``tx.init``'s or an ``update``'s), a :class:`~flr_nnx.HookState`.
        params: the current parameters, the tree given to ``update``.

    Returns:
        A tree like ``params``; leaves that are not float are passed through.

    Raises:
        BridgeError: if ``opt`` is neither a hook optimizer nor made by ``as_optax``.
        StructureError: if ``state`` is not a :class:`~flr_nnx.HookState`, or is not
            the state of ``opt`` (its layout differs from the one ``opt`` makes for
            ``params``: another optimizer's state would be read as this one's).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.compose.ScheduleFree(flr.optim.SGD(0.1), 0.1))
        >>> params = {"w": jnp.array([1.0])}
        >>> state = tx.init(params)
        >>> for _ in range(2):
        ...     updates, state = tx.update({"w": jnp.array([1.0])}, state, params)
        ...     params = {"w": params["w"] + updates["w"]}
        >>> params["w"], flr.eval_params(tx, state, params)["w"]  # y, and x to evaluate at
        (Array([0.8449999], dtype=float32), Array([0.84999985], dtype=float32))
    """
    template = _template_of(opt)
    if not isinstance(state, _engine.HookState):
        raise StructureError(
            f"flr.eval_params got {describe(state)} as the state; expected the HookState of "
            "the hook optimizer (`tx.init(params)`'s result or an update's). Fix: pass the "
            "state of the transformation flr.as_optax returned, not of a chain around it."
        )
    return _evaluate(template, state, params, check=True)


def _evaluate(template: Optimizer, state: _engine.HookState, params: Any, check: bool) -> Any:
    keys, leaves, treedef = flatten(params)
    floats = {k: leaf for k, leaf in zip(keys, leaves) if is_float(leaf)}
    if check:
        _check_state_of(template, state, floats)
    result = _engine.evaluate(template, state, floats)
    return treedef.unflatten([result.get(k, leaf) for k, leaf in zip(keys, leaves)])


# The (optimizer, parameters, state) structures seen to match: an eager call traces no init.
_MATCHED: dict[Any, None] = {}


def _structure(layout: _engine.Layout) -> tuple[frozenset[Any], ...]:
    """What a layout says of the optimizer's structure: not the values of its statics.

    Sets: the parameters' order is :func:`_engine.check_grads`' to check.
    """
    statics = frozenset(path for path, _ in layout.statics)
    return (
        frozenset(layout.paths),
        statics,
        frozenset(layout.containers),
        frozenset(layout.hypers),
    )


def _paths(paths: list[Any] | tuple[Any, ...]) -> str:
    shown = ", ".join(_engine.format_path(p) for p in paths[:4])
    return f"[{shown}{', ...' if len(paths) > 4 else ''}]" if paths else "no state"


def _check_state_of(template: Optimizer, state: _engine.HookState, floats: dict[Any, Any]) -> None:
    """Raises a StructureError if ``state`` was not made by ``template`` for these parameters.

    Another optimizer's state would be silently misread: a hook optimizer without an
    evaluation point returns the iterate, a wrapper finds no state where it looks.
    """
    _engine.check_grads(state.layout, floats)  # names the parameters that differ
    # The layout depends on the optimizer and on the parameters' keys, shapes and dtypes.
    dtypes = tuple((k, jax.numpy.shape(v), jax.numpy.result_type(v)) for k, v in floats.items())
    key = (fingerprint(template), dtypes, _structure(state.layout))
    if key in _MATCHED:
        return
    # Only the layout is needed: abstract evaluation computes no initial value.
    expected = jax.eval_shape(lambda p: _engine.init(template, p), floats).layout
    if _structure(expected) == _structure(state.layout):
        _MATCHED[key] = None
        while len(_MATCHED) > 256:  # the oldest is forgotten first
            del _MATCHED[next(iter(_MATCHED))]
        return
    name = type(template).__name__
    raise StructureError(
        f"flr.eval_params got a state that is not {name}'s: for these parameters {name} "
        f"keeps {_paths(expected.paths)}, the state holds {_paths(state.layout.paths)}. "
        "Fix: pass the transformation (or hook optimizer) the state came from, the `tx` "
        "of `state = tx.init(params)`."
    )


def _template_of(opt: Any) -> Optimizer:
    if isinstance(opt, Optimizer):
        return hook_template(opt, "flr.eval_params")
    template = TEMPLATES.get(getattr(opt, "update", None)) if is_optax(opt) else None
    if template is None:
        raise BridgeError(
            f"flr.eval_params got {describe(opt)}; expected the transformation flr.as_optax "
            "returned, or the hook optimizer given to it. Fix: pass `tx` of "
            "`tx = flr.as_optax(opt)` (an optax transformation has its own, e.g. "
            "optax.contrib.schedule_free_eval_params)."
        )
    return template


def nnx_eval_params(self: Any, model: Any) -> nnx.State:
    """The model's parameters to evaluate (or export) at, as an ``nnx.State``.

    What :meth:`~flr_nnx.optim.Optimizer.eval_params` says, from this optimizer's
    state: the parameters selected by ``wrt`` (``nnx.state(model, wrt)``'s structure),
    unchanged for most optimizers, a schedule-free optimizer's average :math:`x`. The
    model is not changed (it keeps training from its parameters); evaluate a copy,
    ``eval_model = nnx.clone(model); nnx.update(eval_model, optimizer.eval_params(model))``,
    eagerly or inside ``nnx.jit``.

    Args:
        model: the model this optimizer trains.

    Returns:
        An ``nnx.State`` of arrays, like ``nnx.state(model, wrt)``; non-float leaves
        are passed through.

    Raises:
        BridgeError: if this optimizer runs an optax transformation (use optax's
            function, e.g. ``optax.contrib.schedule_free_eval_params``).
    """
    if self._hook is None:
        raise BridgeError(
            "NNXOptimizer.eval_params needs a hook optimizer; this one runs an optax "
            "transformation, whose evaluation parameters optax computes. Fix: call e.g. "
            "`optax.contrib.schedule_free_eval_params(optimizer.opt_state, "
            "nnx.state(model, optimizer.wrt))`, or pass the hook twin (flr.compose.ScheduleFree)."
        )
    variables = nnx.state(model, self.wrt, graph=self.graph)
    mirror = self.layout.mirror
    held = _engine.unnest(mirror, self.opt_state)
    state = _engine.HookState(_engine.nest(mirror, [s.get_value() for s in held]), self.layout)
    # The state is this optimizer's own: no need to check it against the template.
    values = _evaluate(self._template, state, nnx.as_pure(variables), check=False)
    return jax.tree.map(keep_sharding, values, variables)
