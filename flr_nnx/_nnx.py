"""The Flax NNX bridge: a drop-in for ``nnx.Optimizer`` that runs a hook optimizer on
:func:`~flr_nnx.as_optax`'s pure path, adding state in Variables with the parameters'
metadata and sharding, ``loss=``, the extra argument ``nnx_variables`` and the live view.
"""

from __future__ import annotations

from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from flax.nnx import filterlib

from flr_nnx import _engine
from flr_nnx._bridges import is_optax
from flr_nnx._errors import ArgumentError, Missing
from flr_nnx._eval import nnx_eval_params
from flr_nnx._live_view import live_view
from flr_nnx._nnx_variables import Variables, keep_sharding, slots, state_shardings
from flr_nnx._optax import hook_template, init_state, optax_updates, step_state, transformation
from flr_nnx._optimizer import Optimizer

M = TypeVar("M")

_NO_LOSS = "pass it to the update: `optimizer.update(model, grads, loss=loss)`."
_MISSING: Any = object()  # an argument that was not passed (None is a valid value)


class _Hook:
    """The hook optimizer's copy and layout in one opaque leaf: NNX checks every leaf of
    an attribute when it is set, and a layout's tuples are thousands."""

    def __init__(self, template: Optimizer, layout: _engine.Layout):
        self.template, self.layout = template, layout


