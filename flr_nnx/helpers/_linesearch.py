"""Line searches: a step size along a direction, from the loss re-evaluated on that line.

The zoom line search of Nocedal & Wright (Algorithms 3.5 and 3.6), with Hager & Zhang's
approximate decrease criterion, operation for operation as ``optax.scale_by_zoom_linesearch``
(optax 0.2.8, without its ``verbose`` printing), so that an optimizer that uses it is
bit-identical to optax's. It works on any pytree, e.g. the hooks' dicts keyed by parameter
key, with ``value_fn`` a function of such a tree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

ZoomState = dict[str, Any]


def zoom_linesearch_init(params: Any) -> ZoomState:
    """The state of :func:`zoom_linesearch` before its first search, as optax's.

    Args:
        params: the parameters (a pytree); the state's ``grad`` is shaped like them.

    Returns:
        ``{"learning_rate", "value", "grad", "num_linesearch_steps", "decrease_error",
        "curvature_error"}``: the last step size (1.0 at first), the value and gradient at
        the point it reached (``inf`` and zeros at first), and the search's diagnostics.

    Example:
        >>> import jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> state = flr.helpers.zoom_linesearch_init({"w": jnp.zeros(2)})
        >>> state["learning_rate"], state["value"]
        (Array(1., dtype=float32), Array(inf, dtype=float32))
    """
    val_dtype = jnp.real(jnp.empty((), jax.tree.leaves(params)[0].dtype)).dtype
    state = {
        "learning_rate": jnp.asarray(1.0, dtype=val_dtype),
        "value": jnp.asarray(jnp.inf, dtype=val_dtype),
        "grad": optax.tree.zeros_like(params),
        "num_linesearch_steps": jnp.asarray(0),
        "decrease_error": jnp.asarray(jnp.inf),
        "curvature_error": jnp.asarray(jnp.inf),
    }
    # optax's dtypes, not weakly typed: a search's results are not, and a state that
    # changed its weak types would recompile a jitted step. No search reads these values.
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=x.dtype), state)


def zoom_linesearch(
    value_fn: Callable[[Any], Any],
    params: Any,
    updates: Any,
    value: Any,
    grad: Any,
    state: ZoomState,
    *,
    max_linesearch_steps: int = 20,
    max_learning_rate: float | None = None,
    tol: float = 0.0,
    increase_factor: float = 2.0,
    slope_rtol: float = 1e-4,
    curv_rtol: float = 0.9,
    approx_dec_rtol: float | None = 1e-6,
    stepsize_precision: float = 1e-5,
    initial_guess_strategy: str = "one",
) -> tuple[jax.Array, ZoomState]:
    r"""A step size :math:`\eta` along ``updates`` with sufficient decrease and small curvature.

    With :math:`f` = ``value_fn``, :math:`w` = ``params`` and :math:`u` = ``updates``,
    it searches :math:`\eta` such that

    .. math::

        f(w + \eta u) \le f(w) + c_1 \eta \langle u, \nabla f(w)\rangle, \qquad
        |\langle u, \nabla f(w + \eta u)\rangle| \le c_2 |\langle u, \nabla f(w)\rangle|

    (:math:`c_1` = ``slope_rtol``, :math:`c_2` = ``curv_rtol``; near a minimum the first is
    relaxed to Hager & Zhang's approximate decrease), first growing :math:`\eta` by
    ``increase_factor`` until an interval holds such a step, then zooming into it by cubic,
    quadratic or bisection steps. Each trial costs one ``jax.value_and_grad(value_fn)``.
    The arguments and the arithmetic are those of ``optax.scale_by_zoom_linesearch``: the
    step is bit-identical to optax's. The caller scales its update by the step size.

    Args:
        value_fn: the objective, a function of a tree shaped like ``params``.
        params: the current parameters :math:`w`.
        updates: the direction :math:`u` (a descent direction: optax's sign).
        value: :math:`f(w)`.
        grad: :math:`\nabla f(w)`, shaped like ``params``.
        state: the previous state (:func:`zoom_linesearch_init` at first).
        max_linesearch_steps: the most trials.
        max_learning_rate: the largest step size, or ``None``.
        tol: tolerance on both criteria.
        increase_factor: growth of the step size while searching an interval.
        slope_rtol: :math:`c_1`.
        curv_rtol: :math:`c_2`.
        approx_dec_rtol: relative tolerance of the approximate decrease, or ``None``
            for the Armijo criterion only.
        stepsize_precision: an interval this short ends the search if a step with
            sufficient decrease was found.
        initial_guess_strategy: ``"one"`` (the first trial is 1) or ``"keep"`` (the
            previous step size).

    Returns:
        ``(learning_rate, new_state)``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import flr_nnx as flr
        >>> f = lambda p: jnp.sum((p["w"] - 1.0) ** 2)
        >>> p = {"w": jnp.array([3.0])}
        >>> value, grad = jax.value_and_grad(f)(p)
        >>> u = {"w": -grad["w"]}
        >>> state = flr.helpers.zoom_linesearch_init(p)
        >>> eta, state = flr.helpers.zoom_linesearch(f, p, u, value, grad, state)
        >>> eta  # the exact minimum along -grad
        Array(0.5, dtype=float32)
    """
    state = _plain(state)
    if initial_guess_strategy == "one":
        stepsize_guess = jnp.asarray(1.0)
    elif initial_guess_strategy == "keep":
        stepsize_guess = state["learning_rate"]
    else:
        raise ValueError(f"Unknown initial guess strategy: {initial_guess_strategy}")
    searcher = _Zoom(
        max_linesearch_steps,
        max_learning_rate,
        tol,
        increase_factor,
        slope_rtol,
        curv_rtol,
        approx_dec_rtol,
        stepsize_precision,
        jax.value_and_grad(value_fn),
    )
    init = searcher.init(updates, params, value, grad, stepsize_guess)
    final = jax.lax.while_loop(lambda s: ~(s["done"] | s["failed"]), searcher.step, init)
    new_state = {
        "learning_rate": final["stepsize"],
        "value": final["value"],
        "grad": final["grad"],
        "num_linesearch_steps": final["count"],
        "decrease_error": final["decrease_error"],
        "curvature_error": final["curvature_error"],
    }
    new_state = optax.tree.cast_like(new_state, other_tree=state)
    return new_state["learning_rate"], new_state


def _plain(tree: Any) -> Any:
    """``tree`` with every mapping a plain dict (an optimizer's state dicts are the engine's
    dict subclasses, which JAX sees as other tree nodes)."""
    if isinstance(tree, Mapping):
        return {k: _plain(v) for k, v in tree.items()}
    return tree


class _Zoom:
    """optax's ``zoom_linesearch`` closure (its ``init_fn``, ``step_fn``), state as a dict."""

    def __init__(self, max_steps, max_stepsize, tol, increase, c1, c2, approx, threshold, vg):
        self.max_steps, self.max_stepsize, self.tol = max_steps, max_stepsize, tol
        self.increase, self.c1, self.c2, self.approx = increase, c1, c2, approx
        self.threshold, self.value_and_grad = threshold, vg

    def init(self, updates, params, value, grad, stepsize_guess):
        val_dtype = jnp.real(jnp.empty((), jax.tree.leaves(params)[0].dtype)).dtype
        slope = optax.tree.real(optax.tree.vdot(updates, grad))
        zero, inf = jnp.asarray(0.0), jnp.asarray(jnp.inf)
        return {
            "count": jnp.asarray(0),
            "params": params,
            "updates": updates,
            "stepsize_guess": stepsize_guess,
            "stepsize": jnp.asarray(0.0, dtype=val_dtype),
            "value": jnp.array(value, dtype=val_dtype),
            "grad": grad,
            "slope": slope,
            "value_init": value,
            "slope_init": slope,
            "decrease_error": inf,
            "curvature_error": inf,
            "error": inf,
            "interval_found": jnp.asarray(False),
            "done": jnp.asarray(False),
            "failed": jnp.asarray(False),
            "low": zero,
            "value_low": value,
            "slope_low": slope,
            "high": zero,
            "value_high": value,
            "slope_high": slope,
            "cubic_ref": zero,
            "value_cubic_ref": value,
            "safe_stepsize": zero,
            "safe_value": value,
            "safe_grad": grad,
        }

    def step(self, state):
        new = jax.lax.cond(state["interval_found"], self._zoom, self._search, state)
        new = jax.lax.cond(new["failed"], self._safe_step, lambda x: x, new)
        return optax.tree.cast_like(new, other_tree=state)

    def _on_line(self, s, stepsize):
        step = optax.tree.add_scale(s["params"], stepsize, s["updates"])
        value, grad = self.value_and_grad(step)
        slope = optax.tree.real(optax.tree.vdot(optax.tree.conj(grad), s["updates"]))
        return value, grad, slope

    def _errors(self, s, stepsize, value, slope):
        value_init, slope_init = s["value_init"], s["slope_init"]
        decrease = value - value_init - self.c1 * stepsize * slope_init
        if self.approx is not None:
            approx = slope - (2 * self.c1 - 1.0) * slope_init
            delta_values = value - value_init - self.approx * jnp.abs(value_init)
            approx = jnp.maximum(approx, delta_values)
            decrease = jnp.minimum(approx, decrease)
        decrease = jnp.maximum(decrease, 0.0)
        decrease = jnp.where(jnp.isnan(decrease), jnp.inf, decrease)
        curvature = jnp.abs(slope) - self.c2 * jnp.abs(slope_init)
        curvature = jnp.maximum(curvature, 0.0)
        curvature = jnp.where(jnp.isnan(curvature), jnp.inf, curvature)
        return decrease, curvature, jnp.maximum(decrease, curvature)

    def _safe_step(self, s):
        outside_domain = jnp.isinf(s["decrease_error"])
        stepsize, value, grad = optax.tree.where(
            (s["safe_stepsize"] > 0.0) | outside_domain,
            [s["safe_stepsize"], s["safe_value"], s["safe_grad"]],
            [s["stepsize"], s["value"], s["grad"]],
        )
        new = {**s, "stepsize": stepsize, "grad": grad, "value": value}
        return optax.tree.cast_like(new, other_tree=s)

    def _search(self, s):
        """The interval search, Algorithm 3.5 of Nocedal & Wright."""
        iter_num, prev = s["count"], (s["stepsize"], s["value"], s["slope"])
        stepsize = jnp.where(iter_num == 0, s["stepsize_guess"], self.increase * prev[0])
        if self.max_stepsize is not None:
            max_reached = stepsize >= self.max_stepsize
            stepsize = jnp.minimum(stepsize, self.max_stepsize)
        else:
            max_reached = jnp.asarray(False)
        value, grad, slope = self._on_line(s, stepsize)
        decrease, curvature, error = self._errors(s, stepsize, value, slope)
        safe = optax.tree.where(
            decrease <= self.tol,
            [stepsize, value, grad],
            [s["safe_stepsize"], s["safe_value"], s["safe_grad"]],
        )
        set_high = (decrease > 0.0) | ((value >= prev[1]) & (iter_num > 0))
        set_low = (slope >= 0.0) & (~set_high)
        low, value_low, slope_low, high, value_high, slope_high = optax.tree.where(
            set_low, [stepsize, value, slope, *prev], [*prev, stepsize, value, slope]
        )
        interval_found = set_high | set_low | (error <= self.tol)
        done = (error <= self.tol) | (max_reached & ~interval_found)
        failed = (iter_num + 1 >= self.max_steps) & (~done)
        new = {
            **s,
            "count": optax.safe_increment(iter_num),
            "stepsize": stepsize,
            "value": value,
            "grad": grad,
            "slope": slope,
            "decrease_error": decrease,
            "curvature_error": curvature,
            "error": error,
            "interval_found": jnp.asarray(interval_found),
            "done": jnp.asarray(done),
            "failed": jnp.asarray(failed),
            "low": low,
            "value_low": value_low,
            "slope_low": slope_low,
            "high": high,
            "value_high": value_high,
            "slope_high": slope_high,
            "cubic_ref": low,
            "value_cubic_ref": value_low,
            "safe_stepsize": safe[0],
            "safe_value": safe[1],
            "safe_grad": safe[2],
        }
        return optax.tree.cast_like(new, other_tree=s)

    def _zoom(self, s):
        """The zoom into the interval, Algorithm 3.6 of Nocedal & Wright."""
        low, value_low, slope_low = s["low"], s["value_low"], s["slope_low"]
        high, value_high, slope_high = s["high"], s["value_high"], s["slope_high"]
        cubic_ref, value_cubic_ref = s["cubic_ref"], s["value_cubic_ref"]
        delta = jnp.abs(high - low)
        left, right = jnp.minimum(high, low), jnp.maximum(high, low)
        cubic_chk, quad_chk = 0.2 * delta, 0.1 * delta
        too_small_int = delta <= self.threshold
        middle_cubic = _cubicmin(
            low, value_low, slope_low, high, value_high, cubic_ref, value_cubic_ref
        )
        use_cubic = (middle_cubic > left + cubic_chk) & (middle_cubic < right - cubic_chk)
        middle_quad = _quadmin(low, value_low, slope_low, high, value_high)
        quad_valid = (middle_quad > left + quad_chk) & (middle_quad < right - quad_chk)
        use_quad = (~use_cubic) & quad_valid
        use_bisection = (~use_cubic) & (~use_quad)
        middle = jnp.where(use_cubic, middle_cubic, cubic_ref)
        middle = jnp.where(use_quad, middle_quad, middle)
        middle = jnp.where(use_bisection, (low + high) / 2.0, middle)

        value, grad, slope = self._on_line(s, middle)
        decrease, curvature, error = self._errors(s, middle, value, slope)
        safe = optax.tree.where(
            (decrease <= self.tol) & (value < s["safe_value"]),
            [middle, value, grad],
            [s["safe_stepsize"], s["safe_value"], s["safe_grad"]],
        )
        done = error <= self.tol
        set_high_to_middle = (decrease > 0.0) | (value >= value_low)
        set_high_to_low = (slope * (high - low) >= 0.0) & (~set_high_to_middle)
        new_high = optax.tree.where(
            set_high_to_middle, [middle, value, slope], [high, value_high, slope_high]
        )
        new_high = optax.tree.where(set_high_to_low, [low, value_low, slope_low], new_high)
        new_low = optax.tree.where(
            ~set_high_to_middle, [middle, value, slope], [low, value_low, slope_low]
        )
        cubic = optax.tree.where(
            set_high_to_middle | set_high_to_low, [high, value_high], [low, value_low]
        )
        max_iter_reached = (s["count"] + 1) >= self.max_steps
        presumably_failed = jnp.asarray(max_iter_reached) | (too_small_int & (safe[0] > 0.0))
        new = {
            **s,
            "count": optax.safe_increment(s["count"]),
            "stepsize": middle,
            "value": value,
            "grad": grad,
            "slope": slope,
            "decrease_error": decrease,
            "curvature_error": curvature,
            "error": error,
            "done": done,
            "failed": presumably_failed & ~done,
            "low": new_low[0],
            "value_low": new_low[1],
            "slope_low": new_low[2],
            "high": new_high[0],
            "value_high": new_high[1],
            "slope_high": new_high[2],
            "cubic_ref": cubic[0],
            "value_cubic_ref": cubic[1],
            "safe_stepsize": safe[0],
            "safe_value": safe[1],
            "safe_grad": safe[2],
        }
        return optax.tree.cast_like(new, other_tree=s)


def _cubicmin(a, fa, fpa, b, fb, c, fc):
    """A critical point of the cubic through (a, fa), (b, fb), (c, fc) with slope fpa at a
    (NaN if there is none), as optax's (adapted from scipy)."""
    db, dc = b - a, c - a
    denom = (db * dc) ** 2 * (db - dc)
    d1 = jnp.array([[dc**2, -(db**2)], [-(dc**3), db**3]])
    rhs = jnp.array([fb - fa - fpa * db, fc - fa - fpa * dc])
    big_a, big_b = jnp.dot(d1, rhs, precision=jax.lax.Precision.HIGHEST) / denom
    radical = big_b * big_b - 3.0 * big_a * fpa
    return a + (-big_b + jnp.sqrt(radical)) / (3.0 * big_a)


def _quadmin(a, fa, fpa, b, fb):
    """A critical point of the quadratic through (a, fa), (b, fb) with slope fpa at a."""
    db = b - a
    big_b = (fb - fa - fpa * db) / (db**2)
    return a - fpa / (2.0 * big_b)
