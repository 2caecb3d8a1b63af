"""Any optax transformation as a hook optimizer."""

from __future__ import annotations

from typing import Literal

import jax.numpy as jnp
import optax

from flr_nnx._errors import HyperparameterError, Missing
from flr_nnx._optimizer import Optimizer

Sign = Literal["auto", "gradient", "update"]


def _probe_sign(tx: optax.GradientTransformationExtraArgs) -> str:
    """Tells a gradient-like transformation from a full optimizer.

    A gradient-like one (``clip_by_global_norm``, ``scale_by_adam``) keeps the
    sign of a positive gradient; a full optimizer (``optax.adam``) ends with
    ``-learning_rate`` and flips it.
    """
    params = {"probe": jnp.zeros((), jnp.float32)}
    grads = {"probe": jnp.ones((), jnp.float32)}
    try:
        out, _ = tx.update(grads, tx.init(params), params, value=jnp.ones((), jnp.float32))
        value = float(out["probe"])
    except Exception as error:
        raise HyperparameterError(
            f"from_optax could not tell whether {tx} returns gradients or updates "
            f"(probing it raised {type(error).__name__}: {error}). Fix: pass "
            "sign='gradient' (it transforms gradients, like clip_by_global_norm) or "
            "sign='update' (it is a full optimizer, like optax.adam)."
        ) from error
    if value > 0:
        return "gradient"
    if value < 0:
        return "update"
    raise HyperparameterError(
        f"from_optax could not tell whether {tx} returns gradients or updates (its output "
        "on a probe gradient of 1 is 0). Fix: pass sign='gradient' or sign='update'."
    )


class FromOptax(Optimizer):
    r"""Wraps an optax transformation as a hook optimizer, e.g. to sit in a :class:`Chain`.

    Hook optimizers pass on *descent directions* (positive means descent), optax
    passes on gradients and returns *updates to add*. A gradient-like
    transformation (clipping, ``scale_by_adam``) is used as is; a full optimizer
    (anything ending with ``-learning_rate``, like ``optax.adam``) is negated.
    ``sign='auto'`` tells them apart by probing the transformation once with a
    scalar gradient of 1.

    .. math::

        u = \sigma \cdot \mathrm{tx}(g), \quad \sigma = -1 \text{ for full optimizers, else } 1

    The transformation sees the parameters as a list of arrays in key order, so
    pytree-shaped arguments of ``tx`` (such as a mask tree) do not apply; use a
    callable mask or a hook-level mask instead. The optax state lives in
    ``self.tx_state`` and is discovered like any other state.

    Args:
        tx: an ``optax.GradientTransformation``.
        sign: ``'auto'``, ``'gradient'`` or ``'update'`` (see above).

    Example:
        >>> import jax.numpy as jnp, optax
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.from_optax(optax.sgd(0.1)))
        >>> params = {"w": jnp.ones(2)}
        >>> updates, _ = tx.update({"w": jnp.ones(2)}, tx.init(params), params)
        >>> updates["w"]
        Array([-0.1, -0.1], dtype=float32)
    """

    def __init__(self, tx: optax.GradientTransformation, sign: Sign = "auto"):
        self.tx = optax.with_extra_args_support(tx)
        if sign not in ("auto", "gradient", "update"):
            raise HyperparameterError(
                f"from_optax(sign={sign!r}): expected 'auto', 'gradient' or 'update'. "
                "Fix: pass one of those."
            )
        self.sign = _probe_sign(self.tx) if sign == "auto" else sign

    def call_model(self, grads, params, loss):
        keys = list(grads)
        leaves = [grads[k] for k in keys]
        param_leaves = None if isinstance(params, Missing) else [params[k] for k in keys]
        if not hasattr(self, "tx_state"):
            self.tx_state = self.tx.init(param_leaves)
        extra = {} if isinstance(loss, Missing) else {"value": loss}
        out, self.tx_state = self.tx.update(leaves, self.tx_state, param_leaves, **extra)
        if self.sign == "update":
            out = [-u for u in out]
        return dict(zip(keys, out, strict=True))


def from_optax(tx: optax.GradientTransformation, sign: Sign = "auto") -> FromOptax:
    """Wraps an optax transformation as a hook optimizer (see :class:`FromOptax`).

    Args:
        tx: an ``optax.GradientTransformation``.
        sign: ``'auto'``, ``'gradient'`` or ``'update'``.

    Returns:
        A :class:`FromOptax` hook optimizer.

    Example:
        >>> import optax
        >>> import flr_nnx as flr
        >>> flr.from_optax(optax.clip_by_global_norm(1.0)).sign
        'gradient'
        >>> flr.from_optax(optax.adam(1e-3)).sign
        'update'
    """
    return FromOptax(tx, sign)
