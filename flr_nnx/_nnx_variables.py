"""The NNX bridge's Variables: the slots of its state, their metadata and sharding, and
the model's Variables as the hooks see them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
from flax import nnx
from flax.core import spmd
from jax.sharding import NamedSharding, PartitionSpec

from flr_nnx._engine import HookState
from flr_nnx._errors import StateError
from flr_nnx._optimizer import Key
from flr_nnx._tree import is_concrete, is_float


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


def slot_metadata(param: nnx.Variable, value: Any) -> dict[str, Any]:
    """The metadata of state keyed by ``param`` and of its shape, as ``nnx.Optimizer`` gives it."""
    metadata = dict(param.get_metadata())
    if "optimizer_sharding" in metadata:
        metadata["out_sharding"] = metadata.pop("optimizer_sharding")
    if is_concrete(value):
        # The engine already created the value with its sharding (see
        # `state_sharding`); resharding it eagerly would need a mesh context.
        metadata["eager_sharding"] = False
    # Under a trace (built inside nnx.jit) the value has no sharding yet: NNX applies
    # the annotation as it does to the parameter, as nnx.Optimizer's state gets it.
    return metadata


def keep_sharding(value: Any, var: Any) -> Any:
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


def state_sharding(key: tuple[Any, ...], param: nnx.Variable) -> Any:
    """The sharding of state keyed by ``param``: its ``optimizer_sharding`` or its own.

    Returns ``None`` when the parameter is not spread over several devices and
    has no ``optimizer_sharding`` annotation (XLA's placement is then fine).

    Raises:
        StateError: if ``optimizer_sharding`` is a spec and no mesh is known.
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


def state_shardings(variables: Mapping[Key, Any]) -> dict[Key, Any]:
    """The sharding of the state of each float parameter, where one is needed."""
    out = {}
    for key, var in variables.items():
        if isinstance(var, nnx.Variable) and is_float(var.get_value()):
            sharding = state_sharding(key, var)
            if sharding is not None:
                out[key] = sharding
    return out


def slots(state: HookState, variables: Mapping[Key, Any]) -> list[OptimizerSlot]:
    """The state's arrays in Variables, with their parameter's metadata where keyed by one."""
    out = []
    layout = state.layout
    for value, owner in zip(state.leaves(), layout.param_of, strict=True):
        var = variables.get(layout.param_keys[owner]) if owner >= 0 else None
        same = isinstance(var, nnx.Variable) and var.get_value().shape == value.shape
        out.append(OptimizerSlot(value, **(slot_metadata(var, value) if same else {})))
    return out
