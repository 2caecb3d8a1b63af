"""The Flax NNX bridge: a drop-in for ``nnx.Optimizer`` that runs a hook optimizer.

It runs the same pure path as :func:`~flr_nnx.as_optax` (``init_state``,
``step_state``, ``optax_updates``) and adds what a Flax user expects of the
optimizer object: state in Variables carrying the parameters' metadata and
sharding, ``loss=``, the model's Variables for filters by Variable type, and
:attr:`NNXOptimizer.opt`.
"""

from __future__ import annotations

from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from flax.nnx import filterlib

from flr_nnx import _engine
from flr_nnx._bridges import check_hook_optimizer, is_optax
from flr_nnx._errors import ArgumentError, BridgeError, Missing
from flr_nnx._live_view import _LiveView
from flr_nnx._nnx_sharding import keep_sharding, slot_metadata, state_sharding
from flr_nnx._optax import as_optax, init_state, optax_updates, step_state
from flr_nnx._optimizer import Key, Optimizer
from flr_nnx._tree import is_float

M = TypeVar("M")

_NO_LOSS = "pass it to the update: `optimizer.update(model, grads, loss=loss)`."
_MISSING: Any = object()  # an argument that was not passed (None is a valid value)


class OptimizerSlot(nnx.OptState):
    """One array of a hook optimizer's state, held in an NNX Variable.

    State keyed by a parameter (and of its shape) carries that parameter's
    metadata, such as its sharding (``optimizer_sharding`` when annotated), as
    ``nnx.Optimizer`` does for optax state.
    """


@jax.tree_util.register_static
class Variables:
    """The model's Variables by parameter key: the extra argument ``nnx_variables``.

    What a filter by Variable type (``Partition``'s) reads. Not a ``Mapping``, so
    that it passes unchanged where extra arguments keyed by parameter are cut to
    a group or packed; and a pytree without leaves, so that optax code mapping
    over extra arguments leaves it alone.
    """

    def __init__(self, by_key: dict[Key, nnx.Variable]):
        self._by_key = by_key

    def get(self, key: Key, default: Any = None) -> Any:
        """The Variable of parameter ``key``, or ``default``."""
        return self._by_key.get(key, default)


class _Hook:
    """The hook optimizer's copy and its state layout: one static attribute.

    Held as one opaque leaf, so that NNX's checks of attribute values do not
    walk the layout's tuples at every construction.
    """

    def __init__(self, template: Optimizer, layout: _engine.Layout):
        self.template, self.layout = template, layout


