"""Which optimizers in a tree have an evaluation point, and whether it reaches the root.

An optimizer *has its own evaluation point* (:func:`has_eval_point`) when its class
overrides :meth:`~flr_nnx.optim.Optimizer.eval_params` and does not declare that it
only passes its inner optimizers' points on (``passes_eval_params_on = True``, as
``Chain`` and ``MultiSteps`` do). Every optimizer on the path from the root to it must
override ``eval_params`` too, or that point is silently dropped: the inherited
identity returns the iterate. :func:`check_passed_on` finds such a wrapper.
"""

from __future__ import annotations

from typing import Any

from flr_nnx._engine._walk import Path, format_path, traverse
from flr_nnx._errors import HookError
from flr_nnx._optimizer import Optimizer


def overrides_eval_params(opt: Optimizer) -> bool:
    """Whether ``opt``'s class defines ``eval_params`` (not the identity it inherits)."""
    return getattr(type(opt), "eval_params", None) is not Optimizer.eval_params


def has_eval_point(opt: Any) -> bool:
    """Whether ``opt`` is an optimizer with an evaluation point of its own.

    A wrapper that only passes its inner optimizers' points on says so with
    ``passes_eval_params_on = True`` (a class attribute or a property: ``FromOptax``'s
    depends on the optax state it holds).
    """
    return (
        isinstance(opt, Optimizer)
        and overrides_eval_params(opt)
        and not getattr(opt, "passes_eval_params_on", False)
    )


def eval_points(root: Any) -> list[Path]:
    """The paths of the optimizers under ``root`` (itself included) with their own point."""
    return [path for path, node, _ in traverse(root) if has_eval_point(node)]


def check_passed_on(root: Optimizer) -> None:
    """Raises a :class:`HookError` if a wrapper drops an inner optimizer's evaluation point.

    Args:
        root: the optimizer (the one ``eval_params`` is run on) with its state.

    Raises:
        HookError: naming the innermost wrapper on the path from ``root`` to an
            optimizer with an evaluation point that does not define ``eval_params``.
    """
    nodes: dict[Path, Any] = {}
    for path, node, _ in traverse(root):  # depth first: a node's ancestors come first
        nodes[path] = node
        if not path or not has_eval_point(node):
            continue
        dropping = [
            path[:i]
            for i in range(len(path))
            if isinstance(nodes[path[:i]], Optimizer) and not overrides_eval_params(nodes[path[:i]])
        ]
        if not dropping:
            continue
        where = dropping[-1]
        wrapper = type(nodes[where]).__name__
        inner = type(node).__name__
        raise HookError(
            f"{wrapper} (at {format_path(where)}) wraps {inner} (at {format_path(path)}), "
            f"whose evaluation point differs from its iterate (it defines eval_params), but "
            f"{wrapper} does not define eval_params: it would not pass that point on, and "
            "the result would be the iterate, not the point to evaluate at. Fix: define "
            f"`eval_params(self, params)` on {wrapper}, passing the parameters to the inner "
            "optimizer (`return self.inner.eval_params(params)`), as flr.compose.Chain does; "
            "or return `dict(params)` there to evaluate at the iterate on purpose."
        )
