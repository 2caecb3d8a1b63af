"""SAM: adversarial steps that look for sharp directions, then an outer step."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flr_nnx import _engine
from flr_nnx._errors import HookError, HyperparameterError, describe
from flr_nnx._optimizer import Optimizer, call
from flr_nnx.compose._reset import InitialState


def _pick(flag: jax.Array, if_true: Any, if_false: Any) -> Any:
    """``flag * if_true + (1 - flag) * if_false``: optax's ``pick_one``, op for op."""
    if jnp.issubdtype(if_false.dtype, jnp.number):
        return (flag * if_true + (1 - flag) * if_false).astype(if_false.dtype)
    return jnp.where(flag, if_true, if_false)  # PRNG keys and booleans: no arithmetic


def _picked(
    flag: jax.Array, if_true: Any, if_false: Any, after: Any, before: Any
) -> dict[Any, Any]:
    """``_pick`` on every array (by path) a hook assigned: from ``before`` to ``after``.

    Arrays a hook only read are constants, left as they are; state created by this
    very call (at init) keeps its value.
    """
    return {
        path: _pick(flag, if_true[path], if_false[path])
        for path, new in after.items()
        if new is not before.get(path) and path in if_true and path in if_false
    }


class SAM(Optimizer):
    r"""Sharpness-aware minimization (Foret et al., 2021), the twin of ``optax.contrib.sam``.

    Every ``sync_period`` steps, ``sync_period - 1`` adversarial steps of
    ``adv_optimizer`` (an *ascent*: usually :class:`~flr_nnx.optim.Normalize`
    then SGD with step :math:`\rho`) move the parameters towards a sharper
    point, where the gradient is taken; then ``optimizer`` steps from the
    parameters before the adversarial steps, :math:`c`, with that gradient:

    .. math::

        \theta_{i+1} &= \theta_i + d^{\mathrm{adv}}_i(g_i), \quad i < k - 1 \\
        \theta_k &= c - d^{\mathrm{opt}}(g_{k-1}), \qquad c = \theta_0

    (:math:`d` an optimizer's update, positive = descent). By default
    (``opaque_mode=False``) each call is one of those steps, and its update
    moves the model there: the adversarial updates are visible to the training
    loop. With ``opaque_mode=True`` each call runs the adversarial steps
    inside and returns only the outer update; it needs optax's extra argument
    ``grad_fn(params, i)``, the gradient at the adversarial parameters ``params``
    (a tree like the parameters) of the ``i``-th adversarial step, passed to
    every ``update`` (``tx.update(g, state, params, grad_fn=...)``, or
    ``NNXOptimizer.update(model, g, grad_fn=...)``: a function of the pure
    parameter state). With ``reset_state`` the adversarial optimizer's state is
    reset to its initial value after each outer step. Bit-identical to
    ``optax.contrib.sam`` under ``jit`` (both modes). One measured exception: in
    opaque mode inside ``optax.MultiSteps``, the parameters differ from optax's
    by up to 2.4e-7 (1-2 float32 ulp) after 8 steps (non-opaque mode there, and
    opaque mode without ``MultiSteps``, are exact); XLA compiles the two
    programs' ``grad_fn`` evaluations differently, and the cause was not isolated
    further.

    Args:
        optimizer: the outer optimizer.
        adv_optimizer: the adversarial optimizer (its descent is taken as ascent).
        sync_period: :math:`k`, calls per outer step (>= 1).
        reset_state: reset ``adv_optimizer``'s state after every outer step.
        opaque_mode: run the adversarial steps inside each call (needs ``grad_fn``).
        batch_axis_name: with ``opaque_mode``, the axis to ``jax.lax.pmean`` the
            adversarial gradients over (under ``pmap``/``shard_map``).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> adv = flr.compose.Chain(flr.optim.Normalize(), flr.optim.SGD(0.1))
        >>> tx = flr.as_optax(flr.compose.SAM(flr.optim.SGD(0.5), adv))
        >>> params = {"w": jnp.array([1.0])}
        >>> state = tx.init(params)
        >>> u1, state = tx.update({"w": jnp.array([2.0])}, state, params)  # adversarial
        >>> u2, state = tx.update({"w": jnp.array([3.0])}, state, params)  # outer
        >>> u1["w"], u2["w"]
        (Array([0.1], dtype=float32), Array([-1.5], dtype=float32))
    """

    def __init__(
        self,
        optimizer: Optimizer,
        adv_optimizer: Optimizer,
        sync_period: int = 2,
        reset_state: bool = True,
        opaque_mode: bool = False,
        batch_axis_name: str | None = None,
    ):
        if sync_period < 1:
            raise HyperparameterError(
                f"SAM(sync_period={sync_period!r}): Synchronization period must be >= 1. "
                "Fix: pass the number of calls per outer step, e.g. 2."
            )
        self.opt = optimizer
        self.adv = adv_optimizer
        self.sync_period = sync_period
        self.reset_state = reset_state
        self.opaque_mode = opaque_mode
        self.batch_axis_name = batch_axis_name
        self.initial = InitialState(adv_optimizer) if reset_state else None
        if not opaque_mode:
            self.steps_since_sync = jnp.zeros([], jnp.int32)
            self.cache: dict = {}  # the parameters before the adversarial steps

    def __call__(self, loss, grads, params, nnx_variables=None, grad_fn=None, **_):
        # As optax, the inner optimizers get no extra arguments (the loss and the
        # Variables only, which describe the parameters given).
        extra = {"loss": loss, "nnx_variables": nnx_variables}
        if self.opaque_mode:
            return self._opaque(grads, params, grad_fn, extra)
        first = self.steps_since_sync == 0
        last = self.steps_since_sync == self.sync_period - 1
        before = _engine.walk(self.adv).arrays
        d_adv = call(self.adv, grads=grads, params=params, **extra)
        cache = {k: self.cache.setdefault(k, params[k]) for k in grads}
        opt_before = _engine.walk(self.opt).arrays
        d_opt = call(self.opt, grads=grads, params=cache, **extra)
        # On outer steps the outer optimizer's state advances, and the adversarial one's
        # is reset (or kept as it was); on the others, the other way round.
        opt_after = _engine.walk(self.opt).arrays
        _engine.put(self.opt, _picked(last, opt_after, opt_before, opt_after, opt_before))
        adv_after = _engine.walk(self.adv).arrays
        reset = before if self.initial is None else self._initial_state(params, extra)
        _engine.put(self.adv, _picked(last, reset, adv_after, adv_after, before))
        updates = {}
        for k in grads:
            outer = cache[k] - params[k] - d_opt[k]  # optax: c - p + u_opt
            updates[k] = -(last * outer + (1 - last) * d_adv[k])
            self.cache[k] = _pick(first, params[k], cache[k])
        self.steps_since_sync = (self.steps_since_sync + 1) % self.sync_period
        return updates

    def _initial_state(self, params, extra):
        """The adversarial optimizer's initial state for ``params`` (optax's ``init``)."""
        given = {"nnx_variables": extra["nnx_variables"]}
        return self.initial.values(params, **{k: v for k, v in given.items() if v is not None})

    def _opaque(self, grads, params, grad_fn, extra):
        if grad_fn is None:
            if _engine.RUN.get() is None:  # at init only stand-ins exist, and no grad_fn
                raise HyperparameterError(
                    "grad_fn must be provided when opaque_mode=True. Fix: pass the gradient "
                    "function to every update: `tx.update(grads, state, params, "
                    "grad_fn=lambda p, i: jax.grad(loss)(p, batch))`."
                )
            grad_fn = lambda p, i: grads  # noqa: E731  (init: the state's form only)
        adv_params, adv_grads = params, grads
        for i in range(self.sync_period - 1):
            d_adv = call(self.adv, grads=adv_grads, params=adv_params, **extra)
            adv_params = {
                k: jnp.asarray(adv_params[k] + d).astype(adv_params[k].dtype)
                for k, d in d_adv.items()
            }
            adv_grads = _checked(grad_fn(adv_params, i), grads)
            if self.batch_axis_name is not None:
                adv_grads = jax.lax.pmean(adv_grads, axis_name=self.batch_axis_name)
        if self.initial is not None:  # the state the adversarial steps created, reset
            current = _engine.walk(self.adv).arrays
            initial = self._initial_state(params, extra)
            _engine.put(self.adv, {p: v for p, v in initial.items() if p in current})
        return call(self.opt, grads=adv_grads, params=params, **extra)


def _checked(adv_grads: Any, grads: dict[Any, Any]) -> Any:
    """``grad_fn``'s gradients, or a :class:`HookError` naming it if they are not arrays.

    The bridges key a tree like the parameters by parameter; anything else (``nnx.grad``'s
    ``State`` of Variables) would reach the outer optimizer's hooks, which name neither.
    """
    if isinstance(adv_grads, dict) and all(k in adv_grads for k in grads):
        arrays = (jax.Array, np.ndarray)
        wrong = [k for k in grads if not isinstance(adv_grads[k], arrays)]
        if not wrong:
            return adv_grads
        got = f"{describe(adv_grads[wrong[0]])} for parameter {wrong[0]}"
    else:
        got = describe(adv_grads)
    raise HookError(
        f"SAM's grad_fn(params, i) returned {got}; expected the gradients as a pure tree "
        "of arrays shaped like the parameters it is given. Fix: return a pure tree, e.g. "
        "`jax.grad(loss)(params, batch)` of a loss of the pure parameters; with nnx.grad, "
        "`nnx.as_pure(nnx.grad(loss)(nnx.merge(graphdef, params, rest), batch))` "
        "(or nnx.to_pure_dict), not nnx.grad's State of Variables."
    )
