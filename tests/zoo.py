"""The one table of optimizers under test: every property test is driven by it.

Each entry: a name, a factory of the hook optimizer, the optax twin, and whether
the two are expected to be bit-identical under jit on CPU (else: the reason and
the per-step relative tolerance). Add new optimizers here, in your section.

Per-entry test settings in ``extra`` (read by tests/test_zoo.py; all optional):

- ``"converge"``: factory of the hook optimizer for the convergence tests
  (parabola and Rosenbrock); default ``make``.
- ``"rosenbrock"``: factory for Rosenbrock only; default ``extra["converge"]``.
- ``"converge_steps"``: training steps for both problems; default 2000. Passing:
  final loss < 1e-3 x initial on the parabola, < 1e-2 x initial on Rosenbrock.
- ``"bf16_rtol"``: per-step relative tolerance in bfloat16 for an entry that is
  bit-identical in float32 only (say why in ``why_not_bit_identical``).

``needs_loss=True`` passes the loss as optax's ``value=`` to both sides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import optax

import flr_nnx as flr


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    make: Callable[[], flr.optim.Optimizer]
    twin: Callable[[], optax.GradientTransformation]
    bit_identical: bool = True
    why_not_bit_identical: str = ""
    rtol: float = 1e-6
    needs_loss: bool = False
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


ZOO: list[Entry] = [
    Entry("Adam", lambda: flr.optim.Adam(1e-2), lambda: optax.adam(1e-2)),
    # -- section A: SGD, AdamW, NAdam, NAdamW, Adamax, AMSGrad, AdaBelief, RAdam, Lion, SignSGD
    Entry(
        "SGD",
        lambda: flr.optim.SGD(1e-2, momentum=0.9, nesterov=True),
        lambda: optax.sgd(1e-2, momentum=0.9, nesterov=True),
        extra={"rosenbrock": lambda: flr.optim.SGD(1e-3, momentum=0.9, nesterov=True)},
    ),
    Entry(
        "AdamW",  # "no weight decay on biases and norms": one key predicate, valid for optax too
        lambda: flr.optim.AdamW(
            1e-2,
            weight_decay=0.1,
            mask=flr.optim.key_mask(lambda k: k[-1] not in ("bias", "scale")),
        ),
        lambda: optax.adamw(
            1e-2,
            weight_decay=0.1,
            mask=flr.optim.key_mask(lambda k: k[-1] not in ("bias", "scale")),
        ),
        # weight decay moves the minimum: convergence is checked without it
        extra={"converge": lambda: flr.optim.AdamW(1e-2, weight_decay=0.0)},
    ),
    Entry(
        "NAdam",
        lambda: flr.optim.NAdam(1e-2, eps_root=1e-8),
        lambda: optax.nadam(1e-2, eps_root=1e-8),
    ),
    Entry(
        "NAdamW",  # a schedule, and optax's callable mask convention
        lambda: flr.optim.NAdamW(
            optax.warmup_cosine_decay_schedule(0.0, 1e-2, 10, 1000),
            weight_decay=0.05,
            mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p),
        ),
        lambda: optax.nadamw(
            optax.warmup_cosine_decay_schedule(0.0, 1e-2, 10, 1000),
            weight_decay=0.05,
            mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p),
        ),
        extra={"converge": lambda: flr.optim.NAdamW(1e-2, weight_decay=0.0)},
    ),
    Entry("Adamax", lambda: flr.optim.Adamax(1e-2), lambda: optax.adamax(1e-2)),
    Entry(
        "AMSGrad",
        lambda: flr.optim.AMSGrad(1e-2, mu_dtype="bfloat16"),
        lambda: optax.amsgrad(1e-2, mu_dtype="bfloat16"),
    ),
    Entry(
        "AdaBelief",
        lambda: flr.optim.AdaBelief(1e-2, nesterov=True),
        lambda: optax.adabelief(1e-2, nesterov=True),
    ),
    Entry(
        "RAdam",
        lambda: flr.optim.RAdam(1e-2, nesterov=True),
        lambda: optax.radam(1e-2, nesterov=True),
        # its first steps are momentum SGD, which 1e-2 makes diverge on Rosenbrock (optax too)
        extra={
            "rosenbrock": lambda: flr.optim.RAdam(3e-3, nesterov=True),
            "converge_steps": 4000,
        },
    ),
    Entry(
        "Lion",
        lambda: flr.optim.Lion(
            3e-3, mu_dtype="bfloat16", mask=flr.optim.key_mask(lambda k: k[-1] != "bias")
        ),
        lambda: optax.lion(
            3e-3, mu_dtype="bfloat16", mask=flr.optim.key_mask(lambda k: k[-1] != "bias")
        ),
        # sign updates need a decaying step to settle; weight decay moves the minimum
        extra={
            "converge": lambda: flr.optim.Lion(
                optax.exponential_decay(3e-2, 300, 0.5), weight_decay=0.0
            )
        },
    ),
    Entry(
        "SignSGD",
        lambda: flr.optim.SignSGD(optax.exponential_decay(1e-2, 500, 0.5)),
        lambda: optax.sign_sgd(optax.exponential_decay(1e-2, 500, 0.5)),
        extra={"converge_steps": 4000},  # sign steps zigzag down Rosenbrock's valley
    ),
    # -- end of section A
    # -- section B: RMSProp, Adagrad, Adafactor, LAMB, PolyakSGD, Muon, building blocks
    # -- end of section B
]
