"""Train a small CNN on scikit-learn's digits with the tutorial's Adam, through NNXOptimizer.

The digits data set (1797 grey 8x8 images of the digits 0-9) ships with
scikit-learn, so nothing is downloaded. The same network, from the same
initialisation and on the same batches, is trained three times: with the
tutorial's hook Adam (``examples/tutorial_adam.py``) through ``flr.NNXOptimizer``,
with the library's ``flr.optim.Adam``, and with ``optax.adam`` under
``nnx.Optimizer``. It prints the test accuracies and writes a PNG of the three
loss curves.

    python examples/train_digits.py [--epochs 20] [--plot docs/_static/digits_loss.png]
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax
import matplotlib
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm
from tutorial_adam import Adam as TutorialAdam

import flr_nnx as flr

matplotlib.use("Agg")  # no display needed: the figure only goes to a file
import matplotlib.pyplot as plt

DEFAULT_PLOT = pathlib.Path(__file__).resolve().parents[1] / "docs" / "_static" / "digits_loss.png"


class CNN(nnx.Module):
    """Two 3x3 convolutions with average pooling, then two dense layers."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 32, (3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(32, 64, (3, 3), rngs=rngs)
        self.hidden = nnx.Linear(2 * 2 * 64, 128, rngs=rngs)
        self.out = nnx.Linear(128, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.avg_pool(nnx.relu(self.conv1(x)), (2, 2), strides=(2, 2))  # 8x8 -> 4x4
        x = nnx.avg_pool(nnx.relu(self.conv2(x)), (2, 2), strides=(2, 2))  # 4x4 -> 2x2
        x = x.reshape(x.shape[0], -1)
        return self.out(nnx.relu(self.hidden(x)))


def load(test_size: float = 0.2, seed: int = 0, limit: int | None = None):
    """Images scaled to [0, 1] with a channel axis, and labels; split into train and test."""
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    labels = digits.target.astype(np.int32)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return train_test_split(images, labels, test_size=test_size, random_state=seed, stratify=labels)


def loss_fn(model: CNN, x: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


@nnx.jit
def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads, loss=loss)
    return loss


@nnx.jit
def accuracy(model, x, y):
    return (model(x).argmax(axis=-1) == y).mean()


def train(name, make_optimizer, data, *, epochs, batch_size, seed, progress):
    """Trains a fresh CNN; returns the per-step losses and the test accuracy."""
    x_train, x_test, y_train, y_test = data
    model = CNN(nnx.Rngs(seed))
    optimizer = make_optimizer(model)
    order = np.random.default_rng(seed)  # the same batches for every optimizer
    steps_per_epoch = len(x_train) // batch_size
    losses = []
    with tqdm(total=epochs * steps_per_epoch, desc=f"{name:>30}", disable=not progress) as bar:
        for _ in range(epochs):
            perm = order.permutation(len(x_train))
            for i in range(steps_per_epoch):
                batch = perm[i * batch_size : (i + 1) * batch_size]
                loss = train_step(model, optimizer, x_train[batch], y_train[batch])
                losses.append(float(loss))
                bar.update()
                if len(losses) % 20 == 0:
                    bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
    return losses, float(accuracy(model, x_test, y_test))


def plot(curves: dict[str, list[float]], path: pathlib.Path, steps_per_epoch: int) -> None:
    reference = np.asarray(curves["optax.adam"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for (name, curve), style in zip(curves.items(), ["-", "--", ":"], strict=True):
        left.plot(curve, style, label=name, linewidth=1.5)
        if name != "optax.adam":
            right.plot(np.abs(np.asarray(curve) - reference) + 1e-12, style, label=name)
    left.set(
        yscale="log",
        xlabel="step",
        ylabel="training loss (one batch)",
        title="Loss curves on digits",
    )
    right.set(
        yscale="log",
        xlabel="step",
        ylabel="|loss - optax.adam loss| + 1e-12",
        title="Deviation from optax.adam",
    )
    for ax in (left, right):
        ax.legend()
        ax.grid(alpha=0.3)
    epochs = len(reference) // steps_per_epoch
    fig.suptitle(f"CNN on scikit-learn digits, {epochs} epochs of {steps_per_epoch} steps")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    plot_path: str | pathlib.Path = DEFAULT_PLOT,
    limit: int | None = None,
    progress: bool = True,
) -> dict:
    """Trains with the three Adams, prints the accuracies and writes the plot.

    Args:
        epochs: passes over the training set.
        batch_size: examples per step.
        lr: the learning rate of all three optimizers.
        seed: seeds the initialisation, the split and the batch order.
        plot_path: where to write the PNG of the loss curves.
        limit: use only the first ``limit`` images (for quick runs).
        progress: show tqdm progress bars.

    Returns:
        ``{"curves": {name: losses}, "accuracy": {name: test accuracy},
        "seconds": wall time, "plot": path}``.
    """
    start = time.perf_counter()
    data = load(seed=seed, limit=limit)
    runs = {
        "tutorial Adam (NNXOptimizer)": lambda m: flr.NNXOptimizer(
            m, TutorialAdam(lr), wrt=nnx.Param
        ),
        "flr.optim.Adam (NNXOptimizer)": lambda m: flr.NNXOptimizer(
            m, flr.optim.Adam(lr), wrt=nnx.Param
        ),
        "optax.adam": lambda m: nnx.Optimizer(m, optax.adam(lr), wrt=nnx.Param),
    }
    curves, accuracies = {}, {}
    settings = dict(epochs=epochs, batch_size=batch_size, seed=seed, progress=progress)
    for name, make in runs.items():
        curves[name], accuracies[name] = train(name, make, data, **settings)
    seconds = time.perf_counter() - start
    plot_path = pathlib.Path(plot_path)
    plot(curves, plot_path, steps_per_epoch=len(data[0]) // batch_size)
    print(f"{len(data[0])} training and {len(data[1])} test images, {epochs} epochs")
    for name in runs:
        print(
            f"{name:>32}: final loss {curves[name][-1]:.4f}, test accuracy {accuracies[name]:.2%}"
        )
    print(f"trained three times in {seconds:.1f} s; loss curves written to {plot_path}")
    return {"curves": curves, "accuracy": accuracies, "seconds": seconds, "plot": plot_path}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default=str(DEFAULT_PLOT), help="where to write the PNG")
    args = parser.parse_args()
    main(args.epochs, args.batch_size, args.lr, args.seed, args.plot)
