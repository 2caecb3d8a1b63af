"""L-BFGS with a line search, in plain Flax NNX code, against optax.lbfgs.

``flr.optim.LBFGS`` is a small hook class (the two-loop recursion in its hooks,
optax's zoom line search re-evaluating the loss through ``value_fn``). Here it
trains a small network to fit a curve with the whole data set as one batch,
as L-BFGS is meant to be used, through ``flr.NNXOptimizer`` with the very call
``nnx.Optimizer`` takes for a line search:
``optimizer.update(model, grads, grad=grads, value=loss, value_fn=...)``.
Next to it: ``optax.lbfgs`` under ``nnx.Optimizer`` (the twin: the loss curves
must be identical), and Adam, a first-order optimizer, for scale. It writes a
PNG of the three loss curves.

    python examples/lbfgs_nnx.py [--steps 100] [--plot docs/_static/lbfgs_loss.png]
"""

from __future__ import annotations

import argparse
import pathlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import matplotlib
import optax
from flax import nnx

import flr_nnx as flr

matplotlib.use("Agg")  # no display needed: the figure only goes to a file
import matplotlib.pyplot as plt

DEFAULT_PLOT = pathlib.Path(__file__).resolve().parents[1] / "docs" / "_static" / "lbfgs_loss.png"


class MLP(nnx.Module):
    """1 -> 32 -> 32 -> 1, tanh."""

    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(1, 32, rngs=rngs)
        self.middle = nnx.Linear(32, 32, rngs=rngs)
        self.out = nnx.Linear(32, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(jnp.tanh(self.middle(jnp.tanh(self.hidden(x)))))


def data(n: int = 256) -> tuple[jax.Array, jax.Array]:
    x = jnp.linspace(-3.0, 3.0, n)[:, None]
    return x, jnp.sin(2.0 * x) + 0.3 * x


def train(
    make_optimizer: Callable[[nnx.Module], nnx.Optimizer | flr.NNXOptimizer],
    steps: int,
    line_search: bool,
) -> list[float]:
    """Trains a fresh model (same initialisation every time); returns the loss per step."""
    model = MLP(nnx.Rngs(0))
    optimizer = make_optimizer(model)
    x, y = data()

    def loss_fn(model: MLP) -> jax.Array:
        return jnp.mean((model(x) - y) ** 2)

    @nnx.jit
    def step(model: MLP, optimizer) -> jax.Array:
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        if line_search:
            graphdef, _, rest = nnx.split(model, nnx.Param, ...)

            def value_fn(params: nnx.State) -> jax.Array:  # the loss at trial parameters
                return loss_fn(nnx.merge(graphdef, params, rest))

            optimizer.update(model, grads, grad=grads, value=loss, value_fn=value_fn)
        else:
            optimizer.update(model, grads)
        return loss

    return [float(step(model, optimizer)) for _ in range(steps)]


def main(steps: int = 100, plot_path: str | pathlib.Path | None = DEFAULT_PLOT) -> dict:
    """Trains with the three optimizers, prints the final losses and writes the plot.

    Returns:
        ``{"curves": {name: losses}, "plot": path or None}``.
    """
    curves = {
        "optax.lbfgs (nnx.Optimizer)": train(
            lambda m: nnx.Optimizer(m, optax.lbfgs(), wrt=nnx.Param), steps, line_search=True
        ),
        "flr.optim.LBFGS (NNXOptimizer)": train(
            lambda m: flr.NNXOptimizer(m, flr.optim.LBFGS(), wrt=nnx.Param),
            steps,
            line_search=True,
        ),
        "flr.optim.Adam(1e-2) (NNXOptimizer)": train(
            lambda m: flr.NNXOptimizer(m, flr.optim.Adam(1e-2), wrt=nnx.Param),
            steps,
            line_search=False,
        ),
    }
    for name, curve in curves.items():
        print(f"{name:38s} loss {curve[0]:.4f} -> {curve[-1]:.3e} in {steps} steps")
    same = curves["flr.optim.LBFGS (NNXOptimizer)"] == curves["optax.lbfgs (nnx.Optimizer)"]
    print(f"flr.optim.LBFGS and optax.lbfgs give identical losses at every step: {same}")
    if plot_path is not None:
        plot_path = pathlib.Path(plot_path)
        fig, ax = plt.subplots(figsize=(7, 4.2))
        styles = {"optax": ("tab:gray", "-", 4.0), "flr.optim.LBFGS": ("tab:blue", "--", 1.6)}
        for name, curve in curves.items():
            color, ls, lw = next(
                (s for k, s in styles.items() if name.startswith(k)), ("tab:orange", "-", 1.6)
            )
            ax.plot(range(1, steps + 1), curve, color=color, ls=ls, lw=lw, label=name)
        ax.set_yscale("log")
        ax.set_xlabel("step (one full-batch gradient each, plus the line search's evaluations)")
        ax.set_ylabel("mean squared error")
        ax.set_title("Fitting sin(2x) + 0.3x with a 1-32-32-1 tanh MLP in Flax NNX")
        ax.legend()
        fig.tight_layout()
        plot_path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(plot_path, dpi=110)
        plt.close(fig)
        print(f"wrote {plot_path}")
    return {"curves": curves, "plot": plot_path}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--plot", type=pathlib.Path, default=DEFAULT_PLOT)
    args = parser.parse_args()
    main(steps=args.steps, plot_path=args.plot)
