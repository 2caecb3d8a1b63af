"""Sharded optimizer state on 8 simulated CPU devices (FSDP + data parallel), in a subprocess.

XLA fixes the device count when JAX starts, so the 8-device run happens in a
fresh interpreter with ``--xla_force_host_platform_device_count=8``.
"""

from _subprocess import ROOT, python_env, result_of, run_python

SCRIPT = r"""
import json, sys
sys.path.insert(0, "examples")
import jax, jax.numpy as jnp, numpy as np, optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P
import flr_nnx as flr
import sharded_training as ex

sizes = (16, 32, 32, 8)
mesh = ex.make_mesh()
model, optimizer, losses = ex.train(mesh, sizes, 20, 32)
ref_model, _, _ = ex.train(ex.make_mesh(jax.devices()[:1]), sizes, 20, 32)
out = {
    "devices": len(jax.devices()),
    "mesh": dict(mesh.shape),
    "checks": ex.state_shardings(model, optimizer),
    "losses": losses,
    "steps": int(optimizer.step[...]),
    "deviation": max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(
            jax.tree.leaves(nnx.state(model, nnx.Param)),
            jax.tree.leaves(nnx.state(ref_model, nnx.Param)),
            strict=True,
        )
    ),
}

# After 20 nnx.jit steps the parameters keep their own layout too (the
# replicated `scale` is not pulled onto its fsdp-sharded moments).
out["scale_replicated"] = model.scale[...].sharding.is_fully_replicated
kernel = model.layers[0].kernel[...]
out["kernel_fsdp"] = kernel.sharding.is_equivalent_to(NamedSharding(mesh, P("fsdp", None)), 2)

# as_optax: tx.init on sharded parameters creates state with their shardings,
# also inside nnx.Optimizer, and jitted updates keep them.
params = nnx.as_pure(nnx.state(model, nnx.Param))
tx = flr.as_optax(flr.optim.Adam(1e-3))
state = tx.init(params)
def same(state_tree, params):
    return [
        s.sharding.is_equivalent_to(p.sharding, p.ndim)
        for s, p in zip(jax.tree.leaves(state_tree), jax.tree.leaves(params), strict=True)
    ]
out["as_optax_init"] = same(state.tree["mu"], params)
grads = jax.tree.map(jnp.ones_like, params)
_, state = jax.jit(tx.update)(grads, state, params)
out["as_optax_step"] = same(state.tree["nu"], params)

# Grouped init (Adam is elementwise): many same-shaped parameters with different
# shardings get the same state as the full discovery, each with its own sharding
# and its own buffers.
from flr_nnx import _engine
shard = {
    "fsdp": NamedSharding(mesh, P("fsdp", None)),
    "data": NamedSharding(mesh, P("data", None)),
    "replicated": NamedSharding(mesh, P()),
}
many = {}
for i in range(12):
    name = list(shard)[i % 3]
    many[f"w{i:02d}_{name}"] = jax.device_put(jnp.full((8, 16), float(i)), shard[name])
class FullAdam(flr.optim.Adam):
    elementwise = False
grouped = flr.as_optax(flr.optim.Adam(1e-3)).init(many)
full = flr.as_optax(FullAdam(1e-3)).init(many)
pointers = [
    shard_.data.unsafe_buffer_pointer()
    for leaf in jax.tree.leaves(grouped)
    for shard_ in leaf.addressable_shards
]
out["grouped_sharded"] = {
    "layout_equal": grouped.layout == full.layout,
    "values_equal": all(
        bool(np.array_equal(np.asarray(a), np.asarray(b)))
        for a, b in zip(jax.tree.leaves(grouped), jax.tree.leaves(full), strict=True)
    ),
    "shardings": [
        grouped.tree[m][k].sharding.is_equivalent_to(many[k].sharding, 2)
        for m in ("mu", "nu")
        for k in many
    ],
    "distinct_buffers": len(pointers) == len(set(pointers)),
}

# Under an explicit-axes mesh, a jitted init sees the shardings only in the types:
# parameters of one shape but different shardings must not share a representative.
from jax.sharding import AxisType
explicit = jax.make_mesh((2, 4), ("a", "b"), axis_types=(AxisType.Explicit,) * 2)
two = {
    "w0": jax.device_put(jnp.ones((8, 16)), NamedSharding(explicit, P("a", None))),
    "w1": jax.device_put(jnp.ones((8, 16)), NamedSharding(explicit, P("b", None))),
}
with jax.set_mesh(explicit):
    tx = flr.as_optax(flr.optim.SGD(0.1, momentum=0.9))
    state = jax.jit(tx.init)(two)
    _, state = jax.jit(tx.update)(two, state, two)
out["explicit_jit_init"] = [
    tuple(state.tree["trace"][k].sharding.spec) == tuple(two[k].sharding.spec) for k in two
]

# Built inside nnx.jit, the parameters are tracers with no sharding yet: the state must
# still follow their annotations, as nnx.Optimizer's does.
class Annotated(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.arange(32.0).reshape(8, 4) / 10, sharding=("data", "fsdp"))


with jax.set_mesh(mesh):

    @nnx.jit
    def create():
        m = Annotated()
        return m, flr.NNXOptimizer(m, flr.optim.Adam(0.1), wrt=nnx.Param)

    @nnx.jit
    def create_reference():
        m = Annotated()
        return m, nnx.Optimizer(m, optax.adam(0.1), wrt=nnx.Param)

    _, inside = create()
    _, reference = create_reference()
out["built_inside_jit"] = [
    str(inside.opt_state["mu"]["w"][...].sharding.spec),
    str(reference.opt_state[0].mu["w"][...].sharding.spec),
]
print("RESULT " + json.dumps(out))
"""


def test_fsdp_data_parallel_state_follows_parameters_and_matches_one_device():
    env = python_env(XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    out = result_of(run_python(["-c", SCRIPT], cwd=ROOT, env=env))
    assert out["devices"] == 8 and out["mesh"] == {"data": 2, "fsdp": 4}
    # Every state array keyed by a parameter: mu and nu of 3 kernels, 3 biases, scale.
    assert len(out["checks"]) == 14
    assert all(ok for _, ok in out["checks"]), out["checks"]
    assert out["steps"] == 20
    assert out["deviation"] <= 1e-6
    assert out["losses"][-1] < out["losses"][0]
    assert out["scale_replicated"] and out["kernel_fsdp"]
    assert all(out["as_optax_init"]) and len(out["as_optax_init"]) == 7
    assert all(out["as_optax_step"])
    grouped = out["grouped_sharded"]
    assert grouped["layout_equal"] and grouped["values_equal"], grouped
    assert all(grouped["shardings"]) and len(grouped["shardings"]) == 24
    assert grouped["distinct_buffers"]
    assert out["explicit_jit_init"] == [True, True]
    spec = "P('data', 'fsdp')"
    assert out["built_inside_jit"] == [spec, spec]
