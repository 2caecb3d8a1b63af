"""A new optimizer in about twenty lines: Adan, proven bit-identical to ``optax.adan``.

Adan (Xie et al., 2022, https://arxiv.org/abs/2208.06677) keeps three moving
averages per parameter -- of the gradient, of the gradient's change since the
previous step, and of a squared Nesterov-style extrapolation -- so it needs the
previous gradient as state too:

    m_t = (1 - b1) g_t + b1 m_{t-1}
    v_t = (1 - b2) (g_t - g_{t-1}) + b2 v_{t-1}                (g_0 - g_{-1} := 0)
    n_t = (1 - b3) (g_t + (1 - b2)(g_t - g_{t-1}))^2 + b3 n_{t-1}
    u_t = (m̂_t + (1 - b2) v̂_t) / (sqrt(n̂_t + eps_root) + eps) + wd θ_{t-1}
    θ_t = θ_{t-1} - lr u_t

where the hats are bias corrections. The class below is written in optax's order
of operations, so ``flr.testing.assert_matches`` finds it bit-identical to
``optax.adan`` through both bridges; then it trains a small NNX model.

    python examples/custom_optimizer.py [--steps N]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import flr_nnx as flr


class Adan(flr.optim.Optimizer):
    def __init__(self, learning_rate, b1=0.98, b2=0.92, b3=0.99, eps=1e-8, eps_root=1e-8,
                 weight_decay=0.0):  # fmt: skip
        self.lr, self.b1, self.b2, self.b3 = learning_rate, b1, b2, b3
        self.eps, self.eps_root, self.weight_decay = eps, eps_root, weight_decay
        self.m, self.v, self.n, self.prev = {}, {}, {}, {}
        self.t = jnp.zeros([], jnp.int32)

    def call_model(self, grads, **_):
        self.first = self.t == 0  # no previous gradient at the first step
        self.t = optax.safe_increment(self.t)
        self.bc = [1 - b**self.t for b in (self.b1, self.b2, self.b3)]  # once per step
        return grads

    def call_param(self, key, grad, param):
        if key not in self.m:
            for state in (self.m, self.v, self.n, self.prev):
                state[key] = jnp.zeros_like(grad)
        diff = jnp.where(self.first, jnp.zeros_like(grad), grad - self.prev[key])
        self.m[key] = (1 - self.b1) * grad + self.b1 * self.m[key]
        self.v[key] = (1 - self.b2) * diff + self.b2 * self.v[key]
        self.n[key] = (1 - self.b3) * (grad + (1 - self.b2) * diff) ** 2 + self.b3 * self.n[key]
        self.prev[key] = grad
        m, v, n = (s[key] / c.astype(grad.dtype) for s, c in zip((self.m, self.v, self.n), self.bc))
        update = (m + (1 - self.b2) * v) / (jnp.sqrt(n + self.eps_root) + self.eps)
        if self.weight_decay:  # optax skips a zero decay entirely (keeps the sign of 0)
            update = update + self.weight_decay * param
        return self.lr * update  # positive means descent


def check(steps: int = 20, bridges=("optax", "nnx")) -> list[flr.testing.MatchReport]:
    """Adan against optax.adan, bit for bit, through the bridges and with two settings."""
    params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.zeros(4)}
    reports = []
    for kwargs in ({}, {"b2": 0.9, "weight_decay": 1e-2}):
        for bridge in bridges:
            report = flr.testing.assert_matches(
                Adan(1e-2, **kwargs),
                optax.adan(1e-2, **kwargs),
                params,
                steps=steps,
                bridge=bridge,
            )  # raises flr.testing.MismatchError at the first difference
            assert report.bit_identical, report
            reports.append(report)
    return reports


def train(make_optimizer, steps: int) -> list[float]:
    x = jax.random.normal(jax.random.key(0), (128, 3))
    y = jnp.tanh(x @ jnp.array([[1.0], [-2.0], [0.5]]))
    model = nnx.Sequential(
        nnx.Linear(3, 32, rngs=nnx.Rngs(0)), nnx.relu, nnx.Linear(32, 1, rngs=nnx.Rngs(1))
    )
    optimizer = make_optimizer(model)

    @nnx.jit
    def train_step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: ((m(x) - y) ** 2).mean())(model)
        optimizer.update(model, grads, loss=loss)
        return loss

    return [float(train_step(model, optimizer)) for _ in range(steps)]


def main(steps: int = 200, check_steps: int = 20, bridges=("optax", "nnx")) -> dict:
    reports = check(check_steps, bridges)
    for report in reports:
        print(f"assert_matches(Adan, optax.adan): {report}")
    ours = train(lambda m: flr.NNXOptimizer(m, Adan(1e-2), wrt=nnx.Param), steps)
    theirs = train(lambda m: nnx.Optimizer(m, optax.adan(1e-2), wrt=nnx.Param), steps)
    print(f"training loss with Adan:       {ours[0]:.5f} -> {ours[-1]:.5f}")
    print(f"training loss with optax.adan: {theirs[0]:.5f} -> {theirs[-1]:.5f}")
    print(f"identical loss curves over {steps} steps: {ours == theirs}")
    return {"reports": reports, "adan": ours, "optax.adan": theirs}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    main(parser.parse_args().steps)
