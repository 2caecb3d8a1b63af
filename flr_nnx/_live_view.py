"""``NNXOptimizer.opt``: the hook optimizer as a live view of the bridge's state.

A read rebuilds the optimizer with the current state put back, as a step does
(:func:`flr_nnx._engine.rebuild`), and shows the attribute; nothing is cached, so
a view never goes stale. An assignment sets a live hyperparameter's Variable.
"""

from __future__ import annotations

from typing import Any

import jax

from flr_nnx import _engine
from flr_nnx._engine import ATTR, FIELD, INDEX, ITEM, format_path
from flr_nnx._errors import BridgeError, HyperparameterError
from flr_nnx._hyper import cast_like, check_assignment
from flr_nnx._optimizer import Optimizer
from flr_nnx._tree import is_concrete


def live_view(owner: Any) -> LiveView:
    """``owner.opt``: the live view of an ``NNXOptimizer``'s hook optimizer."""
    if owner._template is None:
        raise BridgeError(
            "optimizer.opt is the live view of a hook optimizer, but this NNXOptimizer "
            f"runs an optax transformation ({type(owner.tx).__name__}). Fix: read "
            "`optimizer.opt_state` as with nnx.Optimizer, or use flr.get_hyper/"
            "flr.set_hyper(optimizer, name, ...) for hyperparameters of flr.as_optax "
            "transformations in it."
        )
    return LiveView(owner, ())


class LiveView:
    """A live view of the hook optimizer at ``prefix`` whose state lives in ``owner``.

    Reading an attribute gives its current value: state arrays (including
    hyperparameters made live with :func:`flr_nnx.hyper`) are read from their
    Variables, Python values from the optimizer. Assigning a live
    hyperparameter (``optimizer.opt.learning_rate = 1e-4``) sets its Variable
    (cast to its dtype), so it takes effect at the next step without a
    recompile; assigning a Python value is a :class:`~flr_nnx.HyperparameterError`.
    Nested optimizers are views too (``optimizer.opt.links[1].learning_rate``).
    Lists and dicts read through the view are snapshots whose items refuse
    assignment. A schedule reads as the schedule; ``flr.get_hyper(optimizer,
    "learning_rate")`` gives the value the next step uses.
    """

    def __init__(self, owner: Any, prefix: _engine.Path):
        object.__setattr__(self, "_owner", owner)
        object.__setattr__(self, "_prefix", prefix)

    def _slots(self) -> dict[_engine.Path, Any]:
        layout = self._owner.layout
        return dict(zip(layout.paths, _engine.unnest(layout.mirror, self._owner.opt_state)))

    def _node(self) -> Optimizer:
        """The optimizer at ``prefix``, rebuilt with the current state and statics."""
        layout = self._owner.layout
        values = {path: slot.get_value() for path, slot in self._slots().items()}
        values.update(layout.statics)
        node = _engine.rebuild(self._owner._template, values, kinds=dict(layout.containers))
        for kind, name in self._prefix:  # the steps `_show` takes to an optimizer
            if kind == ATTR:
                node = vars(node)[name]
            else:
                node = getattr(node, name) if kind == FIELD else node[name]
        return node

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        node = self._node()
        if name not in vars(node):
            raise AttributeError(
                f"{format_path(self._prefix)} ({type(node).__name__}) has no attribute {name!r}."
            )
        return self._show(vars(node)[name], (*self._prefix, (ATTR, name)))

    def _show(self, value: Any, path: _engine.Path) -> Any:
        """What a read shows: views of optimizers, snapshots of containers."""
        if isinstance(value, Optimizer):
            return LiveView(self._owner, path)
        if isinstance(value, tuple) and hasattr(value, "_fields"):
            # A namedtuple (optax's states): itself, immutable, with its field names.
            fields = value._fields
            return value._make(self._show(getattr(value, f), (*path, (FIELD, f))) for f in fields)
        where = format_path(path, root="optimizer.opt")
        if isinstance(value, dict):
            items = {k: self._show(v, (*path, (ITEM, k))) for k, v in value.items()}
            return _ReadOnlyDict(items, where=where)
        if isinstance(value, (list, tuple)):
            items = [self._show(v, (*path, (INDEX, i))) for i, v in enumerate(value)]
            return _ReadOnlyList(items, where=where)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        path = (*self._prefix, (ATTR, name))
        where = format_path(path)
        slot = self._slots().get(path)
        layout = self._owner.layout
        if slot is not None:
            check_assignment(layout, path, value, where)
            slot.set_value(cast_like(value, slot.get_value(), where))
            return
        node = self._node()
        if name in vars(node):
            raise HyperparameterError(
                f"{where} is a constant of the training step (a Python value, or an array the "
                "hooks only read), compiled into it; "
                "assigning it would not change training. Fix: construct the optimizer with "
                f"`flr.hyper(...)` for {name!r} to make it live state (e.g. "
                "`flr.optim.Adam(flr.hyper(1e-3))`). An flr.hyper array is live only as that "
                "object: a copy (copy.deepcopy, pickle) of the optimizer holds a plain array."
            )
        raise AttributeError(
            f"{format_path(self._prefix)} ({type(node).__name__}) has no attribute "
            f"{name!r}; new attributes cannot be added after init."
        )

    def __dir__(self) -> list[str]:
        return sorted(vars(self._node()))

    def __repr__(self) -> str:
        node = self._node()
        fields = ", ".join(
            f"{name}={_short(getattr(self, name))}"
            for name in sorted(vars(node))
            if not name.startswith("_")
        )
        return f"{type(node).__name__}({fields})"


def _short(value: Any) -> str:
    if isinstance(value, jax.Array) and value.ndim == 0 and is_concrete(value):
        return repr(value.item())
    if isinstance(value, jax.Array):
        return f"Array{tuple(value.shape)}:{value.dtype}"
    if isinstance(value, dict) and len(value) > 3:
        return f"{{...{len(value)} entries}}"
    return repr(value)


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
