"""Parameter groups and freezing: different optimizers for different parameters."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
from flax import nnx
from flax.nnx import filterlib

from flr_nnx._engine import eval_points
from flr_nnx._errors import HookError, HyperparameterError
from flr_nnx._optimizer import Key, Optimizer, call
from flr_nnx._tree import restrict


def _path_text(key: Key) -> str:
    return "/".join(map(str, key))


def _needs_variable(filter_: Any) -> bool:
    if isinstance(filter_, (tuple, list)):
        return any(_needs_variable(f) for f in filter_)
    return isinstance(filter_, (type, filterlib.OfType))


def _matches(filter_: Any, key: Key, value: Any) -> bool:
    if isinstance(filter_, str):
        return re.search(filter_, _path_text(key)) is not None
    if isinstance(filter_, re.Pattern):
        return filter_.search(_path_text(key)) is not None
    if isinstance(filter_, (tuple, list)):
        return any(_matches(f, key, value) for f in filter_)
    return bool(filterlib.to_predicate(filter_)(key, value))


class Partition(Optimizer):
    r"""Parameter groups: each parameter is trained by the optimizer of its group.

    The counterpart of ``optax.partition`` and of torch's ``param_groups``.
    Groups are selected by NNX-style filters, tried in order (the first match
    wins); parameters no filter selects go to ``default``. A group whose
    optimizer is ``None`` is **frozen**: its parameters get a zero update and
    no optimizer state at all.

    .. math::

        u_p = \mathrm{opt}_{g(p)}(g_p), \quad g(p) = \min\{i : f_i(p)\}
        \text{ (or the default)}, \quad u_p = 0 \text{ if frozen}

    A filter is one of:

    - a ``str`` or compiled ``re`` pattern: a regular expression searched in the
      parameter's path joined by ``/`` (e.g. ``r"bias$"``, ``r"^layers/0/"``);
      note that NNX itself reads a string filter as a tag;
    - a Variable type (e.g. ``nnx.LoRAParam``) or ``nnx.OfType``: needs the
      model's Variables, which :class:`~flr_nnx.NNXOptimizer` passes as the extra
      argument ``nnx_variables``, so it works under ``NNXOptimizer`` only;
    - a callable ``f(key, value) -> bool`` (an NNX filter predicate) on the key
      tuple (e.g. ``('layers', 0, 'kernel')``) and the Variable (under
      ``NNXOptimizer``) or the array (under ``as_optax``);
    - ``...``/``True`` (everything), ``None``/``False`` (nothing), ``nnx.Any``,
      ``nnx.All``, ``nnx.Not``, or a tuple (any of them).

    Each group's optimizer keeps its own state (under ``optimizers[i]``) for
    its own parameters only, and counts its own steps. Its evaluation point
    (:meth:`eval_params`) is each group's, on that group's parameters.

    Args:
        groups: ``(filter, optimizer or None)`` pairs, first match wins.
        default: the optimizer of the parameters no filter selects, or ``None``
            to freeze them. It must be given explicitly.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> opt = flr.compose.Partition(
        ...     [(r"bias$", flr.optim.Adam(0.01)), (r"^embed", None)],  # embed frozen
        ...     default=flr.optim.Adam(0.1),
        ... )
        >>> tx = flr.as_optax(opt)
        >>> params = {"embed": jnp.ones(2), "dense": {"kernel": jnp.ones(2), "bias": jnp.ones(2)}}
        >>> state = tx.init(params)
        >>> updates, state = tx.update(params, state, params)
        >>> updates["embed"], updates["dense"]["bias"]
        (Array([-0., -0.], dtype=float32), Array([-0.00999993, -0.00999993], dtype=float32))
        >>> sorted(state.tree["optimizers"][0]["mu"]["dense"])  # state only for its group
        ['bias']
    """

    def __init__(
        self,
        groups: Sequence[tuple[Any, Optimizer | None]],
        *,
        default: Optimizer | None,
    ):
        filters, optimizers = [], []
        for i, group in enumerate(groups):
            if not (isinstance(group, (tuple, list)) and len(group) == 2):
                raise HyperparameterError(
                    f"Partition group {i} is {group!r}; expected a (filter, optimizer) pair. "
                    "Fix: pass e.g. [(r'bias$', flr.optim.Adam(1e-3)), (nnx.LoRAParam, None)]."
                )
            filter_, opt = group
            if opt is not None and not isinstance(opt, Optimizer):
                raise HyperparameterError(
                    f"Partition group {i} has optimizer {opt!r}; expected a hook optimizer "
                    "or None (frozen). Fix: wrap optax transformations with flr.from_optax."
                )
            filters.append(filter_)
            optimizers.append(opt)
        if default is not None and not isinstance(default, Optimizer):
            raise HyperparameterError(
                f"Partition(default={default!r}): expected a hook optimizer or None (frozen). "
                "Fix: wrap optax transformations with flr.from_optax."
            )
        self.filters = tuple(filters)
        self.optimizers = [*optimizers, default]

    def labels(
        self, keys: Sequence[Key], params: Any = None, nnx_variables: Any = None
    ) -> dict[Key, int]:
        """The group index of each key (``len(groups)`` for the default group).

        Args:
            keys: parameter keys.
            params: the parameters by key (to show to predicates when the
                model's Variables are not known), or ``None``.
            nnx_variables: the model's Variables (``.get(key)``), as
                :class:`~flr_nnx.NNXOptimizer` passes them, or ``None``.

        Returns:
            A dict from key to group index.
        """
        out = {}
        for key in keys:
            variable = None if nnx_variables is None else nnx_variables.get(key)
            if variable is not None:
                value = variable
            elif isinstance(params, Mapping):
                value = params[key]
            else:
                value = None
            group = len(self.filters)
            for i, filter_ in enumerate(self.filters):
                if _needs_variable(filter_) and not isinstance(value, nnx.Variable):
                    raise HookError(
                        f"Partition group {i} selects parameters by Variable type "
                        f"({filter_!r}), but parameter {key} is a plain array here (as_optax "
                        "sees arrays, not Variables). Fix: use flr.NNXOptimizer, or select by "
                        "a path regex (e.g. r'lora') or a predicate on the key."
                    )
                if _matches(filter_, key, value):
                    group = i
                    break
            out[key] = group
        return out

    def __call__(
        self,
        loss: Any,
        grads: dict[Key, jax.Array],
        params: Mapping[Key, jax.Array],
        nnx_variables: Any = None,
        **extra: Any,
    ) -> dict[Key, jax.Array]:
        labels = self.labels(list(grads), params, nnx_variables)
        if nnx_variables is not None:  # the groups' optimizers get it too
            extra["nnx_variables"] = nnx_variables
        updates: dict[Key, jax.Array] = {}
        for i, opt in enumerate(self.optimizers):
            if opt is None:
                continue  # frozen: no update (the engine fills zeros), no state
            mine = {k: g for k, g in grads.items() if labels[k] == i}
            if not mine:
                continue
            sub_params = {k: params[k] for k in mine} if isinstance(params, Mapping) else params
            sub_extra = restrict(extra, mine)
            updates.update(call(opt, loss=loss, grads=mine, params=sub_params, **sub_extra))
        return updates

    passes_eval_params_on = True  # no evaluation point of its own: its groups'

    def eval_params(self, params: Mapping[Key, jax.Array]) -> dict[Key, jax.Array]:
        """Each group's evaluation point on its own parameters; frozen ones as they are.

        The groups are selected on the arrays (the model's Variables are not known
        here), so a group selected by Variable type whose optimizer has an evaluation
        point is a :class:`~flr_nnx.HookError`; without one, every parameter is its own.
        """
        out = dict(params)
        evaluating = [
            i for i, opt in enumerate(self.optimizers) if opt is not None and eval_points(opt)
        ]
        if not evaluating:  # the identity: no need to select the groups
            return out
        try:
            labels = self.labels(list(params), params)
        except HookError as error:
            raise HookError(
                f"Partition cannot select its groups for eval_params: {error} Group "
                f"{evaluating[0]}'s optimizer has an evaluation point, which needs them. Fix: "
                "select the groups by a path regex or a predicate on the key."
            ) from error
        for i in evaluating:
            mine = {k: p for k, p in params.items() if labels[k] == i}
            if mine:
                out.update(self.optimizers[i].eval_params(mine))
        return out


def freeze(opt: Optimizer, *filters: Any) -> Partition:
    """Trains with ``opt`` all parameters except those selected by ``filters``.

    Shorthand for ``Partition([(filters, None)], default=opt)``: the frozen
    parameters get a zero update and no optimizer state.

    Args:
        opt: the optimizer of the trained parameters.
        *filters: filters of the frozen parameters (see :class:`Partition`).

    Returns:
        A :class:`Partition`.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.compose.freeze(flr.optim.Adam(0.1), r"^encoder/"))
        >>> params = {"encoder": {"w": jnp.ones(2)}, "head": {"w": jnp.ones(2)}}
        >>> updates, _ = tx.update(params, tx.init(params), params)
        >>> updates["encoder"]["w"], updates["head"]["w"]
        (Array([-0., -0.], dtype=float32), Array([-0.09999934, -0.09999934], dtype=float32))
    """
    return Partition([(filters, None)], default=opt)
