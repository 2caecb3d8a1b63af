"""Hook-level wrappers: gradient accumulation, skipping non-finite steps, mixed precision.

Why no ``lax.cond``: a wrapped optimizer's hooks mutate the engine's private
copy of the optimizer object. Inside a branch of ``lax.cond`` those mutations
would store the branch's tracers in the outer copy (leaked tracers), and the
inner state would have to be threaded through ``cond`` by hand. Instead the
wrappers always run the inner optimizer and then *select*, with ``jnp.where``,
the new or the old value of every inner state array and of the updates. This
is exactly what ``optax.MultiSteps`` does for its inner state; the cost is
that the inner optimizer computes on every call (skipped steps included).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from flr_nnx import _engine
from flr_nnx._errors import HyperparameterError
from flr_nnx._optimizer import Key, Optimizer, call


def _run_and_keep_unless(
    flag: jax.Array,
    inner: Optimizer,
    loss: Any,
    grads: dict[Key, Any],
    params: Any,
    extra: Mapping[str, Any],
) -> dict[Key, Any]:
    """Runs ``inner``; its state keeps the new values only where ``flag`` is true.

    Every array of ``inner`` the call assigned becomes ``where(flag, new, old)``,
    in place (so the engine's records of where state was created stay valid).
    Arrays the hooks only read stay constants; state created by this very call
    (at init) is kept.
    """
    before = _engine.walk(inner).arrays
    updates = call(inner, loss=loss, grads=grads, params=params, **extra)
    kept = {
        path: jnp.where(flag, new, before[path]).astype(before[path].dtype)
        for path, new in _engine.walk(inner).arrays.items()
        if path in before and new is not before[path]
    }
    _engine.put(inner, kept)
    return updates


class MultiSteps(Optimizer):
    r"""Gradient accumulation: one step of ``opt`` every ``every_k`` calls.

    The counterpart of ``optax.MultiSteps`` (bit-identical under ``jit``).
    Gradients are averaged (or summed) over ``every_k`` mini-steps; on the
    last one the inner optimizer steps with the accumulated gradient; on the
    others the update is zero and the inner state does not change.

    .. math::

        a_n &= a_{n-1} + (g_n - a_{n-1}) / (n + 1), \quad n = 0, \dots, k - 1 \\
        u &= \mathrm{opt}(a_{k-1}) \text{ on mini-step } k - 1, \text{ else } 0

    Counting: ``NNXOptimizer.step`` (like optax's own counters outside the
    wrapper) counts every call, i.e. mini-steps; ``gradient_step`` here and the
    inner optimizer's own counter (e.g. ``Adam.count``) count real updates.

    The inner optimizer runs on every call and its new state is kept only when
    an update is emitted (``jnp.where``, as ``optax.MultiSteps`` does): its
    hooks cannot run inside ``lax.cond`` on the engine's mutable copy.

    Args:
        opt: the inner optimizer.
        every_k: the number of mini-steps per update.
        use_grad_mean: average the gradients (default) or sum them.
        accumulator_dtype: dtype of the accumulator (default: the gradient's).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.compose.MultiSteps(flr.optim.Adam(0.1), every_k=2))
        >>> params = {"w": jnp.ones(2)}
        >>> state = tx.init(params)
        >>> u1, state = tx.update({"w": jnp.ones(2)}, state, params)
        >>> u2, state = tx.update({"w": jnp.ones(2)}, state, params)
        >>> u1["w"], u2["w"]
        (Array([-0., -0.], dtype=float32), Array([-0.09999934, -0.09999934], dtype=float32))
    """

    def __init__(
        self,
        opt: Optimizer,
        every_k: int,
        *,
        use_grad_mean: bool = True,
        accumulator_dtype: Any | None = None,
    ):
        if not isinstance(every_k, int) or isinstance(every_k, bool) or every_k < 1:
            raise HyperparameterError(
                f"MultiSteps(every_k={every_k!r}): expected an int >= 1. Fix: pass the "
                "number of mini-steps per update, e.g. every_k=4."
            )
        self.inner = opt
        self.every_k = every_k
        self.use_grad_mean = use_grad_mean
        self.accumulator_dtype = None if accumulator_dtype is None else jnp.dtype(accumulator_dtype)
        self.mini_step = jnp.zeros([], jnp.int32)
        self.gradient_step = jnp.zeros([], jnp.int32)
        self.acc: dict = {}

    def __call__(self, loss, grads, params, nnx_variables=None, **extra):
        extra = {**extra, "nnx_variables": nnx_variables}  # passed on by name
        acc = {}
        for key, grad in grads.items():
            if key not in self.acc:
                self.acc[key] = jnp.zeros_like(grad, dtype=self.accumulator_dtype)
            if self.use_grad_mean:
                acc[key] = self.acc[key] + (grad - self.acc[key]) / (self.mini_step + 1)
            else:
                acc[key] = grad + self.acc[key]
        emit = self.mini_step == self.every_k - 1
        inner_grads = {k: a.astype(grads[k].dtype) for k, a in acc.items()}
        updates = _run_and_keep_unless(emit, self.inner, loss, inner_grads, params, extra)
        self.mini_step = optax.safe_increment(self.mini_step) % self.every_k
        self.gradient_step = (
            emit * optax.safe_increment(self.gradient_step) + (1 - emit) * self.gradient_step
        )
        for key, value in acc.items():
            self.acc[key] = ((1 - emit) * value).astype(self.acc[key].dtype)
        return {key: emit * update for key, update in updates.items()}

    def eval_params(self, params):
        """The inner optimizer's evaluation point (:meth:`Optimizer.eval_params`)."""
        return self.inner.eval_params(params)


class SkipNonFinite(Optimizer):
    r"""Skips steps whose gradients contain a NaN or an infinity.

    The counterpart of ``optax.apply_if_finite`` (bit-identical under ``jit``).
    On a non-finite step the update is zero and the inner state does not
    change; after more than ``max_consecutive_errors`` non-finite steps in a
    row the step is applied anyway.

    .. math::

        u = \mathrm{opt}(g) \text{ if } g \text{ is finite or }
        c > c_{\max}, \text{ else } 0

    Counting: ``NNXOptimizer.step`` counts every call, skipped ones included;
    the inner optimizer's own counter counts applied steps only;
    ``total_notfinite`` counts skipped-or-forced non-finite steps and
    ``notfinite_count`` the current run of them.

    The inner optimizer runs on every call and its new state is kept only when
    the step is applied (``jnp.where``, since its hooks cannot run inside
    ``lax.cond`` on the engine's mutable copy).

    Args:
        opt: the inner optimizer.
        max_consecutive_errors: how many non-finite steps in a row are skipped
            before one is applied.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.compose.SkipNonFinite(flr.optim.Adam(0.1), 3))
        >>> params = {"w": jnp.ones(2)}
        >>> updates, state = tx.update({"w": jnp.array([1.0, jnp.nan])}, tx.init(params), params)
        >>> updates["w"], int(state.tree["total_notfinite"]), int(state.tree["inner"]["count"])
        (Array([-0., -0.], dtype=float32), 1, 0)
    """

    def __init__(self, opt: Optimizer, max_consecutive_errors: int):
        if not isinstance(max_consecutive_errors, int) or max_consecutive_errors < 0:
            raise HyperparameterError(
                f"SkipNonFinite(max_consecutive_errors={max_consecutive_errors!r}): expected "
                "an int >= 0. Fix: pass how many non-finite steps in a row to skip."
            )
        self.inner = opt
        self.max_consecutive_errors = max_consecutive_errors
        self.notfinite_count = jnp.zeros([], jnp.int32)
        self.last_finite = jnp.array(True, jnp.bool_)
        self.total_notfinite = jnp.zeros([], jnp.int32)

    def __call__(self, loss, grads, params, nnx_variables=None, **extra):
        extra = {**extra, "nnx_variables": nnx_variables}  # passed on by name
        isfinite = jnp.all(jnp.array([jnp.all(jnp.isfinite(g)) for g in grads.values()]))
        self.notfinite_count = jnp.where(
            isfinite, jnp.zeros([], jnp.int32), optax.safe_increment(self.notfinite_count)
        )
        apply = jnp.logical_or(isfinite, self.notfinite_count > self.max_consecutive_errors)
        updates = _run_and_keep_unless(apply, self.inner, loss, grads, params, extra)
        self.last_finite = isfinite
        self.total_notfinite = jnp.where(
            isfinite, self.total_notfinite, optax.safe_increment(self.total_notfinite)
        )
        return {key: jnp.where(apply, u, jnp.zeros_like(u)) for key, u in updates.items()}

    eval_params = MultiSteps.eval_params


def _low_precision(dtype: Any, target: Any) -> bool:
    return jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < jnp.finfo(target).bits


class MixedPrecision(Optimizer):
    r"""Runs ``opt`` in ``state_dtype`` on low-precision (e.g. bfloat16) parameters.

    By default optimizer state follows the parameter's dtype (Adam's moments
    of a bfloat16 parameter are bfloat16). Wrapped in ``MixedPrecision``, the
    inner optimizer sees gradients and parameters cast up to ``state_dtype``
    (float32), so the state it creates (moments, accumulators) is float32 and
    its arithmetic runs in float32; the update is cast back to the
    parameter's dtype. Parameters already at least as precise are untouched.

    .. math::

        u = \mathrm{cast}_{\text{param}}\big(\mathrm{opt}(\mathrm{cast}_{32}(g),
        \mathrm{cast}_{32}(\theta))\big)

    Args:
        opt: the inner optimizer.
        state_dtype: the dtype its state and arithmetic use (default float32).

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> tx = flr.as_optax(flr.compose.MixedPrecision(flr.optim.Adam(0.1)))
        >>> params = {"w": jnp.ones(2, jnp.bfloat16)}
        >>> state = tx.init(params)
        >>> state.tree["inner"]["mu"]["w"].dtype, tx.update(params, state, params)[0]["w"].dtype
        (dtype('float32'), dtype(bfloat16))
    """

    def __init__(self, opt: Optimizer, state_dtype: Any = jnp.float32):
        self.inner = opt
        self.state_dtype = jnp.dtype(state_dtype)

    def __call__(self, loss, grads, params, nnx_variables=None, **extra):
        extra = {**extra, "nnx_variables": nnx_variables}  # passed on by name
        target = self.state_dtype
        up = {
            k: g.astype(target) if _low_precision(g.dtype, target) else g for k, g in grads.items()
        }
        if isinstance(params, Mapping):
            params = {
                k: params[k].astype(target)
                if _low_precision(params[k].dtype, target)
                else params[k]
                for k in grads
            }
        updates = call(self.inner, loss=loss, grads=up, params=params, **extra)
        return {k: u.astype(grads[k].dtype) for k, u in updates.items()}

    def eval_params(self, params):
        """The inner optimizer's evaluation point, computed as its step is (cast up and back)."""
        target = self.state_dtype
        up = {
            k: p.astype(target) if _low_precision(p.dtype, target) else p for k, p in params.items()
        }
        return {k: x.astype(params[k].dtype) for k, x in self.inner.eval_params(up).items()}
