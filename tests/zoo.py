"""The one table of optimizers under test: every property test is driven by it.

Each entry: a name, a factory of the hook optimizer, the optax twin, and whether
the two are expected to be bit-identical under jit on CPU (else: the reason and
the per-step relative tolerance). Add new optimizers here, in your section.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

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
    # -- end of section A
    # -- section B: RMSProp, Adagrad, Adafactor, LAMB, PolyakSGD, Muon, building blocks
    # -- end of section B
]
