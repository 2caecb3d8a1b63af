"""Checkpoints with orbax-checkpoint: save mid-training, restore in a fresh process, continue.

The restore runs in a subprocess (this file, run as a script), so nothing
survives in memory: the continued run must be bit-identical to an
uninterrupted one for both bridges.
"""

import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from _subprocess import result_of, run_python
from flax import nnx

import flr_nnx as flr

FIRST, SECOND = 5, 5  # steps before and after the checkpoint


class MLP(nnx.Module):
    def __init__(self, rngs, hidden=8):
        # nnx.List: integer path parts, which orbax saves as strings.
        self.layers = nnx.List([nnx.Linear(3, hidden, rngs=rngs), nnx.Linear(hidden, 1, rngs=rngs)])

    def __call__(self, x):
        return self.layers[1](jax.nn.tanh(self.layers[0](x)))


def batch(i):
    x = jax.random.normal(jax.random.fold_in(jax.random.key(42), i), (16, 3))
    return x, jnp.sin(x.sum(axis=1, keepdims=True))


def loss_fn(model, x, y):
    return ((model(x) - y) ** 2).mean()


def make_nnx(seed=0, hidden=8):
    model = MLP(nnx.Rngs(seed), hidden)
    opt = flr.compose.MultiSteps(flr.optim.Adam(flr.hyper(1e-2)), every_k=2)
    return model, flr.NNXOptimizer(model, opt, wrt=nnx.Param)


@nnx.jit
def nnx_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads, loss=loss)


# as_optax in an optax.chain: the state is a tuple, so its paths have integer parts too.
TX = optax.chain(optax.clip_by_global_norm(1.0), flr.as_optax(flr.optim.Adam(flr.hyper(3e-2))))


def make_optax(seed=0):
    params = {"w": [jax.random.normal(jax.random.key(seed), (3, 1)), jnp.zeros(())]}
    return params, TX.init(params)


@jax.jit
def optax_step(params, state, x, y):
    def loss(p):
        return ((jnp.tanh(x @ p["w"][0] + p["w"][1]) - y) ** 2).mean()

    updates, state = TX.update(jax.grad(loss)(params), state, params)
    return optax.apply_updates(params, updates), state


def run(model, optimizer, params, state, steps):
    for i in steps:
        nnx_step(model, optimizer, *batch(i))
        params, state = optax_step(params, state, *batch(i))
    return params, state


def final_arrays(model, optimizer, params, state):
    tree = {
        "model": flr.state_dict(model),
        "optimizer": flr.state_dict(optimizer),
        "params": flr.state_dict(params),
        "state": flr.state_dict(state),
    }
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves}


def resume(directory):
    """In a fresh process: build everything anew (other seeds), restore, continue."""
    model, optimizer = make_nnx(seed=1)
    params, state = make_optax(seed=1)
    restored = ocp.StandardCheckpointer().restore(pathlib.Path(directory) / "ckpt")
    flr.load_state_dict(model, restored["model"])
    flr.load_state_dict(optimizer, restored["optimizer"])
    params = flr.load_state_dict(params, restored["params"])
    state = flr.load_state_dict(state, restored["state"])
    lr = float(optimizer.opt.inner.learning_rate)
    params, state = run(model, optimizer, params, state, range(FIRST, FIRST + SECOND))
    np.savez(
        pathlib.Path(directory) / "resumed.npz", **final_arrays(model, optimizer, params, state)
    )
    print("RESULT " + json.dumps({"lr": lr, "hyper": float(flr.get_hyper(state, "learning_rate"))}))


def test_restore_in_fresh_process_continues_bit_identically(tmp_path):
    model, optimizer = make_nnx()
    params, state = make_optax()
    params, state = run(model, optimizer, params, state, range(FIRST))
    # Live hyperparameters are state: changed before saving, they are restored too.
    optimizer.opt.inner.learning_rate = 5e-3
    state = flr.set_hyper(state, "learning_rate", 2e-2)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(
        tmp_path / "ckpt",
        {
            "model": flr.state_dict(model),
            "optimizer": flr.state_dict(optimizer),
            "params": flr.state_dict(params),
            "state": flr.state_dict(state),
        },
    )
    checkpointer.wait_until_finished()
    params, state = run(model, optimizer, params, state, range(FIRST, FIRST + SECOND))
    expected = final_arrays(model, optimizer, params, state)

    info = result_of(run_python([__file__, str(tmp_path)]))
    assert info == {"lr": np.float32(5e-3).item(), "hyper": np.float32(2e-2).item()}
    resumed = dict(np.load(tmp_path / "resumed.npz"))
    assert set(resumed) == set(expected)
    for key, value in expected.items():
        assert value.dtype == resumed[key].dtype, key
        np.testing.assert_array_equal(resumed[key], value, err_msg=key, strict=True)
    assert int(optimizer.step[...]) == FIRST + SECOND
    assert int(optimizer.opt.inner.count) == (FIRST + SECOND) // 2


def as_orbax_restores(tree):
    """Integer keys become strings, as orbax-checkpoint restores them."""
    if isinstance(tree, dict):
        return {str(k): as_orbax_restores(v) for k, v in tree.items()}
    return np.asarray(tree)


def test_restoring_into_another_structure_is_a_clear_error():
    model, optimizer = make_nnx()
    saved_model = as_orbax_restores(flr.state_dict(model))
    saved_opt = as_orbax_restores(flr.state_dict(optimizer))
    other_model, _ = make_nnx(hidden=5)
    with pytest.raises(flr.StructureError, match=r"layers/0/bias .*shape \(8,\).*\(5,\)"):
        flr.load_state_dict(other_model, saved_model)
    adam_only = flr.NNXOptimizer(model, flr.optim.Adam(1e-2), wrt=nnx.Param)
    with pytest.raises(flr.StructureError, match=r"Missing entries: .*unexpected entries: "):
        flr.load_state_dict(adam_only, saved_opt)
    # Nothing was changed by the failed loads; a matching one works.
    fresh_model, fresh_opt = make_nnx(seed=3)
    flr.load_state_dict(fresh_model, saved_model)
    flr.load_state_dict(fresh_opt, saved_opt)
    np.testing.assert_array_equal(fresh_model.layers[1].kernel[...], model.layers[1].kernel[...])

    params, state = make_optax()
    other = flr.as_optax(flr.optim.Adam(1e-2)).init(params)
    with pytest.raises(flr.StructureError, match="does not match this"):
        flr.load_state_dict(other, as_orbax_restores(flr.state_dict(state)))


if __name__ == "__main__":
    resume(sys.argv[1])
