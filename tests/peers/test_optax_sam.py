# Copyright 2023 DeepMind Technologies Limited. All Rights Reserved.
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
# ==============================================================================
# ruff: noqa: SIM108  (the source's style, kept)

"""optax's SAM tests, run against ``flr.compose.SAM`` through ``flr.as_optax``.

Source: optax 0.2.8 (the installed version), ``optax/contrib/_sam_test.py``
(as shipped in the optax wheel). Changed, and nothing else (no assertion, no
tolerance, no step count, no parameter is changed):

- The optimizer is built as ``flr.as_optax(flr.compose.SAM(base, adv, ...))``,
  with the hook twins of optax's ``base_opt_name`` and ``adv_opt_name``
  (``twins.OPTAX_TWINS``, optax's kwargs) and ``flr.optim.Normalize`` (the twin of
  ``optax.contrib.normalize``) chained by ``flr.compose.Chain`` instead of
  ``combine.chain``: SAM takes hook optimizers, as optax's takes transformations.
  Its ``grad_fn`` (opaque mode) is passed to ``update`` unchanged.
- Formatted with ruff (4-space indent, double quotes) and imports sorted, as
  the rest of this repository (``alias``, ``combine`` and ``_sam`` are no longer
  imported: only the optimizer's construction used them).

``optax.tree.map_params`` on the state, ``jax.jit`` of the step, 25000 outer
steps: all kept.
"""

import jax
import jax.numpy as jnp
import optax.tree
import twins
from absl.testing import absltest, parameterized
from optax._src import numerics, test_utils, update

import flr_nnx as flr

_BASE_OPTIMIZERS_UNDER_TEST = [
    {"base_opt_name": "sgd", "base_opt_kwargs": {"learning_rate": 1e-3}},
]
_ADVERSARIAL_OPTIMIZERS_UNDER_TEST = [
    {"adv_opt_name": "sgd", "adv_opt_kwargs": {"learning_rate": 1e-5}},
    {"adv_opt_name": "adam", "adv_opt_kwargs": {"learning_rate": 1e-4}},
]


def _setup_parabola(dtype):
    """Quadratic function as an optimization target."""
    initial_params = jnp.array([-1.0, 10.0, 1.0], dtype=dtype)
    final_params = jnp.array([1.0, -1.0, 1.0], dtype=dtype)

    @jax.grad
    def get_updates(params):
        return jnp.sum(numerics.abs_sq(params - final_params))

    return initial_params, final_params, get_updates


class SAMTest(parameterized.TestCase):
    @parameterized.product(
        _BASE_OPTIMIZERS_UNDER_TEST,
        _ADVERSARIAL_OPTIMIZERS_UNDER_TEST,
        sync_period=(2,),
        target=(_setup_parabola,),
        dtype=("float32",),
        opaque_mode=(False, True),
    )
    def test_optimization(
        self,
        base_opt_name,
        base_opt_kwargs,
        adv_opt_name,
        adv_opt_kwargs,
        sync_period,
        target,
        dtype,
        opaque_mode,
    ):
        dtype = jnp.dtype(dtype)
        base_opt = twins.OPTAX_TWINS[base_opt_name](**base_opt_kwargs)
        adv_opt = flr.compose.Chain(
            twins.OPTAX_TWINS["normalize"](), twins.OPTAX_TWINS[adv_opt_name](**adv_opt_kwargs)
        )
        opt = flr.as_optax(
            twins.WRAPPER_TWINS["sam"](
                base_opt, adv_opt, sync_period=sync_period, opaque_mode=opaque_mode
            )
        )
        initial_params, final_params, get_updates = target(dtype)

        if opaque_mode:
            update_kwargs = {"grad_fn": lambda p, _: get_updates(p)}
        else:
            update_kwargs = {}

        @jax.jit
        def step(params, state):
            updates = get_updates(params)
            updates, state = opt.update(updates, state, params, **update_kwargs)
            params = update.apply_updates(params, updates)
            return params, state

        params = initial_params
        state = opt.init(params)
        # A no-op change, to verify that tree map works.
        state = optax.tree.map_params(opt, lambda v: v, state)

        for _ in range(25000 * sync_period):
            params, state = step(params, state)

        test_utils.assert_trees_all_close(params, final_params, rtol=3e-2, atol=3e-2)


if __name__ == "__main__":
    absltest.main()
