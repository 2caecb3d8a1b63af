"""Hyperparameter checks, stated once per name: :func:`set_hypers` and :class:`Bound`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from flr_nnx._contract import register_check
from flr_nnx._errors import HyperparameterError


@dataclasses.dataclass(frozen=True)
class Bound:
    r"""The range a scalar hyperparameter must lie in: :math:`[low, high)`, or :math:`[low, high]`.

    Attributes:
        low: the smallest valid value (inclusive).
        high: the bound above, or ``None`` for none.
        high_inclusive: whether ``high`` itself is valid.

    Example:
        >>> import flr_nnx as flr
        >>> flr.helpers.UNIT
        Bound(low=0.0, high=1.0, high_inclusive=False)
        >>> flr.helpers.bound_of("b1") == flr.helpers.UNIT
        True
    """

    low: float = 0.0
    high: float | None = None
    high_inclusive: bool = False


NONNEGATIVE = Bound()
"""``[0, inf)``: learning rates, epsilons, weight decays (any name not in :data:`BOUNDS`)."""

UNIT = Bound(high=1.0)
"""``[0, 1)``: decay rates of moving averages."""

UNIT_CLOSED = Bound(high=1.0, high_inclusive=True)
"""``[0, 1]``: decay rates where 1 (never forget) is allowed."""

BOUNDS: Mapping[str, Bound] = {
    "b1": UNIT,
    "b2": UNIT,
    "beta": UNIT,
    "momentum": UNIT,
    "adam_b1": UNIT,
    "adam_b2": UNIT,
    "decay": UNIT_CLOSED,
}
"""The bound of a hyperparameter by its name; a name not listed must be ``>= 0``."""


def bound_of(name: str, overrides: Mapping[str, Bound] | None = None) -> Bound:
    """The bound of hyperparameter ``name``: from ``overrides``, else :data:`BOUNDS`, else ``>= 0``.

    Args:
        name: the hyperparameter's name (its constructor argument and attribute).
        overrides: a class's own bounds (its ``hyper_bounds``).

    Returns:
        The :class:`Bound` that :func:`set_hypers` checks ``name`` against.

    Example:
        >>> import flr_nnx as flr
        >>> flr.helpers.bound_of("eps")
        Bound(low=0.0, high=None, high_inclusive=False)
        >>> flr.helpers.bound_of("momentum", {"momentum": flr.helpers.UNIT_CLOSED}).high_inclusive
        True
    """
    return (overrides or {}).get(name) or BOUNDS.get(name, NONNEGATIVE)


def check_hyper(
    name: str,
    value: Any,
    *,
    low: float = 0.0,
    high: float | None = None,
    high_inclusive: bool = False,
    optimizer: str,
) -> None:
    """Validates a scalar hyperparameter at construction (schedules and arrays are skipped).

    The check is remembered for ``optimizer``'s ``name``: a live hyperparameter
    (:func:`flr_nnx.hyper`) set later through ``flr.set_hyper`` or
    ``optimizer.opt`` passes it too. :func:`set_hypers` checks many at once, by name.

    Args:
        name: the hyperparameter's name.
        value: its value; only Python numbers are checked.
        low: the smallest valid value.
        high: the bound above, or ``None``.
        high_inclusive: whether ``high`` is valid.
        optimizer: the optimizer's class name, for the message.

    Raises:
        HyperparameterError: if ``value`` is out of range or not finite.

    Example:
        >>> import flr_nnx as flr
        >>> try:
        ...     flr.helpers.check_hyper("b1", 1.0, high=1.0, optimizer="Mine")
        ... except flr.HyperparameterError as error:
        ...     print(error)
        Mine(b1=1.0): expected b1 in [0.0, 1.0), got 1.0. Fix: pass a valid b1.
    """
    register_check(
        optimizer,
        name,
        lambda v: check_hyper(
            name, v, low=low, high=high, high_inclusive=high_inclusive, optimizer=optimizer
        ),
    )
    if callable(value) or not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if value < low or too_high or not math.isfinite(value):
        bound = (
            f"[{low}, {high}{']' if high_inclusive else ')'}" if high is not None else f">= {low}"
        )
        raise HyperparameterError(
            f"{optimizer}({name}={value!r}): expected {name} in {bound}, got {value!r}. "
            f"Fix: pass a valid {name}."
        )


def set_hypers(optimizer: Any, /, **values: Any) -> None:
    """Checks hyperparameters by name, in order, and sets them as attributes of ``optimizer``.

    Each value is checked against :func:`bound_of` its name, where the class may
    override :data:`BOUNDS` with a ``hyper_bounds`` class attribute (e.g.
    ``hyper_bounds = {"momentum": UNIT_CLOSED}``). ``None`` (an optional
    hyperparameter switched off) and schedules are set unchecked. The error
    names ``type(optimizer).__name__``.

    Args:
        optimizer: the optimizer being constructed (``self`` in ``__init__``).
        **values: the hyperparameters, by name.

    Raises:
        HyperparameterError: at the first value out of its bound.

    Example:
        >>> import flr_nnx as flr
        >>> class Mine(flr.optim.Optimizer):
        ...     def __init__(self, learning_rate=0.1, b1=0.9):
        ...         flr.helpers.set_hypers(self, learning_rate=learning_rate, b1=b1)
        >>> Mine().b1
        0.9
        >>> try:
        ...     Mine(b1=1.5)
        ... except flr.HyperparameterError as error:
        ...     print(error)
        Mine(b1=1.5): expected b1 in [0.0, 1.0), got 1.5. Fix: pass a valid b1.
    """
    cls = type(optimizer)
    overrides = getattr(cls, "hyper_bounds", None)
    for name, value in values.items():
        if value is not None:
            bound = bound_of(name, overrides)
            check_hyper(name, value, **dataclasses.asdict(bound), optimizer=cls.__name__)
        setattr(optimizer, name, value)
