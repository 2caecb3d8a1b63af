# Copyright 2021 DeepMind Technologies Limited. All Rights Reserved.
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
# ruff: noqa: RUF005  (the source's style, kept)
"""optax's privacy tests, run against ``flr.optim.DifferentiallyPrivateAggregate``.

Source: optax 0.2.8 (the installed version), ``optax/contrib/_privacy_test.py``
(as shipped in the optax wheel). Changed, and nothing else (no assertion, no
tolerance, no step count, no parameter is changed):

- ``_differentially_private_aggregate(**kwargs)`` is
  ``flr.as_optax(DifferentiallyPrivateAggregate(**kwargs), sign="gradient")``
  (``twins.OPTAX_TWINS``; ``sign="gradient"``: optax's aggregate returns a
  gradient, not an update to add), with optax's kwargs. It declares
  ``per_example_grads = True``: the gradients have a leading batch axis.
- ``test_noise_multiplier`` is dropped: it initialises the state on
  ``self.params`` (a dict of three arrays) and then updates a different tree
  (a list of one array). optax's aggregate state (a key) does not depend on the
  parameters, but an flr state is laid out by the parameters at init, so that
  update is a StructureError. ``tests/test_dpsgd.py`` checks the same standard
  deviations with the state initialised on the tree it updates.
- The tests run with JAX's default ``jax_numpy_rank_promotion="allow"`` (an
  autouse fixture), as optax runs them: ``setUp`` broadcasts a ``(batch,)``
  vector against the gradients, which this repository's ``conftest.py`` (set
  to ``"raise"``) would refuse before any optimizer is built.
- Formatted with ruff (4-space indent, double quotes) and imports sorted, as
  the rest of this repository.

``jax.jit`` of ``update``, updates without ``params``, the ValueError for
aggregated gradients: all kept.
"""

import jax
import jax.numpy as jnp
import pytest
import twins
from absl.testing import absltest, parameterized
from optax._src import test_utils

import flr_nnx as flr


@pytest.fixture(autouse=True)
def _jax_default_rank_promotion():
    with jax.numpy_rank_promotion("allow"):
        yield


def _differentially_private_aggregate(**kwargs):
    hook = twins.OPTAX_TWINS["differentially_private_aggregate"](**kwargs)
    return flr.as_optax(hook, sign="gradient")


class DifferentiallyPrivateAggregateTest(parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.batch_size = 8
        self.params = {
            "key_a": (jnp.zeros((2, 3, 4)), jnp.zeros([])),
            "key_b": jnp.zeros((6, 7)),
        }
        # Example `i`'s grads are full of `i`s. Important to include 0 to ensure
        # there are no divisions by 0 (e.g. in norm clipping)
        a = jnp.arange(self.batch_size)
        self.per_eg_grads = jax.tree.map(
            lambda p: jnp.moveaxis(a * jnp.ones(p.shape + (self.batch_size,)), -1, 0),
            self.params,
        )

    def test_no_privacy(self):
        """l2_norm_clip=MAX_FLOAT32 and noise_multiplier=0 should recover SGD."""
        dp_agg = _differentially_private_aggregate(
            l2_norm_clip=jnp.finfo(jnp.float32).max, noise_multiplier=0.0, key=0
        )
        state = dp_agg.init(self.params)
        update_fn = jax.jit(dp_agg.update)
        mean_grads = jax.tree.map(lambda g: g.mean(0), self.per_eg_grads)

        for _ in range(3):
            updates, state = update_fn(self.per_eg_grads, state)
            test_utils.assert_trees_all_close(updates, mean_grads)

    @parameterized.parameters(0.5, 10.0, 20.0, 40.0, 80.0)
    def test_clipping_norm(self, l2_norm_clip):
        dp_agg = _differentially_private_aggregate(
            l2_norm_clip=l2_norm_clip, noise_multiplier=0.0, key=42
        )
        state = dp_agg.init(self.params)
        update_fn = jax.jit(dp_agg.update)

        # Shape of the three arrays below is (self.batch_size, )
        norms = [
            jnp.linalg.norm(g.reshape(self.batch_size, -1), axis=1)
            for g in jax.tree.leaves(self.per_eg_grads)
        ]
        global_norms = jnp.linalg.norm(jnp.stack(norms), axis=0)
        divisors = jnp.maximum(global_norms / l2_norm_clip, 1.0)
        # Since the values of all the parameters are the same within each example,
        # we can easily compute what the values should be:
        expected_val = jnp.mean(jnp.arange(self.batch_size) / divisors)
        expected_tree = jax.tree.map(lambda p: jnp.broadcast_to(expected_val, p.shape), self.params)

        for _ in range(3):
            updates, state = update_fn(self.per_eg_grads, state, self.params)
            test_utils.assert_trees_all_close(updates, expected_tree, rtol=2e-7)

    def test_aggregated_updates_as_input_fails(self):
        """Expect per-example gradients as input to this transform."""
        dp_agg = _differentially_private_aggregate(l2_norm_clip=0.1, noise_multiplier=1.1, key=2021)
        state = dp_agg.init(self.params)
        mean_grads = jax.tree.map(lambda g: g.mean(0), self.per_eg_grads)
        with self.assertRaises(ValueError):
            dp_agg.update(mean_grads, state, self.params)


if __name__ == "__main__":
    absltest.main()
