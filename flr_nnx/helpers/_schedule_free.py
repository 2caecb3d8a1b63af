"""Schedule-free arithmetic: the averaging weight of a step, the step, the evaluation point.

Shared by :class:`flr_nnx.compose.ScheduleFree` and the schedule-free optimizers of
:mod:`flr_nnx.optim`, with the operations of ``optax.contrib.schedule_free`` in its order.
The optimizer holds ``b1``, ``state_dtype``, ``step_count`` (an int32 one), ``weight_sum``
and ``max_lr`` (``None`` until the first step gives them the parameters' lowest dtype,
and adds ``b1_eval``) and ``z``, a dict keyed by parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from flr_nnx._optimizer import Key
from flr_nnx.helpers._common import ScalarOrSchedule, cast


def schedule_free_weight(
    opt: Any, learning_rate: ScalarOrSchedule, weight_lr_power: float, params: Mapping[Key, Any]
) -> jax.Array:
    r"""This step's averaging weight :math:`c_t = \eta_{max}^p / \sum_{s \le t} \eta_{max,s}^p`.

    Reads a schedule at ``opt.step_count`` (1 at the first step, as optax), keeps the
    largest learning rate so far in ``opt.max_lr`` and the sum of weights in
    ``opt.weight_sum`` (created in the lowest dtype of ``params``, with ``opt.b1_eval``,
    :math:`\beta_1` in that dtype for :func:`schedule_free_eval`), and counts the step.
    A NaN weight gives a NaN :math:`c_t`; 0/0 (a zero learning rate) gives 0.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> class Mine(flr.optim.Optimizer):
        ...     def __init__(self):
        ...         self.step_count = jnp.ones([], jnp.int32)
        ...         self.b1, self.weight_sum, self.max_lr = 0.9, None, None
        >>> opt, params = Mine(), {("w",): jnp.zeros(2)}
        >>> [float(flr.helpers.schedule_free_weight(opt, 0.1, 2.0, params)) for _ in range(2)]
        [1.0, 0.5]
    """
    if opt.weight_sum is None:
        dtype = optax.tree.dtype(list(params.values()), "lowest")
        opt.weight_sum = jnp.zeros([], dtype)
        opt.max_lr = jnp.zeros([], dtype)
        # State, as optax's: a value read at run time, not a constant XLA folds into x.
        opt.b1_eval = jnp.asarray(opt.b1, dtype)
    lr = learning_rate
    if callable(learning_rate):
        lr = jnp.asarray(learning_rate(opt.step_count), dtype=opt.max_lr.dtype)
    max_lr = jnp.maximum(opt.max_lr, lr)
    opt.step_count = optax.safe_increment(opt.step_count)
    weight = max_lr**weight_lr_power
    total = opt.weight_sum + weight
    ck = jnp.where(
        jnp.logical_or(jnp.isnan(weight), jnp.isnan(total)),
        jnp.full(weight.shape, jnp.nan),
        jnp.nan_to_num(weight / total, nan=0.0, posinf=jnp.inf),
    )
    opt.weight_sum, opt.max_lr = total, max_lr
    return ck


def schedule_free_step(opt: Any, key: Key, param: jax.Array, step: jax.Array, ck: Any) -> jax.Array:
    r"""One schedule-free step of parameter ``key``: its update (positive = descent).

    With the base step :math:`d_t` (positive = descent), :math:`y_t` the parameter
    and :math:`\beta = ` ``opt.b1``:

    .. math::

        z_{t+1} = z_t - d_t, \quad x_t = (y_t - (1 - \beta) z_t) / \beta, \quad
        y_{t+1} = \beta \big((1 - c_t) x_t + c_t z_{t+1}\big) + (1 - \beta) z_{t+1}

    and the update is :math:`y_t - y_{t+1}`. ``opt.z[key]`` starts as the parameter
    (in ``opt.state_dtype``).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> class Mine(flr.optim.Optimizer):
        ...     def __init__(self):
        ...         self.b1, self.state_dtype, self.z = 0.5, None, {}
        >>> opt = Mine()
        >>> flr.helpers.schedule_free_step(opt, ("w",), jnp.ones(1), jnp.ones(1), 0.5)
        Array([0.75], dtype=float32)
    """
    z = opt.z.get(key)
    if z is None:
        z = param if opt.state_dtype is None else param.astype(opt.state_dtype)
    b1 = opt.b1
    new_z = jnp.asarray(z - step).astype(z.dtype)
    prev_x = (param - (1.0 - b1) * z) / b1
    x = (1.0 - ck) * prev_x + ck * new_z
    new_param = b1 * x + (1.0 - b1) * new_z
    opt.z[key] = new_z
    return cast(param - new_param, param.dtype)


def schedule_free_eval(opt: Any, params: Mapping[Key, jax.Array]) -> dict[Key, jax.Array]:
    r"""The evaluation point :math:`x = (y - (1 - \beta) z) / \beta` of the parameters ``y``.

    :math:`\beta` is ``opt.b1_eval``, ``b1`` in the parameters' lowest dtype, kept as
    state as optax keeps it (under ``jit`` a constant divisor becomes a multiplication);
    a key without ``z`` is returned as it is. For an optimizer's ``eval_params``.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> class Mine(flr.optim.Optimizer):
        ...     def __init__(self):
        ...         self.b1_eval, self.z = jnp.float32(0.5), {("w",): jnp.zeros(1)}
        >>> flr.helpers.schedule_free_eval(Mine(), {("w",): jnp.ones(1)})
        {('w',): Array([2.], dtype=float32)}
    """
    b1 = opt.b1_eval
    return {
        k: cast((p - (1.0 - b1) * opt.z[k]) / b1, p.dtype) if k in opt.z else p
        for k, p in params.items()
    }
