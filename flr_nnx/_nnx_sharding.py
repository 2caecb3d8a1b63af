"""Where the NNX bridge puts state: its Variables' metadata and shardings."""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx
from flax.core import spmd
from jax.sharding import NamedSharding, PartitionSpec

from flr_nnx._errors import StateError
from flr_nnx._tree import is_concrete


def slot_metadata(param: nnx.Variable, value: Any) -> dict[str, Any]:
    """The metadata of a state array keyed by ``param`` (and of its shape), as ``nnx.Optimizer``'s."""
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
