"""Per-step values of several hyperparameters that only count steps for a schedule."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from flr_nnx.helpers._common import ScalarOrSchedule
from flr_nnx.helpers._steps import needs_count, tick


def advance_all(opt: Any, *values: ScalarOrSchedule) -> tuple[Any, ...]:
    """``values`` at this step, all read at the same ``opt.count``, which advances once.

    :func:`~flr_nnx.helpers.advance` for several hyperparameters (a learning
    rate and a weight decay): optax keeps one count per schedule, all equal, so
    one count read by all of them is the same. Without a schedule there is no
    count (as in optax) and the values are returned as they are.

    Returns:
        A tuple of the values, in the given order.

    Example:
        >>> import optax
        >>> import flr_nnx as flr
        >>> class Mine(flr.optim.Optimizer):
        ...     pass
        >>> opt = Mine()
        >>> flr.helpers.advance_all(opt, 0.1, 0.5), hasattr(opt, "count")
        ((0.1, 0.5), False)
        >>> lr, wd = flr.helpers.advance_all(opt, 0.1, optax.linear_schedule(1.0, 0.0, 10))
        >>> lr, wd, opt.count
        (0.1, Array(1., dtype=float32), Array(1, dtype=int32))
    """
    if not needs_count(*values):
        return values
    if "count" not in vars(opt):  # a schedule set after construction
        opt.count = jnp.zeros([], jnp.int32)
    read = tick(opt, *values)
    return read if len(values) > 1 else (read,)
