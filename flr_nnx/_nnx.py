"""The Flax NNX bridge: a drop-in for ``nnx.Optimizer`` that runs a hook optimizer."""

from __future__ import annotations

from typing import Any, TypeVar

import jax.numpy as jnp
import optax
from flax import nnx
from flax.nnx import filterlib

from flr_nnx import _engine
from flr_nnx._errors import Missing
from flr_nnx._optimizer import Optimizer
from flr_nnx._tree import flatten, is_float

M = TypeVar("M")

_NO_LOSS = "pass it to the update: `optimizer.update(model, grads, loss=loss)`."


class OptimizerSlot(nnx.OptState):
    """One array of a hook optimizer's state, held in an NNX Variable.

    State keyed by a parameter (and of its shape) carries that parameter's
    metadata, such as its sharding (``optimizer_sharding`` when annotated), as
    ``nnx.Optimizer`` does for optax state.
    """


def _slot_metadata(param: nnx.Variable) -> dict[str, Any]:
    metadata = dict(param.get_metadata())
    if "optimizer_sharding" in metadata:
        metadata["out_sharding"] = metadata.pop("optimizer_sharding")
    return metadata


class NNXOptimizer(nnx.Optimizer[M]):
    """Trains an NNX model with a hook optimizer; a drop-in for ``nnx.Optimizer``.

    The hook optimizer's state lives in :class:`OptimizerSlot` Variables in
    ``self.opt_state``, a nested dict mirroring the optimizer's attributes with
    the model's parameter paths spliced in (``opt_state['m']['layers'][0]['kernel']``),
    so ``nnx.state``, ``nnx.split``/``nnx.merge``, ``nnx.jit`` and checkpointing
    see ordinary Variables.

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
        opt: Optimizer,
        *,
        wrt: filterlib.Filter,
        graph: bool | None = None,
    ):
        """Creates the optimizer state for the parameters of ``model`` selected by ``wrt``.

        Args:
            model: an NNX module.
            opt: a hook optimizer (:class:`flr_nnx.optim.Optimizer`); it is copied,
                and training never changes it.
            wrt: which Variables to optimize, as in ``nnx.Optimizer`` (e.g.
                ``nnx.Param``). Only float arrays are optimized.
            graph: graph mode (``True``) or tree mode (``False``), as in
                ``nnx.Optimizer``; ``None`` follows the current NNX setting.
        """
        self.graph = graph
        self.wrt = wrt
        self.step = nnx.OptState(jnp.array(0, dtype=jnp.uint32))
        self.hook_optimizer = _engine.rebuild(opt, {})
        variables = nnx.state(model, wrt, graph=graph)
        keys, leaves, _ = flatten(nnx.as_pure(variables))
        params = {k: v for k, v in zip(keys, leaves) if is_float(v)}
        by_key = {tuple(path): var for path, var in nnx.to_flat_state(variables)}
        state = _engine.init(self.hook_optimizer, params)
        self.layout = state.layout
        slots = []
        for value, owner in zip(state.leaves(), state.layout.param_of, strict=True):
            metadata: dict[str, Any] = {}
            if owner >= 0:
                key = state.layout.param_keys[owner]
                var = by_key.get(key)
                if isinstance(var, nnx.Variable) and var.get_value().shape == value.shape:
                    metadata = _slot_metadata(var)
            slots.append(OptimizerSlot(value, **metadata))
        self.opt_state = nnx.data(_engine.nest(state.layout.mirror, slots))

    def _hook_state(self) -> _engine.HookState:
        slots = _engine.unnest(self.layout.mirror, self.opt_state)
        return _engine.HookState(
            _engine.nest(self.layout.mirror, [slot.get_value() for slot in slots]), self.layout
        )

    def update(self, model: M, grads: Any, /, *, loss: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        """Applies one step of the hook optimizer to ``model`` in place.

        Args:
            model: the model whose parameters (selected by ``wrt``) are updated.
            grads: gradients, e.g. from ``nnx.grad`` (an ``nnx.State``).
            loss: the loss of this step, for optimizers that read it. optax's
                ``value=`` keyword is accepted as an alias.
            **kwargs: other extra arguments are ignored, as optax does.

        Returns:
            The updates added to the parameters (optax sign), structured like
            ``nnx.state(model, wrt)``.
        """
        if loss is None:
            loss = kwargs.get("value", Missing("loss", _NO_LOSS))
        param_arrays = nnx.as_pure(nnx.state(model, self.wrt, graph=self.graph))
        grad_arrays = nnx.as_pure(nnx.state(grads, self.wrt, graph=self.graph))
        keys, params, treedef = flatten(param_arrays)
        grad_keys, grad_leaves, _ = flatten(grad_arrays)
        flat_grads = {k: g for k, g in zip(grad_keys, grad_leaves) if is_float(g)}
        flat_params = {k: p for k, p in zip(keys, params) if k in flat_grads}
        steps, new_state = _engine.step(
            self.hook_optimizer, self._hook_state(), flat_grads, flat_params, loss
        )
        updates = treedef.unflatten(
            [-steps[k] if k in steps else jnp.zeros_like(p) for k, p in zip(keys, params)]
        )
        nnx.update(model, optax.apply_updates(param_arrays, updates))
        slots = _engine.unnest(self.layout.mirror, self.opt_state)
        for slot, value in zip(slots, new_state.leaves(), strict=True):
            slot.set_value(value)
        self.step[...] += 1
        return updates
