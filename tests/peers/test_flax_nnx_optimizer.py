# Copyright 2024 The Flax Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

# ruff: noqa: E731, F841  (the source's style, kept)
"""Flax's NNX optimizer tests, run against flr_nnx in four modes.

Source: Flax 0.12.8 (the installed version), ``tests/nnx/optimizer_test.py`` at
commit 3a49110824001614baf35c6ee8934479fcdb133a ("update to v0.12.8"; the file
is unchanged from there to github.com/google/flax HEAD 18f8f311). Flax's wheel
does not ship its tests.

Every test runs in four modes (``mode=twins.MODES``), changing only how the
optimizer is built (``tests/peers/twins.py``):

1. ``flr_twin``: ``flr.NNXOptimizer(model, flr.optim.<Twin>(...), wrt=...)``;
2. ``optax_tx``: ``flr.NNXOptimizer(model, optax.<tx>(...), wrt=...)``;
3. ``from_optax``: ``flr.NNXOptimizer(model, flr.from_optax(optax.<tx>(...)), wrt=...)``;
4. ``nnx_as_optax``: ``nnx.Optimizer(model, flr.as_optax(flr.optim.<Twin>(...)), wrt=...)``.

Changed, and nothing else (no assertion is changed):

- ``nnx.Optimizer(model, optax.<tx>(args), wrt=w)`` became
  ``twins.optimizer_cls(mode)(model, twins.build_tx(self, mode, optax.<tx>, args), wrt=w)``,
  and ``nnx.ModelAndOptimizer`` (also as ``TrainState``'s base class)
  ``twins.model_and_optimizer_cls(mode)``: Flax's class in mode 4, else
  ``twins.FlrModelAndOptimizer``, the same three lines over ``flr.NNXOptimizer``.
  ``optax.lbfgs`` runs in all four modes: modes 1 and 4 build its flr twin,
  ``flr.optim.LBFGS``, which re-evaluates the loss through ``value_fn=``.
  (``test_metrics`` builds ``optax.adam`` whatever its ``optimizer`` parameter
  says, as the source does.)
- ``test_sharding_propagation`` read optax's chain state by tuple index
  (``state['opt_state'][0]['mu']['kernel']``); it finds the leaf by its path
  instead (``twins.state_path``: the one leaf under ``mu`` ending in ``kernel``,
  or, where optax sees the parameters as a list, the one leaf under ``mu``).
- Each test got the ``mode`` parameter; ``@parameterized.parameters`` of one
  key became ``@parameterized.product`` of that key and ``mode``.
- Formatted with ruff (4-space indent, double quotes) and imports sorted, as
  the rest of this repository.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import twins
from absl.testing import absltest, parameterized
from flax import nnx


def assert_equal(path, x, y):
    np.testing.assert_array_equal(x, y, err_msg=f"Mismatch at path: {path}")


def assert_not_equal(path, x, y):
    np.testing.assert_(np.any(np.not_equal(x, y)), msg=f"Unexpected match at path: {path}")


class Model(nnx.Module):
    def __init__(self, in_features, out_features, rngs):
        self.linear1 = nnx.Linear(in_features, 3, rngs=rngs)
        self.linear2 = nnx.Linear(3, out_features, rngs=rngs)

    def __call__(self, x):
        return self.linear2(self.linear1(x))


class TestOptimizer(parameterized.TestCase):
    @parameterized.product(
        module_cls=[nnx.Linear, Model],
        mode=twins.MODES,
    )
    def test_split_merge(self, module_cls, mode):
        x = jax.random.normal(jax.random.key(0), (1, 2))
        model = module_cls(2, 4, rngs=nnx.Rngs(0))
        tx = twins.build_tx(self, mode, optax.adam, 1e-3)
        optimizer = twins.optimizer_cls(mode)(model, tx, wrt=nnx.Param)
        out = model(x)
        graphdef, optimizer = nnx.split(optimizer)
        optimizer = nnx.merge(graphdef, optimizer)
        np.testing.assert_allclose(out, model(x))

    @parameterized.product(mode=twins.MODES)
    def test_update(self, mode):
        model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        optimizer = twins.optimizer_cls(mode)(
            model, twins.build_tx(self, mode, optax.adamw, 0.1), wrt=nnx.Param
        )

        def loss_fn(model):
            params = nnx.state(model)
            loss = sum(jnp.sum(x**2) for x in jax.tree.leaves(params))
            return loss

        grads = nnx.grad(loss_fn)(model)
        optimizer.update(model, grads)

    @parameterized.product(mode=twins.MODES)
    def test_sharding_propagation(self, mode):
        with jax.set_mesh(
            jax.make_mesh(
                (1, 1),
                ("a", "b"),
                axis_types=(jax.sharding.AxisType.Auto,) * len(("a", "b")),
            )
        ):
            model = nnx.Linear(
                2,
                3,
                rngs=nnx.Rngs(0),
                kernel_init=nnx.with_partitioning(
                    nnx.initializers.lecun_normal(),
                    sharding=("a", "b"),
                ),
                use_bias=False,
            )
            optimizer = twins.optimizer_cls(mode)(
                model, twins.build_tx(self, mode, optax.adamw, 0.1), wrt=nnx.Param
            )

        state = nnx.state(optimizer)
        partition_spec = nnx.get_partition_spec(state)
        mu_kernel = twins.state_path(state["opt_state"], "mu", "kernel")

        self.assertEqual(twins.at(state["opt_state"], mu_kernel).out_sharding, ("a", "b"))
        self.assertEqual(
            twins.at(partition_spec["opt_state"], mu_kernel).get_value(),
            jax.sharding.PartitionSpec("a", "b"),
        )

    @parameterized.product(
        module_cls=[nnx.Linear, Model],
        jit_decorator=[lambda f: f, nnx.compat.jit, jax.jit],
        optimizer=[optax.sgd, optax.adam],
        mode=twins.MODES,
    )
    def test_jit(self, module_cls, jit_decorator, optimizer, mode):
        x = jax.random.normal(jax.random.key(0), (1, 2))
        y = jnp.ones((1, 4))
        model = module_cls(2, 4, rngs=nnx.Rngs(0))
        # TODO: this doesn't work with adam optimizer for some reason
        tx = twins.build_tx(self, mode, optimizer, 1e-3)
        state = twins.model_and_optimizer_cls(mode)(model, tx)

        if jit_decorator == jax.jit:
            model_static, model_state = nnx.split(model)
            loss_fn = lambda graphdef, state, x, y: (
                (nnx.merge(graphdef, state)(x) - y) ** 2
            ).mean()
            initial_loss = loss_fn(model_static, model_state, x, y)

            def jax_jit_train_step(graphdef, state, x, y):
                state = nnx.merge(graphdef, state)
                model_static, model_state = nnx.split(model)
                grads = jax.grad(loss_fn, argnums=1)(model_static, model_state, x, y)
                state.update(grads)
                return nnx.split(state)

            graphdef, state = jit_decorator(jax_jit_train_step)(*nnx.split(state), x, y)
            state = nnx.merge(graphdef, state)
            new_loss = loss_fn(*nnx.split(state.model), x, y)

        else:
            loss_fn = lambda model, x, y: ((model(x) - y) ** 2).mean()
            initial_loss = loss_fn(state.model, x, y)

            def nnx_jit_train_step(optimizer: nnx.Optimizer, x, y):
                grads = nnx.grad(loss_fn)(optimizer.model, x, y)
                optimizer.update(grads)

            jit_decorator(nnx_jit_train_step)(state, x, y)
            new_loss = loss_fn(state.model, x, y)

        self.assertTrue(new_loss < initial_loss)

    @parameterized.product(
        module_cls=[nnx.Linear, Model],
        jit_decorator=[lambda f: f, nnx.compat.jit, jax.jit],
        optimizer=[optax.lbfgs],
        mode=twins.MODES,
    )
    def test_jit_linesearch(self, module_cls, jit_decorator, optimizer, mode):
        x = jax.random.normal(jax.random.key(0), (1, 2))
        y = jnp.ones((1, 4))
        model = module_cls(2, 4, rngs=nnx.Rngs(0))
        tx = twins.build_tx(self, mode, optimizer, 1e-3)
        state = twins.model_and_optimizer_cls(mode)(model, tx)

        if jit_decorator == jax.jit:
            model_static, model_state = nnx.split(state.model)
            loss_fn = lambda graphdef, state, x, y: (
                (nnx.merge(graphdef, state)(x) - y) ** 2
            ).mean()
            initial_loss = loss_fn(model_static, model_state, x, y)

            def jax_jit_train_step(graphdef, state, x, y):
                state = nnx.merge(graphdef, state)
                model_static, model_state = nnx.split(state.model)
                grads = jax.grad(loss_fn, argnums=1)(model_static, model_state, x, y)
                state.update(
                    grads,
                    grad=grads,
                    value=initial_loss,
                    value_fn=lambda state: loss_fn(model_static, state, x, y),
                )
                return nnx.split(state)

            graphdef, state = jit_decorator(jax_jit_train_step)(*nnx.split(state), x, y)
            state = nnx.merge(graphdef, state)
            new_loss = loss_fn(*nnx.split(state.model), x, y)

        else:
            graphdef = nnx.graphdef(model)
            loss_fn = lambda model, x, y: ((model(x) - y) ** 2).mean()

            loss_fn_split = lambda state: loss_fn(nnx.merge(graphdef, state), x, y)

            initial_loss = loss_fn(state.model, x, y)

            def nnx_jit_train_step(optimizer: nnx.Optimizer, x, y):
                grads = nnx.compat.grad(loss_fn)(optimizer.model, x, y)
                optimizer.update(grads, grad=grads, value=initial_loss, value_fn=loss_fn_split)

            jit_decorator(nnx_jit_train_step)(state, x, y)
            new_loss = loss_fn(state.model, x, y)

        self.assertTrue(new_loss < initial_loss)

    @parameterized.product(
        module_cls=[nnx.Linear, Model],
        optimizer=[optax.sgd, optax.adam],
        mode=twins.MODES,
    )
    def test_metrics(self, module_cls, optimizer, mode):
        class TrainState(twins.model_and_optimizer_cls(mode)):
            def __init__(self, model, tx, metrics):
                self.metrics = metrics
                super().__init__(model, tx)

            def update(self, *, grads, **updates):  # type: ignore[signature-mismatch]
                self.metrics.update(**updates)
                super().update(grads)

        x = jax.random.normal(jax.random.key(0), (1, 2))
        y = jnp.ones((1, 4))
        model = module_cls(2, 4, rngs=nnx.Rngs(0))
        tx = twins.build_tx(self, mode, optax.adam, 1e-3)
        metrics = nnx.metrics.Average()
        state = TrainState(model, tx, metrics)

        loss_fn = lambda model: ((model(x) - y) ** 2).mean()
        grads = nnx.grad(loss_fn)(state.model)
        state.update(grads=grads, values=loss_fn(state.model))
        initial_loss = state.metrics.compute()
        state.update(grads=grads, values=loss_fn(state.model))
        self.assertTrue(state.metrics.compute() < initial_loss)

    @parameterized.product(
        variable=[nnx.Param, nnx.LoRAParam, (nnx.Param, nnx.LoRAParam)],
        mode=twins.MODES,
    )
    def test_wrt_update(self, variable, mode):
        in_features = 4
        out_features = 10
        model = nnx.LoRA(
            in_features=in_features,
            lora_rank=2,
            out_features=out_features,
            base_module=Model(in_features=in_features, out_features=out_features, rngs=nnx.Rngs(0)),
            rngs=nnx.Rngs(1),
        )
        state = twins.optimizer_cls(mode)(
            model, twins.build_tx(self, mode, optax.adam, 1e-3), wrt=variable
        )
        prev_variables, prev_other_variables = nnx.clone(
            nnx.state(model, variable, ...), graph=True
        )

        x = jnp.ones((1, 4))
        y = jnp.ones((1, 10))
        loss_fn = lambda model, x, y: ((model(x) - y) ** 2).mean()
        grad_fn = nnx.grad(
            loss_fn,
            argnums=nnx.DiffState(0, variable),
            graph=True,
            graph_updates=True,
        )

        def step():
            grads = grad_fn(model, x, y)
            initial_loss = loss_fn(model, x, y)
            state.update(model, grads)
            self.assertTrue(loss_fn(model, x, y) < initial_loss)

        # Since lora_b is initialized to zeros by default, the gradient flow to lora_a
        # will be zeroed out in first call. Thus, run the step twice to make sure
        # lora_a is updated.
        for _ in range(2):
            step()

        # make sure only the Variable's filtered in `wrt` are changed, and the others are unchanged
        variables, other_variables = nnx.state(model, variable, ...)

        jax.tree.map_with_path(assert_not_equal, prev_variables, variables)

        if other_variables:
            jax.tree.map_with_path(assert_equal, prev_other_variables, other_variables)

    @parameterized.product(
        variable=[nnx.Param, nnx.LoRAParam, (nnx.Param, nnx.LoRAParam)],
        mode=twins.MODES,
    )
    def test_wrt_update_linesearch(self, variable, mode):
        in_features = 4
        out_features = 10
        model = nnx.LoRA(
            in_features=in_features,
            lora_rank=2,
            out_features=out_features,
            base_module=Model(in_features=in_features, out_features=out_features, rngs=nnx.Rngs(0)),
            rngs=nnx.Rngs(1),
        )
        state = twins.optimizer_cls(mode)(
            model, twins.build_tx(self, mode, optax.lbfgs), wrt=variable
        )
        prev_variables, prev_other_variables = nnx.clone(
            nnx.state(model, variable, ...), graph=True
        )

        x = jnp.ones((1, 4))
        y = jnp.ones((1, 10))
        loss_fn = lambda model, x, y: ((model(x) - y) ** 2).mean()

        grad_fn = nnx.grad(
            loss_fn,
            argnums=nnx.DiffState(0, variable),
            graph=True,
            graph_updates=True,
        )
        graphdef, _, other_variables = nnx.compat.split(model, variable, ...)
        loss_fn_split = lambda state: loss_fn(nnx.merge(graphdef, state, other_variables), x, y)

        def step():
            grads = grad_fn(model, x, y)
            initial_loss = loss_fn(model, x, y)
            state.update(model, grads, grad=grads, value_fn=loss_fn_split, value=initial_loss)
            self.assertTrue(loss_fn(model, x, y) < initial_loss)

        # Since lora_b is initialized to zeros by default, the gradient flow to lora_a
        # will be zeroed out in first call. Thus, run the step twice to make sure
        # lora_a is updated.
        for _ in range(2):
            step()

        # make sure only the Variable's filtered in `wrt` are changed, and the others are unchanged
        variables, other_variables = nnx.state(model, variable, ...)

        jax.tree.map_with_path(assert_not_equal, prev_variables, variables)

        if other_variables:
            jax.tree.map_with_path(assert_equal, prev_other_variables, other_variables)

    @parameterized.product(mode=twins.MODES)
    def test_update_returns_updates(self, mode):
        """Test that Optimizer.update returns the updates PyTree."""
        model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        optimizer = twins.optimizer_cls(mode)(
            model, twins.build_tx(self, mode, optax.sgd, 0.1), wrt=nnx.Param
        )

        def loss_fn(model):
            params = nnx.state(model)
            loss = sum(jnp.sum(x**2) for x in jax.tree.leaves(params))
            return loss

        grads = nnx.grad(loss_fn)(model)

        # Call update and capture return value
        updates = optimizer.update(model, grads)

        # Verify updates is not None
        self.assertIsNotNone(updates)

        # Verify updates structure matches params structure
        params = nnx.as_pure(nnx.state(model, nnx.Param))

        # Get initial params as pure arrays
        initial_params = nnx.as_pure(nnx.state(model, nnx.Param))

        def loss_fn(model):
            params = nnx.state(model)
            loss = sum(jnp.sum(x**2) for x in jax.tree.leaves(params))
            return loss

        grads = nnx.grad(loss_fn)(model)

        # Get updates
        updates = optimizer.update(model, grads)

        # Get new params as pure arrays
        new_params = nnx.as_pure(nnx.state(model, nnx.Param))

        # Verify updates has the expected structure
        params = nnx.as_pure(nnx.state(model, nnx.Param))

        def check_structure(path, update_val, param_val):
            self.assertEqual(update_val.shape, param_val.shape)

        jax.tree.map_with_path(check_structure, updates, params)

    @parameterized.product(mode=twins.MODES)
    def test_update_backward_compatible(self, mode):
        """Test that existing code ignoring return value still works."""
        model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        optimizer = twins.optimizer_cls(mode)(
            model, twins.build_tx(self, mode, optax.adam, 0.1), wrt=nnx.Param
        )

    @parameterized.product(
        variable=[
            nnx.Param,
            # nnx.LoRAParam,
            (nnx.Param, nnx.LoRAParam),
        ],
        mode=twins.MODES,
    )
    def test_wrt_update_linesearch_functional(self, variable, mode):
        in_features = 4
        out_features = 10
        model = nnx.LoRA(
            in_features=in_features,
            lora_rank=2,
            out_features=out_features,
            base_module=Model(in_features=in_features, out_features=out_features, rngs=nnx.Rngs(0)),
            rngs=nnx.Rngs(1),
        )
        optimizer = twins.optimizer_cls(mode)(
            model, twins.build_tx(self, mode, optax.lbfgs), wrt=variable
        )
        graphdef, params, nondiff = nnx.split(model, variable, ..., graph=True)
        prev_params, prev_nondiff = nnx.clone((params, nondiff), graph=True)

        x = jnp.ones((1, 4))
        y = jnp.ones((1, 10))

        def loss_fn(params, nondiff):
            model = nnx.merge(graphdef, params, nondiff)
            return ((model(x) - y) ** 2).mean()

        grad_fn = nnx.grad(loss_fn, graph=True, graph_updates=True)
        loss_fn_split = lambda params: loss_fn(params, nondiff)

        def step():
            grads = grad_fn(params, nondiff)
            initial_loss = loss_fn(params, nondiff)
            optimizer.update(model, grads, grad=grads, value_fn=loss_fn_split, value=initial_loss)
            self.assertTrue(loss_fn(params, nondiff) < initial_loss)

        # Since lora_b is initialized to zeros by default, the gradient flow to lora_a
        # will be zeroed out in first call. Thus, run the step twice to make sure
        # lora_a is updated.
        for _ in range(2):
            step()

        jax.tree.map_with_path(assert_not_equal, prev_params, params)
        jax.tree.map_with_path(assert_equal, prev_nondiff, nondiff)

    @parameterized.product(
        variable=[nnx.Param, nnx.LoRAParam, (nnx.Param, nnx.LoRAParam)],
        mode=twins.MODES,
    )
    def test_wrt_update_functional(self, variable, mode):
        in_features = 4
        out_features = 10
        model = nnx.LoRA(
            in_features=in_features,
            lora_rank=2,
            out_features=out_features,
            base_module=Model(in_features=in_features, out_features=out_features, rngs=nnx.Rngs(0)),
            rngs=nnx.Rngs(1),
        )
        optimizer = twins.optimizer_cls(mode)(
            model, twins.build_tx(self, mode, optax.adam, 1e-3), wrt=variable
        )
        graphdef, params, nondiff = nnx.split(model, variable, ..., graph=True)
        prev_params, prev_nondiff = nnx.clone((params, nondiff), graph=True)

        x = jnp.ones((1, 4))
        y = jnp.ones((1, 10))

        def loss_fn(params, nondiff):
            model = nnx.merge(graphdef, params, nondiff)
            return ((model(x) - y) ** 2).mean()

        grad_fn = nnx.grad(loss_fn, graph=True, graph_updates=True)

        def step():
            grads = grad_fn(params, nondiff)
            initial_loss = loss_fn(params, nondiff)
            optimizer.update(model, grads)
            self.assertTrue(loss_fn(params, nondiff) < initial_loss)

        for _ in range(2):
            step()

        jax.tree.map_with_path(assert_not_equal, prev_params, params)
        jax.tree.map_with_path(assert_equal, prev_nondiff, nondiff)


if __name__ == "__main__":
    absltest.main()