class NNXOptimizer(nnx.Optimizer[M]):
    """Trains an NNX model with a hook optimizer; a drop-in for ``nnx.Optimizer``.

    The hook optimizer's state lives in :class:`OptimizerSlot` Variables in
    ``self.opt_state``, a nested dict mirroring the optimizer's attributes with
    the model's parameter paths spliced in (``opt_state['m']['layers'][0]['kernel']``),
    so ``nnx.state``, ``nnx.split``/``nnx.merge``, ``nnx.jit`` and checkpointing
    see ordinary Variables.

    State keyed by a parameter (and of its shape) is created with the
    parameter's sharding, or with its ``optimizer_sharding`` annotation, and
    steps under ``jax.set_mesh`` keep annotated shardings. :attr:`opt` is a live
    view of the hook optimizer (read state, assign live hyperparameters made
    with :func:`flr_nnx.hyper`). :attr:`step` counts every call of
    :meth:`update`, including the mini-steps of
    :class:`~flr_nnx.compose.MultiSteps` and the steps that
    :class:`~flr_nnx.compose.SkipNonFinite` skips.

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
            opt: a hook optimizer (:class:`flr_nnx.optim.Optimizer`); it is copied,
                and training never changes it. An optax transformation is
                accepted too, and then everything is exactly what
                ``nnx.Optimizer(model, opt, wrt=wrt, graph=graph)`` does: the same
                ``opt_state`` (structure, Variable types, values), the same
                updates, ``update``'s keyword arguments passed on to
                ``opt.update``.
            wrt: which Variables to optimize, as in ``nnx.Optimizer`` (e.g.
                ``nnx.Param``). Only float arrays are optimized. Required, as in
                ``nnx.Optimizer``.
            graph: graph mode (``True``) or tree mode (``False``), as in
                ``nnx.Optimizer``; ``None`` follows the current NNX setting.

        Raises:
            ArgumentError: if ``wrt`` is not given.
            BridgeError: if ``opt`` is neither a hook optimizer nor an optax
                transformation.
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
        check_hook_optimizer(opt, "flr.NNXOptimizer")
        self.graph = graph
        self.wrt = wrt
        self.step = nnx.OptState(jnp.array(0, dtype=jnp.uint32))
        self.tx = as_optax(opt)
        template = _engine.rebuild(opt, {})
        variables = nnx.state(model, wrt, graph=graph)
        by_key = {tuple(path): var for path, var in nnx.to_flat_state(variables)}
        shardings = {}
        for key, var in by_key.items():
            if isinstance(var, nnx.Variable) and is_float(var.get_value()):
                sharding = state_sharding(key, var)
                if sharding is not None:
                    shardings[key] = sharding
        extra = {"nnx_variables": Variables(by_key)}
        state = init_state(template, nnx.as_pure(variables), shardings, extra)
        slots = []
        for value, owner in zip(state.leaves(), state.layout.param_of, strict=True):
            var = by_key.get(state.layout.param_keys[owner]) if owner >= 0 else None
            same = isinstance(var, nnx.Variable) and var.get_value().shape == value.shape
            slots.append(OptimizerSlot(value, **(slot_metadata(var, value) if same else {})))
        self._hook = _Hook(template, state.layout)
        self.opt_state = nnx.data(_engine.nest(state.layout.mirror, slots))

    @property
    def layout(self) -> _engine.Layout | None:
        """The hook optimizer's state layout (``None`` with an optax transformation)."""
        return None if self._hook is None else self._hook.layout

    @property
    def _template(self) -> Optimizer | None:
        return None if self._hook is None else self._hook.template

    @property
    def hook_optimizer(self) -> Any:
        """The hook optimizer: the same live view as :attr:`opt`.

        Not the object itself: an assignment to it between steps would take
        effect eagerly and be silently ignored under ``nnx.jit``. Through the
        view, a live hyperparameter (:func:`flr_nnx.hyper`) is set in the state
        and a Python value is a :class:`~flr_nnx.HyperparameterError`. ``None``
        when this optimizer runs an optax transformation.
        """
        return None if self._template is None else self.opt

    @property
    def opt(self) -> Any:
        """The hook optimizer, as a live view of this optimizer's state.

        Reading an attribute gives its current value: state arrays (including
        hyperparameters made live with :func:`flr_nnx.hyper`) are read from
        their Variables, Python values from the optimizer. Assigning a live
        hyperparameter (``optimizer.opt.learning_rate = 1e-4``) sets its Variable
        (cast to its dtype), so it takes effect at the next step without a
        recompile. Nested optimizers are views too
        (``optimizer.opt.links[1].learning_rate``). A schedule reads as the
        schedule; ``flr.get_hyper(optimizer, "learning_rate")`` gives the value
        the next step uses.

        Raises:
            BridgeError: if this optimizer runs an optax transformation (it has
                no hook optimizer to view; read ``opt_state``, or use
                :func:`~flr_nnx.get_hyper`).
        """
        if self._template is None:
            raise BridgeError(
                "optimizer.opt is the live view of a hook optimizer, but this NNXOptimizer "
                f"runs an optax transformation ({type(self.tx).__name__}). Fix: read "
                "`optimizer.opt_state` as with nnx.Optimizer, or use flr.get_hyper/"
                "flr.set_hyper(optimizer, name, ...) for hyperparameters of flr.as_optax "
                "transformations in it."
            )
        return _LiveView(self, ())

    def _hook_state(self) -> _engine.HookState:
        slots = _engine.unnest(self.layout.mirror, self.opt_state)
        return _engine.HookState(
            _engine.nest(self.layout.mirror, [slot.get_value() for slot in slots]), self.layout
        )

    def update(  # type: ignore[override]
        self, model: M, grads: Any = _MISSING, /, *, loss: Any = None, **kwargs: Any
    ) -> Any:
        """Applies one step of the optimizer to ``model`` in place.

        Args:
            model: the model whose parameters (selected by ``wrt``) are updated.
            grads: gradients, e.g. from ``nnx.grad`` (an ``nnx.State``).
            loss: the loss of this step, for optimizers that read it. optax's
                ``value=`` keyword is accepted as an alias. With an optax
                transformation, it is passed on as ``value=`` (unless ``value=``
                is given), as well as ``loss=``.
            **kwargs: optax's other extra arguments (``grad=``, ``value_fn=`` of a
                line search, ...). A hook optimizer gets them as
                :meth:`~flr_nnx.optim.Optimizer.call_model` describes, ``value_fn``
                called with the parameters as ``nnx.Optimizer`` passes them to
                optax (``nnx.as_pure(nnx.state(model, wrt))``); an optax
                transformation gets them in ``tx.update``, as ``nnx.Optimizer`` does.

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
        steps, new_state = step_state(
            self._template, self._hook_state(), grad_arrays, param_arrays, loss, extra
        )
        updates = optax_updates(steps, param_arrays)
        new_params = optax.apply_updates(param_arrays, updates)
        nnx.update(model, jax.tree.map(keep_sharding, new_params, variables))
        slots = _engine.unnest(self.layout.mirror, self.opt_state)
        for slot, value in zip(slots, new_state.leaves(), strict=True):
            slot.set_value(keep_sharding(value, slot))
        self.step[...] += 1
        return updates
