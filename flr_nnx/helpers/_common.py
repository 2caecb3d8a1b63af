"""Arithmetic on one parameter: magnitudes, casts, scaling, and complex-number guards."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from flr_nnx._errors import ComplexParameterError

ScalarOrSchedule = float | jax.Array | Callable[[jax.Array], Any]


def abs_sq(x: jax.typing.ArrayLike) -> jax.Array:
    r"""The squared magnitude :math:`|x|^2 = \bar x x` of a (maybe complex) array, as a real array.

    Use it wherever an optimizer squares a gradient (second moments, sums of
    squares, RMS, norms): ``grad**2`` of a complex gradient is complex
    (:math:`g^2 \ne |g|^2`) and gives silently wrong steps. It is optax's
    ``numerics.abs_sq`` with the same operations in the same order,
    ``(x.conj() * x).real``, so it is bit-identical to optax on complex arrays;
    on real arrays it compiles to the same program as ``x * x`` or ``x**2``.

    Args:
        x: an array (real or complex).

    Returns:
        :math:`|x|^2`, elementwise, in the real dtype of ``x`` (``float32`` for
        ``complex64``).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> flr.helpers.abs_sq(jnp.array([3 + 4j, -2j], jnp.complex64))
        Array([25.,  4.], dtype=float32)
        >>> jnp.array([3 + 4j, -2j], jnp.complex64) ** 2  # not a magnitude
        Array([-7.+24.j, -4. +0.j], dtype=complex64)
    """
    x = jnp.asarray(x)
    return (x.conj() * x).real


def check_complex_state(
    optimizer: str,
    key: Any,
    grad: jax.Array,
    dtype: Any,
    argument: str,
    state: Any = None,
) -> None:
    """Refuses a real state ``dtype`` for a complex parameter (it would drop the imaginary part).

    optax casts the moment to the dtype it is given, which silently keeps only
    the real part of a complex moment: a wrong number, so flr_nnx raises instead.
    Given the ``state`` dict, it checks only at a step, once ``key`` has state:
    optax's ``init`` accepts the combination (its tests read the state's dtype),
    so init does too, and the first update raises.
    """
    if state is not None and key not in state:
        return
    if dtype is None or not jnp.iscomplexobj(grad) or jnp.issubdtype(dtype, jnp.complexfloating):
        return
    raise ComplexParameterError(
        f"{optimizer}({argument}={jnp.dtype(dtype).name}): parameter {key} is "
        f"{grad.dtype.name}, and a {jnp.dtype(dtype).name} state would drop the imaginary "
        f"part of its moment (optax does so silently). Fix: pass {argument}=None (the "
        f"parameter's dtype) or a complex dtype such as {argument}=jnp.complex64, or keep "
        "this parameter real."
    )


def cast(x: jax.Array, dtype: Any) -> jax.Array:
    """``x.astype(dtype)``; a complex ``x`` cast to a real dtype keeps its real part explicitly.

    Where a complex moment of a real parameter (``mu_dtype=jnp.complex64``)
    meets the parameter's dtype, its imaginary part is zero; JAX warns on the
    implicit cast, which optax leaves to ``apply_updates``.

    Args:
        x: an array.
        dtype: the dtype to cast to.

    Returns:
        ``x`` in ``dtype``.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> flr.helpers.cast(jnp.array([1.5 + 0j]), jnp.float32)
        Array([1.5], dtype=float32)
    """
    if jnp.iscomplexobj(x) and not jnp.issubdtype(dtype, jnp.complexfloating):
        x = jnp.real(x)
    return x.astype(dtype)


def reject_complex(optimizer: str, key: Any, grad: jax.Array, why: str, fix: str) -> None:
    """Raises :class:`ComplexParameterError` for a complex ``grad``: ``why`` it is undefined."""
    if jnp.iscomplexobj(grad):
        raise ComplexParameterError(
            f"{optimizer}: parameter {key} is {grad.dtype.name}, but {why}. Expected a real "
            f"parameter. Fix: {fix}"
        )


def scale(step_size: Any, update: jax.Array) -> jax.Array:
    """``step_size * update`` in the update's dtype (Python floats stay constants)."""
    if isinstance(step_size, (int, float)):
        return step_size * update
    return jnp.asarray(step_size, dtype=update.dtype) * update


def trust_ratio(
    param: jax.Array,
    update: jax.Array,
    trust_coefficient: float = 1.0,
    eps: float = 0.0,
    min_norm: float = 0.0,
) -> jax.Array:
    r"""The layer-wise trust ratio :math:`c \, \|\theta\| / (\|u\| + \epsilon)`, 1 if a norm is 0.

    Norms are over the whole parameter, clipped below at ``min_norm``; the ratio
    is 1 where either norm is exactly 0 (a parameter that would never move). The
    operations of ``optax.scale_by_trust_ratio``, in its order, so the scaled
    update ``update * trust_ratio(param, update)`` is bit-identical to it.

    Args:
        param: :math:`\theta`, the parameter.
        update: :math:`u`, its update so far.
        trust_coefficient: :math:`c`.
        eps: :math:`\epsilon`, added to the update's norm.
        min_norm: the smallest norm either side is taken to have.

    Returns:
        A scalar in the parameter's dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> flr.helpers.trust_ratio(jnp.array([3.0, 4.0]), jnp.array([0.0, 0.5]))
        Array(10., dtype=float32)
        >>> flr.helpers.trust_ratio(jnp.zeros(2), jnp.array([0.0, 0.5]))
        Array(1., dtype=float32)
    """
    param_norm = optax.safe_norm(param, min_norm)
    update_norm = optax.safe_norm(update, min_norm)
    ratio = trust_coefficient * param_norm / (update_norm + eps)
    zero_norm = jnp.logical_or(param_norm == 0.0, update_norm == 0.0)
    return jnp.where(zero_norm, jnp.array(1.0, dtype=param.dtype), ratio)
