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
from flr_nnx._optax import TEMPLATES, hook_template
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
        StructureError: if ``state`` is not a :class:`~flr_nnx.HookState`.

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
    keys, leaves, treedef = flatten(params)
    floats = {k: leaf for k, leaf in zip(keys, leaves) if is_float(leaf)}
    result = _engine.evaluate(template, state, floats)
    return treedef.unflatten([result.get(k, leaf) for k, leaf in zip(keys, leaves)])


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
    values = eval_params(self._template, state, nnx.as_pure(variables))
    return jax.tree.map(keep_sharding, values, variables)
