"""Any optax transformation as a hook optimizer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax

from flr_nnx._errors import BridgeError, HookError, HyperparameterError, Missing, describe
from flr_nnx._optimizer import Key, Optimizer
from flr_nnx._tree import keyed_like

Sign = Literal["auto", "gradient", "update"]


def _probe_sign(tx: optax.GradientTransformationExtraArgs) -> str:
    """Tells a gradient-like transformation from a full optimizer.

    A gradient-like one (``clip_by_global_norm``, ``scale_by_adam``) keeps the
    sign of a positive gradient; a full optimizer (``optax.adam``) ends with
    ``-learning_rate`` and flips it.
    """
    # A consistent probe for line searches too: f(p) = p**2 / 2 at p = 1 has gradient 1.
    params = {"probe": jnp.ones((), jnp.float32)}
    grads = {"probe": jnp.ones((), jnp.float32)}

    def value_fn(p: Any) -> jax.Array:
        return 0.5 * p["probe"] ** 2

    try:
        out, _ = tx.update(
            grads, tx.init(params), params, value=value_fn(params), grad=grads, value_fn=value_fn
        )
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


def _is_schedule_free(x: Any) -> bool:
    return isinstance(x, optax.contrib.ScheduleFreeState)


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

    The transformation sees the parameters as a ``ParamDict``, a dict keyed
    by parameter key (``('layers', 0, 'kernel')``) in the order of the
    gradients, so its state keeps optax's structure with field names and
    parameter paths: ``self.tx_state[0].mu[('layers', 0, 'kernel')]``, which the
    nested state shows as ``tx_state/0/mu/layers/0/kernel``. Pytree-shaped
    arguments of ``tx`` (such as a mask tree) must be keyed the same way; a
    callable mask or a hook-level mask is simpler. optax's extra arguments
    (``value=`` is the loss; ``grad=``, ``value_fn=``, ...) are passed on to
    ``tx.update``, keyed the same way. Called without parameters (as
    :class:`~flr_nnx.optim.GaLore` calls its base optimizer), ``tx`` is initialised on
    zeros shaped like the gradients and updated with ``params=None``, as optax's
    GaLore does. If the optax state holds a
    ``optax.contrib.ScheduleFreeState``, :meth:`eval_params` is
    ``optax.contrib.schedule_free_eval_params`` on it.

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
        if isinstance(tx, Optimizer) or not callable(getattr(tx, "update", None)):
            raise BridgeError(
                f"from_optax got {describe(tx)}; expected an optax transformation. "
                + (
                    "It is already a hook optimizer: use it directly (e.g. in flr.compose.Chain)."
                    if isinstance(tx, Optimizer)
                    else "Fix: pass an optax GradientTransformation, e.g. optax.adam(1e-3)."
                )
            )
        self.tx = optax.with_extra_args_support(tx)
        if sign not in ("auto", "gradient", "update"):
            raise HyperparameterError(
                f"from_optax(sign={sign!r}): expected 'auto', 'gradient' or 'update'. "
                "Fix: pass one of those."
            )
        self.sign = _probe_sign(self.tx) if sign == "auto" else sign

    def call_model(self, grads, params, loss, **extra):
        keys = list(grads)
        param_dict = (
            None if isinstance(params, Missing) else ParamDict((k, params[k]) for k in keys)
        )
        if not hasattr(self, "tx_state"):
            # Without parameters (GaLore's base optimizer), init on zeros shaped like the
            # gradients, as optax.contrib.galore inits its base on zero proxies: init(None)
            # would give moments no update can match.
            zeros = ParamDict((k, jnp.zeros_like(grads[k])) for k in keys)
            self.tx_state = self.tx.init(zeros if param_dict is None else param_dict)
        extra = {
            name: ParamDict((k, value[k]) for k in keys) if keyed_like(value, keys) else value
            for name, value in extra.items()
        }
        if not isinstance(loss, Missing):
            extra["value"] = loss
        out, self.tx_state = self.tx.update(ParamDict(grads), self.tx_state, param_dict, **extra)
        if self.sign == "update":
            return {k: -out[k] for k in keys}
        return {k: out[k] for k in keys}

    @property
    def optax_sign(self) -> Sign:  # type: ignore[override]
        """What the wrapped transformation returns (``sign``): ``as_optax`` gives ``tx`` back.

        ``flr.as_optax(flr.from_optax(optax.clip_by_global_norm(1.0)))`` returns
        clipped gradients, as the transformation it wraps does.
        """
        return self.sign

    def _schedule_free_states(self) -> list[Any]:
        """The optax state's ``ScheduleFreeState`` values (none before a step is recorded)."""
        found = jax.tree.leaves(getattr(self, "tx_state", None), is_leaf=_is_schedule_free)
        return [x for x in found if _is_schedule_free(x)]

    @property
    def passes_eval_params_on(self) -> bool:
        """Whether its evaluation point is the iterate: no schedule-free state inside."""
        return not self._schedule_free_states()

    def eval_params(self, params: Mapping[Key, jax.Array]) -> dict[Key, jax.Array]:
        """``optax.contrib.schedule_free_eval_params`` if the optax state is schedule-free.

        Otherwise the parameters themselves. A schedule-free state for only some of
        the parameters (under ``optax.masked`` or ``optax.partition``), or more than
        one, is a :class:`~flr_nnx.HookError`: optax defines no evaluation point there.
        """
        found = self._schedule_free_states()
        if not found:
            return dict(params)
        z = found[0].z
        keys = list(z) if isinstance(z, Mapping) and set(z) == set(params) else list(params)
        param_dict = ParamDict((k, params[k]) for k in keys)  # in z's order
        if len(found) > 1 or jax.tree.structure(z) != jax.tree.structure(param_dict):
            raise HookError(
                f"FromOptax({self.tx}) holds {len(found)} optax.contrib.ScheduleFreeState(s) "
                "whose z does not have the parameters' structure (a schedule-free "
                "transformation for only some parameters, e.g. under optax.masked or "
                "optax.partition): optax.contrib.schedule_free_eval_params has no evaluation "
                "point for it. Fix: run schedule-free on all the parameters of this "
                "from_optax, e.g. select them with flr.compose.Partition around "
                "flr.from_optax(optax.contrib.schedule_free(...)), or use the hook twin "
                "flr.compose.ScheduleFree."
            )
        point = optax.contrib.schedule_free_eval_params(found[0], param_dict)
        return {k: point[k] for k in params}


class ParamDict(dict):
    """A dict keyed by parameter key that flattens in insertion order.

    What :class:`FromOptax` gives its optax transformation: a plain dict would
    be flattened in sorted key order, which fails for keys that mix strings and
    integers at one position (``('blocks', 0)`` and ``('blocks', 'norm')``).
    """


jax.tree_util.register_pytree_with_keys(
    ParamDict,
    lambda d: ([(jax.tree_util.DictKey(k), v) for k, v in d.items()], tuple(d)),
    lambda keys, values: ParamDict(zip(keys, values, strict=True)),
    lambda d: (list(d.values()), tuple(d)),
)


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
