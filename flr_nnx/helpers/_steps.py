"""Per-step arithmetic: schedules and the step count, bias corrections, moving averages, norms.

The per-step scalars (a schedule's value, :math:`1 - \\beta^t`) belong in
``call_model``, computed once per step, as optax computes them once per tree:
computed in ``call_param`` instead, XLA fuses them into every parameter's loop
and rounds differently.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from flr_nnx._optimizer import Key
from flr_nnx.helpers._common import ScalarOrSchedule
from flr_nnx.helpers._mask import Mask


def value_at(value: ScalarOrSchedule, count: jax.Array) -> Any:
    r"""A hyperparameter's value at step ``count``: :math:`\eta_t = \eta(t)`, or the constant.

    Args:
        value: a number, an array, or a schedule (a callable of the step count).
        count: the number of steps taken so far (0 at the first step, as optax).

    Returns:
        ``value(count)`` for a schedule, else ``value`` itself (a Python float
        stays a constant of the compiled step).

    Example:
        >>> import jax.numpy as jnp, optax
        >>> import flr_nnx as flr
        >>> flr.helpers.value_at(optax.linear_schedule(1.0, 0.0, 10), jnp.int32(5))
        Array(0.5, dtype=float32)
        >>> flr.helpers.value_at(0.1, jnp.int32(5))
        0.1
    """
    return value(count) if callable(value) else value


def needs_count(*values: Any) -> bool:
    """Whether any of these hyperparameters is a schedule, which reads a step count.

    optax keeps a step count only where a schedule needs one, so the built-ins
    that have no bias correction do the same: their state and compiled step
    then match their twins'.

    Example:
        >>> import optax
        >>> import flr_nnx as flr
        >>> flr.helpers.needs_count(0.1, None)
        False
        >>> flr.helpers.needs_count(0.1, optax.constant_schedule(0.1))
        True
    """
    return any(callable(value) for value in values)


def advance(opt: Any, value: ScalarOrSchedule) -> Any:
    """``value`` at this step: a schedule reads ``opt.count`` and advances it; a number does not.

    For optimizers whose only per-step quantity is a schedule (SGD, Adagrad):
    their count exists only where :func:`needs_count` says so. An optimizer that
    always counts (for a bias correction) uses :func:`tick`.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> import flr_nnx as flr
        >>> class Mine(flr.optim.Optimizer):
        ...     pass
        >>> opt = Mine()
        >>> flr.helpers.advance(opt, 0.1), hasattr(opt, "count")
        (0.1, False)
        >>> flr.helpers.advance(opt, optax.linear_schedule(1.0, 0.0, 10)), opt.count
        (Array(1., dtype=float32), Array(1, dtype=int32))
    """
    if not callable(value):
        return value
    if "count" not in vars(opt):  # a schedule set after construction
        opt.count = jnp.zeros([], jnp.int32)
    return tick(opt, value)


def tick(opt: Any, *schedules: ScalarOrSchedule) -> Any:
    r"""Reads ``schedules`` at ``opt.count``, then counts this step: :math:`t \leftarrow t + 1`.

    optax's order: a schedule sees the steps taken *before* this one (0 at the
    first step), the bias corrections the count *after* it (1 at the first
    step). The count saturates instead of overflowing (``optax.safe_increment``).

    Args:
        opt: an optimizer with an int32 ``count`` array.
        *schedules: hyperparameters to read at this step.

    Returns:
        The value of the one schedule given, or a tuple of their values.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> import flr_nnx as flr
        >>> class Mine(flr.optim.Optimizer):
        ...     def __init__(self):
        ...         self.count = jnp.zeros([], jnp.int32)
        >>> opt = Mine()
        >>> lr, wd = flr.helpers.tick(opt, optax.linear_schedule(1.0, 0.0, 10), 0.5)
        >>> lr, wd, opt.count
        (Array(1., dtype=float32), 0.5, Array(1, dtype=int32))
    """
    values = tuple(value_at(schedule, opt.count) for schedule in schedules)
    opt.count = optax.safe_increment(opt.count)
    return values[0] if len(values) == 1 else values


def bias_correction(decay: float, count: jax.Array) -> jax.Array:
    r"""The bias correction :math:`1 - \beta^t` of a moving average that started at zero.

    Compute it once per step in ``call_model`` (see the module's note) and
    divide by it with :func:`debias`.

    Args:
        decay: :math:`\beta`, the average's decay rate.
        count: :math:`t`, the steps taken including this one.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> print(flr.helpers.bias_correction(0.9, jnp.int32(2)))
        0.19000006
    """
    return 1 - decay**count


def bias_corrections(
    count: jax.Array, b1: float, b2: float | None = None, *, nesterov: bool = False
) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
    r"""An Adam-like step's scalars :math:`1 - \beta_1^t, 1 - \beta_2^t, 1 - \beta_1^{t+1}`.

    Args:
        count: :math:`t`, the steps taken including this one (after :func:`tick`).
        b1: :math:`\beta_1`, the first moment's decay.
        b2: :math:`\beta_2`, the second moment's decay, or ``None`` for no second moment.
        nesterov: whether to compute :math:`1 - \beta_1^{t+1}` for :func:`debias_momentum`.

    Returns:
        ``(bc1, bc2, bc1_next)``, with ``None`` for those not asked for.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> bc1, bc2, bc1_next = flr.helpers.bias_corrections(jnp.int32(1), 0.9, 0.999)
        >>> print(bc1, bc2, bc1_next)
        0.100000024 0.0009999871 None
    """
    bc1 = bias_correction(b1, count)
    bc2 = None if b2 is None else bias_correction(b2, count)
    bc1_next = bias_correction(b1, optax.safe_increment(count)) if nesterov else None
    return bc1, bc2, bc1_next


def debias(moment: jax.Array, correction: jax.Array) -> jax.Array:
    r"""A bias-corrected moment :math:`\hat m_t = m_t / (1 - \beta^t)`, in the moment's dtype.

    Args:
        moment: :math:`m_t`.
        correction: :math:`1 - \beta^t` from :func:`bias_correction`.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> bc = flr.helpers.bias_correction(0.9, jnp.int32(1))
        >>> flr.helpers.debias(jnp.array([0.1, 0.2]), bc)
        Array([0.9999998, 1.9999996], dtype=float32)
    """
    return moment / correction.astype(moment.dtype)


def debias_momentum(
    mu: jax.Array,
    grad: jax.Array,
    b1: float,
    bc1: jax.Array,
    bc1_next: jax.Array | bool | None = None,
) -> jax.Array:
    r"""The bias-corrected first moment, in Nesterov's form when ``bc1_next`` is given.

    .. math::

        \hat m_t = \frac{m_t}{1 - \beta_1^t}
        \quad\text{or, with Nesterov,}\quad
        \hat m_t = \beta_1 \frac{m_t}{1 - \beta_1^{t+1}} + (1 - \beta_1) \frac{g_t}{1 - \beta_1^t}

    with optax's operations in optax's order (``optax.scale_by_adam``'s ``nesterov``).

    Args:
        mu: :math:`m_t`, the first moment after this step's update.
        grad: :math:`g_t`.
        b1: :math:`\beta_1`.
        bc1: :math:`1 - \beta_1^t`.
        bc1_next: :math:`1 - \beta_1^{t+1}`, or ``None`` (or ``False``) for the plain correction.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> bc1, _, bc1_next = flr.helpers.bias_corrections(jnp.int32(1), 0.9, nesterov=True)
        >>> g = jnp.array([1.0])
        >>> mu = flr.helpers.ema(jnp.zeros(1), g, 0.9)
        >>> flr.helpers.debias_momentum(mu, g, 0.9, bc1)
        Array([0.99999976], dtype=float32)
        >>> flr.helpers.debias_momentum(mu, g, 0.9, bc1, bc1_next)
        Array([1.4736838], dtype=float32)
    """
    if bc1_next is None or bc1_next is False:
        return debias(mu, bc1)
    return b1 * debias(mu, bc1_next) + (1 - b1) * debias(grad, bc1)


def ema(average: jax.Array, value: jax.Array, decay: float) -> jax.Array:
    r"""One step of an exponential moving average: :math:`(1 - \beta)\, x_t + \beta\, a_{t-1}`.

    The operations of optax's ``update_moment``, in its order, so it is
    bit-identical. Pass ``abs_sq(grad)`` as ``value`` for a second moment.

    Args:
        average: :math:`a_{t-1}`.
        value: :math:`x_t`.
        decay: :math:`\beta` (a number, or a per-step scalar array).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> flr.helpers.ema(jnp.array([1.0]), jnp.array([3.0]), 0.5)
        Array([2.], dtype=float32)
    """
    return (1 - decay) * value + decay * average


def sum_of_squares(arrays: Iterable[jax.Array]) -> jax.Array:
    r"""The squared global norm :math:`\sum_k \sum_i |x_{k,i}|^2` over several arrays.

    Summed per array, then across arrays from 0 in the given order: the exact
    sequence of ``optax.tree.norm``, so it is bit-identical (complex arrays
    too). Give the values of a hook's ``grads`` (they are in key order, as
    optax's leaves).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> flr.helpers.sum_of_squares([jnp.array([3.0]), jnp.array([4j])])
        Array(25., dtype=float32)
    """
    total = 0
    for x in arrays:
        total = total + jnp.sum(jnp.square(x.real) + jnp.square(x.imag))
    return jnp.asarray(total)


def global_norm(tree: Mapping[Key, jax.Array]) -> jax.Array:
    r"""The global norm :math:`\|g\| = \sqrt{\sum_k \sum_i |g_{k,i}|^2}` of a hook's ``grads``.

    Bit-identical to ``optax.tree.norm`` (see :func:`sum_of_squares`).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> flr.helpers.global_norm({("a",): jnp.array([3.0]), ("b",): jnp.array([4.0])})
        Array(5., dtype=float32)
    """
    return jnp.sqrt(sum_of_squares(tree.values()))


def is_zero(value: Any) -> bool:
    """Whether ``value`` is a constant zero (a schedule or an array never is, even if zero).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> flr.helpers.is_zero(0.0), flr.helpers.is_zero(jnp.zeros(())), flr.helpers.is_zero(1e-4)
        (True, False, False)
    """
    return isinstance(value, (int, float)) and value == 0.0


def decayed(weight_decay: ScalarOrSchedule, mask: Mask, grads: Mapping[Key, Any]) -> frozenset[Key]:
    r"""The keys that take weight decay :math:`\lambda_t \theta` this step: the decay rule.

    ``mask`` selects the keys, as ``optax.masked`` does at every step (so a
    mask that does not fit the parameters is an error whatever the decay); a
    constant zero ``weight_decay`` selects none, as optax skips ``+ 0 * param``
    altogether. Compute it in ``call_model``, then in ``call_param``:
    ``if key in self.decayed: update = update + self.wd_t * param``.

    Args:
        weight_decay: :math:`\lambda`, a number or a schedule.
        mask: a :class:`Mask`.
        grads: the hook's gradients (only their keys are read, or the tree for
            an optax-style callable mask).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> mask = flr.helpers.Mask(flr.helpers.key_mask(lambda key: key[-1] != "bias"))
        >>> grads = {("kernel",): jnp.ones(2), ("bias",): jnp.ones(2)}
        >>> sorted(flr.helpers.decayed(0.1, mask, grads))
        [('kernel',)]
        >>> sorted(flr.helpers.decayed(0.0, mask, grads))
        []
    """
    selected = mask.select(grads)
    return frozenset() if is_zero(weight_decay) else selected


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
