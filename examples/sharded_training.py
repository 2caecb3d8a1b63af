"""Sharded training with flr.NNXOptimizer: FSDP + data parallelism on a device mesh.

The model's parameters are sharded over the ``fsdp`` axis of a 2-D mesh and
the batch over both axes; the optimizer state is created with the sharding of
its parameter (Adam's ``mu``/``nu`` are sharded exactly like the weights), one
state array can be given another layout with the ``optimizer_sharding``
annotation, and ``nnx.jit`` steps keep all of it. JAX's own SPMD partitioner
does the distributed work: nothing here is specific to one machine, and with
``jax.distributed.initialize()`` the same code runs on many hosts.

On a CPU-only machine, simulate 8 devices (this script does it by default)::

    python examples/sharded_training.py            # 8 simulated devices, 200 steps
    python examples/sharded_training.py --smoke    # small settings, as the tests run it

The run is repeated on a single device and the final parameters compared.
"""

from __future__ import annotations

import argparse
import itertools
import os

# Must happen before JAX starts: simulate 8 CPU devices unless told otherwise.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import flr_nnx as flr


class MLP(nnx.Module):
    """Weights sharded over ``fsdp`` (rows of one, columns of the next)."""

    def __init__(self, sizes: tuple[int, ...], rngs: nnx.Rngs):
        init = nnx.initializers.lecun_normal()
        layers = []
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            spec = ("fsdp", None) if i % 2 == 0 else (None, "fsdp")
            layers.append(
                nnx.Linear(
                    a,
                    b,
                    kernel_init=nnx.with_partitioning(init, spec),
                    bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (None,)),
                    rngs=rngs,
                )
            )
        self.layers = nnx.List(layers)
        # A per-feature scale whose optimizer state is laid out differently from
        # the parameter itself: replicated weights, fsdp-sharded moments.
        self.scale = nnx.Param(
            jnp.ones((sizes[-1] * 4,)), out_sharding=(None,), optimizer_sharding=("fsdp",)
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers[:-1]:
            x = jax.nn.gelu(layer(x))
        y = self.layers[-1](x)
        return y * self.scale[...].reshape(4, -1).mean(axis=0)


def loss_fn(model: MLP, x: jax.Array, y: jax.Array) -> jax.Array:
    return ((model(x) - y) ** 2).mean()


@nnx.jit
def train_step(model: MLP, optimizer: flr.NNXOptimizer, x: jax.Array, y: jax.Array) -> jax.Array:
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads, loss=loss)
    return loss


def make_mesh(devices: list | None = None) -> jax.sharding.Mesh:
    """A ('data', 'fsdp') mesh over ``devices`` (default: all): 2 x n/2 when possible."""
    devices = jax.devices() if devices is None else devices
    n = len(devices)
    data = 2 if n >= 4 and n % 2 == 0 else 1
    return jax.make_mesh(
        (data, n // data),
        ("data", "fsdp"),
        axis_types=(jax.sharding.AxisType.Auto,) * 2,
        devices=devices,
    )


def state_shardings(model: MLP, optimizer: flr.NNXOptimizer) -> list[tuple[str, bool]]:
    """For each state array keyed by a parameter: whether its sharding is as expected.

    Expected: the parameter's sharding, or its ``optimizer_sharding`` annotation.
    """
    params = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    out = []
    for path, slot in nnx.to_flat_state(nnx.state(optimizer, flr.OptimizerSlot)):
        for start in range(len(path)):
            param = params.get(tuple(path[start:]))
            if param is not None:
                break
        else:
            continue  # not keyed by a parameter (e.g. Adam's step count)
        value = slot.get_value()
        annotation = param.get_metadata().get("optimizer_sharding")
        if annotation is None:
            expected = param.get_value().sharding
        else:
            expected = NamedSharding(value.sharding.mesh, P(*annotation))
        out.append(
            ("/".join(map(str, path)), value.sharding.is_equivalent_to(expected, value.ndim))
        )
    return out


def train(
    mesh: jax.sharding.Mesh, sizes: tuple[int, ...], steps: int, batch: int
) -> tuple[MLP, flr.NNXOptimizer, list[float]]:
    """Trains on ``mesh``: parameters sharded over ``fsdp``, the batch over both axes."""
    key_x, key_w = jax.random.split(jax.random.key(0))
    x = jax.random.normal(key_x, (batch, sizes[0]))
    y = jnp.tanh(x @ jax.random.normal(key_w, (sizes[0], sizes[-1])))
    batch_sharding = NamedSharding(mesh, P(("data", "fsdp")))
    x, y = jax.device_put(x, batch_sharding), jax.device_put(y, batch_sharding)
    with jax.set_mesh(mesh):
        model = MLP(sizes, nnx.Rngs(0))  # created sharded (the annotations need the mesh)
        optimizer = flr.NNXOptimizer(model, flr.optim.Adam(1e-3), wrt=nnx.Param)
        losses = [float(train_step(model, optimizer, x, y)) for _ in range(steps)]
    return model, optimizer, losses


def main(steps: int = 200, sizes: tuple[int, ...] = (64, 256, 256, 8), batch: int = 128) -> dict:
    """Trains sharded and on one device; returns what the tests check."""
    mesh = make_mesh()
    print(f"{len(jax.devices())} devices, mesh {dict(mesh.shape)}")
    model, optimizer, losses = train(mesh, sizes, steps, batch)
    checks = state_shardings(model, optimizer)
    kernel = optimizer.opt_state["mu"]["layers"][0]["kernel"][...]
    print(
        f"mu of layers[0].kernel: {kernel.sharding.spec} (the kernel: "
        f"{model.layers[0].kernel[...].sharding.spec})"
    )
    print(
        f"mu of scale: {optimizer.opt_state['mu']['scale'][...].sharding.spec} "
        f"(the parameter: {model.scale[...].sharding.spec}, optimizer_sharding=('fsdp',))"
    )
    print(f"state shardings as expected: {sum(ok for _, ok in checks)}/{len(checks)}")
    ref_model, _, ref_losses = train(make_mesh(jax.devices()[:1]), sizes, steps, batch)
    deviation = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(
            jax.tree.leaves(nnx.state(model, nnx.Param)),
            jax.tree.leaves(nnx.state(ref_model, nnx.Param)),
            strict=True,
        )
    )
    print(f"loss {losses[0]:.3e} -> {losses[-1]:.3e} in {steps} steps")
    print(f"largest parameter difference to the single-device run: {deviation:.2e}")
    return {
        "devices": len(jax.devices()),
        "mesh": dict(mesh.shape),
        "checks": checks,
        "losses": losses,
        "ref_losses": ref_losses,
        "deviation": deviation,
        "steps": int(optimizer.step[...]),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small settings (for the tests)")
    args = parser.parse_args()
    if args.smoke:
        main(steps=20, sizes=(16, 32, 32, 8), batch=32)
    else:
        main()