class NNXOptimizer(nnx.Optimizer[M]):
    """Trains an NNX model with a hook optimizer; a drop-in for ``nnx.Optimizer``.

    The state lives in :class:`OptimizerSlot` Variables in ``opt_state``, the optimizer's
    attributes with the parameter paths spliced in (``opt_state['m']['layers'][0]['kernel']``),
    each with its parameter's sharding. :attr:`opt` is a live view of the hook optimizer;
    :attr:`step` counts every :meth:`update`, mini-steps and skipped steps included.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> import flr_nnx as flr
        >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
        >>> optimizer = flr.NNXOptimizer(model, flr.optim.Adam(1e-2), wrt=nnx.Param)
        >>> x, y = jnp.ones((4, 2)), jnp.zeros((4, 1))
        >>> loss_fn = lambda model: ((model(x) - y) ** 2).mean()
        >>> @nnx.jit
        ... def train_step(model, optimizer):
        ...     loss, grads = nnx.value_and_grad(loss_fn)(model)
        ...     optimizer.update(model, grads, loss=loss)
        ...     return loss
        >>> losses = [float(train_step(model, optimizer)) for _ in range(3)]
        >>> losses[2] < losses[0], int(optimizer.step[...])
        (True, 3)
    """

    def __init__(
        self,
        model: M,
        opt: Optimizer | optax.GradientTransformation,
        *,
        wrt: filterlib.Filter = _MISSING,  # type: ignore[assignment]
        graph: bool | None = None,
    ):
        """Creates the optimizer state for the parameters of ``model`` selected by ``wrt``.

        Args:
            model: an NNX module.
            opt: a hook optimizer (copied, never changed), or an optax transformation:
                then this is exactly ``nnx.Optimizer(model, opt, wrt=wrt, graph=graph)``.
            wrt: which Variables to optimize (required), e.g. ``nnx.Param``, as in
                ``nnx.Optimizer``. Only float arrays are optimized.
            graph: graph (``True``) or tree mode (``False``), as in ``nnx.Optimizer``.

        Raises:
            ArgumentError: if ``wrt`` is not given.
            BridgeError: if ``opt`` is neither a hook optimizer nor an optax transformation.
        """
        if wrt is _MISSING:
            raise ArgumentError(
                f"NNXOptimizer(model, {type(opt).__name__}(...)): missing the keyword argument "
                "`wrt`, which selects the Variables to train; nnx.Optimizer requires it too "
                "(since Flax 0.11). Fix: pass wrt=nnx.Param, e.g. "
                "`flr.NNXOptimizer(model, opt, wrt=nnx.Param)`."
            )
        if not isinstance(opt, Optimizer) and is_optax(opt):
            nnx.Optimizer.__init__(self, model, opt, wrt=wrt, graph=graph)
            self._hook = None
            return
        template = hook_template(opt, "flr.NNXOptimizer")
        self.graph = graph
        self.wrt = wrt
        self.step = nnx.OptState(jnp.array(0, dtype=jnp.uint32))
        self.tx = transformation(template)
        variables = nnx.state(model, wrt, graph=graph)
        by_key = {tuple(path): var for path, var in nnx.to_flat_state(variables)}
        extra = {"nnx_variables": Variables(by_key)}
        state = init_state(template, nnx.as_pure(variables), state_shardings(by_key), extra)
        self._hook = _Hook(template, state.layout)
        self.opt_state = nnx.data(_engine.nest(state.layout.mirror, slots(state, by_key)))

    @property
    def layout(self) -> _engine.Layout | None:
        """The hook optimizer's state layout (``None`` with an optax transformation)."""
        return None if self._hook is None else self._hook.layout

    @property
    def _template(self) -> Optimizer | None:
        return None if self._hook is None else self._hook.template

    @property
    def hook_optimizer(self) -> Any:
        """The live view :attr:`opt` (not the object: an assignment to that would be
        silently ignored under ``nnx.jit``), or ``None`` with an optax transformation."""
        return None if self._template is None else self.opt

    @property
    def opt(self) -> Any:
        """The hook optimizer, as a live view of this optimizer's state.

        Reads give current values; assigning a live hyperparameter (:func:`flr_nnx.hyper`),
        e.g. ``optimizer.opt.learning_rate = 1e-4``, sets its Variable, effective at the
        next step without a recompile. Nested optimizers are views too.

        Raises:
            BridgeError: if this optimizer runs an optax transformation.
        """
        return live_view(self)

    eval_params = nnx_eval_params

    def update(  # type: ignore[override]
        self, model: M, grads: Any = _MISSING, /, *, loss: Any = None, **kwargs: Any
    ) -> Any:
        """Applies one step of the optimizer to ``model`` in place.

        Args:
            model: the model whose parameters (selected by ``wrt``) are updated.
            grads: gradients, e.g. from ``nnx.grad`` (an ``nnx.State``).
            loss: the loss of this step, for optimizers that read it (alias: optax's
                ``value=``); an optax transformation gets it as ``value=`` and ``loss=``.
            **kwargs: optax's other extra arguments (``grad=``, ``value_fn=``, ...), as
                :meth:`~flr_nnx.optim.Optimizer.call_model` describes.

        Returns:
            The updates added to the parameters (optax sign), structured like
            ``nnx.state(model, wrt)``.

        Raises:
            ArgumentError: if called without the model (``update(grads)``).
        """
        if grads is _MISSING:
            raise ArgumentError(
                "NNXOptimizer.update got only one positional argument: it takes "
                "`update(model, grads)`, as nnx.Optimizer has since Flax 0.11 (the model is "
                "no longer held by the optimizer). Fix: call `optimizer.update(model, grads)`."
            )
        if self._hook is None:
            # `loss=` is ours: a transformation without extra arguments (optax.clip) is
            # called as nnx.Optimizer calls it, without it (as optax.chain drops it).
            if loss is not None and isinstance(self.tx, optax.GradientTransformationExtraArgs):
                kwargs = {"value": loss, **kwargs, "loss": loss}
            return nnx.Optimizer.update(self, model, grads, **kwargs)
        if loss is None:
            loss = kwargs.pop("value", Missing("loss", _NO_LOSS))
        variables = nnx.state(model, self.wrt, graph=self.graph)
        param_arrays = nnx.as_pure(variables)
        grad_arrays = nnx.as_pure(nnx.state(grads, self.wrt, graph=self.graph))
        by_key = {tuple(path): var for path, var in nnx.to_flat_state(variables)}
        # As nnx.Optimizer does: extra arguments as pure arrays, States filtered by `wrt`.
        extra = {
            name: nnx.as_pure(nnx.state(value, self.wrt, graph=self.graph))
            if isinstance(value, nnx.State)
            else nnx.as_pure(value)
            for name, value in kwargs.items()
        }
        extra["nnx_variables"] = Variables(by_key)
        mirror = self.layout.mirror
        held = _engine.unnest(mirror, self.opt_state)
        state = _engine.HookState(_engine.nest(mirror, [s.get_value() for s in held]), self.layout)
        steps, state = step_state(self._template, state, grad_arrays, param_arrays, loss, extra)
        updates = optax_updates(steps, param_arrays)
        new_params = optax.apply_updates(param_arrays, updates)
        nnx.update(model, jax.tree.map(keep_sharding, new_params, variables))
        for slot, value in zip(held, state.leaves(), strict=True):
            slot.set_value(keep_sharding(value, slot))
        self.step[...] += 1
        return updates
