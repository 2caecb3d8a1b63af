"""The Flax NNX bridge: a drop-in for ``nnx.Optimizer`` that runs a hook optimizer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from flax.core import spmd
from flax.nnx import filterlib
from jax.sharding import NamedSharding, PartitionSpec

from flr_nnx import _engine
from flr_nnx._bridges import check_hook_optimizer, is_optax
from flr_nnx._engine import ATTR, FIELD, INDEX, ITEM, format_path
from flr_nnx._errors import (
    ArgumentError,
    BridgeError,
    HyperparameterError,
    Missing,
    StateError,
    StructureError,
    describe,
)
from flr_nnx._hyper import cast_like, check_assignment
from flr_nnx._optax import as_optax
from flr_nnx._optimizer import Optimizer
from flr_nnx._tree import flatten, hook_extras, is_concrete, is_float
from flr_nnx.compose._groups import variables_context

M = TypeVar("M")

_NO_LOSS = "pass it to the update: `optimizer.update(model, grads, loss=loss)`."
_MISSING: Any = object()  # an argument that was not passed (None is a valid value)


class OptimizerSlot(nnx.OptState):
    """One array of a hook optimizer's state, held in an NNX Variable.

    State keyed by a parameter (and of its shape) carries that parameter's
    metadata, such as its sharding (``optimizer_sharding`` when annotated), as
    ``nnx.Optimizer`` does for optax state.
    """


def _slot_metadata(param: nnx.Variable, value: Any) -> dict[str, Any]:
    metadata = dict(param.get_metadata())
    if "optimizer_sharding" in metadata:
        metadata["out_sharding"] = metadata.pop("optimizer_sharding")
    if is_concrete(value):
        # The engine already created the value with its sharding (see
        # `_state_sharding`); resharding it eagerly would need a mesh context.
        metadata["eager_sharding"] = False
    # Under a trace (built inside nnx.jit) the value has no sharding yet: NNX applies
    # the annotation as it does to the parameter, as nnx.Optimizer's state gets it.
    return metadata


def _keep_sharding(value: Any, var: Any) -> Any:
    """Constrains a new value to its Variable's annotated sharding, if a mesh is known.

    Under ``jit`` XLA chooses output shardings by propagation, which may move a
    replicated parameter onto the layout of its (differently sharded) state;
    the annotation (``out_sharding``, for state: the parameter's
    ``optimizer_sharding``) keeps every array where it was created.
    """
    if not isinstance(var, nnx.Variable):
        return value
    metadata = var.get_metadata()
    spec = metadata.get("out_sharding")
    if not spec or not hasattr(value, "ndim"):
        return value
    mesh = metadata.get("mesh")
    if mesh is None and jax.sharding.get_abstract_mesh().empty:
        return value
    return spmd.shard_value(value, spec, metadata.get("sharding_rules"), mesh)


def _state_sharding(key: tuple[Any, ...], param: nnx.Variable) -> Any:
    """The sharding of state keyed by ``param``: its ``optimizer_sharding`` or its own.

    Returns ``None`` when the parameter is not spread over several devices and
    has no ``optimizer_sharding`` annotation (XLA's placement is then fine).
    """
    value = param.get_value()
    current = value.sharding if is_concrete(value) else None
    spec = param.get_metadata().get("optimizer_sharding")
    if spec is None:
        return current if current is not None and len(current.device_set) > 1 else None
    if isinstance(spec, jax.sharding.Sharding):
        return spec
    spec = spmd.apply_rules(spec, param.get_metadata().get("sharding_rules"))
    if not isinstance(spec, PartitionSpec):
        spec = PartitionSpec(*spec)
    mesh = param.get_metadata().get("mesh")
    if mesh is None and isinstance(current, NamedSharding):
        mesh = current.mesh
    if mesh is not None:
        return NamedSharding(mesh, spec)
    if not jax.sharding.get_abstract_mesh().empty:
        return spec  # resolved by jit against the mesh of `jax.set_mesh`
    raise StateError(
        f"Parameter {key} has optimizer_sharding={spec} but no mesh is known: the parameter "
        "is not a NamedSharding array and no mesh is set. Fix: create the optimizer under "
        "`with jax.set_mesh(mesh):`, or annotate with a NamedSharding."
    )


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
            self._template = None
            self.layout = None
            return
        check_hook_optimizer(opt, "flr.NNXOptimizer")
        self.graph = graph
        self.wrt = wrt
        self.step = nnx.OptState(jnp.array(0, dtype=jnp.uint32))
        _engine.check_transient(opt)
        self._template = _engine.rebuild(opt, {})
        self.tx = as_optax(self._template)
        variables = nnx.state(model, wrt, graph=graph)
        keys, leaves, _ = flatten(nnx.as_pure(variables))
        params = {k: v for k, v in zip(keys, leaves) if is_float(v)}
        by_key = {tuple(path): var for path, var in nnx.to_flat_state(variables)}
        shardings = {}
        for key in params:
            var = by_key.get(key)
            sharding = _state_sharding(key, var) if isinstance(var, nnx.Variable) else None
            if sharding is not None:
                shardings[key] = sharding
        with variables_context(by_key):
            state = _engine.init(self._template, params, shardings)
        self.layout = state.layout
        slots = []
        for value, owner in zip(state.leaves(), state.layout.param_of, strict=True):
            metadata: dict[str, Any] = {}
            if owner >= 0:
                key = state.layout.param_keys[owner]
                var = by_key.get(key)
                if isinstance(var, nnx.Variable) and var.get_value().shape == value.shape:
                    metadata = _slot_metadata(var, value)
            slots.append(OptimizerSlot(value, **metadata))
        self.opt_state = nnx.data(_engine.nest(state.layout.mirror, slots))

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
        return LiveView(self, self._template, ())

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
        if self._template is None:
            # `loss=` is ours: a transformation without extra arguments (optax.clip) is
            # called as nnx.Optimizer calls it, without it (as optax.chain drops it).
            if loss is not None and isinstance(self.tx, optax.GradientTransformationExtraArgs):
                kwargs = {"value": loss, **kwargs, "loss": loss}
            return nnx.Optimizer.update(self, model, grads, **kwargs)
        if loss is None:
            loss = kwargs.pop("value", Missing("loss", _NO_LOSS))
        param_arrays = nnx.as_pure(nnx.state(model, self.wrt, graph=self.graph))
        grad_arrays = nnx.as_pure(nnx.state(grads, self.wrt, graph=self.graph))
        keys, params, treedef = flatten(param_arrays)
        grad_keys, grad_leaves, _ = flatten(grad_arrays)
        flat_grads = {k: g for k, g in zip(grad_keys, grad_leaves) if is_float(g)}
        flat_params = {k: p for k, p in zip(keys, params) if k in flat_grads}
        variables = nnx.to_flat_state(nnx.state(model, self.wrt, graph=self.graph))
        by_key = {tuple(path): var for path, var in variables}
        # As nnx.Optimizer does: extra arguments as pure arrays, States filtered by `wrt`.
        extra = {
            name: nnx.as_pure(nnx.state(value, self.wrt, graph=self.graph))
            if isinstance(value, nnx.State)
            else nnx.as_pure(value)
            for name, value in kwargs.items()
        }
        extra = hook_extras(extra, grad_arrays, param_arrays, flat_grads)
        with variables_context(by_key):
            steps, new_state = _engine.step(
                self._template, self._hook_state(), flat_grads, flat_params, loss, extra
            )
        updates = treedef.unflatten(
            [-steps[k] if k in steps else jnp.zeros_like(p) for k, p in zip(keys, params)]
        )
        new_keys, new_params, new_def = flatten(optax.apply_updates(param_arrays, updates))
        new_params = [_keep_sharding(v, by_key.get(k)) for k, v in zip(new_keys, new_params)]
        nnx.update(model, new_def.unflatten(new_params))
        slots = _engine.unnest(self.layout.mirror, self.opt_state)
        for slot, value in zip(slots, new_state.leaves(), strict=True):
            slot.set_value(_keep_sharding(value, slot))
        self.step[...] += 1
        return updates


class LiveView:
    """A live view of a hook optimizer whose state lives in an :class:`NNXOptimizer`.

    Obtained as ``optimizer.opt``. Attribute reads return the current state
    (array attributes, dicts of per-parameter state as read-only dicts) or the
    optimizer's Python values; assigning an array attribute updates the state.
    Lists and dicts read through the view are snapshots whose items refuse
    assignment (:class:`~flr_nnx.HyperparameterError`).
    """

    def __init__(self, owner: NNXOptimizer, node: Any, prefix: _engine.Path):
        object.__setattr__(self, "_owner", owner)
        object.__setattr__(self, "_node", node)
        object.__setattr__(self, "_prefix", prefix)

    def _slots(self) -> dict[_engine.Path, OptimizerSlot]:
        owner = self._owner
        slots = _engine.unnest(owner.layout.mirror, owner.opt_state)
        return dict(zip(owner.layout.paths, slots, strict=True))

    def _statics(self) -> dict[_engine.Path, Any]:
        return dict(self._owner.layout.statics)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        path = (*self._prefix, (ATTR, name))
        node = vars(self._node).get(name, _engine.ABSENT)
        value = _resolve(self._owner, node, path, self._slots(), self._statics())
        if value is _engine.ABSENT:
            raise AttributeError(
                f"{format_path(self._prefix)} ({type(self._node).__name__}) has no attribute "
                f"{name!r}."
            )
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        path = (*self._prefix, (ATTR, name))
        where = format_path(path)
        slot = self._slots().get(path)
        if slot is not None:
            check_assignment(self._owner.layout, path, value, where)
            slot.set_value(cast_like(value, slot.get_value(), where))
            return
        if name in vars(self._node) or path in self._statics():
            raise HyperparameterError(
                f"{where} is a constant of the training step (a Python value, or an array the "
                "hooks only read), compiled into it; "
                "assigning it would not change training. Fix: construct the optimizer with "
                f"`flr.hyper(...)` for {name!r} to make it live state (e.g. "
                "`flr.optim.Adam(flr.hyper(1e-3))`). An flr.hyper array is live only as that "
                "object: a copy (copy.deepcopy, pickle) of the optimizer holds a plain array."
            )
        raise AttributeError(
            f"{format_path(self._prefix)} ({type(self._node).__name__}) has no attribute "
            f"{name!r}; new attributes cannot be added after init."
        )

    def __dir__(self) -> list[str]:
        steps = _next_steps(self._owner, self._prefix)
        return sorted(set(vars(self._node)) | {step[1] for step in steps})

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={_short(getattr(self, name))}"
            for name in self.__dir__()
            if not name.startswith("_")
        )
        return f"{type(self._node).__name__}({fields})"


def _short(value: Any) -> str:
    if isinstance(value, jax.Array) and value.ndim == 0 and is_concrete(value):
        return repr(value.item())
    if isinstance(value, jax.Array):
        return f"Array{tuple(value.shape)}:{value.dtype}"
    if isinstance(value, dict) and len(value) > 3:
        return f"{{...{len(value)} entries}}"
    return repr(value)


def _next_steps(owner: NNXOptimizer, prefix: _engine.Path) -> Iterator[_engine.Step]:
    seen = {}
    for path in (*owner.layout.paths, *(p for p, _ in owner.layout.statics)):
        if len(path) > len(prefix) and path[: len(prefix)] == prefix:
            seen.setdefault(path[len(prefix)], None)
    return iter(seen)


def _resolve(
    owner: NNXOptimizer,
    node: Any,
    path: _engine.Path,
    slots: dict[_engine.Path, OptimizerSlot],
    statics: dict[_engine.Path, Any],
) -> Any:
    if path in slots:
        return slots[path].get_value()
    if path in statics:
        return statics[path]
    if isinstance(node, Optimizer):
        return LiveView(owner, node, path)
    steps = dict.fromkeys(_next_steps(owner, path))
    kind = dict(owner.layout.containers).get(path, type(node))
    if isinstance(kind, type) and issubclass(kind, tuple) and hasattr(kind, "_fields"):
        # A namedtuple (optax's states): itself, immutable, with its field names.
        fields = [
            _resolve(
                owner,
                getattr(node, f, _engine.ABSENT),
                (*path, (FIELD, f)),
                slots,
                statics,
            )
            for f in kind._fields
        ]
        return kind._make(fields)
    if isinstance(node, dict):
        steps.update(dict.fromkeys((ITEM, k) for k in node))
    elif isinstance(node, (list, tuple)):
        steps.update(dict.fromkeys((INDEX, i) for i in range(len(node))))
    elif node is not _engine.ABSENT and not steps:
        return node  # a static value (float, callable, ...)
    if not steps:
        return node
    children = {}
    for step in steps:
        if isinstance(node, dict):
            child = node.get(step[1], _engine.ABSENT)
        elif isinstance(node, (list, tuple)) and step[0] == INDEX and step[1] < len(node):
            child = node[step[1]]
        else:
            child = _engine.ABSENT
        children[step[1]] = _resolve(owner, child, (*path, step), slots, statics)
    where = format_path(path, root="optimizer.opt")
    if isinstance(node, (list, tuple)) or (steps and next(iter(steps))[0] == INDEX):
        return _ReadOnlyList([children[i] for i in sorted(children)], where=where)
    return _ReadOnlyDict(children, where=where)


class _ReadOnly:
    """Items read through the live view are a snapshot: refuse writes loudly."""

    _where = ""

    def _refuse(self, *_: Any, **__: Any) -> None:
        raise HyperparameterError(
            f"{self._where} is a snapshot read through `optimizer.opt`; changing its items "
            "would not change the optimizer's state. Fix: keep a live hyperparameter in an "
            "attribute (`self.lr = flr.hyper(...)`) and assign `optimizer.opt.lr = value`, or "
            "set the Variables in `optimizer.opt_state` directly."
        )


class _ReadOnlyDict(_ReadOnly, dict):
    def __init__(self, items: dict[Any, Any], *, where: str):
        dict.__init__(self, items)
        self._where = where

    __setitem__ = __delitem__ = update = setdefault = pop = popitem = clear = _ReadOnly._refuse


class _ReadOnlyList(_ReadOnly, list):
    def __init__(self, items: list[Any], *, where: str):
        list.__init__(self, items)
        self._where = where

    __setitem__ = __delitem__ = append = extend = insert = pop = remove = clear = _ReadOnly._refuse


# --------------------------------------------------------------------------
# Checkpoints: plain nested dicts of arrays, as orbax-checkpoint saves them.


def state_dict(obj: Any) -> dict[Any, Any]:
    """The state of a model, an optimizer or an optax state as a nested dict of arrays.

    This is what to save with orbax-checkpoint (or any pytree checkpointer):
    for an NNX object (a model, an :class:`NNXOptimizer`) it is
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


def _find(tree: Any, key: tuple[Any, ...]) -> Any:
    node = tree
    for part in key:
        if not isinstance(node, dict):
            return _engine.ABSENT
        # orbax-checkpoint saves integer keys (layer indices) as strings.
        if part in node:
            node = node[part]
        elif str(part) in node:
            node = node[str(part)]
        else:
            return _engine.ABSENT
    return node


def _paths(tree: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _paths(value, (*prefix, str(key)))
    else:
        yield prefix


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
    extra = sorted(p for p in _paths(tree) if p not in expected)
    values = []
    missing = []
    for key, old in leaves:
        new = _find(tree, key)
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
