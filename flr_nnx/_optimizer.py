"""The hook optimizer base class: what a user subclasses to write an optimizer."""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import weakref
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import jax

from flr_nnx._contract import (
    check_arguments,
    check_model_grads,
    check_per_example_grads,
    not_optax,
    signature_problem,
)
from flr_nnx._errors import Missing, TransientReadError

Key = tuple[str | int, ...]
"""A parameter's key: its path in the parameter tree, e.g. ``('layers', 0, 'kernel')``."""

RUN: contextvars.ContextVar[Any] = contextvars.ContextVar("flr_nnx_run", default=None)
"""The run context: what records assignments while the engine's init traces discovery.

The only switch a run sets (the engine sets it; ``Optimizer.__setattr__`` and the
engine's recording dicts report to it); None outside discovery.
"""


class Optimizer:
    """Base class of hook optimizers.

    Subclass it and override the hooks. Every hook is called with keyword
    arguments, so ``**_`` swallows the ones a hook does not need.

    - ``__init__``: store hyperparameters (Python scalars, which stay compile-time
      constants) and state: JAX arrays (``self.t = jnp.zeros((), jnp.uint32)``)
      and dicts keyed by parameter key (``self.m = {}``) that the hooks fill
      lazily on the first step.
    - :meth:`call_model` runs first, once per step, and returns the gradients
      the per-parameter hook sees.
    - :meth:`call_param` runs once per parameter and returns its update.
      **A positive update means descent**: it is subtracted from the parameter.
    - :meth:`__call__` ties them together; override it for advanced use (see
      :class:`flr_nnx.compose.Chain`).

    The object itself is never mutated by a training step: the engine runs the
    hooks on a private copy whose state comes from the bridge (an NNX Variable
    or an optax state), so one optimizer object may be used many times.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> class Momentum(flr.optim.Optimizer):
        ...     def __init__(self, lr=0.1, beta=0.9):
        ...         self.lr, self.beta = lr, beta
        ...         self.velocity = {}
        ...
        ...     def call_param(self, key, grad, **_):
        ...         if key not in self.velocity:
        ...             self.velocity[key] = jnp.zeros_like(grad)
        ...         self.velocity[key] = self.beta * self.velocity[key] + grad
        ...         return self.lr * self.velocity[key]
        >>> tx = flr.as_optax(Momentum())
        >>> params = {"w": jnp.ones(3)}
        >>> state = tx.init(params)
        >>> updates, state = tx.update({"w": jnp.ones(3)}, state, params)
        >>> updates["w"]
        Array([-0.1, -0.1, -0.1], dtype=float32)
    """

    transient: ClassVar[tuple[str, ...]] = ()
    """Attributes the hooks recompute at every step before reading them.

    Per-step values that ``call_model`` computes for ``call_param`` (bias
    corrections, the learning rate of this step) are not state: naming them
    here keeps them out of the state pytree, checkpoints and the compiled
    step's outputs. A transient attribute does not exist when a step starts;
    reading it before a hook assigns it in that step is a
    :class:`~flr_nnx.TransientReadError` (an ``AttributeError``) that says
    so, and setting it in ``__init__`` is a :class:`~flr_nnx.StateError`.
    """

    optax_sign: ClassVar[Literal["update", "gradient"]] = "update"
    """What this optimizer's optax twin returns: :func:`~flr_nnx.as_optax`'s default ``sign``.

    ``"update"`` (the default): the twin is an optimizer (``optax.adam``) whose
    output is added to the parameters, so ``as_optax`` negates the hooks'
    descent directions. ``"gradient"``: the twin is a *gradient
    transformation* (``optax.clip_by_global_norm``, ``optax.contrib.normalize``)
    whose output is gradient-like, for a later link of an ``optax.chain`` to
    scale and negate, so ``as_optax`` returns the hooks' output as is; with
    ``"update"`` there, ``optax.chain(flr.as_optax(block), optax.sgd(lr))``
    would step uphill. It only sets the optax bridge's default (an explicit
    ``as_optax(opt, sign=...)`` wins): the hooks still return descent
    directions, and :class:`~flr_nnx.NNXOptimizer` subtracts them either way.
    """

    per_example_grads: ClassVar[bool] = False
    """Whether this optimizer takes per-example gradients (one more leading axis).

    ``True`` declares that every gradient it is given has a leading batch axis
    (one gradient per example, e.g. from ``jax.vmap(jax.grad(loss))``) that the
    parameters do not have: ``grads[k].shape == (batch, *params[k].shape)``.
    Its ``call_model`` reads them whole and returns ordinary gradients, of the
    parameters' shapes (it aggregates the examples, as
    :class:`~flr_nnx.optim.DPSGD` does); the engine creates its state on such
    gradients (a batch of one at init), and a gradient without the axis is a
    :class:`~flr_nnx.StructureError` (as are per-example gradients given to an
    optimizer that does not declare it). A wrapper that hands its gradients to
    such an optimizer declares it too (a property, as :class:`~flr_nnx.compose.Chain`
    does for its first link).
    """

    def __init__(self) -> None:
        """An optimizer that does not define ``__init__`` takes no arguments."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not hasattr(init, "_flr_checked"):
            cls.__init__ = check_arguments(init)  # type: ignore[method-assign]

    def __setattr__(self, name: str, value: Any) -> None:
        run = RUN.get()  # the engine's run context: set while init discovers the state
        # Every assignment is reported, not only new names: an attribute that starts as
        # None in __init__ and becomes an array in a hook also starts from its first value.
        if run is not None:
            value = run.on_new_attribute(self, name, value)
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes that do not exist.
        if name in type(self).transient:
            raise TransientReadError(
                f"{type(self).__name__}.{name} was read before a hook assigned it in this step. "
                f"It is listed in {type(self).__name__}.transient, so it is not kept between "
                f"steps. Fix: assign `self.{name}` in call_model before call_param reads it, "
                f"or remove {name!r} from `transient` to keep it as optimizer state."
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def call_model(
        self,
        grads: dict[Key, jax.Array],
        params: Mapping[Key, jax.Array],
        loss: Any,
        **extra: Any,
    ) -> dict[Key, jax.Array]:
        """Runs once per step, before :meth:`call_param`.

        Args:
            grads: gradients, a dict from parameter key to array.
            params: current parameters, keyed like ``grads``.
            loss: the loss of this step (if the caller provided it; optax's
                ``value=`` extra argument).
            **extra: optax's other extra arguments, as the caller passed them to
                ``update`` (e.g. ``grad=`` and ``value_fn=`` of ``optax.lbfgs``'s
                line search). Those shaped like the parameters arrive keyed like
                ``grads`` (float leaves only); ``value_fn`` arrives as a function
                of such a dict. A hook receives only the extra arguments its
                signature names, or all of them with ``**kwargs``; the others
                are dropped, as optax transformations ignore extra arguments
                they do not use. At init they are stand-ins: ``grad`` is zeros
                and ``value_fn`` returns zero.

        Returns:
            The gradients to pass on to :meth:`call_param`, keyed like ``grads``
            (same shapes). A key left out gets no update this step (a zero
            update; its :meth:`call_param` does not run, so its state is
            unchanged); a key that is not a parameter is a
            :class:`~flr_nnx.HookError`.
        """
        return grads

    def call_param(self, key: Key, grad: jax.Array, param: jax.Array) -> jax.Array:
        """Runs once per parameter and returns its update (positive = descent).

        Args:
            key: the parameter's key, e.g. ``('layers', 0, 'kernel')``.
            grad: its gradient, as returned by :meth:`call_model`.
            param: its current value.

        Returns:
            The update, of the same shape and dtype as ``grad``. The parameter
            becomes ``param - update``.
        """
        return grad

    def __call__(
        self,
        loss: Any,
        grads: dict[Key, jax.Array],
        params: Mapping[Key, jax.Array],
        nnx_variables: Any = None,
        **extra: Any,
    ) -> dict[Key, jax.Array]:
        """Computes one step: :meth:`call_model`, then :meth:`call_param` per key.

        Args:
            loss: the loss of this step (if the caller provided it).
            grads: gradients, a dict from parameter key to array.
            params: current parameters, keyed like ``grads``.
            nnx_variables: the model's Variables by key, which :class:`~flr_nnx.NNXOptimizer`
                passes (``None`` elsewhere); a hook gets it only if its signature names it,
                and an optimizer that overrides ``__call__`` and calls others names it to
                pass it on, so that ``**extra`` passed on to optax never carries it.
            **extra: optax's extra arguments (see :meth:`call_model`), passed on
                to :meth:`call_model`. An optimizer that calls other optimizers
                passes them on with :func:`flr_nnx.optim.call`.

        Returns:
            A dict from parameter key to update (positive = descent).
        """
        known = grads
        if self.per_example_grads:
            check_per_example_grads(self, known, params)
        grads = call(
            self.call_model,
            grads=grads,
            params=params,
            loss=loss,
            nnx_variables=nnx_variables,
            **extra,
        )
        check_model_grads(self, grads, known, per_example=self.per_example_grads)
        return {
            key: checked_call(self.call_param, key=key, grad=grad, param=params[key])
            for key, grad in grads.items()
        }

    def eval_params(self, params: Mapping[Key, jax.Array]) -> Mapping[Key, jax.Array]:
        """The parameters to evaluate or export at, given the iterate ``params``: by default these.

        An optimizer whose iterate is not the point to evaluate (schedule-free's) overrides
        it to compute that point from its state, which it only reads; a wrapper passes it
        on to what it wraps. The bridges run it: :func:`flr_nnx.eval_params` (optax) and
        :meth:`flr_nnx.NNXOptimizer.eval_params`.

        Args:
            params: the current parameters, keyed like ``grads``.

        Returns:
            The evaluation parameters, keyed like ``params`` (same shapes and dtypes).
        """
        return params

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={_short(value)}"
            for name, value in vars(self).items()
            if not name.startswith("_")
        )
        return f"{type(self).__name__}({fields})"

    # optax's protocol, so that a hook optimizer given where an optax transformation
    # is expected (nnx.Optimizer, optax.chain, optax.MultiSteps call `tx.init`) fails
    # at once with the fix, instead of "object is not callable" deep inside optax.
    def init(self, params: Any) -> Any:
        """Refuses: a hook optimizer is not an optax transformation (see :meth:`update`).

        Raises:
            BridgeError: always, naming :func:`~flr_nnx.as_optax` and
                :class:`~flr_nnx.NNXOptimizer`.
        """
        raise not_optax(self, "init")

    def update(self, *args: Any, **kwargs: Any) -> Any:
        """Refuses: a hook optimizer is not an optax transformation.

        ``nnx.Optimizer``, ``optax.chain`` and ``optax.MultiSteps`` call ``init``
        and ``update`` of what they are given; a hook optimizer is used through
        a bridge instead.

        Raises:
            BridgeError: always, naming :func:`~flr_nnx.as_optax` and
                :class:`~flr_nnx.NNXOptimizer`.
        """
        raise not_optax(self, "update")


_CORE = frozenset({"loss", "grads", "params"})
# Extra arguments a bridge adds (not optax's): a hook or an optimizer gets them only if
# its signature names them.
BY_NAME = frozenset({"nnx_variables"})


def call(hook: Callable[..., Any], /, **kwargs: Any) -> Any:
    """Calls a hook (or an optimizer) with the extra arguments it accepts.

    The arguments every hook takes (``grads``, ``params``, ``loss``, ...) are
    always passed; optax's extra arguments (``value_fn=``, ...) only where the
    hook's signature names them or has ``**kwargs``, as optax transformations
    ignore extra arguments they do not use.

    Args:
        hook: a hook method, or an optimizer (its ``__call__``).
        **kwargs: the hook's arguments and the extra arguments.

    Returns:
        What the hook returns.

    Example:
        >>> import flr_nnx as flr
        >>> def call_model(grads, params, loss, value_fn):
        ...     return value_fn(params)
        >>> flr.optim.call(call_model, grads={}, params={}, loss=0.0,
        ...                value_fn=lambda p: 1.0, grad={})
        1.0
    """
    names, takes_all, required = _signature(hook)
    if not takes_all:
        kwargs = {k: v for k, v in kwargs.items() if k in names or k in _CORE}
    # A bridge's own extras reach only what names them (optimizers that pass them on
    # name them too), so `**kwargs` passed on to optax never carries them.
    kwargs = {k: v for k, v in kwargs.items() if k not in BY_NAME or (k in names and v is not None)}
    if "grads" in kwargs:  # a model-level hook: its required extras, if the step lacks them
        for name in required - kwargs.keys():
            kwargs[name] = None if RUN.get() is not None else _missing_extra(hook, name)
    return checked_call(hook, **kwargs)


def _missing_extra(hook: Callable[..., Any], name: str) -> Missing:
    """Stands in for a required extra argument the step was not given; using it raises."""
    owner = getattr(_target(hook), "__qualname__", repr(hook))
    return Missing(
        name,
        f"pass `{name}=` to every update: `tx.update(grads, state, params, {name}=...)` "
        f"(optax), `optimizer.update(model, grads, {name}=...)` (NNXOptimizer). It names "
        "this extra argument without a default, so it needs it at every step.",
        reader=owner,
    )


def checked_call(hook: Callable[..., Any], /, **kwargs: Any) -> Any:
    """Calls a hook; a signature that cannot take its arguments is a :class:`HookError`."""
    try:
        return hook(**kwargs)
    except TypeError as error:
        problem = signature_problem(_target(hook), kwargs)
        if problem is None:
            raise  # raised inside the hook, not by the call
        raise problem from error


def _target(hook: Callable[..., Any]) -> Callable[..., Any]:
    """What runs when ``hook`` is called: an optimizer's ``__call__``, else the hook."""
    return hook.__call__ if isinstance(hook, Optimizer) else hook


def _signature(hook: Callable[..., Any]) -> tuple[frozenset[str], bool, frozenset[str]]:
    """A hook's parameter names, whether it takes ``**kwargs``, and its required extras.

    The required extras are the extra arguments it names without a default: it
    needs them at every step.
    """
    target = _target(hook)
    function = getattr(target, "__func__", target)
    try:
        return _SIGNATURES[function]
    except (KeyError, TypeError):
        pass
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: pass everything
        return frozenset(), True, frozenset()
    found = (
        frozenset(p.name for p in parameters if p.kind is not p.VAR_KEYWORD),
        any(p.kind is p.VAR_KEYWORD for p in parameters),
        frozenset(
            p.name
            for p in parameters
            if p.default is p.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and p.name not in _CORE | BY_NAME
        ),
    )
    with contextlib.suppress(TypeError):  # a callable object that cannot be weakly referenced
        _SIGNATURES[function] = found
    return found


_SIGNATURES: weakref.WeakKeyDictionary[Any, tuple[frozenset[str], bool, frozenset[str]]] = (
    weakref.WeakKeyDictionary()
)


Optimizer.__init__ = check_arguments(Optimizer.__init__)  # type: ignore[method-assign]


def _short(value: Any) -> str:
    if isinstance(value, jax.Array):
        return f"Array{tuple(value.shape)}:{value.dtype}"
    if isinstance(value, dict) and len(value) > 3:
        return f"{{...{len(value)} entries}}"
    return repr(value)
