"""L-BFGS, written with the public hooks: a memory of past differences, and a line search."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from flr_nnx._errors import ArgumentError, HyperparameterError
from flr_nnx._optimizer import Optimizer
from flr_nnx.helpers import (
    ScalarOrSchedule,
    scale,
    set_hypers,
    value_at,
    zoom_linesearch,
    zoom_linesearch_init,
)


class LBFGS(Optimizer):
    r"""L-BFGS (Liu & Nocedal, 1989) with a zoom line search, the twin of ``optax.lbfgs``.

    .. math::

        s_{k-1} &= w_k - w_{k-1}, \quad y_{k-1} = g_k - g_{k-1}, \quad
            \rho_{k-1} = 1 / \langle y_{k-1}, s_{k-1} \rangle \\
        d_k &= -\eta_k P_k g_k \quad\text{(the two-loop recursion over the last } m
            \text{ pairs, from } P^0_k = \gamma_k I) \\
        \gamma_k &= \frac{\langle y_{k-1}, s_{k-1}\rangle}{\|y_{k-1}\|^2}
            \;(\gamma_0 = \min(1, 1/\|g_0\|)) \\
        \Delta w_k &= -\alpha_k d_k

    with :math:`\eta_k` the learning rate (1 by default) and :math:`\alpha_k` the step the
    zoom line search finds along :math:`d_k` (sufficient decrease and small curvature,
    :func:`flr_nnx.helpers.zoom_linesearch`). The line search re-evaluates the loss: pass
    ``value=`` (the loss), ``grad=`` (its gradient) and ``value_fn=`` (the loss as a
    function of the parameters) to every ``update``, as to ``optax.lbfgs``. The parameter
    becomes :math:`w_k - \Delta w_k`. Bit-identical to ``optax.lbfgs`` under ``jit``.

    Args:
        learning_rate: :math:`\eta`, a float or a schedule, or ``None`` (1: the line
            search sets the step).
        memory_size: :math:`m`, the pairs kept.
        scale_init_precond: start from :math:`\gamma_k I` (else from :math:`I`).
        linesearch: ``"zoom"`` (optax's default zoom line search, 20 trials),
            ``functools.partial(flr.helpers.zoom_linesearch, **options)`` for other
            options (those of ``optax.scale_by_zoom_linesearch``), or ``None`` (no line
            search: :math:`\alpha_k = 1`).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> f = lambda p: jnp.sum((p["w"] - 1.0) ** 2)
        >>> tx = flr.as_optax(flr.optim.LBFGS())
        >>> params = {"w": jnp.array([3.0, -1.0])}
        >>> value, grad = jax.value_and_grad(f)(params)
        >>> updates, state = tx.update(
        ...     grad, tx.init(params), params, value=value, grad=grad, value_fn=f
        ... )
        >>> updates["w"]  # first step: along -grad, of length 1 (the zoom accepts it)
        Array([-0.70710677,  0.70710677], dtype=float32)
    """

    def __init__(
        self,
        learning_rate: ScalarOrSchedule | None = None,
        memory_size: int = 10,
        scale_init_precond: bool = True,
        linesearch: str | Callable[..., Any] | None = "zoom",
    ):
        if memory_size < 1:
            raise HyperparameterError(
                f"LBFGS(memory_size={memory_size!r}): the memory keeps at least one pair. "
                "Fix: pass memory_size >= 1."
            )
        self.linesearch = _linesearch_of(linesearch)
        if learning_rate is not None:
            set_hypers(self, learning_rate=learning_rate)
        else:
            self.learning_rate = None
        self.memory_size, self.scale_init_precond = memory_size, scale_init_precond
        self.count = jnp.zeros([], jnp.int32)
        self.params: dict = {}
        self.updates: dict = {}
        self.diff_params_memory: dict = {}
        self.diff_updates_memory: dict = {}
        self.weights_memory = jnp.zeros(memory_size)
        # The line search's state, as optax's (its learning rate, value, grad and info).
        self.linesearch_state: dict | None = None

    def call_model(self, grads, params, loss, grad, value_fn, **extra):
        w = {k: params[k] for k in grads}
        for k, p in w.items():
            if k not in self.params:
                self.params[k] = jnp.zeros_like(p)
                self.updates[k] = jnp.zeros_like(p)
                zeros = jnp.zeros((self.memory_size, *p.shape), p.dtype)
                self.diff_params_memory[k] = self.diff_updates_memory[k] = zeros
        direction = self._precondition(grads, w)
        # optax's sign: the line search walks along a descent direction.
        if self.learning_rate is None:
            direction = jax.tree.map(lambda d: -1.0 * d, direction)
        else:
            lr = value_at(self.learning_rate, self.count)  # optax's schedule counts alike
            direction = jax.tree.map(lambda d: -scale(lr, d), direction)
        for k in w:
            self.params[k], self.updates[k] = w[k], grads[k]
        self.count = optax.safe_increment(self.count)
        if self.linesearch is None:
            return {k: -d for k, d in direction.items()}  # positive = descent
        grad = {k: grad[k] for k in w}
        if isinstance(self.linesearch, optax.GradientTransformation):  # held as it is
            if self.linesearch_state is None:
                self.linesearch_state = self.linesearch.init(w)
            direction, self.linesearch_state = self.linesearch.update(
                direction,
                self.linesearch_state,
                w,
                value=loss,
                grad=grad,
                value_fn=value_fn,
                **extra,
            )
        else:
            value_fn = _with_data(value_fn, extra)
            if self.linesearch_state is None:
                self.linesearch_state = zoom_linesearch_init(w)
            stepsize, self.linesearch_state = self.linesearch(
                value_fn, w, direction, loss, grad, self.linesearch_state
            )
            direction = optax.tree.scale(stepsize, direction)
        return {k: -d for k, d in direction.items()}  # positive = descent

    def _precondition(self, updates, params):
        """optax's ``scale_by_lbfgs``: updates the memory, then the two-loop recursion."""
        m, count = self.memory_size, self.count
        memory_idx, prev_memory_idx = count % m, (count - 1) % m
        # The state's dicts are the engine's (dict subclasses): trees of plain dicts here.
        diff_params = optax.tree.sub(params, dict(self.params))
        diff_updates = optax.tree.sub(updates, dict(self.updates))
        vdot = optax.tree.real(optax.tree.vdot(diff_updates, diff_params))
        weight = jnp.where(vdot == 0.0, 0.0, 1.0 / vdot)
        diff_params, diff_updates, weight = jax.tree.map(
            lambda x: jnp.where(count > 0, x, jnp.zeros_like(x)),
            (diff_params, diff_updates, weight),
        )
        dws, dus, rhos = jax.tree.map(
            lambda x, y: x.at[prev_memory_idx].set(y),
            (dict(self.diff_params_memory), dict(self.diff_updates_memory), self.weights_memory),
            (diff_params, diff_updates, weight),
        )
        self.weights_memory = rhos
        for k in dws:  # in place: the dicts' first values are the initial state
            self.diff_params_memory[k], self.diff_updates_memory[k] = dws[k], dus[k]
        if self.scale_init_precond:
            numerator = optax.tree.real(optax.tree.vdot(diff_updates, diff_params))
            denominator = optax.tree.norm(diff_updates, squared=True)
            identity_scale = jnp.where(denominator > 0.0, numerator / denominator, 1.0)
            update_norm = optax.tree.norm(jax.lax.stop_gradient(updates))
            capped_inv_norm = jnp.minimum(1.0, 1.0 / update_norm)
            identity_scale = jnp.where(count > 0, identity_scale, capped_inv_norm)
        else:
            identity_scale = 1.0
        indices = (memory_idx + jnp.arange(m)) % m

        def right_product(vec, idx):
            dwi, dui = jax.tree.map(lambda x: x[idx], (dws, dus))
            alpha = rhos[idx] * optax.tree.real(optax.tree.vdot(dwi, vec))
            new = optax.tree.cast_like(optax.tree.add_scale(vec, -alpha, dui), vec)
            return new, alpha

        def left_product(vec, idx_alpha):
            idx, alpha = idx_alpha
            dwi, dui = jax.tree.map(lambda x: x[idx], (dws, dus))
            beta = rhos[idx] * optax.tree.real(optax.tree.vdot(dui, vec))
            new = optax.tree.cast_like(optax.tree.add_scale(vec, alpha - beta, dwi), vec)
            return new, beta

        vec, alphas = jax.lax.scan(right_product, dict(updates), indices, reverse=True)
        vec = optax.tree.scale(identity_scale, vec)
        return jax.lax.scan(left_product, vec, (indices, alphas))[0]


def _with_data(value_fn: Callable[..., Any], extra: dict[str, Any]) -> Callable[..., Any]:
    """``value_fn`` given the extra arguments it names (data), as optax's line searches.

    Like optax's, it refuses extra arguments ``value_fn`` does not name: a misspelt
    ``batch=`` would otherwise leave the line search on another objective.
    """
    names = inspect.signature(value_fn).parameters
    unused = sorted(set(extra) - set(names))
    if unused:
        raise ArgumentError(
            f"LBFGS: update() got the extra arguments {unused}, which value_fn does not "
            f"take (its parameters: {list(names)}); the line search passes value_fn the ones it "
            "names, and optax's raises on the others. Fix: name them in value_fn's signature "
            "(`def value_fn(params, batch): ...`), or do not pass them to update."
        )
    return functools.partial(value_fn, **extra)


def _linesearch_of(linesearch: Any) -> Callable[..., Any] | None:
    """The line search function for ``linesearch=``, or a clear error."""
    if linesearch is None:
        return None
    if isinstance(linesearch, str) and linesearch == "zoom":
        # optax.lbfgs's default: scale_by_zoom_linesearch(20, initial_guess_strategy="one")
        return functools.partial(zoom_linesearch, max_linesearch_steps=20)
    func = getattr(linesearch, "func", linesearch)
    if func is zoom_linesearch or isinstance(linesearch, optax.GradientTransformation):
        return linesearch
    raise HyperparameterError(
        f"LBFGS(linesearch={linesearch!r}): expected 'zoom' (optax's default zoom line "
        "search), functools.partial(flr.helpers.zoom_linesearch, **options) (the options "
        "of optax.scale_by_zoom_linesearch), an optax line search transformation (such as "
        "optax.scale_by_backtracking_linesearch(...), kept with its state), or None (no "
        "line search). Fix: pass one of these."
    )
