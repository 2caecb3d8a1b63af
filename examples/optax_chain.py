"""A hook optimizer inside ``optax.chain``, with gradient clipping and a learning-rate schedule.

Trains the same small NNX regression model with three chains under the stock
``nnx.Optimizer``:

1. ``clip_by_global_norm -> flr.as_optax(flr.optim.Adam(schedule))``: the
   library's Adam, with the schedule as its learning rate;
2. ``clip_by_global_norm -> flr.as_optax(TutorialAdam(η=1)) -> scale_by_schedule``:
   the tutorial's Adam with a unit step, scaled by the schedule from outside;
3. ``clip_by_global_norm -> optax.adam(schedule)``: optax alone, the reference.

Chain 1 is bit-identical to the reference; chain 2 agrees to float32 rounding.

    python examples/optax_chain.py [--steps N]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from tutorial_adam import Adam as TutorialAdam

import flr_nnx as flr


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(2, 32, rngs=rngs)
        self.out = nnx.Linear(32, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.gelu(self.hidden(x)))


def chains(steps: int, peak_lr: float = 3e-2, max_norm: float = 1.0) -> dict:
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak_lr, warmup_steps=steps // 10, decay_steps=steps
    )
    clip = optax.clip_by_global_norm(max_norm)
    return {
        "flr.optim.Adam(schedule)": optax.chain(clip, flr.as_optax(flr.optim.Adam(schedule))),
        # as_optax already returns optax-sign updates (to add): scale_by_schedule keeps
        # that sign, where scale_by_learning_rate would flip it a second time.
        "tutorial Adam + scale_by_schedule": optax.chain(
            clip, flr.as_optax(TutorialAdam(η=1.0)), optax.scale_by_schedule(schedule)
        ),
        "optax.adam(schedule)": optax.chain(clip, optax.adam(schedule)),
    }


def train(tx: optax.GradientTransformation, steps: int) -> list[float]:
    x = jax.random.uniform(jax.random.key(1), (256, 2), minval=-2.0, maxval=2.0)
    y = jnp.sin(x[:, :1]) * jnp.cos(x[:, 1:])
    model = MLP(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: ((m(x) - y) ** 2).mean())(model)
        optimizer.update(model, grads, value=loss)
        return loss

    return [float(train_step(model, optimizer)) for _ in range(steps)]


def main(steps: int = 300) -> dict[str, list[float]]:
    curves = {name: train(tx, steps) for name, tx in chains(steps).items()}
    names = list(curves)
    print(f"{'step':>6}  " + "  ".join(f"{name:>34}" for name in names))
    for i in sorted({0, *range(steps // 5, steps, steps // 5), steps - 1}):
        print(f"{i:>6}  " + "  ".join(f"{curves[n][i]:>34.6f}" for n in names))
    reference = curves["optax.adam(schedule)"]
    identical = curves["flr.optim.Adam(schedule)"] == reference
    deviation = max(
        abs(a - b) / b for a, b in zip(curves["tutorial Adam + scale_by_schedule"], reference)
    )
    print(f"\nflr.optim.Adam chain bit-identical to optax: {identical}")
    print(f"tutorial Adam chain, largest relative deviation from optax: {deviation:.2e}")
    return curves


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    main(parser.parse_args().steps)
